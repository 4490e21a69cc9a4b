"""An add: a VDI written under its final name, invisible until commit.

sheep has no rename, and sets nothing but a VDI's name, size, redundancy and
object size when it creates one, so an add goes (doc/drivers/sheepdog.rst
says why this way):

1. ``NEW_VDI`` at the *sentinel* size, the largest a plain VDI has
   (:attr:`~protocol.Inode.max_size`, 4 TiB for 4 MiB objects): a VDI of
   exactly that size with no data object is one being created;
2. the *add record* (:class:`AddRecord`: who writes, a heartbeat) written
   into the last 128 bytes of the inode header's unused area, then the real
   size (an unknown size grows as data comes);
3. data objects, pipelined on one connection (up to ``chunk_size`` bytes
   unanswered); all-zero pieces are left as holes; objects sheep acknowledged
   are recorded in the inode's ``data_vdi_id`` table in runs, so an entry never
   names an object that does not exist;
4. commit: every answer awaited, the last objects recorded, the exact size,
   a check that the VDI is still this writer's, then the record cleared in one
   128-byte write.

Readers treat a VDI with a record, or at the sentinel size with no data, as
absent (:meth:`SheepdogDriver.find`). A failed add removes what it wrote
(:meth:`SheepdogDriver.destroy`); one whose writer died is found by
:meth:`SheepdogDriver.find_leftovers` once the writer is provably gone.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import socket
import struct
import threading
import time
import uuid
from typing import TYPE_CHECKING

from multistore import errors
from multistore.driver import Stored, Writer
from multistore.drivers.sheepdog import protocol as proto

if TYPE_CHECKING:
    from multistore.drivers.sheepdog import SheepdogDriver

LOG = logging.getLogger(__name__)
MiB = 1 << 20
#: Written data objects are recorded in the inode in runs of this many.
RECORD_RUN = 16
#: The add record: the last 128 bytes of the inode header's unused area.
RECORD = struct.Struct("<8sQQIQ16s64s")   # magic heartbeat_ns started_ns pid
#                                           pid_start boot_id host
RECORD_OFFSET = proto.INODE_HEADER_SIZE - 128
MAGIC = b"MSADD\x00v1"
#: The same record, written by a delete before it frees anything.
DELETE_MAGIC = b"MSDEL\x00v1"
#: Seconds between a writer's heartbeats; seconds without one before a writer
#: counts as gone (:attr:`SheepdogDriver.lease`).
HEARTBEAT = 10.0
LEASE = 120.0
ZEROS = bytes(proto.PIECE)


def _proc_start(pid: int) -> int | None:
    """A process's start time (clock ticks since boot), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
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
    """Who is writing (or deleting) a VDI, and when it last said so (ns since
    the epoch). A VDI holding one is incomplete: absent to every reader."""

    heartbeat: int
    started: int
    pid: int
    pid_start: int
    boot_id: bytes
    host: str
    deleting: bool = False

    @classmethod
    def mine(cls, deleting: bool = False) -> AddRecord:
        now = time.time_ns()
        return cls(now, now, os.getpid(), _proc_start(os.getpid()) or 0, _boot_id(),
                   socket.gethostname()[:64], deleting)

    @classmethod
    def parse(cls, inode: proto.Inode) -> AddRecord | None:
        raw = inode.raw[RECORD_OFFSET:RECORD_OFFSET + RECORD.size]
        magic, beat, started, pid, pid_start, boot, host = RECORD.unpack(raw)
        if magic not in (MAGIC, DELETE_MAGIC):
            return None
        return cls(beat, started, pid, pid_start, boot,
                   host.rstrip(b"\0").decode("utf-8", "replace"), magic == DELETE_MAGIC)

    def pack(self) -> bytes:
        return RECORD.pack(DELETE_MAGIC if self.deleting else MAGIC, self.heartbeat,
                           self.started, self.pid, self.pid_start, self.boot_id,
                           self.host.encode()[:64]).ljust(128, b"\0")

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


class AddWriter(Writer):
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
        limit = self.inode.max_size - 1
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
            n = min(proto.PIECE, self.obj - inner, len(view) - off)
            piece = view[off:off + n]
            if not ZEROS.startswith(piece):        # zeros stay holes
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
        if upto - self.recorded < (1 if final else RECORD_RUN):
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
        if not self._still_mine(self.conn.inode(self.vid)):
            raise errors.MultistoreError(
                f"image {self.image_id!r} was removed from {self.driver.where} while being "
                f"written (its writer stopped for more than {self.driver.lease:g} s?)")
        self._header(RECORD_OFFSET, bytes(128))
        self.finished = True
        self.driver.release(self.conn)
        return Stored(self.driver.location_for(self.image_id))

    def _still_mine(self, inode: proto.Inode) -> bool:
        """The VDI is alive under this add's name, with this add's record (or,
        right after NEW_VDI, none yet)."""
        if inode.name != self.name or inode.vid != self.vid:
            return False
        found = AddRecord.parse(inode)
        return (found is None and inode.vdi_size == inode.max_size) or \
            (found is not None and found.writer == self.record.writer)

    def _stop_heartbeat(self, wait: bool = True) -> None:
        """Stop the heartbeats. An abort does not wait: the thread may be waiting
        for a sheep that stopped answering (the add's failure), and a late
        heartbeat only touches the record's heartbeat field."""
        self.stop.set()
        if wait and self.beat is not None:
            self.beat.join()

    def abort(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._stop_heartbeat(wait=False)
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
            if self._still_mine(inode):
                d.destroy(conn, inode, incomplete=True)
            elif not inode.name and self.written:
                # Swept while this writer was stalled: what it wrote since, unrecorded
                # in the deleted inode, would be nobody's. (Its vid is never reused.)
                d.remove_objects(conn, inode, range(-(-self.written // self.obj)))
        except BaseException:
            d.given_up.add(self.record.writer)     # a sweep removes it
            raise
        finally:
            d.release(conn)


