"""Images as objects in OpenStack Swift, with python-swiftclient.

The package: :mod:`.locations` (the three location forms), :mod:`.auth`
(references, Keystone, connections), :mod:`.writing`, :mod:`.reading`,
:mod:`.options` and :mod:`.driver`.

Single-tenant (the default): every image goes to the service's own Swift
account, named by a *reference* in the store's ``swift_store_config_file``
(``default_swift_reference``); locations are
``swift+config://<reference>/<container>/<image id>`` and never hold
credentials. Each store reads its own reference file: two swift stores
never see each other's references. Legacy locations with credentials
(``swift+https://tenant%3Auser:key@auth-host/v3/<container>/<id>``) are
still read; their key is never logged, stored or shown in an error.

Multi-tenant (``swift_store_multi_tenant``): an image goes to the account
of the user adding it, with the user's token, into a container of its own
(``<swift_store_container>_<image id>``). The caller passes a request
context with every call; any object (or mapping) with these attributes:

``auth_token``
    the user's Keystone (or tempauth) token: required.
``storage_url``
    the user's Swift account URL (optional, multistore's own attribute);
    otherwise ``swift_store_endpoint`` (``%(tenant_id)s`` is replaced by
    the project id) or the ``object-store`` entry of ``service_catalog``.
``project_id`` / ``tenant``
    the user's project (for ``swift_store_endpoint`` templates).
``service_catalog``
    Keystone's catalog, v3 (``interface``/``url``) or v2 (``publicURL``)
    endpoint style, as glance's ``RequestContext`` carries it.

Large images: above ``swift_store_large_object_size`` (or of unknown size)
an image is cut into ``swift_store_large_object_chunk_size`` segments that
go to ``<container>_segments`` as ``<image id>/<upload id>/<index>``,
streamed one after the other (``swift_store_segment_concurrency = 1``, the
default) or buffered and uploaded several at a time, then a Static Large
Object manifest that lists every segment's etag and size (Swift checks
them) is written with ``If-None-Match: *``, so an image is never silently
replaced. A failed upload removes every segment; deleting the image
removes its segments (glance's Dynamic Large Objects are read and deleted
too); :meth:`~multistore.StoreSet.sweep` removes the segments of uploads
whose process died. Reads fetch a manifest's segments directly.

Image ids are percent-encoded in locations (UUIDs are unchanged), so every
id names exactly one object; a location whose names decode to ``.``,
``..`` or hold ``/`` is refused before any request is sent.

Sizes in ``swift_store_large_object_size`` and ``..._chunk_size`` count in
glance_store's "MB" of 1,024,000 bytes, so a given configuration cuts
images exactly as glance_store did.
"""

from multistore.drivers.swift.auth import Reference, read_references
from multistore.drivers.swift.driver import SwiftDriver
from multistore.drivers.swift.locations import (ConfigLocation, LegacyLocation,
                                                SwiftLocation, TenantLocation)
from multistore.drivers.swift.options import OPTIONS

__all__ = ["SwiftDriver", "OPTIONS", "Reference", "read_references", "SwiftLocation",
           "ConfigLocation", "LegacyLocation", "TenantLocation"]
