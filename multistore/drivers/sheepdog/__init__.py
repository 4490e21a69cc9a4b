"""Images as Sheepdog VDIs, over sheep's own TCP protocol.

Locations are ``sheepdog://<address>:<port>:<image id>`` as glance_store
wrote them (an IPv6 address in brackets), and the legacy
``sheepdog://<image id>`` (the store's own cluster); ids are
percent-encoded, which leaves UUIDs as they are. The VDI is named by the
image id, as glance_store named it, so images it wrote read as they are.

The driver speaks to ``sheep`` directly (``protocol.py``) rather than
running ``dog`` once per chunk as glance_store did: requests are pipelined
on one connection for an add and spread over several connections, one
request each, for a get, so nothing is buffered out of order. Why, and the
numbers, are in doc/drivers/sheepdog.rst.

An add writes the VDI under its final name (sheep has no rename) and keeps
it *incomplete* until commit:

1. ``NEW_VDI`` at a *sentinel* size, the largest a plain VDI has (4 TiB for
   4 MiB objects): sheep cannot set anything else at creation, and a VDI of
   that size with no data object is taken for one being created;
2. an *add record* (magic, writer's host and process, heartbeat) written
   into the unused tail of the inode header, then the real size;
3. data objects, pipelined, each recorded in the inode's ``data_vdi_id``
   once written (in runs);
4. commit: the exact size (unknown-size adds grow the VDI as they go), then
   the record cleared, one 128-byte write.

Readers (get, get_size, delete, duplicates) treat a VDI with a record, or
with the sentinel size and no data, as absent. A failed add removes its
objects and the VDI; one whose writer died is found by
:meth:`SheepdogDriver.find_leftovers` once its writer provably is gone (same
host: the process is dead; another host: no heartbeat for ``LEASE`` s).
"""

from __future__ import annotations

import array
import collections
import contextlib
import dataclasses
import ipaddress
import logging
import os
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from typing import Any

from oslo_config import cfg

from multistore import errors
from multistore.context import Context
from multistore.driver import Capabilities, Driver, Leftover, ReadStream, Stored, Writer
from multistore.drivers.sheepdog import protocol as proto
from multistore.location import Location, quote, split_url, unquote
from multistore.retry import ResumingRead, RetryPolicy

LOG = logging.getLogger(__name__)
MiB = 1 << 20
#: Largest request this driver sends or asks for (objects may be larger).
PIECE = 4 * MiB
#: Written data objects are recorded in the inode in runs of this many.
CLAIM_RUN = 16
#: The add record: the last 128 bytes of the inode header's unused area.
RECORD = struct.Struct("<8sQQIQ16s64s")   # magic heartbeat_ns started_ns pid
#                                           pid_start boot_id host
RECORD_OFFSET = proto.INODE_HEADER_SIZE - 128
MAGIC = b"MSADD\x00v1"
#: Seconds between a writer's heartbeats, and without one before a writer on
#: another host counts as gone.
HEARTBEAT = 10.0
LEASE = 120.0

OPTIONS = [
    cfg.HostAddressOpt("sheepdog_store_address", default="127.0.0.1",
                       help="Address of the sheep this store talks to (any node "
                            "of the cluster)."),
    cfg.PortOpt("sheepdog_store_port", default=7000,
                help="Port of that sheep."),
    cfg.IntOpt("sheepdog_store_chunk_size", default=64, min=1,
               help="MiB of one image in flight between multistore and sheep at once, "
                    "for an add and for a get (glance_store: the size of the pieces "
                    "written and read by one dog process)."),
    cfg.FloatOpt("sheepdog_store_timeout", default=60.0, min=0.1,
                 help="multistore's own: seconds to wait for sheep to answer (a frozen "
                      "sheep accepts connections and answers nothing) before the "
                      "operation fails with BackendUnavailable."),
]


