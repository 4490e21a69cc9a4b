"""Images as RBD images in a Ceph pool, as glance_store writes them.

Locations are ``rbd://<fsid>/<pool>/<image>/snap`` (each part quoted); the
legacy ``rbd://<image>`` (pool from the configuration, the image head) is
read too. An image is written under a temporary name that no image id can
take (``multistore-partial\\<random>\\<id>``: ids never hold a backslash),
trimmed to its size, snapshotted as ``snap`` with the snapshot protected (so
that compute and volume services can clone it copy-on-write), then renamed
to its id: no location can name a half-written image, and no partial image
ever blocks its id.

Each store keeps one cluster connection (and one pool context), opened on
first use and shared by every call and thread. Connection and operation
timeouts come from ``rados_connect_timeout``: a dead cluster gives
BackendUnavailable, never a hang, and the next operation connects afresh
(a session that lost a restarted daemon never finds it again). A full pool
(Ceph's full ratio, a pool quota) refuses writes at once: StorageFull, not a
write waiting for room until it times out (librados' FULL_TRY). If the
cluster goes away during an add, the partial image cannot be removed at
once; the store remembers it and removes it at its next operation once the
cluster answers again. Partial images of writers that died (``kill -9``) are
found by :meth:`RbdDriver.find_leftovers`: a live writer holds its image
open, so the image has a watcher on the OSDs; a dead writer's watch expires
(``osd_client_watch_timeout``, 30 s by default).

Ceph's Python bindings (``rados``, ``rbd``) come from Debian's
python3-rados/python3-rbd; ``scripts/deps/rbd.sh --link-python`` makes them
importable from a virtual environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import importlib
import logging
import math
import os
import secrets
import threading
import time
import unicodedata
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any

from oslo_config import cfg

from multistore import errors
from multistore.context import Context
from multistore.driver import Capabilities, Driver, Leftover, ReadStream, Stored, Writer
from multistore.location import Location, image_id_problem, quote, split_url, unquote
from multistore.retry import RetryPolicy

LOG = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
SNAPSHOT = "snap"
#: Names of images being written: ``PARTIAL_PREFIX<random>\\<image id>``.
PARTIAL_PREFIX = "multistore-partial\\"
#: Timeout (seconds) of connecting and of every cluster operation when
#: ``rados_connect_timeout`` is 0 or negative (glance_store: "no timeout").
#: Ceph's own client_mount_timeout default; long, but never forever.
DEFAULT_TIMEOUT = 300
#: Reads go in pieces of READ_PIECE bytes (never across an object), READ_DEPTH
#: of them in flight: 8 x 1 MiB read 1.9-2.0 GB/s here with ~90 MiB peak RSS,
#: where 2 x 8 MiB read 1.2-1.4 GB/s with ~250 MiB (fresh 8 MiB buffers cost
#: page faults; small ones are reused by the allocator).
READ_PIECE = 1 * MiB
READ_DEPTH = 8
#: Removing a partial image an abort left is tried again at each operation
#: of the store while the cluster answers "busy" or not at all; after
#: ``attempts`` such failures the store opens a new session (see _renew_session).
RENEWAL = RetryPolicy(attempts=3, retryable=lambda exc: isinstance(
    exc, (errors.InUse, errors.BackendUnavailable)))
RENEW_AFTER = RENEWAL.attempts
#: An image of unknown size grows by its current size, at least this much ...
MIN_GROWTH = 1 * GiB
#: ... and at most this much at a time (glance_store's cap).
MAX_GROWTH = 8 * GiB
#: errno values meaning "the cluster did not answer".
_UNAVAILABLE_ERRNOS = {110, 108, 111, 113, 104, 107}   # ETIMEDOUT ESHUTDOWN ECONNREFUSED ...

INSTALL_HINT = ("apt-get install python3-rados python3-rbd, then "
                "scripts/deps/rbd.sh --link-python <venv python>")

OPTIONS = [
    cfg.IntOpt("rbd_store_chunk_size", default=8, min=1,
               help="RBD object size in MiB, a power of two (others are "
                    "rounded down to one); also the size images are "
                    "written and read in."),
    cfg.StrOpt("rbd_store_pool", default="images",
               help="Ceph pool images are stored in."),
    cfg.StrOpt("rbd_store_user",
               help="Ceph (cephx) user to connect as, without ``client.``; "
                    "unset: librados' default (admin). Its keyring is found "
                    "through the ceph.conf ``keyring`` setting."),
    cfg.StrOpt("rbd_store_ceph_conf", default="",
               help="Path of the ceph.conf of the cluster; empty: librados' "
                    "search ($CEPH_CONF, /etc/ceph/ceph.conf, ...). Two "
                    "stores with two files reach two clusters."),
    cfg.IntOpt("rados_connect_timeout", default=-1,
               help="Seconds allowed for connecting to the cluster and for "
                    "each cluster operation (client_mount_timeout, "
                    "rados_mon_op_timeout, rados_osd_op_timeout). 0 or "
                    f"negative: glance_store's 'no timeout'; multistore "
                    f"still gives up after {DEFAULT_TIMEOUT} s, so a dead "
                    "cluster never hangs a caller forever."),
    cfg.BoolOpt("rbd_thin_provisioning", default=False,
                help="Do not write all-zero chunks: they read back as zeros "
                     "and take no space."),
]


def _bindings() -> tuple[Any, Any]:
    try:
        return importlib.import_module("rados"), importlib.import_module("rbd")
    except ImportError as exc:
        raise errors.ConfigError(
            f"Ceph's Python bindings cannot be imported ({exc}): {INSTALL_HINT}") from exc


@dataclasses.dataclass(frozen=True)
class RbdLocation(Location):
    """``rbd://<fsid>/<pool>/<image>/<snapshot>``, each part quoted, or the
    legacy ``rbd://<image>`` (fsid, pool and snapshot None: the image head
    in the store's pool).

    Parts are split on ``/`` and unquoted as glance_store does (the legacy
    form is unquoted too, which changes nothing for the UUIDs glance wrote).
    Parts holding control characters are refused (librbd would cut a name
    at an encoded NUL), and so are image names that are no image id
    (:func:`~multistore.location.image_id_problem`): no location names what
    an add could not have made, partial images included (their names hold a
    backslash).
    """

    fsid: str | None
    pool: str | None
    image_id: str
    snapshot: str | None

    @classmethod
    def parse(cls, url: str) -> RbdLocation:
        split_url(url, ("rbd",))          # a string, the scheme, no raw control characters
        pieces = [unquote(p) for p in url.partition("://")[2].split("/")]
        if len(pieces) not in (1, 4) or not all(pieces):
            raise ValueError("an rbd location is rbd://<fsid>/<pool>/<image>/<snapshot> "
                             "or rbd://<image>, no part empty")
        if any(unicodedata.category(c) == "Cc" for p in pieces for c in p):
            raise ValueError("control characters in a part")
        if len(pieces) == 1:
            fsid, pool, image, snapshot = None, None, pieces[0], None
        else:
            fsid, pool, image, snapshot = pieces
        why = image_id_problem(image)
        if why:   # partial images' names hold a backslash, so no location names one
            raise ValueError(f"not an image id: {why}")
        return cls(fsid, pool, image, snapshot)

    def format(self) -> str:
        if self.fsid is None:
            return "rbd://" + quote(self.image_id)
        return "rbd://" + "/".join(quote(p or "") for p in (self.fsid, self.pool,
                                                             self.image_id, self.snapshot))


def partial_name(image_id: str) -> str:
    """A fresh temporary name for an image being written."""
    return f"{PARTIAL_PREFIX}{secrets.token_hex(8)}\\{image_id}"


class RbdDriver(Driver[RbdLocation]):
    schemes = ("rbd",)
    location_type = RbdLocation
    capabilities = Capabilities(read=True, ranged_read=True, write=True, delete=True)
    options = OPTIONS

    # -- configuration ---------------------------------------------------

    def configure(self) -> None:
        c = self.conf
        self.rados, self.rbd = _bindings()
        chunk_mib = c.rbd_store_chunk_size
        self.order = int(math.log2(chunk_mib * MiB))
        self.object_size = 1 << self.order
        self.write_chunk_size = self.object_size
        self.pool = c.rbd_store_pool
        if not self.pool:
            raise errors.ConfigError("must name a pool", option="rbd_store_pool")
        self.user = c.rbd_store_user or None
        self.ceph_conf = c.rbd_store_ceph_conf or ""
        self.thin = c.rbd_thin_provisioning
        timeout = c.rados_connect_timeout
        self.timeout = timeout if timeout > 0 else DEFAULT_TIMEOUT
        self.fsid: str | None = None
        self.features = self.rbd.RBD_FEATURE_LAYERING
        self._conf_read = False
        if self.ceph_conf and not os.path.exists(self.ceph_conf):
            # Loading needs no cluster, nor its client files yet (they may be
            # provisioned after the service starts): the first use says it.
            LOG.warning("store %s: rbd_store_ceph_conf %s does not exist (yet)",
                        self.store_id, self.ceph_conf)
        else:
            self._read_conf()
        self._lock = threading.Lock()
        self._cluster: Any = None
        self._ioctx: Any = None
        # Partial images an abort could not remove (with the writer whose
        # image handle is still open, if any): removed at the next operation.
        self._pending: dict[str, _RbdWriter | None] = {}
        # Sessions replaced by _renew_session, shut down at close().
        self._dead: list[Any] = []
        self._cleanup_failures = 0
        # Readers still open: closed before the connection, which they use.
        self._readers: weakref.WeakSet[_Reader] = weakref.WeakSet()

    def _read_conf(self) -> None:
        """Read the fsid (for holds()) and the default features from the
        configuration file; needs no connection, proves the file parses."""
        handle = self._handle()
        try:
            fsid = handle.conf_get("fsid") or ""
            features = handle.conf_get("rbd_default_features")
        finally:
            handle.shutdown()
        if fsid.strip("0-"):
            self.fsid = fsid
        try:
            self.features = int(features or 0) | self.rbd.RBD_FEATURE_LAYERING
        except ValueError:   # a feature list such as "layering,exclusive-lock"
            self.features = self.rbd.RBD_FEATURE_LAYERING
        self._conf_read = True

    def _handle(self) -> Any:
        """A new, unconnected librados handle with this store's settings."""
        t = str(self.timeout)
        settings = {"client_mount_timeout": t, "rados_mon_op_timeout": t,
                    "rados_osd_op_timeout": t,
                    # Whole images streamed in object-sized pieces gain nothing
                    # from librbd's cache; without it writes go 1.5-2x faster.
                    "rbd_cache": "false",
                    # librbd sends from the writer's buffer instead of copying
                    # each object first: the writer waits for each write, so
                    # the core never refills a buffer librbd still reads.
                    "rbd_disable_zero_copy_writes": "false"}
        try:
            handle = self.rados.Rados(rados_id=self.user, conf=settings)
            if self.ceph_conf:
                handle.conf_read_file(self.ceph_conf)
            else:
                handle.conf_read_file()
            for key, value in settings.items():  # the file must not override them
                handle.conf_set(key, value)
        except self.rados.Error as exc:
            raise errors.ConfigError(
                f"cannot read the Ceph configuration {self.ceph_conf or '(default search)'}:"
                f" {exc}", option="rbd_store_ceph_conf") from exc
        return handle

    def properties(self) -> dict[str, Any]:
        fsid = self.fsid
        if fsid is None:
            try:
                fsid = self._cluster_fsid()
            except errors.MultistoreError:
                fsid = None
        return {"pool": self.pool,
                "chunk_size": self.object_size // MiB,
                "object_size": self.object_size,
                "thin_provisioning": self.thin,
                "fsid": fsid,
                "user": self.user,
                "ceph_conf": self.ceph_conf or None}

    def _cluster_fsid(self) -> str:
        self._pool_ctx()
        return self._cluster.get_fsid()

    def translate_error(self, exc: Exception,
                        what: str | None = None) -> errors.MultistoreError | None:
        """A Ceph exception as the library's error (``what`` prefixes the message)."""
        r, b = self.rados, self.rbd
        if not isinstance(exc, (r.Error, b.Error)):
            return None
        text = f"{what}: {exc}" if what else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, (b.ImageNotFound, r.ObjectNotFound)):
            return errors.NotFound(text)
        if isinstance(exc, (b.ImageExists, r.ObjectExists)):
            return errors.Duplicate(text)
        if isinstance(exc, (b.ImageBusy, r.ObjectBusy)):
            return errors.InUse(text)
        if isinstance(exc, (b.NoSpace, r.NoSpace, b.DiskQuotaExceeded)):
            return errors.StorageFull(text)
        if isinstance(exc, (b.PermissionError, r.PermissionError, r.PermissionDeniedError)):
            return errors.WriteDenied(text)
        if isinstance(exc, (b.Timeout, r.TimedOut, b.ConnectionShutdown,
                            r.ConnectionShutdown)) or \
                getattr(exc, "errno", None) in _UNAVAILABLE_ERRNOS:
            self._session_timed_out()
            return errors.BackendUnavailable(
                f"{text} (the Ceph cluster did not answer within {self.timeout} s)")
        return errors.MultistoreError(text)

    # -- the connection --------------------------------------------------

    def _pool_ctx(self) -> Any:
        """The store's pool context on its one connection, connecting if needed."""
        ioctx = self._ioctx
        if ioctx is not None:
            return ioctx
        with self._lock:
            if self._ioctx is not None:
                return self._ioctx
            if not self._conf_read:
                self._read_conf()
            handle = self._handle()
            try:
                handle.connect()
                ioctx = handle.open_ioctx(self.pool)
            except self.rados.ObjectNotFound as exc:
                handle.shutdown()
                raise errors.ConfigError(f"the pool {self.pool!r} does not exist",
                                         option="rbd_store_pool") from exc
            except self.rados.Error as exc:
                handle.shutdown()
                # (self._ioctx is None here: translate_error renews nothing.)
                what = (f"cannot connect to the Ceph cluster as client.{self.user or 'admin'}"
                        f" (mon host and keyring from {self.ceph_conf or 'the default ceph.conf'})")
                raise self.translate_error(exc, what) or errors.MultistoreError(what) from exc
            if self.fsid is None:
                self.fsid = handle.get_fsid()
            # A write to a full pool (Ceph's full ratio, a pool quota) fails
            # at once with ENOSPC/EDQUOT (StorageFull) instead of waiting
            # in librados until the pool has room again, which would end as a
            # timeout (BackendUnavailable) after rados_connect_timeout: this
            # is librados' FULL_TRY, as ``rbd rm`` uses it. Deletes, which
            # free room, go through on a full pool too.
            ioctx.set_osdmap_full_try()
            self._cluster, self._ioctx = handle, ioctx
            return ioctx

    def pool_context(self) -> Any:
        """The pool context, after removing partial images failed adds left."""
        ioctx = self._pool_ctx()
        if self._pending:
            self._remove_pending(ioctx)
        return ioctx

    def _renew_session(self, ioctx: Any, why: str = "to remove partial images") -> None:
        """Connect afresh at the next operation (the current handle is kept,
        for calls still using it, and shut down at close()).

        After the cluster has been away mid-write, the old session can stay
        unable to remove the partial image for good (librbd answers "busy",
        or ESHUTDOWN on opening it), while a new session removes it at once.
        """
        if ioctx is None:       # nothing to renew (and maybe called under the lock)
            return
        with self._lock:
            if self._ioctx is not ioctx:
                return
            self._dead.append((self._ioctx, self._cluster))
            self._ioctx = self._cluster = None
        LOG.warning("store %s: renewing the Ceph session %s", self.store_id, why)

    def _session_timed_out(self) -> None:
        """An operation timed out: the next one connects afresh.

        A session that lost its OSD stays lost when the OSD comes back under
        a new address (a restarted daemon): librados keeps reconnecting to
        the old one, which refuses it, and asks the mon for a newer map only
        when a connection is refused or reset, so every later operation
        times out, for good (measured: no recovery in 570 s after the OSD,
        or the mon, was killed and restarted). A new session reads the
        current maps; while the cluster is down, connecting fails within the
        same timeout.
        """
        self._renew_session(self._ioctx, "after a timeout")

    def close(self) -> None:
        for reader in list(self._readers):
            reader.close()
        with self._lock:
            ioctx, cluster = self._ioctx, self._cluster
            self._ioctx = self._cluster = None
            dead, self._dead = self._dead, []
        if ioctx is not None:
            if self._pending:
                self._remove_pending(ioctx)
            ioctx.close()
        if cluster is not None:
            cluster.shutdown()
        for old_ioctx, old_cluster in dead:
            with contextlib.suppress(Exception):
                old_ioctx.close()
                old_cluster.shutdown()

    # -- locations ---------------------------------------------------------

    def holds(self, location: RbdLocation) -> bool:
        if location.fsid is None:   # legacy rbd://<image>: any rbd store could hold it
            return True
        return location.pool == self.pool and self.fsid in (None, location.fsid)

    def location_for(self, image_id: str, context: Context = None) -> RbdLocation:
        return RbdLocation(self.fsid or self._cluster_fsid(), self.pool, image_id, SNAPSHOT)

    def _ready_for(self, location: RbdLocation) -> Any:
        """The pool context for ``location``, once its cluster is known to be ours
        (holds() accepts any fsid while ceph.conf names none and nothing is connected)."""
        ioctx = self.pool_context()
        if location.fsid is not None and location.fsid != self.fsid:
            raise errors.BadLocation(f"{location} is in cluster {location.fsid}, this "
                                     f"store's cluster is {self.fsid}")
        return ioctx

    def _open(self, location: RbdLocation) -> Any:
        ioctx = self._ready_for(location)
        try:
            return self.rbd.Image(ioctx, location.image_id, snapshot=location.snapshot,
                                  read_only=True)
        except self.rbd.ImageNotFound:
            raise errors.NotFound(f"no image {location.image_id!r}" + (
                f" with a snapshot {location.snapshot!r}" if location.snapshot else "")
                + f" in pool {self.pool!r}") from None

    # -- writing ---------------------------------------------------------

    def open_writer(self, image_id: str, size: int | None, context: Context = None) -> Writer:
        ioctx = self.pool_context()
        try:
            ioctx.stat(f"rbd_id.{image_id}")
        except self.rados.ObjectNotFound:
            return _RbdWriter(self, ioctx, image_id, size)
        raise errors.Duplicate(f"image {image_id!r} already exists in pool {self.pool!r}")

    # -- copies inside the cluster -------------------------------------------

    def copy_within(self, source: Driver[Any], location: Location, image_id: str,
                    context: Context = None) -> Stored | None:
        """Another rbd store's image in the same cluster (same fsid; this pool
        or another): librbd copies it (``Image.copy``, object by object inside
        this process's librbd, never through Python) into a partial image in
        this store's pool, committed as a writer commits (snapshot ``snap``,
        protected, renamed to the id). ``None`` for another cluster."""
        if not isinstance(source, RbdDriver) or not isinstance(location, RbdLocation):
            return None
        ioctx = self.pool_context()
        if source._cluster_fsid() != self._cluster_fsid():
            return None
        try:
            ioctx.stat(f"rbd_id.{image_id}")
        except self.rados.ObjectNotFound:
            pass
        else:
            raise errors.Duplicate(f"image {image_id!r} already exists in pool {self.pool!r}")
        name = partial_name(image_id)
        image = source._open(location)
        try:
            size = int(image.size())
            try:
                image.copy(ioctx, name, features=self.features, order=self.order)
            except BaseException:
                self._remove_failed_copy(ioctx, name)
                raise
        finally:
            image.close()
        writer = _RbdWriter(self, ioctx, image_id, size, name=name)
        try:
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def _remove_failed_copy(self, ioctx: Any, name: str) -> None:
        """Remove what a failed librbd copy left (if it created anything)."""
        try:
            self.remove_partial(ioctx, name)
        except errors.NotFound:
            pass
        except Exception as exc:   # noqa: BLE001 - removed at the next operation
            LOG.warning("store %s: cannot remove partial copy %r now (%s); it will be "
                        "removed at the store's next operation", self.store_id, name, exc)
            self.remove_later(name)

    # -- reading -----------------------------------------------------------

    def open_reader(self, location: RbdLocation, offset: int, length: int | None,
                    context: Context = None) -> ReadStream:
        image = self._open(location)
        try:
            total = image.size()
        except BaseException:
            image.close()
            raise
        start = min(offset, total)
        count = total - start if length is None else max(0, min(length, total - start))
        reader = _Reader(self, image, start, count)
        self._readers.add(reader)
        return ReadStream(reader.chunks(), count, reader.close)

    def get_size(self, location: RbdLocation, context: Context = None) -> int:
        image = self._open(location)
        try:
            return int(image.size())
        finally:
            image.close()

    # -- deleting ----------------------------------------------------------

    def delete(self, location: RbdLocation, context: Context = None) -> None:
        self._remove(self._ready_for(location), location.image_id, location.snapshot)

    def _remove(self, ioctx: Any, name: str, snap: str | None) -> None:
        """Remove snapshot ``snap`` (NotFound if the image has none of that
        name; InUse if it has clones), then the image, unless the store's own
        snapshot remains (another location names it). ``snap`` None (the
        image head) removes the store's own snapshot first, if it is there:
        its clones refuse the deletion too. An image that keeps snapshots
        someone else made goes to the RBD trash, as glance_store does; clones
        of those keep working."""
        b = self.rbd
        try:
            with b.Image(ioctx, name) as image:
                snaps = {s["name"] for s in image.list_snaps()}
                if snap is None and SNAPSHOT in snaps:
                    snap = SNAPSHOT
                if snap is not None:
                    if snap not in snaps:
                        raise errors.NotFound(f"image {name!r} has no snapshot {snap!r}; "
                                              "nothing was deleted")
                    image.set_snap(snap)
                    children = list(image.list_children())
                    image.set_snap(None)
                    if children:
                        shown = ", ".join(f"{p}/{c}" for p, c in children[:5])
                        raise errors.InUse(
                            f"image {name!r} has {len(children)} clone(s) of its snapshot "
                            f"{snap!r} ({shown}): flatten or delete them first; nothing "
                            "was deleted")
                    with contextlib.suppress(b.InvalidArgument):   # not protected
                        image.unprotect_snap(snap)
                    image.remove_snap(snap)
                    if snap != SNAPSHOT and SNAPSHOT in snaps:
                        return
            b.RBD().remove(ioctx, name)
        except b.ImageHasSnapshots:
            b.RBD().trash_move(ioctx, name, 0)
        except b.ImageNotFound:
            raise errors.NotFound(f"no image {name!r} in pool {self.pool!r}") from None
        except b.ImageBusy as exc:
            raise errors.InUse(f"image {name!r} is in use (its snapshot has clones or "
                               f"the image is open elsewhere): {exc}; nothing was "
                               "deleted") from exc

    def remove_partial(self, ioctx: Any, name: str) -> None:
        """Remove a partial image (and its snapshot, if commit got that far)."""
        if not name.startswith(PARTIAL_PREFIX):
            raise errors.BadLocation(f"{name!r} is not a partial image")
        self._remove(ioctx, name, None)

    def remove_later(self, name: str, writer: _RbdWriter | None = None) -> None:
        """Remember a partial image an abort could not remove, to remove it at
        the next operation (with the writer whose image is still open, if any)."""
        with self._lock:
            self._pending[name] = writer

    def _remove_pending(self, ioctx: Any) -> None:
        with self._lock:
            pending = sorted(self._pending.items())
        failures = 0
        for name, writer in pending:
            if writer is not None:
                if not writer.settle(self.timeout):
                    continue        # still stuck; try again next time
                writer.close_image()
                with self._lock:
                    self._pending[name] = None
            try:
                self.remove_partial(ioctx, name)
            except errors.NotFound:
                pass
            except Exception as exc:   # noqa: BLE001 - logged, tried again later
                error = exc if isinstance(exc, errors.MultistoreError) else \
                    self.translate_error(exc) or errors.MultistoreError(str(exc))
                LOG.warning("store %s: partial image %r still cannot be removed: %s",
                            self.store_id, name, error)
                failures += RENEWAL.retryable(error)
                continue
            LOG.info("store %s: removed partial image %r left by a failed add",
                     self.store_id, name)
            with self._lock:
                self._pending.pop(name, None)
        if failures:
            with self._lock:
                self._cleanup_failures += 1
                renew = self._cleanup_failures >= RENEWAL.attempts
                if renew:
                    self._cleanup_failures = 0
            if renew:
                self._renew_session(ioctx)

    # -- what killed writers left behind -----------------------------------

    def find_leftovers(self, grace: float, context: Context = None) -> list[Leftover]:
        """Partial images no live writer holds: no watcher on the OSDs (a
        writer keeps its image open until it commits or aborts; a dead one's
        watch expires) and neither created nor modified for ``grace`` seconds."""
        ioctx = self.pool_context()
        found = []
        for name in self.rbd.RBD().list(ioctx):
            if not name.startswith(PARTIAL_PREFIX):
                continue
            try:
                with self.rbd.Image(ioctx, name, read_only=True) as image:
                    age = time.time() - max(_seconds(image.create_timestamp()),
                                            _seconds(image.modify_timestamp()))
                    if age <= grace or list(image.watchers_list()):
                        continue
            except self.rbd.ImageNotFound:
                continue            # committed or removed meanwhile
            # Size unknown: the provisioned size overstates what a partial
            # image holds (an image of unknown size grows by 1 GiB and more
            # at a time), and librbd's diff_iterate aborts the process on
            # some images of killed writers (Pacific: object map size assert).
            found.append(Leftover(f"{self.pool}/{name}", None, age, name))
        return found

    def remove_leftover(self, leftover: Leftover, context: Context = None) -> None:
        ioctx = self.pool_context()
        name = leftover.handle
        try:
            with self.rbd.Image(ioctx, name, read_only=True) as image:
                if list(image.watchers_list()):
                    raise errors.InUse(f"partial image {name!r} is being written")
        except self.rbd.ImageNotFound:
            raise errors.NotFound(f"partial image {name!r} is gone") from None
        # librbd refuses to remove an image that has watchers: a writer that
        # opened it meanwhile keeps it.
        self.remove_partial(ioctx, name)


