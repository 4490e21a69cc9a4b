"""sheep's TCP protocol, the one ``dog`` and QEMU speak (Sheepdog 1.0).

Every request is a 48-byte ``struct sd_req`` followed, for writes, by
``data_length`` bytes; every response a 48-byte ``struct sd_rsp`` followed by
its ``data_length`` bytes (``include/sheepdog_proto.h``,
``include/internal_proto.h``). Fields are little-endian. A request carries an
``id`` that its response repeats, so several requests can be in flight on one
connection; sheep answers them as they complete, in any order.

A VDI is an inode object (``VDI_BIT | vid << 32``) whose header holds the
name and size and whose ``data_vdi_id[idx]`` says which VDI holds data object
``idx`` (``vid << 32 | idx``, ``1 << block_size_shift`` bytes); 0 means never
written (reads as zeros). sheep drops a data object when the entry pointing
at it is overwritten (its reference count, kept in ledger objects, falls to
zero), which is how ``dog vdi delete`` frees a VDI's data before deleting it.
"""

from __future__ import annotations

import array
import dataclasses
import socket
import struct
import sys
import time
from typing import Any

# Opcodes (requests below 0x80 are the public protocol, the others sheep's own).
CREATE_AND_WRITE_OBJ, READ_OBJ, WRITE_OBJ, REMOVE_OBJ = 0x01, 0x02, 0x03, 0x04
NEW_VDI, GET_VDI_INFO, READ_VDIS, DEL_VDI, GET_CLUSTER_DEFAULT = 0x11, 0x14, 0x15, 0x17, 0x18
GET_NODE_LIST, STAT_SHEEP, STAT_CLUSTER = 0x82, 0x86, 0x87
PROTO_VER, SHEEP_PROTO_VER = 0x02, 0x0A
FLAG_CMD_WRITE = 0x01

# Results.
SUCCESS, NO_OBJ, VDI_EXIST, NO_VDI, NO_SPACE, WAIT_FOR_FORMAT = 0x00, 0x02, 0x04, 0x08, 0x15, 0x16
#: Results that mean the cluster cannot serve anything right now.
UNAVAILABLE = frozenset({0x0F, 0x11, 0x16, 0x17, 0x18, 0x19, 0x83, 0x85})
RESULTS = {
    0x01: "Unknown error", 0x02: "No object found", 0x03: "I/O error",
    0x04: "VDI exists already", 0x05: "Invalid parameters", 0x06: "System error",
    0x07: "VDI is already locked", 0x08: "No VDI found", 0x0A: "Failed to read from VDI",
    0x0B: "Failed to write to VDI", 0x0F: "System is still booting",
    0x11: "System is shutting down", 0x12: "Out of memory on server",
    0x13: "Maximum number of VDIs reached", 0x14: "Protocol version mismatch",
    0x15: "Server has no space for new objects",
    0x16: "Waiting for cluster to be formatted",
    0x17: "Waiting for other nodes to join cluster", 0x18: "Node has failed to join cluster",
    0x19: "IO has halted as there are not enough living nodes",
    0x1A: "Object is read-only", 0x83: "Cluster has not been formatted",
    0x85: "Network error between sheep", 0x88: "The buffer is too small",
}

HEADER = struct.Struct("<BBHIII")           # proto_ver opcode flags epoch id data_length
REQ_OBJ = struct.Struct("<QQBBBBIII")       # oid cow_oid copies copy_policy ec_index
#                                             reserved tgt_epoch offset pad
REQ_VDI = struct.Struct("<QIBBBBII8x")      # vdi_size base_vdi_id copies copy_policy
#                                             store_policy block_size_shift snapid type
REQ_CLUSTER = struct.Struct("<QQBBHIIB3x")  # oid ctime copies copy_policy flags tag
#                                             nodes_nr block_size_shift
RSP_VDI = struct.Struct("<4xIIIBB2x12x")    # rsvd vdi_id attr_id copies block_size_shift
RSP_NODE = struct.Struct("<4xI8xQQ")        # nr_nodes store_size store_free
RSP_DEFAULT = struct.Struct("<4xBBB25x")     # nr_copies copy_policy block_size_shift
NO_UNION = bytes(32)