def vdi_name(image_id: str) -> bytes:
    """The VDI name of an image: its id in UTF-8, which sheep takes up to
    255 bytes (and without NUL: names are C strings)."""
    name = image_id.encode("utf-8")
    if not name or len(name) > proto.MAX_VDI_NAME or b"\0" in name:
        raise ValueError(f"{image_id!r} cannot name a Sheepdog VDI (1 to "
                         f"{proto.MAX_VDI_NAME} bytes of UTF-8, no NUL)")
    return name


_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?\Z")


@dataclasses.dataclass(frozen=True)
class SheepdogLocation(Location):
    """``sheepdog://<address>:<port>:<image>``; legacy ``sheepdog://<image>``
    has no address and port (``None``): the store's own cluster."""

    address: str | None
    port: int | None
    image_id: str

    @classmethod
    def parse(cls, url: str) -> SheepdogLocation:
        split_url(url, ("sheepdog",))
        rest = url.partition("://")[2]
        if not rest or any(c in rest for c in "/?#@ "):
            raise ValueError("expected sheepdog://<address>:<port>:<image> or "
                             "sheepdog://<image>")
        if rest.startswith("["):
            host, bracket, tail = rest[1:].partition("]")
            port, colon, image = tail[1:].partition(":")
            if not bracket or tail[:1] != ":" or not colon:
                raise ValueError("expected sheepdog://[<IPv6 address>]:<port>:<image>")
            ipaddress.IPv6Address(host)
        else:
            pieces = rest.split(":")
            if len(pieces) == 1:
                image_id = unquote(rest)
                vdi_name(image_id)
                return cls(None, None, image_id)
            if len(pieces) != 3:
                raise ValueError("expected sheepdog://<address>:<port>:<image> or "
                                 "sheepdog://<image>")
            host, port, image = pieces
            if not _HOST.match(host):
                raise ValueError(f"{host!r} is not a host name or address")
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{port!r} is not a port number")
        image_id = unquote(image)
        vdi_name(image_id)
        return cls(host, int(port), image_id)

    def format(self) -> str:
        if self.address is None:
            return f"sheepdog://{quote(self.image_id)}"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"sheepdog://{host}:{self.port}:{quote(self.image_id)}"


def _normal_host(host: str) -> str:
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower().rstrip(".")


# -- who is writing: the add record --------------------------------------------

def _proc_start(pid: int) -> int | None:
    """A process's start time (clock ticks since boot), None if it is gone."""
    try:
        stat = open(f"/proc/{pid}/stat", encoding="ascii", errors="replace").read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[19])


def _boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return uuid.UUID(f.read().strip()).bytes
    except (OSError, ValueError):
        return bytes(16)    # unknown: never taken for this host


@dataclasses.dataclass(frozen=True)
class AddRecord:
    """Who is writing an incomplete VDI, and when it last said so (ns since the epoch)."""

    heartbeat: int
    started: int
    pid: int
    pid_start: int
    boot_id: bytes
    host: str

    @classmethod
    def mine(cls) -> AddRecord:
        now = time.time_ns()
        return cls(now, now, os.getpid(), _proc_start(os.getpid()) or 0, _boot_id(),
                   socket.gethostname()[:64])

    @classmethod
    def parse(cls, inode: proto.Inode) -> AddRecord | None:
        raw = inode.raw[RECORD_OFFSET:RECORD_OFFSET + RECORD.size]
        magic, beat, started, pid, pid_start, boot, host = RECORD.unpack(raw)
        if magic != MAGIC:
            return None
        return cls(beat, started, pid, pid_start, boot,
                   host.rstrip(b"\0").decode("utf-8", "replace"))

    def pack(self) -> bytes:
        return RECORD.pack(MAGIC, self.heartbeat, self.started, self.pid, self.pid_start,
                           self.boot_id, self.host.encode()[:64]).ljust(128, b"\0")

    @property
    def writer(self) -> tuple[int, int, bytes]:
        """What tells one add from every other."""
        return self.started, self.pid, self.boot_id

    def age(self, now: float) -> float:
        """Seconds since the last heartbeat."""
        return now - self.heartbeat / 1e9

    def abandoned(self, now: float, lease: float, given_up: set[tuple[int, int, bytes]],
                  ) -> bool:
        """The writer is provably gone: its process (on this host) is dead or
        another took its pid; or it gave up in this process (an abort whose
        cleanup failed); or it missed its heartbeats for ``lease`` seconds."""
        if self.boot_id != bytes(16) and self.boot_id == _boot_id() \
                and _proc_start(self.pid) != self.pid_start:
            return True
        return self.writer in given_up or self.age(now) > lease


