"""Images as RBD images in a Ceph pool, as glance_store writes them.

Locations are ``rbd://<fsid>/<pool>/<image>/snap`` (each part URL-quoted);
the legacy ``rbd://<image>`` (pool from the configuration, no snapshot) is
read too. An image is created with the layering feature, filled, trimmed to
its size, then snapshotted as ``snap`` and the snapshot protected, so that
compute and volume services can clone it copy-on-write. Readers open the
snapshot, so a half-written image (no snapshot yet) is never visible.

Each store keeps one cluster connection (and one pool context), opened on
first use and shared by every call and thread. Connection and operation
timeouts come from ``rados_connect_timeout``: a dead cluster gives
BackendUnavailable, never a hang. If the cluster goes away during an add,
the partial image cannot be removed at once; the store remembers it and
removes it at its next operation once the cluster answers again.

Ceph's Python bindings (``rados``, ``rbd``) come from Debian's
python3-rados/python3-rbd; ``scripts/deps/rbd.sh --link-python`` makes them
importable from a virtual environment.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import threading
import urllib.parse
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any

from oslo_config import cfg

from multistore import errors
from multistore.driver import Capabilities, Driver, ReadStream, Stored, Writer

LOG = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
SNAPSHOT = "snap"
#: Timeout (seconds) of connecting and of every cluster operation when
#: ``rados_connect_timeout`` is 0 or negative (glance_store: "no timeout").
#: Ceph's own client_mount_timeout default; long, but never forever.
DEFAULT_TIMEOUT = 300
#: Object-sized writes kept in flight at once. Two keep the cluster busy
#: while the next buffer is prepared; more measured no faster here and cost
#: an object's memory each.
WRITE_DEPTH = 2
#: Reads go in pieces of READ_PIECE bytes (never across an object), READ_DEPTH
#: of them in flight: 8 x 1 MiB read 1.9-2.0 GB/s here with ~90 MiB peak RSS,
#: where 2 x 8 MiB read 1.2-1.4 GB/s with ~250 MiB (fresh 8 MiB buffers cost
#: page faults; small ones are reused by the allocator).
READ_PIECE = 1 * MiB
READ_DEPTH = 8
#: Failed attempts at removing a partial image, while the cluster answers,
#: after which the store opens a new session (see RbdDriver._renew_session).
RENEW_AFTER = 3
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


def parse_location(location: str) -> tuple[str | None, str | None, str, str | None]:
    """``(fsid, pool, image, snapshot)``; fsid, pool, snapshot are None for ``rbd://<image>``."""
    scheme, sep, rest = location.partition("://")
    if scheme.lower() != "rbd" or not sep:
        raise errors.BadLocation(f"not an rbd location: {location!r}")
    pieces = [urllib.parse.unquote(p) for p in rest.split("/")]
    if len(pieces) not in (1, 4) or not all(pieces):
        raise errors.BadLocation(
            f"{location!r}: an rbd location is rbd://<fsid>/<pool>/<image>/<snapshot> "
            "or rbd://<image>")
    if len(pieces) == 1:
        return None, None, pieces[0], None
    fsid, pool, image, snap = pieces
    return fsid, pool, image, snap


def make_location(fsid: str, pool: str, image: str, snap: str = SNAPSHOT) -> str:
    return "rbd://" + "/".join(urllib.parse.quote(p, "") for p in (fsid, pool, image, snap))