MAX_VDI_NAME = 255                          # SD_MAX_VDI_LEN, less the NUL
PIECE = 4 << 20                             # the largest request this client sends or asks
NR_VDIS = 1 << 24
VDI_BIT = 1 << 63
MAX_OBJECTS = 1 << 20                       # data_vdi_id entries of a plain inode
# struct sd_inode's header: name[256] tag[256] create_time snap_ctime vm_clock_nsec
# vdi_size vm_state_size (u64) copy_policy store_policy nr_copies block_size_shift
# (u8) snap_id vdi_id parent_vdi_id btree_counter (u32), __unused[1023] (u32);
# data_vdi_id[] starts at INODE_HEADER_SIZE.
INODE_HEAD = struct.Struct("<256s256sQQQQQBBBBIIII")
INODE_HEADER_SIZE = 4664
VDI_SIZE_OFFSET = 536
# struct epoch_log: ctime time epoch nr_nodes disable_recovery nr_copies copy_policy
# pad[3] flags drv_name[16], then nr_nodes struct sd_node (80 bytes each).
EPOCH_LOG = struct.Struct("<QQIIBBB3xH16s")
NODE_SIZE = 80
# struct sd_node: rb_node (24 bytes), node_id: addr[16] port (u16) ...
NODE_ADDR = struct.Struct("<24x16sH")


def vdi_oid(vid: int) -> int:
    return VDI_BIT | vid << 32


def data_oid(vid: int, idx: int) -> int:
    return vid << 32 | idx


class SheepError(Exception):
    """sheep answered a request with an error result."""

    def __init__(self, opcode: int, result: int) -> None:
        self.opcode = opcode
        self.result = result
        super().__init__(f"{RESULTS.get(result, 'error')} (sheep result {result:#04x} "
                         f"to opcode {opcode:#04x})")


class ProtocolError(Exception):
    """sheep sent something this client cannot make sense of; the connection is dropped."""