def _sentinel(inode: proto.Inode) -> int:
    """The size a VDI is created at (see the module docstring)."""
    return inode.object_size * proto.MAX_OBJECTS


class SheepdogDriver(Driver[SheepdogLocation]):
    schemes = ("sheepdog",)
    location_type = SheepdogLocation
    capabilities = Capabilities(read=True, ranged_read=True, write=True, delete=True)
    options = OPTIONS
    write_chunk_size = PIECE
    #: Seconds without a heartbeat before a writer on another host (or a
    #: live process on this one) counts as gone.
    lease = LEASE

    def configure(self) -> None:
        c = self.conf
        self.address = c.sheepdog_store_address
        self.port = c.sheepdog_store_port
        self.chunk_size = c.sheepdog_store_chunk_size * MiB
        self.timeout = c.sheepdog_store_timeout
        self.window = max(1, self.chunk_size // PIECE)
        self._pool: list[proto.Connection] = []
        self._lock = threading.Lock()
        #: Adds of this process that failed and could not clean up after
        #: themselves (sheep was down): abandoned, whatever their heartbeat says.
        self.given_up: set[tuple[int, int, bytes]] = set()
        # A read broken by a lost connection resumes where it stopped; one that
        # timed out does not (a stuck sheep would only make the caller wait more).
        self._retry = RetryPolicy(attempts=2, retryable=lambda e: isinstance(
            e, ConnectionError))

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()

    @property
    def where(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"the Sheepdog cluster at {host}:{self.port}"

    # -- connections --------------------------------------------------------------

    def connect(self) -> proto.Connection:
        """An idle connection of the pool, or a new one."""
        while True:
            with self._lock:
                if not self._pool:
                    break
                conn = self._pool.pop()
            if not conn.ready():
                return conn
            conn.close()        # readable while idle: sheep closed it (restarted, ...)
        return proto.Connection(self.address, self.port, self.timeout)

    def release(self, conn: proto.Connection) -> None:
        if conn.broken or conn.pending:
            conn.close()
            return
        with self._lock:
            if len(self._pool) < 2 * self.window:
                self._pool.append(conn)
                return
        conn.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[proto.Connection]:
        conn = self.connect()
        try:
            yield conn
        finally:
            self.release(conn)

    # -- errors -------------------------------------------------------------------

    def translate_error(self, exc: Exception) -> errors.MultistoreError | None:
        if isinstance(exc, proto.SheepError):
            text = proto.RESULTS.get(exc.result, f"error {exc.result:#04x}")
            if exc.result == proto.NO_SPACE:
                return errors.StorageFull(f"{self.where} has no space left: {text}")
            if exc.result in proto.UNAVAILABLE:
                return errors.BackendUnavailable(f"{self.where} cannot serve requests: {text}")
            if exc.result == proto.NO_VDI:
                return errors.NotFound(f"no such VDI in {self.where}")
            return errors.MultistoreError(f"{self.where} answered: {exc}")
        if isinstance(exc, TimeoutError):
            return errors.BackendUnavailable(f"{self.where} did not answer within "
                                             f"{self.timeout:g} s (sheepdog_store_timeout)")
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            return errors.BackendUnavailable(f"cannot reach {self.where}: "
                                             f"{exc.strerror or exc}")
        return None

    # -- locations ----------------------------------------------------------------

    def holds(self, location: SheepdogLocation) -> bool:
        if location.address is None:
            return True
        return (location.port == self.port
                and _normal_host(location.address) == _normal_host(self.address))

    def location_for(self, image_id: str, context: Context = None) -> SheepdogLocation:
        return SheepdogLocation(self.address, self.port, image_id)

    # -- the listing ----------------------------------------------------------------

    def properties(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"address": self.address, "port": self.port,
                                 "chunk_size": self.chunk_size // MiB,
                                 "timeout": self.timeout}
        try:
            with self.connection() as conn:
                result, cluster = conn.cluster_status()
                facts["status"] = ("running" if result == proto.SUCCESS
                                   else proto.RESULTS.get(result, f"result {result:#x}"))
                facts.update(cluster)
                if result == proto.SUCCESS:
                    nodes = conn.node_addresses()
                    facts.update(self._capacity(nodes))
        except Exception as exc:   # noqa: BLE001 - a listing reports, it does not fail
            failure = self.translate_error(exc) or exc
            facts["status"] = f"unreachable: {getattr(failure, 'message', failure)}"
        return facts

    def _capacity(self, nodes: list[tuple[str, int]]) -> dict[str, Any]:
        size = free = 0
        for address, port in nodes:
            conn = proto.Connection(address, port, min(self.timeout, 10.0))
            try:
                node_size, node_free = conn.stat_sheep()
            finally:
                conn.close()
            size += node_size
            free += node_free
        return {"nodes": len(nodes), "capacity": size, "used": size - free, "free": free}

    # -- reading --------------------------------------------------------------------

    def _find(self, conn: proto.Connection, image_id: str) -> proto.Inode:
        """The complete image's inode; NotFound if absent or not complete."""
        name = vdi_name(image_id)
        try:
            vid = conn.lookup(name)
        except proto.SheepError as exc:
            if exc.result == proto.NO_VDI:
                raise errors.NotFound(f"no image {image_id!r} in {self.where}") from None
            raise
        inode = conn.inode(vid)
        if inode.name != name or inode.snap_ctime:
            raise errors.NotFound(f"no image {image_id!r} in {self.where}")
        record = AddRecord.parse(inode)
        if record is not None or self._creating(conn, inode):
            raise errors.NotFound(f"image {image_id!r} in {self.where} is incomplete: "
                                  "being added, or left by an add that died")
        return inode

    @staticmethod
    def _creating(conn: proto.Connection, inode: proto.Inode) -> bool:
        """A VDI at the sentinel size with no data: an add between NEW_VDI and its record."""
        if inode.vdi_size != _sentinel(inode) or inode.store_policy:
            return False
        step = 1 << 18
        return not any(any(conn.entries(inode.vid, first, min(step, inode.objects - first)))
                       for first in range(0, inode.objects, step))

    def get_size(self, location: SheepdogLocation, context: Context = None) -> int:
        with self.connection() as conn:
            return self._find(conn, location.image_id).vdi_size

    def open_reader(self, location: SheepdogLocation, offset: int, length: int | None,
                    context: Context = None) -> ReadStream:
        with self.connection() as conn:
            inode = self._find(conn, location.image_id)
        if inode.store_policy:
            raise errors.NotSupported(f"image {location.image_id!r} is a hyper volume "
                                      "(a b-tree inode), which this driver cannot read")
        start = min(offset, inode.vdi_size)
        end = inode.vdi_size if length is None else min(inode.vdi_size, start + length)
        first = start // inode.object_size
        with self.connection() as conn:
            entries = conn.entries(inode.vid, first, -(-end // inode.object_size) - first)
        what = f"image {location.image_id!r} in {self.where}"
        reader = ResumingRead(lambda at: _Chunks(self, inode, entries, first, at, end),
                              start, end - start, self._retry, what)
        return ReadStream(reader, end - start)

    # -- writing --------------------------------------------------------------------

    def open_writer(self, image_id: str, size: int | None, context: Context = None) -> Writer:
        try:
            name = vdi_name(image_id)
        except ValueError as exc:
            raise errors.BadLocation(str(exc)) from None
        return _Writer(self, image_id, name, size)

    def duplicate(self, conn: proto.Connection, image_id: str) -> errors.Duplicate:
        try:
            self._find(conn, image_id)
        except errors.NotFound:
            return errors.Duplicate(
                f"image {image_id!r} is being added to {self.where} by another writer, or "
                "an add that died left it incomplete (a sweep removes it once its writer "
                "is provably gone)")
        return errors.Duplicate(f"image {image_id!r} already exists in {self.where}")

    # -- deleting -------------------------------------------------------------------

    def delete(self, location: SheepdogLocation, context: Context = None) -> None:
        with self.connection() as conn:
            inode = self._find(conn, location.image_id)
            self.destroy(conn, inode, incomplete=False)

    def destroy(self, conn: proto.Connection, inode: proto.Inode, *, incomplete: bool) -> None:
        """Free a VDI's data, then delete it, as ``dog vdi delete`` does: every
        ``data_vdi_id`` entry zeroed (sheep drops what no longer has a
        reference), then DEL_VDI. An incomplete VDI may also hold objects
        written but not yet recorded: those are removed one by one."""
        vid, objects = inode.vid, min(inode.objects, proto.MAX_OBJECTS)
        copies, policy = inode.nr_copies, inode.copy_policy
        entries = conn.entries(vid, 0, objects) if objects else ()
        rids: collections.deque[tuple[int, bool]] = collections.deque()  # (id, a removal)

        def flush(limit: int) -> None:
            while len(rids) > limit:
                rid, removal = rids.popleft()
                try:
                    conn.result(rid)
                except proto.SheepError as exc:
                    if not (removal and exc.result == proto.NO_OBJ):
                        raise
        idx = 0
        while idx < objects:
            if not entries[idx]:
                idx += 1
                continue
            run = idx
            while run < objects and entries[run] and run - idx < 4096:
                run += 1
            rids.append((conn.submit(proto.WRITE_OBJ, conn.obj_union(
                proto.vdi_oid(vid), proto.INODE_HEADER_SIZE + 4 * idx, copies, policy),
                bytes(4 * (run - idx))), False))
            flush(self.window)
            idx = run
        if incomplete and inode.vdi_size != _sentinel(inode):
            for idx in range(objects):
                if not entries[idx]:
                    rids.append((conn.submit(proto.REMOVE_OBJ, conn.obj_union(
                        proto.data_oid(vid, idx), 0, copies, policy)), True))
                    flush(64)
        flush(0)                            # the entries must be zero before DEL_VDI
        try:
            if conn.lookup(inode.name) != vid:
                return                      # deleted meanwhile, and the name reused
            conn.del_vdi(inode.name)
        except proto.SheepError as exc:
            if exc.result != proto.NO_VDI:
                raise

    # -- leftovers of dead writers ------------------------------------------------

    def find_leftovers(self, grace: float, context: Context = None) -> list[Leftover]:
        """Incomplete VDIs whose writer is provably gone (see :class:`AddRecord`)."""
        now = time.time()
        found = []
        with self.connection() as conn:
            bitmap = conn.read_vdis()
            vids = [i * 8 + bit for m in re.finditer(rb"[^\x00]", bitmap)
                    for i in (m.start(),) for bit in range(8) if bitmap[i] >> bit & 1]
            for inode in self._inodes(conn, vids):
                if not inode.name or inode.snap_ctime:
                    continue                # deleted, or a snapshot
                record = AddRecord.parse(inode)
                if record is not None:
                    age = record.age(now)
                    if age <= grace or not record.abandoned(now, self.lease, self.given_up):
                        continue
                    who = f"pid {record.pid} on {record.host}"
                elif self._creating(conn, inode):
                    age = now - (inode.create_time >> 32)
                    if age <= max(grace, self.lease):
                        continue
                    who = "a writer that died creating it"
                else:
                    continue
                image = inode.name.decode("utf-8", "replace")
                size = 0 if record is None else inode.vdi_size     # what it was to hold
                found.append(Leftover(f"incomplete VDI {image!r} (vid {inode.vid:#x}, {who})",
                                      size, age, (inode.vid, inode.raw)))
        return found

    def _inodes(self, conn: proto.Connection, vids: list[int]) -> Iterator[proto.Inode]:
        pending: collections.deque[int] = collections.deque()
        for vid in vids:
            pending.append(conn.submit(proto.READ_OBJ, conn.obj_union(proto.vdi_oid(vid)),
                                       read_length=proto.INODE_HEADER_SIZE))
            if len(pending) >= 32:
                yield from self._inode_result(conn, pending.popleft())
        while pending:
            yield from self._inode_result(conn, pending.popleft())

    @staticmethod
    def _inode_result(conn: proto.Connection, rid: int) -> Iterator[proto.Inode]:
        try:
            _, data = conn.result(rid)
        except proto.SheepError as exc:
            if exc.result != proto.NO_OBJ:
                raise
            return
        if data is not None and len(data) == proto.INODE_HEADER_SIZE:
            yield proto.Inode.parse(data)

    def remove_leftover(self, leftover: Leftover, context: Context = None) -> None:
        vid, raw = leftover.handle
        with self.connection() as conn:
            try:
                inode = conn.inode(vid)
            except proto.SheepError as exc:
                if exc.result == proto.NO_OBJ:
                    raise errors.NotFound(f"{leftover.name} is gone") from None
                raise
            if not inode.name:
                raise errors.NotFound(f"{leftover.name} is gone")
            record = AddRecord.parse(inode)
            if inode.raw != raw or (record is not None and not record.abandoned(
                    time.time(), self.lease, self.given_up)):
                raise errors.InUse(f"{leftover.name} changed since it was found: "
                                   "its writer is alive")
            self.destroy(conn, inode, incomplete=True)


class _Chunks:
    """The bytes of an image from ``position`` to ``end``, piece by piece,
    with up to ``window`` reads in flight, each on a connection of its own:
    answers come back in order and none waits in memory."""

    def __init__(self, driver: SheepdogDriver, inode: proto.Inode,
                 entries: array.array[int], first: int, position: int, end: int) -> None:
        self.driver = driver
        self.inode = inode
        self.entries = entries          # data_vdi_id[first:...] of the range
        self.first = first
        self.position = position
        self.end = end
        self._gen = self._run()

    def __iter__(self) -> Generator[bytes, None, None]:
        return self._gen

    def close(self) -> None:
        self._gen.close()

    def _pieces(self) -> Iterator[tuple[int, int, int, int]]:
        """(object, offset in it, length, VDI holding it) of every piece."""
        obj = self.inode.object_size
        at = self.position
        while at < self.end:
            idx, inner = divmod(at, obj)
            n = min(PIECE, obj - inner, self.end - at)
            yield idx, inner, n, self.entries[idx - self.first]
            at += n

    def _run(self) -> Generator[bytes, None, None]:
        d = self.driver
        conns: list[proto.Connection] = []
        free: collections.deque[proto.Connection] = collections.deque()
        inflight: collections.deque[tuple[proto.Connection | None, int, int]] = \
            collections.deque()
        pieces = self._pieces()
        waiting = None
        try:
            while True:
                while len(inflight) < 2 * d.window:
                    piece, waiting = waiting or next(pieces, None), None
                    if piece is None:
                        break
                    idx, inner, n, holder = piece
                    if not holder:                  # never written: zeros
                        inflight.append((None, 0, n))
                        continue
                    if not free and len(conns) < d.window:
                        conns.append(d.connect())
                        free.append(conns[-1])
                    if not free:
                        waiting = piece
                        break
                    conn = free.popleft()
                    inflight.append((conn, conn.submit(proto.READ_OBJ, conn.obj_union(
                        proto.data_oid(holder, idx), inner), read_length=n), n))
                if not inflight:
                    return
                busy, rid, n = inflight.popleft()
                if busy is None:
                    yield _ZEROS if n == PIECE else bytes(n)
                    continue
                _, data = busy.result(rid)
                free.append(busy)
                if data is None or len(data) != n:
                    raise proto.ProtocolError(f"sheep sent {0 if data is None else len(data)} "
                                              f"bytes of a {n}-byte piece")
                yield data
        except proto.SheepError as exc:
            if exc.result == proto.NO_OBJ:
                raise errors.NotFound("the image lost data objects (deleted while being "
                                      "read?)") from None
            raise
        finally:
            for conn in conns:
                d.release(conn)


class _Writer(Writer):
    """One add: see the module docstring for the steps."""

    def __init__(self, driver: SheepdogDriver, image_id: str, name: bytes,
                 size: int | None) -> None:
        self.driver = driver
        self.image_id = image_id
        self.name = name
        self.size = size
        self.written = 0
        self.vid = 0
        self.vdi_size = 0
        self.conn = driver.connect()
        self.rids: collections.deque[tuple[int, int]] = collections.deque()  # (id, bytes)
        self.in_flight = 0
        self.created: set[int] = set()        # objects created, not yet recorded
        self.creating: dict[int, int] = {}    # request id -> object, not yet answered
        self.recorded = 0                      # objects below this are in the inode
        self.record = AddRecord.mine()
        self.stop = threading.Event()
        self.beat: threading.Thread | None = None
        self.finished = False
        try:
            self._create()
        except BaseException:
            self.abort()
            raise

    def _create(self) -> None:
        conn, d = self.conn, self.driver
        _, _, shift = conn.cluster_default()
        sentinel = (1 << shift) * proto.MAX_OBJECTS
        if self.size is not None and self.size >= sentinel:
            raise errors.StorageFull(f"{self.size} bytes is more than a Sheepdog VDI holds "
                                     f"({sentinel - 1} bytes at most)")
        try:
            self.vid, _ = conn.new_vdi(self.name, sentinel, shift)
        except proto.SheepError as exc:
            if exc.result == proto.VDI_EXIST:
                raise d.duplicate(conn, self.image_id) from None
            raise
        self.inode = conn.inode(self.vid)
        self.obj = self.inode.object_size
        self._header(RECORD_OFFSET, self.record.pack())
        self._grow(self.size if self.size is not None else d.chunk_size)
        self.beat = threading.Thread(target=self._heartbeat, daemon=True,
                                     name=f"multistore-sheepdog-heartbeat-{self.vid:x}")
        self.beat.start()

    def _header(self, offset: int, data: bytes, conn: proto.Connection | None = None) -> None:
        """Write into the inode and wait for it."""
        (conn or self.conn).write(proto.vdi_oid(self.vid), data, offset,
                                  self.inode.nr_copies, self.inode.copy_policy)

    def _grow(self, size: int) -> None:
        limit = _sentinel(self.inode) - 1
        if size > limit:
            raise errors.StorageFull(f"the image is larger than a Sheepdog VDI holds "
                                     f"({limit} bytes at most)")
        self._header(proto.VDI_SIZE_OFFSET, struct.pack("<Q", size))
        self.vdi_size = size

    def _heartbeat(self) -> None:
        d = self.driver
        while not self.stop.wait(HEARTBEAT):
            try:
                conn = proto.Connection(d.address, d.port, d.timeout)
                try:
                    self._header(RECORD_OFFSET + 8, struct.pack("<Q", time.time_ns()), conn)
                finally:
                    conn.close()
            except Exception as exc:   # noqa: BLE001 - the add itself will notice
                LOG.debug("heartbeat of VDI %x failed: %s", self.vid, exc)

    # -- data -------------------------------------------------------------------

    def write(self, data: memoryview) -> None:
        view = data.cast("B") if data.format != "B" else data
        end = self.written + len(view)
        if self.size is not None and end > self.size:
            raise errors.SizeMismatch(f"more data than the {self.size} bytes announced")
        if end > self.vdi_size:
            self._grow(max(end, min(2 * self.vdi_size, self.vdi_size + 4096 * MiB)))
        off = 0
        while off < len(view):
            idx, inner = divmod(self.written + off, self.obj)
            n = min(PIECE, self.obj - inner, len(view) - off)
            piece = view[off:off + n]
            if not _ZEROS.startswith(piece):        # zeros stay holes
                self._send(idx, inner, piece)
            off += n
        self.written = end
        self._record(final=False)

    def _send(self, idx: int, inner: int, piece: memoryview) -> None:
        conn = self.conn
        union = conn.obj_union(proto.data_oid(self.vid, idx), inner, self.inode.nr_copies,
                               self.inode.copy_policy)
        if idx in self.created:
            while idx in self.creating.values():    # written after its creation only
                self._reap()
            rid = conn.submit(proto.WRITE_OBJ, union, piece)
        else:
            rid = conn.submit(proto.CREATE_AND_WRITE_OBJ, union, piece)
            self.created.add(idx)
            self.creating[rid] = idx
        self.rids.append((rid, len(piece)))
        self.in_flight += len(piece)
        while self.in_flight > self.driver.chunk_size:
            self._reap()

    def _reap(self) -> None:
        """Wait for the oldest request in flight."""
        rid, n = self.rids.popleft()
        try:
            self.conn.result(rid)
        finally:
            self.in_flight -= n
            self.creating.pop(rid, None)

    def _record(self, *, final: bool) -> None:
        """Point the inode at the objects sheep has acknowledged, in runs.

        Only after the acknowledgement: an entry must never name an object
        that does not exist. An object written but not yet recorded when the
        writer dies is removed by :meth:`SheepdogDriver.destroy`."""
        upto = -(-self.written // self.obj) if final else self.written // self.obj
        if self.creating:
            upto = min(upto, *self.creating.values())
        if upto - self.recorded < (1 if final else CLAIM_RUN):
            return
        ids = [self.vid if i in self.created else 0 for i in range(self.recorded, upto)]
        if any(ids):
            conn = self.conn
            rid = conn.submit(proto.WRITE_OBJ, conn.obj_union(
                proto.vdi_oid(self.vid), proto.INODE_HEADER_SIZE + 4 * self.recorded,
                self.inode.nr_copies, self.inode.copy_policy),
                struct.pack(f"<{len(ids)}I", *ids))
            self.rids.append((rid, 0))
        self.created.difference_update(range(self.recorded, upto))
        self.recorded = upto

    # -- the end ------------------------------------------------------------------

    def commit(self) -> Stored:
        while self.rids:
            self._reap()
        self._record(final=True)
        while self.rids:
            self._reap()
        if self.size is None and self.vdi_size != self.written:
            self._grow(self.written)
        self._stop_heartbeat()
        inode = self.conn.inode(self.vid)
        if self.conn.lookup(self.name) != self.vid or \
                not _same_writer(AddRecord.parse(inode), self.record):
            raise errors.MultistoreError(f"image {self.image_id!r} was removed from "
                                         f"{self.driver.where} while being written")
        self._header(RECORD_OFFSET, bytes(128))
        self.finished = True
        self.driver.release(self.conn)
        return Stored(self.driver.location_for(self.image_id))

    def _stop_heartbeat(self) -> None:
        self.stop.set()
        if self.beat is not None:
            self.beat.join()

    def abort(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._stop_heartbeat()
        d, conn = self.driver, self.conn
        try:
            # Let what sheep already has finish: nothing may land after the cleanup.
            while self.rids and not conn.broken:
                with contextlib.suppress(proto.SheepError):
                    self._reap()
        except Exception:   # noqa: BLE001 - cleaning up on a fresh connection
            conn.close()
        if not self.vid or conn.broken:
            d.release(conn)                 # closes a broken one
            if not self.vid:
                return
        try:
            if conn.broken:
                conn = proto.Connection(d.address, d.port, d.timeout)
            inode = conn.inode(self.vid)
            found = AddRecord.parse(inode)
            if inode.name == self.name and (found is None or _same_writer(found, self.record)):
                d.destroy(conn, inode, incomplete=True)
        except BaseException:
            d.given_up.add(self.record.writer)     # a sweep removes it
            raise
        finally:
            d.release(conn)


def _same_writer(found: AddRecord | None, mine: AddRecord) -> bool:
    return found is not None and found.writer == mine.writer


_ZEROS = bytes(PIECE)

__all__ = ["SheepdogDriver", "SheepdogLocation", "OPTIONS", "vdi_name"]
