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

import copy
import functools
import logging
import os
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
KiB = 1024
#: Two stand-in ids, alike in shape, unlike in every character: the URL
#: prefix of a store is what their locations have in common.
_PROBE_IDS = ("00000000-0000-4000-8000-000000000000", "ffffffff-ffff-4fff-bfff-ffffffffffff")


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


def _glance_core_opts() -> list[cfg.Opt]:
    opts = []
    for opt in config.CORE_OPTS:
        if opt.dest in ("stream_chunk_size", "stream_buffers"):
            opt = copy.deepcopy(opt)
            opt.default = {"stream_chunk_size": 256 * KiB, "stream_buffers": 2}[opt.dest]
            opts.append(opt)
    return opts


#: The core's buffer options in Glance's ``[glance_store]``, with defaults
#: for Glance: 256 KiB reads, two buffers. Glance's request path (gunicorn's
#: body reader, webob, the format inspector, CooperativeReader,
#: LimitingReader) copies each read a few times, so the worker's memory
#: grows with the size of the reads, and its CPU with their number. Through
#: Glance 33 (1 GiB, 3 rounds; benchmarks/README.md), what one upload added
#: to the worker's RSS, glance_store's drivers / multistore's: 256 KiB reads
#: 5 / 6 MiB (file) and 43 / 39 (rbd), 1 MiB reads 5 / 11 and 48 / 58; the
#: uploads ran 1.83-1.92x glance_store's speed (file) and 1.57-1.61x (rbd),
#: against 2.21x and 1.62x with 1 MiB reads. Two buffers are as fast as four
#: there. A driver that asks for larger buffers (``write_chunk_size``: rbd's
#: objects) gets them, filled by reads of ``stream_chunk_size``.
GLANCE_CORE_OPTS = _glance_core_opts()

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
            core = self._core_conf()
        except errors.MultistoreError as exc:
            raise gs_exc.BadStoreConfiguration(store_name=group, reason=str(exc)) from exc
        except Exception as exc:
            raise gs_exc.BadStoreConfiguration(
                store_name=group, reason=f"{type(exc).__name__}: {redact(str(exc))}") from exc
        if self._stores is not None:
            self._stores.close()
        self._stores = StoreSet(core, [MultistoreStore(spec, driver, store_conf)], group)
        self._url_prefix = self._prefix(driver)

    def _core_conf(self) -> cfg.ConfigOpts:
        """The core's own settings: its defaults, but for the buffers, which
        are read from ``[glance_store]`` of Glance's configuration
        (``stream_chunk_size``, ``stream_buffers``: :data:`GLANCE_CORE_OPTS`).
        Only those two are registered there: glance_store has options of
        the core's other names (``stores``, ``default_store``)."""
        self.conf.register_opts(GLANCE_CORE_OPTS, group=config.CORE_GROUP)
        core = cfg.ConfigOpts()
        config.register_opts(core)
        core([], project="multistore", default_config_files=[], default_config_dirs=[])
        for opt in GLANCE_CORE_OPTS:
            core.set_override(opt.dest, self.conf[config.CORE_GROUP][opt.dest],
                              group=config.CORE_GROUP)
        return core

    @staticmethod
    def _prefix(driver: Driver[Any]) -> str:
        """Where every URL of this store starts: Glance gives a location
        recorded without a store id to the store whose ``url_prefix`` it
        starts with. What the locations of two unlike ids share, so a part
        that depends on the id (swift's container per id prefix) is left
        out: ``file:///var/lib/glance/images/``, ``rbd://<fsid>/<pool>/``,
        ``swift+config://<ref>/<container>``. glance_store's file driver
        leaves the last ``/`` out, which also matches ``images2/...``.
        Drivers that place no images (http), or whose backend does not
        answer now, get what their schemes share (``http``, as glance_store).
        A driver whose locations are not made from the image id (cinder's
        name a volume) says it itself, with ``url_prefix()``."""
        own = getattr(driver, "url_prefix", None)
        if callable(own):
            return str(own())
        try:
            urls = [driver.location_for(i).format() for i in _PROBE_IDS]
        except Exception as exc:  # noqa: BLE001 - the prefix falls back
            if not isinstance(exc, NotImplementedError):
                LOG.warning("store %s: where its images go is not known (%s): "
                            "its URL prefix is the scheme's", driver.store_id,
                            redact(str(exc)))
            return os.path.commonprefix(list(driver.schemes))
        return os.path.commonprefix(urls)

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
                                     checksum=_recorded_checksum(context, image_id),
                                     context=context)
        except (errors.BackendUnavailable, errors.NotFound) as exc:
            # On uploads Glance answers 503 only for these (Remote-
            # ServiceUnavailable would be a 500), and it takes NotFound for
            # "the image was deleted during the upload": it answers 410 and
            # leaves the image 'saving' for good. A store that did not answer,
            # or whose place for images is gone (a data directory, a pool, a
            # container), cannot take the image now: 503, and the image goes
            # back to 'queued', ready for another upload.
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


def _recorded_checksum(context: Any, image_id: str) -> str | None:
    """The md5 Glance has recorded for the image, if it has one: an active
    image being copied to another store (copy-image). The add then refuses
    data that differs before the store keeps any of it; Glance itself
    compares the checksums only after the store has kept the data, and
    leaves that copy behind in the store when they differ. ``None`` when
    there is no record yet (an upload, an import) or it cannot be read
    (outside Glance, another database API): Glance's own check still runs."""
    if context is None:
        return None
    try:
        from glance import db as glance_db  # type: ignore[import-not-found]
        checksum = glance_db.get_api().image_get(context, image_id).get("checksum")
    except Exception as exc:  # noqa: BLE001 - only an extra check is lost
        LOG.debug("no recorded checksum for image %s: %s", image_id, exc)
        return None
    return checksum if isinstance(checksum, str) and checksum else None


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
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def __del__(self) -> None:
        # Glance wraps the iterator in generators that do not pass close()
        # on: a download the client abandons ends here.
        try:
            self.close()
        except Exception:
            LOG.debug("closing an abandoned read failed", exc_info=True)


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