@dataclasses.dataclass(frozen=True)
class Inode:
    """The header of a VDI's inode object (what this driver uses of it)."""

    name: bytes
    tag: bytes
    create_time: int            # seconds << 32 | nanoseconds, sheep's clock
    snap_ctime: int
    vdi_size: int
    copy_policy: int
    store_policy: int
    nr_copies: int
    block_size_shift: int
    vid: int
    raw: bytes = dataclasses.field(repr=False)

    @classmethod
    def parse(cls, raw: bytes) -> Inode:
        f = INODE_HEAD.unpack_from(raw)
        return cls(f[0].split(b"\0", 1)[0], f[1].split(b"\0", 1)[0], f[2], f[3], f[5],
                   f[7], f[8], f[9], f[10], f[12], bytes(raw))

    @property
    def object_size(self) -> int:
        return 1 << self.block_size_shift

    @property
    def max_size(self) -> int:
        """The largest size a plain VDI with this object size has (4 TiB for 4 MiB)."""
        return self.object_size * MAX_OBJECTS

    @property
    def objects(self) -> int:
        """How many data objects the size spans (count_data_objs)."""
        return -(-self.vdi_size // self.object_size)


class Connection:
    """One TCP connection to a sheep, requests pipelined by id.

    Not thread-safe: one user at a time. Any failure while a response is half
    read leaves the connection ``broken``: it must then be closed, not reused.
    """

    def __init__(self, address: str, port: int, timeout: float) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection((address, port), timeout=timeout)
        try:
            # Blocking, with kernel timeouts: recv(n, MSG_WAITALL) then fills a
            # bytes object of n directly (no copy) and still gives up after
            # ``timeout`` seconds without progress.
            self.sock.settimeout(None)
            tv = struct.pack("ll", int(timeout), int(timeout % 1 * 1e6))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            self.sock.close()
            raise
        self._next_id = 0
        self.pending: dict[int, tuple[int, int]] = {}   # id -> (opcode, bytes expected)
        self._done: dict[int, tuple[int, int, bytes, bytes | None]] = {}
        self.broken = False

    def _timed_out(self) -> TimeoutError:
        self.broken = True
        return TimeoutError(f"sheep did not answer within {self.timeout:g} s")

    def close(self) -> None:
        self.broken = True
        self.sock.close()

    # -- sending -----------------------------------------------------------------

    def submit(self, opcode: int, union: bytes, data: Any = None, *, read_length: int = 0,
               flags: int = 0) -> int:
        """Send one request (``data`` is written after the header); return its id."""
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        rid = self._next_id
        length = read_length
        if data is not None:
            flags |= FLAG_CMD_WRITE
            length = len(data)
        ver = PROTO_VER if opcode < 0x80 else SHEEP_PROTO_VER
        head = HEADER.pack(ver, opcode, flags, 0, rid, length) + union
        self.pending[rid] = (opcode, read_length)
        try:
            self._send(head, data)
        except BlockingIOError:
            raise self._timed_out() from None
        except BaseException:
            self.broken = True
            raise
        return rid

    def _send(self, head: bytes, data: Any) -> None:
        if data is None or len(data) == 0:
            self.sock.sendall(head)
            return
        view = memoryview(data).cast("B")
        sent = self.sock.sendmsg([head, view])
        if sent < len(head):
            self.sock.sendall(head[sent:])
            sent = len(head)
        if sent - len(head) < len(view):
            self.sock.sendall(view[sent - len(head):])

    # -- receiving -----------------------------------------------------------------

    def _recv(self, n: int) -> bytes:
        try:
            started = time.monotonic()
            data = self.sock.recv(n, socket.MSG_WAITALL)
            if len(data) == n:
                return data
            parts = [data]
            got = len(data)
            while data and got < n:
                # A short read: a signal, or SO_RCVTIMEO ran out after part of
                # the answer came. A sheep that stopped mid-answer has timed
                # out: waiting a whole timeout again let a 3 s freeze pass
                # unnoticed under a 2.5 s timeout.
                if time.monotonic() - started >= self.timeout and not self._readable():
                    raise self._timed_out()
                started = time.monotonic()
                data = self.sock.recv(n - got, socket.MSG_WAITALL)
                parts.append(data)
                got += len(data)
        except BlockingIOError:
            raise self._timed_out() from None
        if got < n:
            raise ConnectionResetError("sheep closed the connection")
        return b"".join(parts)

    def _receive_one(self) -> int:
        try:
            head = self._recv(48)
            _, _, _, _, rid, length = HEADER.unpack_from(head)
            if rid not in self.pending:
                raise ProtocolError(f"sheep answered request {rid}, which was not sent")
            if length > max(self.pending[rid][1], 65536):
                raise ProtocolError(f"sheep announced {length} bytes for request {rid}")
            data = self._recv(length) if length else None
        except BaseException:
            self.broken = True
            raise
        result = struct.unpack_from("<I", head, 16)[0]
        self._done[rid] = (self.pending.pop(rid)[0], result, head[16:], data)
        return rid

    def _readable(self) -> bool:
        """Whether some of the answer is waiting in the socket now."""
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return False

    def closed_by_peer(self) -> bool:
        """For an idle connection: whether sheep closed it (or sent what was not asked)."""
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False            # nothing to read: open and idle
        except OSError:
            pass
        return True

    def result(self, rid: int) -> tuple[bytes, bytes | None]:
        """Wait for request ``rid``: (the response's 32-byte union, its data);
        SheepError if sheep failed it."""
        while rid not in self._done:
            if rid not in self.pending:
                raise ProtocolError(f"request {rid} is not in flight")
            self._receive_one()
        opcode, result, union, data = self._done.pop(rid)
        if result != SUCCESS:
            raise SheepError(opcode, result)
        return union, data

    def call(self, opcode: int, union: bytes, data: Any = None, *, read_length: int = 0,
             flags: int = 0) -> tuple[bytes, bytes | None]:
        """One request, waited for."""
        return self.result(self.submit(opcode, union, data, read_length=read_length,
                                       flags=flags))

    # -- requests ------------------------------------------------------------------

    @staticmethod
    def _names(name: bytes, tag: bool) -> bytes:
        return name.ljust(256, b"\0") + (bytes(256) if tag else b"")

    def lookup(self, name: bytes) -> int:
        """GET_VDI_INFO: the vid of the working VDI ``name``."""
        union, _ = self.call(GET_VDI_INFO, REQ_VDI.pack(0, 0, 0, 0, 0, 0, 0, 0),
                             self._names(name, tag=True))
        return RSP_VDI.unpack(union)[1]

    def new_vdi(self, name: bytes, size: int, block_size_shift: int) -> tuple[int, int]:
        """NEW_VDI with the cluster's redundancy: (vid, copies)."""
        union, _ = self.call(NEW_VDI, REQ_VDI.pack(size, 0, 0, 0, 0, block_size_shift, 0, 0),
                             self._names(name, tag=False))
        _, vid, _, copies, _ = RSP_VDI.unpack(union)
        return vid, copies

    def del_vdi(self, name: bytes) -> None:
        self.call(DEL_VDI, REQ_VDI.pack(0, 0, 0, 0, 0, 0, 0, 0), self._names(name, tag=True))

    def obj_union(self, oid: int, offset: int = 0, copies: int = 0, copy_policy: int = 0,
                  ) -> bytes:
        return REQ_OBJ.pack(oid, 0, copies, copy_policy, 0, 0, 0, offset, 0)

    def read(self, oid: int, length: int, offset: int = 0) -> bytes:
        _, data = self.call(READ_OBJ, self.obj_union(oid, offset), read_length=length)
        if data is None or len(data) != length:
            raise ProtocolError(f"sheep returned {0 if data is None else len(data)} bytes "
                                f"of object {oid:016x}, {length} were asked")
        return data

    def write(self, oid: int, data: Any, offset: int, copies: int, copy_policy: int) -> None:
        self.call(WRITE_OBJ, self.obj_union(oid, offset, copies, copy_policy), data)

    def inode(self, vid: int) -> Inode:
        return Inode.parse(self.read(vdi_oid(vid), INODE_HEADER_SIZE))

    def entries(self, vid: int, first: int, count: int) -> array.array[int]:
        """data_vdi_id[first:first + count]."""
        found = array.array("I")
        if count > 0:
            found.frombytes(self.read(vdi_oid(vid), 4 * count, INODE_HEADER_SIZE + 4 * first))
            if sys.byteorder == "big":
                found.byteswap()
        return found

    def cluster_default(self) -> tuple[int, int, int]:
        """(copies, copy_policy, block_size_shift) new VDIs get."""
        union, _ = self.call(GET_CLUSTER_DEFAULT, NO_UNION)
        copies, policy, shift = RSP_DEFAULT.unpack(union)
        return copies, policy, shift

    def stat_sheep(self) -> tuple[int, int]:
        """This node's (store size, free bytes)."""
        union, _ = self.call(STAT_SHEEP, NO_UNION)
        _, size, free = RSP_NODE.unpack(union)
        return size, free

    def read_vdis(self) -> bytes:
        """The bitmap of VDI ids in use (deleted ones included)."""
        _, data = self.call(READ_VDIS, NO_UNION, read_length=NR_VDIS // 8)
        return bytes(data or b"")

    def cluster_status(self) -> tuple[int, dict[str, Any]]:
        """STAT_CLUSTER: (sheep's result: 0 running, else why not; the latest epoch's facts)."""
        nodes = 64
        length = EPOCH_LOG.size + nodes * NODE_SIZE
        rid = self.submit(STAT_CLUSTER, REQ_CLUSTER.pack(0, 0, 0, 0, 0, 0, nodes, 0),
                          read_length=length)
        while rid not in self._done:
            self._receive_one()
        _, result, _, data = self._done.pop(rid)
        facts: dict[str, Any] = {}
        if result == SUCCESS and data and len(data) >= EPOCH_LOG.size:
            _, _, epoch, nr_nodes, no_recovery, copies, policy, _, driver = \
                EPOCH_LOG.unpack_from(data)
            facts = {"epoch": epoch, "nodes": nr_nodes, "copies": copies,
                     "copy_policy": policy, "store_driver": driver.split(b"\0")[0].decode(),
                     "recovery": "disabled" if no_recovery else "enabled"}
        return result, facts

    def node_addresses(self) -> list[tuple[str, int]]:
        """Every node's (address, port), from GET_NODE_LIST."""
        union, data = self.call(GET_NODE_LIST, NO_UNION, read_length=NODE_SIZE * 1024)
        count = struct.unpack_from("<I", union, 4)[0]
        raw = bytes(data or b"")
        nodes = []
        for i in range(min(count, len(raw) // NODE_SIZE)):
            addr, port = NODE_ADDR.unpack_from(raw, i * NODE_SIZE)
            packed = addr[12:] if addr[:12] == bytes(10) + b"\xff\xff" or addr[:12] == bytes(12) \
                else addr
            family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
            nodes.append((socket.inet_ntop(family, packed), port))
        return nodes

