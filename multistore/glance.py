"""multistore's drivers inside OpenStack Glance, through glance_store's driver interface.

glance_store loads third-party drivers from the stevedore namespace
``glance_store.drivers``; multistore registers one there per driver, named
``multistore_<type>``. An operator switches a store to multistore by
changing its type, nothing else::

    [DEFAULT]
    enabled_backends = fast:multistore_rbd, cheap:rbd, shared:multistore_file

The store keeps its group, its options and its URLs (``file://``,
``rbd://fsid/pool/id/snap``, ``swift+config://``...): images written by
glance_store's driver are read and deleted by multistore's and the other
way round, so the switch can be made, and undone, on a running database.

Inside, glance_store's calls go to multistore's core: one write path with
md5 and the multihash computed in parallel threads, size checks, the
signature verifier, and cleanup of anything partial on failure. This module
is imported only by glance_store (inside Glance); nothing else in
multistore depends on glance_store.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from glance_store import capabilities as gs_caps  # type: ignore[import-not-found]
from glance_store import driver as gs_driver  # type: ignore[import-not-found]
from glance_store import exceptions as gs_exc  # type: ignore[import-not-found]
from glance_store import location as gs_location  # type: ignore[import-not-found]
from oslo_config import cfg

from multistore import config, errors
from multistore.driver import Driver
from multistore.location import redact
from multistore.registry import Registry
from multistore.store import Store as MultistoreStore
from multistore.storeset import StoreSet

LOG = logging.getLogger(__name__)
#: The stand-in id used to find where a store puts its images (its URL prefix).
_PROBE_ID = "multistore-url-prefix-probe"


class StoreLocation(gs_location.StoreLocation):  # type: ignore[misc]
    """glance_store's location object: it only carries the URL. multistore's
    typed location of the store parses (and refuses) it, in the store."""

    url: str | None = None

    def process_specs(self) -> None:
        self.url = self.specs.get("url")

    def parse_uri(self, uri: str) -> None:
        self.url = uri

    def get_uri(self) -> str | None:
        return self.url

    def __repr__(self) -> str:
        return f"<StoreLocation {redact(self.url or '')!r}>"


#: glance_store's exception for each of ours, most specific first: what
#: Glance's API turns into a status (BackendUnavailable: 503 on reads).
_GLANCE_ERRORS: list[tuple[type[errors.MultistoreError], Callable[[str], Exception]]] = [
    (errors.NotFound, lambda m: gs_exc.NotFound(message=m)),
    (errors.Duplicate, lambda m: gs_exc.Duplicate(message=m)),
    (errors.StorageFull, lambda m: gs_exc.StorageFull(message=m)),
    (errors.WriteDenied, lambda m: gs_exc.StorageWriteDenied(message=m)),
    (errors.BadLocation, lambda m: gs_exc.BadStoreUri(message=m)),
    (errors.InUse, lambda m: gs_exc.InUseByStore(message=m)),
    (errors.DataMismatch, lambda m: gs_exc.Invalid(message=m)),
    (errors.RangeNotSupported,
     lambda m: gs_exc.StoreRandomGetNotSupported(offset=0, chunk_size=None)),
    (errors.AddNotSupported, lambda m: gs_exc.StoreAddDisabled(message=m)),
    (errors.DeleteNotSupported, lambda m: gs_exc.StoreDeleteNotSupported(message=m)),
    (errors.BackendUnavailable, lambda m: gs_exc.RemoteServiceUnavailable(message=m)),
    (errors.ConfigError, lambda m: gs_exc.BadStoreConfiguration(store_name="?", reason=m)),
]


def _glance_error(exc: errors.MultistoreError) -> Exception:
    """glance_store's exception for one of ours."""
    for ours, theirs in _GLANCE_ERRORS:
        if isinstance(exc, ours):
            return theirs(str(exc))
    return gs_exc.BackendException(str(exc))


