"""multistore: keep virtual-machine images in many storage backends at once.

::

    from oslo_config import cfg
    import multistore

    conf = cfg.ConfigOpts()
    multistore.register_opts(conf)
    conf(["--config-file", "glance-api.conf"])
    stores = multistore.load(conf, reserved={"os_glance_staging_store": "file"})
    result = stores.add("image-id", open("disk.img", "rb"), size)
    with stores.get(result.location) as reader:
        data = b"".join(reader)
"""

from multistore import errors
from multistore.config import register_opts
from multistore.context import RequestContext
from multistore.driver import Capabilities, Driver, ReadStream, Stored, Vouched, Writer
from multistore.errors import *  # noqa: F403 - the exception classes are public API
from multistore.location import Location
from multistore.retry import ResumingRead, RetryPolicy
from multistore.progress import Callback, NoOpCallback, TextProgressBar
from multistore.store import Store
from multistore.storeset import AddResult, ImageReader, StoreSet, SweptLeftover, load

__all__ = [
    "register_opts", "load", "StoreSet", "Store", "AddResult", "ImageReader", "SweptLeftover",
    "Driver", "Capabilities", "Writer", "Stored", "Vouched", "ReadStream", "Location",
    "RequestContext", "RetryPolicy", "ResumingRead",
    "Callback", "NoOpCallback", "TextProgressBar", "errors",
    *errors.__all__,
]
