"""Images as Sheepdog VDIs, over sheep's own TCP protocol.

Locations are ``sheepdog://<address>:<port>:<image id>`` as glance_store
wrote them (an IPv6 address in brackets), and the legacy
``sheepdog://<image id>`` (the store's own cluster); ids are
percent-encoded, which leaves UUIDs as they are. The VDI is named by the
image id, as glance_store named it, so images it wrote read as they are.

The driver speaks to ``sheep`` directly (:mod:`.protocol`) rather than
running ``dog`` once per chunk as glance_store did: an add pipelines its
requests on one connection (:mod:`.writer`), a get spreads its reads over
several connections, one request each, so that nothing waits in memory out of
order (:mod:`.reader`). Why, and the numbers, are in doc/drivers/sheepdog.rst.

An add writes the VDI under its final name and keeps it *incomplete* until it
commits (:mod:`.writer`); everything that reads treats an incomplete VDI as
absent (:meth:`SheepdogDriver.find`), and the sweep removes those whose writer
is provably gone (:meth:`SheepdogDriver.find_leftovers`).
"""

from __future__ import annotations

import array
import collections
import contextlib
import dataclasses
import ipaddress
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from oslo_config import cfg

from multistore import errors
from multistore.context import Context
from multistore.driver import Capabilities, Driver, Leftover, ReadStream, Writer
from multistore.drivers.sheepdog import protocol as proto
from multistore.drivers.sheepdog.reader import Chunks
from multistore.drivers.sheepdog.writer import LEASE, RECORD_OFFSET, AddRecord, AddWriter
from multistore.location import Location, image_id_problem, quote, split_url, unquote
from multistore.retry import ResumingRead, RetryPolicy

MiB = 1 << 20
#: The most reads one get keeps in flight (see configure()).
MAX_READS = 8