class RbdDriver(Driver):
    schemes = ("rbd",)
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
            raise errors.ConfigError("must name a pool", store=self.store_id,
                                     option="rbd_store_pool")
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
        self._leftovers: dict[str, _RbdWriter | None] = {}
        # Sessions replaced by _renew_session, shut down at close().
        self._dead: list[Any] = []
        self._cleanup_failures = 0
        # Readers still open: closed before the connection, which they use.
        self._readers: weakref.WeakSet[_Reader] = weakref.WeakSet()

    def _read_conf(self) -> None:
        """Read the fsid (for owns()) and the default features from the
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
                    # librbd copies what aio_write is given before returning,
                    # so the writer can hand it the core's buffer (Ceph's
                    # default; set so that a ceph.conf cannot turn it off).
                    "rbd_disable_zero_copy_writes": "true"}
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
                f" {exc}", store=self.store_id, option="rbd_store_ceph_conf") from exc
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
        self._pool_ctx("get_size")
        return self._cluster.get_fsid()

    # -- the connection --------------------------------------------------

    def _pool_ctx(self, operation: str) -> Any:
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
                                         store=self.store_id, option="rbd_store_pool",
                                         operation=operation) from exc
            except self.rados.Error as exc:
                handle.shutdown()
                raise self._error(exc, operation,
                                  f"cannot connect to the Ceph cluster as "
                                  f"client.{self.user or 'admin'} (mon host and keyring from "
                                  f"{self.ceph_conf or 'the default ceph.conf'})") from exc
            if self.fsid is None:
                self.fsid = handle.get_fsid()
            self._cluster, self._ioctx = handle, ioctx
            return ioctx

    def _ready(self, operation: str) -> Any:
        """The pool context, after removing partial images a failed add left."""
        ioctx = self._pool_ctx(operation)
        if self._leftovers:
            self._clean_leftovers(ioctx)
        return ioctx

    def _renew_session(self, ioctx: Any) -> None:
        """Connect afresh at the next operation (the current handle is kept,
        for calls still using it, and shut down at close()).

        After the cluster has been away mid-write, the old session can stay
        unable to remove the partial image for good (librbd answers "busy",
        or ESHUTDOWN on opening it), while a new session removes it at once.
        """
        with self._lock:
            if self._ioctx is not ioctx:
                return
            self._dead.append((self._ioctx, self._cluster))
            self._ioctx = self._cluster = None
        LOG.warning("store %s: renewing the Ceph session to remove partial images",
                    self.store_id)

    def close(self) -> None:
        for reader in list(self._readers):
            reader.close()
        with self._lock:
            ioctx, cluster = self._ioctx, self._cluster
            self._ioctx = self._cluster = None
            dead, self._dead = self._dead, []
        if ioctx is not None:
            if self._leftovers:
                self._clean_leftovers(ioctx)
            ioctx.close()
        if cluster is not None:
            cluster.shutdown()
        for old_ioctx, old_cluster in dead:
            with contextlib.suppress(Exception):
                old_ioctx.close()
                old_cluster.shutdown()

    def _error(self, exc: BaseException, operation: str, what: str) -> errors.MultistoreError:
        """A Ceph exception as a multistore error naming the store."""
        r, b = self.rados, self.rbd
        kw = {"store": self.store_id, "operation": operation}
        text = f"{what}: {exc}"
        if isinstance(exc, (b.ImageNotFound, r.ObjectNotFound)):
            return errors.NotFound(text, **kw)
        if isinstance(exc, (b.ImageExists, r.ObjectExists)):
            return errors.Duplicate(text, **kw)
        if isinstance(exc, (b.ImageBusy, r.ObjectBusy)):
            return errors.InUse(text, **kw)
        if isinstance(exc, (b.NoSpace, r.NoSpace, b.DiskQuotaExceeded)):
            return errors.StorageFull(text, **kw)
        if isinstance(exc, (b.PermissionError, r.PermissionError, r.PermissionDeniedError)):
            return errors.WriteDenied(text, **kw)
        if isinstance(exc, (b.Timeout, r.TimedOut, b.ConnectionShutdown,
                            r.ConnectionShutdown)) or \
                getattr(exc, "errno", None) in _UNAVAILABLE_ERRNOS:
            return errors.BackendUnavailable(
                f"{text} (the Ceph cluster did not answer within {self.timeout} s)", **kw)
        return errors.MultistoreError(text, **kw)

    # -- locations ---------------------------------------------------------

    def owns(self, location: str) -> bool:
        try:
            fsid, pool, _, _ = parse_location(location)
        except errors.BadLocation:
            return False
        if fsid is None:        # legacy rbd://<image>: any rbd store could hold it
            return True
        return pool == self.pool and (self.fsid is None or fsid == self.fsid)

    def image_id(self, location: str) -> str:
        return parse_location(location)[2]

    def _image_of(self, location: str) -> tuple[str, str | None]:
        fsid, pool, image, snap = parse_location(location)
        if pool is not None and pool != self.pool:
            raise errors.BadLocation(f"{location!r} is in pool {pool!r}, this store "
                                     f"uses {self.pool!r}", store=self.store_id)
        return image, snap

    def _open(self, image: str, snap: str | None, operation: str,
              read_only: bool = True) -> Any:
        ioctx = self._ready(operation)
        try:
            return self.rbd.Image(ioctx, image, snapshot=snap, read_only=read_only)
        except self.rbd.Error as exc:
            raise self._error(exc, operation, f"cannot open image {image!r}"
                              + (f" at snapshot {snap!r}" if snap else "")) from exc

    # -- writing ---------------------------------------------------------

    def open_writer(self, image_id: str, size: int | None, context: Any = None) -> Writer:
        return _RbdWriter(self, self._ready("add"), image_id, size)

    def location_of(self, image: str) -> str:
        return make_location(self.fsid or self._cluster_fsid(), self.pool, image)

    # -- reading -----------------------------------------------------------

    def open_reader(self, location: str, offset: int, length: int | None,
                    context: Any = None) -> ReadStream:
        name, snap = self._image_of(location)
        image = self._open(name, snap, "get")
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

    def get_size(self, location: str, context: Any = None) -> int:
        name, snap = self._image_of(location)
        image = self._open(name, snap, "get_size")
        try:
            return image.size()
        finally:
            image.close()

    # -- deleting ----------------------------------------------------------

    def delete(self, location: str, context: Any = None) -> None:
        name, snap = self._image_of(location)
        self._remove(self._ready("delete"), name, snap, "delete")

    def _remove(self, ioctx: Any, name: str, snap: str | None, operation: str) -> None:
        """Unprotect and remove the snapshot, then the image; InUse if cloned."""
        b = self.rbd
        try:
            with b.Image(ioctx, name) as image:
                if snap is not None and any(s["name"] == snap for s in image.list_snaps()):
                    image.set_snap(snap)
                    children = list(image.list_children())
                    image.set_snap(None)
                    if children:
                        shown = ", ".join(f"{p}/{c}" for p, c in children[:5])
                        raise errors.InUse(
                            f"image {name!r} has {len(children)} clone(s) of its snapshot "
                            f"{snap!r} ({shown}): flatten or delete them first; nothing "
                            "was deleted", store=self.store_id, operation=operation)
                    with contextlib.suppress(b.InvalidArgument):   # not protected
                        image.unprotect_snap(snap)
                    image.remove_snap(snap)
            b.RBD().remove(ioctx, name)
        except b.ImageHasSnapshots:
            # Snapshots someone else made remain: park the image in the trash,
            # as glance_store does; clones of those keep working.
            try:
                b.RBD().trash_move(ioctx, name, 0)
            except b.Error as exc:
                raise self._error(exc, operation, f"cannot delete image {name!r}") from exc
        except b.ImageBusy as exc:
            raise errors.InUse(f"image {name!r} is in use (its snapshot has clones or "
                               f"the image is open elsewhere): {exc}; nothing was deleted",
                               store=self.store_id, operation=operation) from exc
        except b.Error as exc:
            raise self._error(exc, operation, f"cannot delete image {name!r}") from exc

    def _forget_later(self, name: str, writer: _RbdWriter | None = None) -> None:
        """Remember an image an abort could not remove, to remove it later
        (with the writer whose image handle is still open, if any)."""
        with self._lock:
            self._leftovers[name] = writer

    def _clean_leftovers(self, ioctx: Any) -> None:
        with self._lock:
            leftovers = sorted(self._leftovers.items())
        failures = 0
        for name, writer in leftovers:
            if writer is not None:
                if not writer._wait(self.timeout):
                    continue        # still stuck; try again next time
                image, writer.image = writer.image, None
                if image is not None:
                    try:
                        image.close()
                    except Exception:
                        LOG.debug("closing image %r failed", name, exc_info=True)
                with self._lock:
                    self._leftovers[name] = None
            try:
                self._remove(ioctx, name, SNAPSHOT, "add")
            except errors.NotFound:
                pass
            except errors.MultistoreError as exc:
                LOG.warning("store %s: partial image %r still cannot be removed: %s",
                            self.store_id, name, exc)
                if isinstance(exc, (errors.InUse, errors.BackendUnavailable)):
                    failures += 1
                continue
            LOG.info("store %s: removed partial image %r left by a failed add",
                     self.store_id, name)
            with self._lock:
                self._leftovers.pop(name, None)
        if failures:
            with self._lock:
                self._cleanup_failures += 1
                renew = self._cleanup_failures >= RENEW_AFTER
                if renew:
                    self._cleanup_failures = 0
            if renew:
                self._renew_session(ioctx)


class _RbdWriter(Writer):
    """Creates the image, writes object-sized buffers with a few aio writes in flight."""

    def __init__(self, driver: RbdDriver, ioctx: Any, name: str, size: int | None) -> None:
        self.driver = driver
        self.name = name
        self.known_size = size
        self.capacity = size or 0
        self.offset = 0
        self.in_flight = 0
        self.failure: BaseException | None = None
        self.cond = threading.Condition()
        self.zeros = bytes(driver.object_size)
        self.created = False
        b = driver.rbd
        try:
            b.RBD().create(ioctx, name, self.capacity, order=driver.order,
                           old_format=False, features=driver.features)
        except b.ImageExists as exc:
            if name in driver._leftovers:
                raise errors.BackendUnavailable(
                    f"a partial image {name!r} left by an add that failed while the "
                    "cluster was away is not removed yet (the OSDs may still hold its "
                    "watch for up to 30 s): retry shortly", store=driver.store_id,
                    operation="add") from exc
            raise errors.Duplicate(f"image {name!r} already exists in pool {driver.pool!r}",
                                   store=driver.store_id, operation="add") from exc
        except b.Error as exc:
            raise driver._error(exc, "add", f"cannot create image {name!r}") from exc
        self.created = True
        self.ioctx = ioctx
        try:
            self.image = b.Image(ioctx, name)
        except b.Error as exc:
            self.abort()
            raise driver._error(exc, "add", f"cannot open new image {name!r}") from exc

    def write(self, data: memoryview) -> None:
        n = len(data)
        if not n:
            return
        # ``data`` is only ours during the call; librbd copies it before
        # aio_write returns (rbd_disable_zero_copy_writes), and the binding
        # takes bytes or a whole bytearray: pass the core's buffer when the
        # view covers it, copy only a short last piece.
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
            if not self.cond.wait_for(
                    lambda: self.in_flight < WRITE_DEPTH or self.failure is not None,
                    timeout=2 * self.driver.timeout + 5):
                raise errors.BackendUnavailable(
                    f"writes to image {self.name!r} did not finish (the Ceph cluster did "
                    f"not answer within {self.driver.timeout} s)",
                    store=self.driver.store_id, operation="add")
            self._raise_failure()
            self.in_flight += 1
        try:
            self.image.aio_write(buf, self.offset, self._done)
        except BaseException:
            with self.cond:
                self.in_flight -= 1
            raise
        self.offset = end

    def _done(self, completion: Any) -> None:
        with self.cond:
            try:
                ret = completion.get_return_value()
                if ret < 0 and self.failure is None:
                    self.failure = _oserror(self.driver.rbd, -ret)
            finally:
                self.in_flight -= 1
                self.cond.notify_all()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            exc = self.failure
            if isinstance(exc, errors.MultistoreError):
                raise exc
            raise self.driver._error(exc, "add", f"writing image {self.name!r} failed")

    def _wait(self, timeout: float | None = None) -> bool:
        """Wait for the writes in flight; False if some are still stuck after
        twice the operation timeout (librbd may hold writes back while it
        re-acquires the image lock from an unresponsive cluster)."""
        with self.cond:
            return self.cond.wait_for(
                lambda: not self.in_flight,
                timeout=2 * self.driver.timeout + 5 if timeout is None else timeout)

    def _grow(self, needed: int) -> None:
        """Grow in large steps, never per chunk: doubling, 1 to 8 GiB at a time."""
        step = min(max(self.capacity, MIN_GROWTH), MAX_GROWTH)
        new = max(needed, self.capacity + step)
        new = -(-new // self.driver.object_size) * self.driver.object_size
        try:
            self.image.resize(new)
        except self.driver.rbd.Error as exc:
            raise self.driver._error(exc, "add", f"cannot grow image {self.name!r}") from exc
        self.capacity = new

    def commit(self) -> Stored:
        if not self._wait():
            raise errors.BackendUnavailable(
                f"writes to image {self.name!r} did not finish (the Ceph cluster did not "
                f"answer within {self.driver.timeout} s)", store=self.driver.store_id,
                operation="add")
        self._raise_failure()
        b = self.driver.rbd
        try:
            if self.capacity != self.offset:
                self.image.resize(self.offset)     # trim the growth (or thin tail)
                self.capacity = self.offset
            self.image.flush()
            self.image.create_snap(SNAPSHOT)
            self.image.protect_snap(SNAPSHOT)
            self.image.close()
            self.image = None
        except b.Error as exc:
            raise self.driver._error(exc, "add", f"cannot finish image {self.name!r}") from exc
        return Stored(self.driver.location_of(self.name))

    def abort(self) -> None:
        if not self.created:
            return
        self.created = False
        image = getattr(self, "image", None)
        if not self._wait():
            # Closing an image with writes in flight is not safe: leave it to
            # the store's next operation, once the writes have failed or landed.
            self._later("writes to it are still in flight", keep_open=True)
            return
        if image is not None and not self._reachable(image):
            # Closing now would leave the image's watch registered on the
            # OSDs (for up to 30 s once they are back), refusing its removal:
            # keep it open until the cluster answers again.
            self._later("the Ceph cluster does not answer", keep_open=True)
            return
        self.image = None
        if image is not None:
            try:
                image.close()
            except Exception:
                LOG.debug("closing image %r after a failure failed", self.name, exc_info=True)
        try:
            self.driver._remove(self.ioctx, self.name, SNAPSHOT, "add")
        except errors.NotFound:
            pass
        except errors.MultistoreError as exc:
            self._later(str(exc))

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
        self.driver._forget_later(self.name, self if keep_open else None)


def _oserror(rbd: Any, errno: int) -> BaseException:
    """The rbd exception for an aio completion's negative return value."""
    cls = {2: rbd.ImageNotFound, 16: rbd.ImageBusy, 28: rbd.NoSpace, 1: rbd.PermissionError,
           13: rbd.PermissionError, 110: rbd.Timeout, 122: rbd.DiskQuotaExceeded}.get(errno)
    if cls is not None:
        return cls("asynchronous I/O failed", errno=errno)
    return rbd.OSError("asynchronous I/O failed", errno=errno)


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
                            "the store was closed while the image was being read",
                            store=self.driver.store_id, operation="get")
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
                    raise self.driver._error(_oserror(self.driver.rbd, -ret), "get",
                                             "reading the image failed")
                if ret != wanted:
                    raise errors.BackendUnavailable(
                        f"the image was cut short: {ret} bytes instead of {wanted} at "
                        f"offset {self.start + delivered}", store=self.driver.store_id,
                        operation="get")
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


__all__ = ["RbdDriver", "OPTIONS", "parse_location", "make_location"]