def _translated(method: Callable[..., Any]) -> Callable[..., Any]:
    """Raise glance_store's exceptions for multistore's."""
    @functools.wraps(method)
    def wrapper(self: GlanceStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except errors.MultistoreError as exc:
            raise _glance_error(exc) from exc
    return wrapper


class GlanceStore(gs_driver.Store):  # type: ignore[misc]
    """A glance_store driver whose work is done by one multistore driver."""

    #: The multistore driver type, and the glance_store entry point name.
    driver_type: ClassVar[str]
    entry_name: ClassVar[str]
    driver_class: ClassVar[type[Driver[Any]]]

    def __init__(self, conf: cfg.ConfigOpts, backend: str | None = None) -> None:
        super().__init__(conf, backend=backend)
        self._stores: StoreSet | None = None

    def get_schemes(self) -> tuple[str, ...]:
        # glance_store finds a backend's driver by its type's name among its
        # schemes; the driver's URL schemes follow.
        return (self.entry_name, *self.driver_class.schemes)

    def get_store_location_class(self) -> type[StoreLocation]:
        return StoreLocation

    def configure_add(self) -> None:
        """Build the multistore store from this backend's group."""
        group = self.backend_group or config.CORE_GROUP
        spec = config.StoreSpec(group, self.driver_type, group)
        try:
            store_conf = config.StoreConf(self.conf, spec, self.driver_class.options,
                                          self.driver_class.option_defaults(group, False),
                                          shared_with_others=True)
            store_conf.check()
            driver = self.driver_class(group, store_conf)
            driver.configure()
        except errors.MultistoreError as exc:
            raise gs_exc.BadStoreConfiguration(store_name=group, reason=str(exc)) from exc
        except Exception as exc:
            raise gs_exc.BadStoreConfiguration(
                store_name=group, reason=f"{type(exc).__name__}: {redact(str(exc))}") from exc
        # The core's own settings (buffer sizes) keep their defaults: they
        # are not glance_store's options, and Glance's CONF must not get them.
        core = cfg.ConfigOpts()
        config.register_opts(core)
        core([], project="multistore", default_config_files=[])
        if self._stores is not None:
            self._stores.close()
        self._stores = StoreSet(core, [MultistoreStore(spec, driver, store_conf)], group)
        self._url_prefix = self._prefix(driver)

    @staticmethod
    def _prefix(driver: Driver[Any]) -> str:
        """Where this store's URLs start (Glance matches locations to stores by it).
        A driver whose locations are not made from the image id (cinder's
        name a volume) says it itself, with ``url_prefix()``."""
        own = getattr(driver, "url_prefix", None)
        if callable(own):
            return str(own())
        try:
            probe = driver.location_for(_PROBE_ID).format()
        except (errors.MultistoreError, NotImplementedError, OSError):
            return f"{driver.schemes[0]}://"
        return probe.split(_PROBE_ID, 1)[0]

    @property
    def stores(self) -> StoreSet:
        if self._stores is None:
            raise gs_exc.BadStoreConfiguration(store_name=self.backend_group or "?",
                                               reason="the store is not configured")
        return self._stores

    @property
    def store_id(self) -> str:
        return self.stores.default

    @gs_driver.back_compat_add  # type: ignore[untyped-decorator]
    @gs_caps.check  # type: ignore[untyped-decorator]
    @_translated
    def add(self, image_id: str, image_file: Any, image_size: int, hashing_algo: str,
            context: Any = None, verifier: Any = None) -> tuple[str, int, str, str, dict]:
        try:
            result = self.stores.add(image_id, image_file, image_size or None,
                                     hashing_algo=hashing_algo, verifier=verifier,
                                     context=context)
        except errors.BackendUnavailable as exc:
            # On uploads Glance answers 503 only for these (RemoteService-
            # Unavailable would be a 500): the store did not answer in time.
            raise gs_exc.TimeoutError(message=str(exc)) from exc
        metadata = dict(result.metadata)
        metadata["store"] = self.backend_group or metadata.get("store")
        return result.location, result.size, result.checksum, result.multihash, metadata

    @gs_caps.check  # type: ignore[untyped-decorator]
    @_translated
    def get(self, location: Any, offset: int = 0, chunk_size: int | None = None,
            context: Any = None) -> tuple[Iterator[bytes], int | None]:
        reader = self.stores.get(location.get_store_uri(), store=self.store_id,
                                 offset=offset or 0, length=chunk_size, context=context)
        return _Chunks(reader), reader.size

    @_translated
    def get_size(self, location: Any, context: Any = None) -> int:
        return self.stores.get_size(location.get_store_uri(), store=self.store_id,
                                    context=context)

    @gs_caps.check  # type: ignore[untyped-decorator]
    @_translated
    def delete(self, location: Any, context: Any = None) -> None:
        self.stores.delete(location.get_store_uri(), store=self.store_id, context=context)

    def is_image_associated_with_store(self, context: Any, volume_id: str) -> bool:
        """Glance's question for a legacy ``cinder://<volume id>`` location:
        is that volume this store's? (cinder: of its volume type)"""
        check = getattr(self.stores[self.store_id].driver, "associated", None)
        return bool(check is not None and check(volume_id, context))

    @_translated
    def set_acls(self, location: Any, public: bool = False, read_tenants: Any = None,
                 write_tenants: Any = None, context: Any = None) -> None:
        try:
            self.stores.set_acls(location.get_store_uri(), public=public,
                                 read_tenants=read_tenants or (),
                                 write_tenants=write_tenants or (),
                                 store=self.store_id, context=context)
        except errors.NotSupported:
            raise NotImplementedError from None   # what glance_store's callers expect


class _Chunks:
    """The bytes of a read, for Glance: an iterator that closes the read when
    exhausted, closed, or collected; errors become glance_store's."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._chunks = iter(reader)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise
        except errors.MultistoreError as exc:
            self.close()
            raise _glance_error(exc) from exc

    def close(self) -> None:
        self._reader.close()


def _capabilities(driver_class: type[Driver[Any]]) -> int:
    """glance_store's capability bits for a driver's declared capabilities."""
    caps = driver_class.capabilities
    bits = int(gs_caps.BitMasks.DRIVER_REUSABLE)
    if caps.read:
        bits |= int(gs_caps.BitMasks.READ_RANDOM if caps.ranged_read
                    else gs_caps.BitMasks.READ_ACCESS)
    if caps.write:
        bits |= int(gs_caps.BitMasks.WRITE_ACCESS)
    return bits


def adapter(driver_type: str) -> type[GlanceStore]:
    """The glance_store driver class for one multistore driver type."""
    driver_class = Registry().load(driver_type)
    name = f"{driver_type.capitalize()}Store"
    return type(name, (GlanceStore,), {
        "_CAPABILITIES": _capabilities(driver_class),
        "driver_type": driver_type,
        "entry_name": f"multistore_{driver_type}",
        "driver_class": driver_class,
        # Empty: glance_store registers a type's OPTIONS in every group whose
        # type is a *substring* of the entry point's name ('file' in
        # 'multistore_file'), which would clash with its own drivers'.
        # multistore registers its options itself, per store (configure_add).
        "OPTIONS": [],
        "__module__": __name__,
        "__doc__": f"glance_store's interface to multistore's {driver_type} driver.",
    })


def __getattr__(name: str) -> type[GlanceStore]:
    """``multistore.glance:RbdStore`` and the like, built on first use, so that
    loading one store imports only its own driver."""
    if name.endswith("Store") and name not in ("GlanceStore", "StoreLocation"):
        cls = adapter(name[:-len("Store")].lower())
        globals()[name] = cls
        return cls
    raise AttributeError(name)


__all__ = ["GlanceStore", "StoreLocation", "adapter"]