OPTIONS = [
    cfg.HostAddressOpt("sheepdog_store_address", default="127.0.0.1",
                       help="Address of the sheep this store talks to (any node "
                            "of the cluster)."),
    cfg.PortOpt("sheepdog_store_port", default=7000,
                help="Port of that sheep."),
    cfg.IntOpt("sheepdog_store_chunk_size", default=64, min=1,
               help="MiB of one image in flight between multistore and sheep at once: "
                    "written and not yet acknowledged by an add; asked for by a get "
                    "(at most 32 MiB, 8 reads). glance_store: the size of the pieces one "
                    "dog process wrote or read."),
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


def _image_id(segment: str) -> str:
    """The image id of a location's last part: an id an add could have made."""
    image_id = unquote(segment)
    why = image_id_problem(image_id)
    if why:
        raise ValueError(f"not an image id: {why}")
    vdi_name(image_id)
    return image_id


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
                return cls(None, None, _image_id(rest))
            if len(pieces) != 3:
                raise ValueError("expected sheepdog://<address>:<port>:<image> or "
                                 "sheepdog://<image>")
            host, port, image = pieces
            if not _HOST.match(host):
                raise ValueError(f"{host!r} is not a host name or address")
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{port!r} is not a port number")
        return cls(host, int(port), _image_id(image))

    def format(self) -> str:
        if self.address is None:
            return f"sheepdog://{quote(self.image_id)}"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"sheepdog://{host}:{self.port}:{quote(self.image_id)}"


@contextlib.contextmanager
def missing(result: int, message: str) -> Iterator[None]:
    """sheep's ``result`` (no such VDI, no such object) as NotFound(``message``)."""
    try:
        yield
    except proto.SheepError as exc:
        if exc.result == result:
            raise errors.NotFound(message) from None
        raise


def _normal_host(host: str) -> str:
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower().rstrip(".")


class SheepdogDriver(Driver[SheepdogLocation]):
    schemes = ("sheepdog",)
    location_type = SheepdogLocation
    capabilities = Capabilities(read=True, ranged_read=True, write=True, delete=True)
    options = OPTIONS
    write_chunk_size = proto.PIECE
    #: Seconds without a heartbeat before a writer on another host (or a
    #: live process on this one) counts as gone.
    lease = LEASE

    def configure(self) -> None:
        c = self.conf
        self.address = c.sheepdog_store_address
        self.port = c.sheepdog_store_port
        self.chunk_size = c.sheepdog_store_chunk_size * MiB
        self.timeout = c.sheepdog_store_timeout
        # Reads in flight for one get: 16 parallel reads on one node read slower
        # than 4 to 8 (doc/drivers/sheepdog.rst); an add gains up to 16.
        self.read_window = max(1, min(self.chunk_size // proto.PIECE, MAX_READS))
        self._pool: list[proto.Connection] = []
        self._lock = threading.Lock()
        #: Adds of this process that failed and could not clean up after
        #: themselves (sheep was down): abandoned, whatever their heartbeat says.
        self.given_up: set[tuple[int, int, bytes]] = set()

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
            if not conn.closed_by_peer():
                return conn
            conn.close()        # sheep restarted, or dropped an idle client
        return proto.Connection(self.address, self.port, self.timeout)

    def release(self, conn: proto.Connection) -> None:
        if conn.broken or conn.pending:
            conn.close()
            return
        with self._lock:
            if len(self._pool) < 2 * self.read_window:
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
            if exc.result == proto.NO_OBJ:
                return errors.NotFound(f"an object of the image is gone from {self.where} "
                                       "(deleted while being read?)")
            return errors.MultistoreError(f"{self.where} answered: {exc}")
        if isinstance(exc, TimeoutError):
            return errors.BackendUnavailable(f"{self.where} did not answer within "
                                             f"{self.timeout:g} s (sheepdog_store_timeout)")
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            return errors.BackendUnavailable(f"cannot reach {self.where}: "
                                             f"{exc.strerror or exc}")
        return None

    # -- locations ----------------------------------------------------------------

    def claims(self) -> list[str]:
        host = _normal_host(self.address)
        return [f"the Sheepdog cluster at {f'[{host}]' if ':' in host else host}:{self.port}"]

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

    def find(self, conn: proto.Connection, image_id: str) -> proto.Inode:
        """The complete image's inode; NotFound if absent or not complete."""
        name = vdi_name(image_id)
        with missing(proto.NO_VDI, f"no image {image_id!r} in {self.where}"):
            vid = conn.lookup(name)
        inode = conn.inode(vid)
        if inode.name != name or inode.snap_ctime:
            raise errors.NotFound(f"no image {image_id!r} in {self.where}")
        record = AddRecord.parse(inode)
        if record is not None or self._creating(conn, inode):
            raise errors.NotFound(f"image {image_id!r} in {self.where} is incomplete: "
                                  "being added or deleted, or left by an add or a delete "
                                  "that died")
        return inode

    @staticmethod
    def _creating(conn: proto.Connection, inode: proto.Inode) -> bool:
        """A VDI at the sentinel size with no data: an add between NEW_VDI and its record."""
        if inode.vdi_size != inode.max_size or inode.store_policy:
            return False
        step = 1 << 18
        return not any(any(conn.entries(inode.vid, first, min(step, inode.objects - first)))
                       for first in range(0, inode.objects, step))

    def get_size(self, location: SheepdogLocation, context: Context = None) -> int:
        with self.connection() as conn:
            return self.find(conn, location.image_id).vdi_size

    def open_reader(self, location: SheepdogLocation, offset: int, length: int | None,
                    context: Context = None) -> ReadStream:
        with self.connection() as conn:
            inode = self.find(conn, location.image_id)
            if inode.store_policy:
                raise errors.NotSupported(f"image {location.image_id!r} is a hyper volume "
                                          "(a b-tree inode), which this driver cannot read")
            start = min(offset, inode.vdi_size)
            end = inode.vdi_size if length is None else min(inode.vdi_size, start + length)
            first = start // inode.object_size
            entries = conn.entries(inode.vid, first, -(-end // inode.object_size) - first)
            # A delete writes its record before it zeroes an entry: with no record
            # still, the entries were read whole (not half zeroed, read as holes).
            again = conn.inode(inode.vid)
            if again.name != inode.name or AddRecord.parse(again) is not None:
                raise errors.NotFound(f"image {location.image_id!r} in {self.where} "
                                      "is being deleted")
        what = f"image {location.image_id!r} in {self.where}"
        reader = ResumingRead(lambda at: Chunks(self, inode, entries, first, at, end),
                              start, end - start, self.read_retries(), what)
        return ReadStream(reader, end - start)

    @staticmethod
    def read_retries() -> RetryPolicy:
        """How one get resumes: after a lost connection (a sheep restarting),
        up to 4 times over about 7.5 s; after a timeout (a sheep that stalled),
        once, so that one frozen for good fails after twice the timeout."""
        timeouts = [True]

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, TimeoutError):
                return bool(timeouts and timeouts.pop())
            return isinstance(exc, ConnectionError)
        return RetryPolicy(attempts=4, first_backoff=0.5, max_backoff=4.0, retryable=retryable)

    # -- writing --------------------------------------------------------------------

    def open_writer(self, image_id: str, size: int | None, context: Context = None) -> Writer:
        try:
            name = vdi_name(image_id)
        except ValueError as exc:
            raise errors.BadLocation(str(exc)) from None
        return AddWriter(self, image_id, name, size)

    def duplicate(self, conn: proto.Connection, image_id: str) -> errors.Duplicate:
        try:
            self.find(conn, image_id)
        except errors.NotFound:
            return errors.Duplicate(
                f"image {image_id!r} is being added to (or deleted from) {self.where} by "
                "another process, or one that died left it incomplete (a sweep removes it "
                "once that process is provably gone)")
        return errors.Duplicate(f"image {image_id!r} already exists in {self.where}")

    # -- deleting -------------------------------------------------------------------

    def delete(self, location: SheepdogLocation, context: Context = None) -> None:
        """A delete record first (readers see the image absent from then on, and
        a sweep finishes a delete that died), then :meth:`destroy`."""
        with self.connection() as conn:
            inode = self.find(conn, location.image_id)
            conn.write(proto.vdi_oid(inode.vid), AddRecord.mine(deleting=True).pack(),
                       RECORD_OFFSET, inode.nr_copies, inode.copy_policy)
            self.destroy(conn, inode, incomplete=False)

    def destroy(self, conn: proto.Connection, inode: proto.Inode, *, incomplete: bool) -> None:
        """Free a VDI's data, then delete it, as ``dog vdi delete`` does: every
        ``data_vdi_id`` entry zeroed (sheep drops what no longer has a
        reference), then DEL_VDI. An incomplete VDI may also hold objects
        written but not yet recorded: those are removed one by one."""
        vid, objects = inode.vid, min(inode.objects, proto.MAX_OBJECTS)
        entries = conn.entries(vid, 0, objects) if objects else array.array("I")
        requests = []
        idx = 0
        while idx < objects:
            if not entries[idx]:
                idx += 1
                continue
            run = idx
            while run < objects and entries[run] and run - idx < 4096:
                run += 1
            requests.append((proto.WRITE_OBJ, conn.obj_union(
                proto.vdi_oid(vid), proto.INODE_HEADER_SIZE + 4 * idx, inode.nr_copies,
                inode.copy_policy), bytes(4 * (run - idx))))
            idx = run
        self.pipeline(conn, requests)       # the entries must be zero before DEL_VDI
        if incomplete and inode.vdi_size != inode.max_size:
            self.remove_objects(conn, inode, (i for i in range(objects) if not entries[i]))
        try:
            if conn.lookup(inode.name) != vid:
                return                      # deleted meanwhile, and the name reused
            conn.del_vdi(inode.name)
        except proto.SheepError as exc:
            if exc.result != proto.NO_VDI:
                raise

    def remove_objects(self, conn: proto.Connection, inode: proto.Inode,
                       indexes: Iterable[int]) -> None:
        """REMOVE_OBJ the data objects ``indexes`` of ``inode``'s VDI (those
        that exist: an object that does not is no error)."""
        self.pipeline(conn, ((proto.REMOVE_OBJ, conn.obj_union(
            proto.data_oid(inode.vid, i), 0, inode.nr_copies, inode.copy_policy), None)
            for i in indexes), missing_ok=True)

    def pipeline(self, conn: proto.Connection,
                 requests: Iterable[tuple[int, bytes, bytes | None]], *,
                 missing_ok: bool = False) -> None:
        """Send ``(opcode, union, data)`` requests, up to 64 in flight; wait for all."""
        rids: collections.deque[int] = collections.deque()

        def wait(limit: int) -> None:
            while len(rids) > limit:
                try:
                    conn.result(rids.popleft())
                except proto.SheepError as exc:
                    if not (missing_ok and exc.result == proto.NO_OBJ):
                        raise
        for opcode, union, data in requests:
            rids.append(conn.submit(opcode, union, data))
            wait(64)
        wait(0)

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
                    who = (f"{'deleted' if record.deleting else 'written'} by pid "
                           f"{record.pid} on {record.host}")
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
            with missing(proto.NO_OBJ, f"{leftover.name} is gone"):
                inode = conn.inode(vid)
            if not inode.name:
                raise errors.NotFound(f"{leftover.name} is gone")
            record = AddRecord.parse(inode)
            if inode.raw != raw or (record is not None and not record.abandoned(
                    time.time(), self.lease, self.given_up)):
                raise errors.InUse(f"{leftover.name} changed since it was found: "
                                   "its writer is alive")
            self.destroy(conn, inode, incomplete=True)


__all__ = ["SheepdogDriver", "SheepdogLocation", "OPTIONS", "vdi_name"]