def _seconds(timestamp: datetime.datetime) -> float:
    """librbd's timestamps are naive datetimes in UTC."""
    return timestamp.replace(tzinfo=datetime.UTC).timestamp()


class _RbdWriter(Writer):
    """Writes a partial image, one object-sized aio write at a time, straight
    from the core's buffer; commit snapshots it and renames it to its id.

    librbd reads the buffer until the write completes (zero-copy writes), so
    ``write`` returns only then: the core fills its other buffers meanwhile,
    and never refills this one under librbd. A write that does not complete
    in time keeps its buffer referenced (``held``) until librbd is done with
    it. One write in flight from the core's buffers measured as fast as two
    copied ones, without the copies (an object's memory each, and a memcpy).
    """

    def __init__(self, driver: RbdDriver, ioctx: Any, image_id: str, size: int | None,
                 name: str | None = None) -> None:
        """``name``: adopt that partial image, already holding ``size`` bytes
        (a copy librbd made), instead of creating one: commit and abort then
        treat it as this writer's own."""
        self.driver = driver
        self.ioctx = ioctx
        self.image_id = image_id
        self.name = name or partial_name(image_id)
        self.capacity = size or 0
        self.offset = self.capacity if name else 0
        self.in_flight = 0
        #: What librbd is writing from, kept alive until the write completes.
        self.held: bytes | bytearray | None = None
        self.failure: BaseException | None = None
        #: The cluster did not answer within the timeout (a write's wait or
        #: an ETIMEDOUT completion): the add already waited for it once.
        self.timed_out = False
        self.cond = threading.Condition()
        self.zeros = bytes(driver.object_size)
        self.image: Any = None
        b = driver.rbd
        if name is None:
            b.RBD().create(ioctx, self.name, self.capacity, order=driver.order,
                           old_format=False, features=driver.features)
        self.created = True
        try:
            self.image = b.Image(ioctx, self.name)
        except BaseException:
            self.abort()
            raise

    def write(self, data: memoryview) -> None:
        n = len(data)
        if not n:
            return
        # ``data`` is only ours during the call, and the binding takes bytes
        # or a whole bytearray: pass the core's buffer when the view covers
        # it, copy only a short last piece.
        buf = data.obj if isinstance(data.obj, bytearray) and len(data.obj) == n \
            else bytes(data)
        if self.driver.thin and buf == (self.zeros if n == len(self.zeros) else bytes(n)):
            self.offset += n
            return
        self._raise_failure()
        end = self.offset + n
        if end > self.capacity:
            self._grow(end)
        with self.cond:
            if self.in_flight:      # an earlier write that timed out is still out
                raise self._stuck()
            self.in_flight, self.held = 1, buf
        try:
            self.image.aio_write(buf, self.offset, self._done)
        except BaseException:
            with self.cond:
                self.in_flight, self.held = 0, None
            raise
        if not self.settle():
            raise self._stuck()
        self._raise_failure()
        self.offset = end

    def _done(self, completion: Any) -> None:
        with self.cond:
            try:
                ret = completion.get_return_value()
                if ret < 0 and self.failure is None:
                    self.failure = _oserror(self.driver.rbd, -ret)
                if ret == -errno.ETIMEDOUT:
                    self.timed_out = True
            finally:
                self.in_flight -= 1
                if not self.in_flight:
                    self.held = None        # librbd is done reading it
                self.cond.notify_all()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _stuck(self) -> errors.BackendUnavailable:
        self.timed_out = True
        self.driver._session_timed_out()
        return errors.BackendUnavailable(
            f"writes to image {self.image_id!r} did not finish (the Ceph cluster did "
            f"not answer within {self.driver.timeout} s)")

    def settle(self, timeout: float | None = None) -> bool:
        """Wait for the writes in flight; False if some are still stuck after
        twice the operation timeout (librbd may hold writes back while it
        re-acquires the image lock from an unresponsive cluster)."""
        with self.cond:
            return self.cond.wait_for(
                lambda: not self.in_flight,
                timeout=2 * self.driver.timeout + 5 if timeout is None else timeout)

    def close_image(self) -> None:
        image, self.image = self.image, None
        if image is not None:
            try:
                image.close()
            except Exception:
                LOG.debug("closing image %r failed", self.name, exc_info=True)

    def _grow(self, needed: int) -> None:
        """Grow in large steps, never per chunk: doubling, 1 to 8 GiB at a time."""
        step = min(max(self.capacity, MIN_GROWTH), MAX_GROWTH)
        new = max(needed, self.capacity + step)
        new = -(-new // self.driver.object_size) * self.driver.object_size
        self.image.resize(new)
        self.capacity = new

    def commit(self) -> Stored:
        if not self.settle():
            raise self._stuck()
        self._raise_failure()
        if self.capacity != self.offset:
            self.image.resize(self.offset)     # trim the growth (or thin tail)
            self.capacity = self.offset
        self.image.flush()
        self.image.create_snap(SNAPSHOT)
        self.image.protect_snap(SNAPSHOT)
        b = self.driver.rbd
        try:
            b.RBD().rename(self.ioctx, self.name, self.image_id)   # never replaces one
        except b.ImageExists:
            raise errors.Duplicate(f"image {self.image_id!r} appeared while this copy "
                                   "was being written") from None
        self.created = False        # the store's image now: nothing for abort to remove
        self.close_image()
        return Stored(self.driver.location_for(self.image_id))

    def abort(self) -> None:
        if not self.created:
            return
        self.created = False
        if self.timed_out:
            # The add already waited the timeout for the cluster: its error
            # is not delayed by waiting again (writes may still be in flight,
            # the image's watch registered); the store's next operation
            # removes the image once the cluster answers.
            self._later("the Ceph cluster did not answer in time", keep_open=True)
            return
        if not self.settle():
            # Closing an image with writes in flight is not safe: leave it to
            # the store's next operation, once the writes have failed or landed.
            self._later("writes to it are still in flight", keep_open=True)
            return
        if self.image is not None and not self._reachable(self.image):
            # Closing now would leave the image's watch registered on the
            # OSDs (for up to 30 s once they are back), refusing its removal:
            # keep it open until the cluster answers again.
            self._later("the Ceph cluster does not answer", keep_open=True)
            return
        self.close_image()
        try:
            self.driver.remove_partial(self.ioctx, self.name)
        except errors.NotFound:
            pass
        except Exception as exc:   # noqa: BLE001 - removed later
            self._later(f"{type(exc).__name__}: {exc}")

    def _reachable(self, image: Any) -> bool:
        """Whether the OSD holding the image's header answers (within the timeout)."""
        try:
            self.ioctx.stat(f"rbd_header.{image.id()}")
        except self.driver.rados.ObjectNotFound:
            return True
        except Exception:   # noqa: BLE001 - any failure means "not now"
            return False
        return True

    def _later(self, why: str, keep_open: bool = False) -> None:
        LOG.warning("store %s: cannot remove partial image %r now (%s); it will be "
                    "removed at the store's next operation", self.driver.store_id,
                    self.name, why)
        self.driver.remove_later(self.name, self if keep_open else None)


def _oserror(rbd: Any, code: int) -> BaseException:
    """The rbd exception for an aio completion's negative return value."""
    cls = {errno.ENOENT: rbd.ImageNotFound, errno.EBUSY: rbd.ImageBusy,
           errno.ENOSPC: rbd.NoSpace, errno.EPERM: rbd.PermissionError,
           errno.EACCES: rbd.PermissionError, errno.ETIMEDOUT: rbd.Timeout,
           errno.EDQUOT: rbd.DiskQuotaExceeded}.get(code)
    if cls is not None:
        return cls("asynchronous I/O failed", errno=code)
    return rbd.OSError("asynchronous I/O failed", errno=code)


class _Reader:
    """Reads aligned pieces with a few aio reads ahead of the consumer."""

    def __init__(self, driver: RbdDriver, image: Any, start: int, count: int) -> None:
        self.driver = driver
        self.image = image
        self.start = start
        self.count = count
        self.pending: deque[tuple[Any, list[Any], int]] = deque()
        self.lock = threading.Lock()

    def chunks(self) -> Iterator[bytes]:
        pos, end = self.start, self.start + self.count
        delivered = 0
        try:
            while delivered < self.count:
                with self.lock:     # close() may come from another thread
                    if self.image is None:
                        # Closed under the consumer (the store was closed):
                        # the reads in flight were dropped, so stopping here
                        # quietly would hand out a truncated image.
                        raise errors.BackendUnavailable(
                            "the store was closed while the image was being read")
                    while pos < end and len(self.pending) < READ_DEPTH:
                        n = min(READ_PIECE - pos % READ_PIECE, end - pos)
                        holder: list[Any] = [None]
                        completion = self.image.aio_read(pos, n, _keeper(holder))
                        self.pending.append((completion, holder, n))
                        pos += n
                    completion, holder, wanted = self.pending.popleft()
                completion.wait_for_complete_and_cb()
                ret = completion.get_return_value()
                if ret < 0:
                    raise _oserror(self.driver.rbd, -ret)
                if ret != wanted:
                    raise errors.BackendUnavailable(
                        f"the image was cut short: {ret} bytes instead of {wanted} at "
                        f"offset {self.start + delivered}")
                delivered += wanted
                yield holder[0]
        finally:
            self.close()

    def close(self) -> None:
        with self.lock:
            image, self.image = self.image, None
            pending, self.pending = self.pending, deque()
        if image is None:
            return
        for completion, _, _ in pending:
            completion.wait_for_complete_and_cb()
        image.close()


def _keeper(holder: list[Any]) -> Any:
    def done(completion: Any, data: bytes | None) -> None:
        holder[0] = data
    return done


__all__ = ["RbdDriver", "RbdLocation", "OPTIONS", "PARTIAL_PREFIX"]
