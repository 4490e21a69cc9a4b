"""The cinder driver: images as Cinder volumes (see :mod:`.driver`).

- :mod:`.options`: glance_store's options, and multistore's few own;
- :mod:`.client`: one store's session, identity and calls to the Cinder API;
- :mod:`.connectors`: the data path, one small interface per transport
  (os-brick's RBD connector built in);
- :mod:`.driver`: locations, add, get, delete, leftovers.
"""

from multistore.drivers.cinder.driver import CinderDriver, CinderLocation
from multistore.drivers.cinder.options import OPTIONS

__all__ = ["CinderDriver", "CinderLocation", "OPTIONS"]
