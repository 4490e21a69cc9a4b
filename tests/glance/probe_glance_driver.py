"""A third-party glance_store driver for the harness's own tests, loaded by
Glance from the ``glance_store.drivers`` entry points of a directory on the
server's PYTHONPATH (see ``probe_driver_path`` in conftest.py).

It is glance_store's file driver under another store type: ``Store`` answers
to the type ``probefile`` and to the URL scheme ``file``, so a store switched
from ``file`` to ``probefile`` (and back) keeps reading and writing the same
``file://`` locations. ``ConflictingStore`` defines an option glance_store's
file driver also has, differently: merely installed, it stops Glance.

Runs inside Glance's venv only (it imports glance_store); not a test module.
"""

from glance_store._drivers import filesystem
from oslo_config import cfg


class StoreLocation(filesystem.StoreLocation):
    """glance_store loads ``<driver module>.StoreLocation`` (driver.py)."""


class Store(filesystem.Store):
    def get_schemes(self):
        return ("probefile", "file")


class ConflictingStore(Store):
    OPTIONS = [cfg.StrOpt("filesystem_store_datadir", default="/elsewhere",
                          help="Not glance_store's definition of this option.")]

    def get_schemes(self):
        return ("conflictingfile", "file")
