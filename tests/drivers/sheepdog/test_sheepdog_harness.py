"""The Sheepdog harness works: real clusters, what ``dog`` answers, and sheep's wire protocol.

These tests pin down the behaviour the sheepdog driver is written against:
``dog``'s output and exit codes (some failures exit 0), how a full cluster
fails, how a stopped or frozen sheep looks; and, with a small client of
sheep's TCP protocol (``SheepClient`` below), that a VDI can be created,
read, written and deleted without ``dog``, byte for byte as ``dog`` sees it.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from typing import Any

import multistore_sheepdog_harness as harness
import pytest

MiB = harness.MiB
OBJ = harness.OBJECT_SIZE


def _data(size: int, seed: int = 0) -> bytes:
    """Not zeros (sheep trims zero blocks) and not periodic in 4 MiB."""
    block = os.urandom(65536) if seed == 0 else bytes((seed + i) % 251 for i in range(65536))
    return (block * (size // len(block) + 1))[:size][::-1]


def _err(done: subprocess.CompletedProcess[bytes]) -> str:
    return done.stderr.decode(errors="replace")


# -- clusters ------------------------------------------------------------------------

def test_clusters_run_side_by_side(sheepdog_a: Any, sheepdog_b: Any) -> None:
    assert (sheepdog_a.address, sheepdog_b.address) == ("127.0.0.1", "127.0.0.1")
    assert sheepdog_a.port != sheepdog_b.port
    for c in (sheepdog_a, sheepdog_b):
        assert c.status() == "running, auto-recovery enabled"
        assert len(c.processes()) == 2                 # sheep and its logger
        info = c.node_info()
        assert info["size"] > 0 and info["avail"] <= info["size"]
    # Each one's own shared-state file: two clusters of one node each, not one of two.
    nodes = sheepdog_a.dog("node", "list", "-r").stdout.decode().splitlines()
    assert nodes == [f"0 127.0.0.1:{sheepdog_a.port} 128 16777343"]


def test_vdi_round_trip(sheepdog_a: Any) -> None:
    size = 2 * OBJ + 12345                       # the last object partly used
    data = _data(size)
    c = sheepdog_a
    c.dog("vdi", "create", "rt", str(size))
    try:
        assert c.vdis()["rt"]["size"] == size
        assert c.vdis()["rt"]["used"] == 0
        c.dog("vdi", "write", "rt", "0", str(size), input=data)
        assert c.dog("vdi", "read", "rt").stdout == data
        # A range across an object boundary; a range past the end is cut at the size.
        assert c.dog("vdi", "read", "rt", str(OBJ - 10), "20").stdout == data[OBJ - 10:OBJ + 10]
        assert c.dog("vdi", "read", "rt", str(size - 5), "100").stdout == data[-5:]
        assert c.vdis()["rt"]["used"] == 3 * OBJ
        vid = c.vdis()["rt"]["vid"]
        assert {f"{vid:06x}0000000{i}" for i in range(3)} <= {o[2:] for o in c.objects()}
    finally:
        c.dog("vdi", "delete", "rt")
    assert "rt" not in c.vdis()
    gone = c.dog("vdi", "read", "rt", "0", "10", check=False)
    assert gone.returncode == 1
    assert "Failed to open VDI rt (snapshot id: 0 snapshot tag: ): No VDI found" in _err(gone)


def test_two_clusters_are_independent(sheepdog_a: Any, sheepdog_b: Any) -> None:
    one, two = _data(MiB, seed=1), _data(MiB, seed=2)
    sheepdog_a.dog("vdi", "create", "same-name", "1M")
    sheepdog_b.dog("vdi", "create", "same-name", "1M")
    try:
        sheepdog_a.dog("vdi", "write", "same-name", input=one)
        sheepdog_b.dog("vdi", "write", "same-name", input=two)
        assert sheepdog_a.dog("vdi", "read", "same-name").stdout == one
        sheepdog_a.dog("vdi", "delete", "same-name")
        assert "same-name" not in sheepdog_a.vdis()
        assert sheepdog_b.dog("vdi", "read", "same-name").stdout == two
    finally:
        sheepdog_a.dog("vdi", "delete", "same-name")
        sheepdog_b.dog("vdi", "delete", "same-name")


# -- what dog answers (the driver parses this) -----------------------------------------

def test_dog_failures_and_exit_codes(sheepdog_a: Any) -> None:
    c = sheepdog_a
    c.dog("vdi", "create", "codes", "4M")
    try:
        dup = c.dog("vdi", "create", "codes", "4M", check=False)
        assert (dup.returncode, _err(dup).strip()) == (
            1, "Failed to create VDI codes: VDI exists already")
        shrink = c.dog("vdi", "resize", "codes", "1M", check=False)
        assert shrink.returncode == 64 and "Shrinking VDIs is not implemented" in _err(shrink)
        # Writing past the end is cut at the size, silently, exit 0: grow first.
        tail = c.dog("vdi", "write", "codes", str(OBJ - 2), "4", input=b"abcd", check=False)
        assert (tail.returncode, tail.stderr) == (0, b"")
        assert c.dog("vdi", "read", "codes", str(OBJ - 2)).stdout == b"ab"
        c.dog("vdi", "resize", "codes", "8M")
        assert c.vdis()["codes"]["size"] == 8 * MiB
        c.dog("vdi", "write", "codes", str(OBJ - 2), "4", input=b"abcd")
        assert c.dog("vdi", "read", "codes", str(OBJ - 2), "4").stdout == b"abcd"
        # stdin shorter than the length: the rest of that object piece is zeros, exit 0.
        short = c.dog("vdi", "write", "codes", "0", "10", input=b"xyz", check=False)
        assert short.returncode == 0
        assert c.dog("vdi", "read", "codes", "0", "10").stdout == b"xyz" + bytes(7)
    finally:
        c.dog("vdi", "delete", "codes")
    # A missing VDI: read/write/resize exit 1; delete says so but exits 0 (dog/vdi.c
    # do_vdi_delete returns EXIT_SUCCESS on every path).
    for args in (("read", "nope", "0", "1"), ("write", "nope", "0", "1"),
                 ("resize", "nope", "8M"), ("delete", "nope")):
        done = c.dog("vdi", *args, input=b"x", check=False)
        assert "Failed to open VDI nope (snapshot id: 0 snapshot tag: ): No VDI found" in _err(done)
        assert done.returncode == (0 if args[0] == "delete" else 1), args
    assert c.dog("vdi", "list", "-r", "nope").stdout == b""     # exit 0, nothing


def test_full_cluster(sheepdog_full: Any) -> None:
    c = sheepdog_full
    assert c.node_info()["avail"] < OBJ
    c.dog("vdi", "create", "nofit", "8M")            # the inode is sparse: it fits
    try:
        done = c.dog("vdi", "write", "nofit", input=_data(8 * MiB), check=False)
        assert done.returncode == 1
        vid = c.vdis()["nofit"]["vid"]
        assert _err(done) == (f"Failed to write object {vid:08x}00000000: Server has no "
                              "space for new objects\nFailed to write VDI\n")
        assert "nofit" in c.vdis()                    # a failed write leaves the VDI
    finally:
        c.dog("vdi", "delete", "nofit")


def test_full_cluster_recovers(sheepdog_small: Any) -> None:
    c = sheepdog_small
    c.fill()
    c.unfill()
    c.dog("vdi", "create", "fits", "8M")
    try:
        c.dog("vdi", "write", "fits", input=_data(8 * MiB))
    finally:
        c.dog("vdi", "delete", "fits")


def test_down_frozen_and_unformatted(make_sheepdog_cluster: Any) -> None:
    c = make_sheepdog_cluster()
    c.dog("vdi", "create", "keep", "4M")
    c.dog("vdi", "write", "keep", input=b"kept")
    # Frozen: the kernel still accepts connections, dog waits for ever.
    c.freeze()
    with pytest.raises(harness.SheepdogError, match="did not finish in 2 s"):
        c.dog("vdi", "list", timeout=2)
    c.thaw()
    # Killed: connection refused. Commands that first fetch the node list (create,
    # list, node/cluster info) exit 2; those that first look the VDI up exit 1
    # ("I/O error"), delete exits 0.
    c.kill()
    refused = f"failed to connect to 127.0.0.1:{c.port}: Connection refused\n"
    for args, code, last in ((("create", "n", "4M"), 2, "Failed to get node list"),
                             (("list", "-r"), 2, refused.strip()),
                             (("read", "keep", "0", "4"), 1, "I/O error"),
                             (("delete", "keep"), 0, "I/O error")):
        done = c.dog("vdi", *args, check=False)
        assert done.returncode == code, args
        assert _err(done).startswith(refused) and _err(done).strip().endswith(last), args
    assert c.status() == "Failed to get node list"
    # restart: the same data, served again.
    c.restart()
    assert c.dog("vdi", "read", "keep", "0", "4").stdout == b"kept"

    # Never formatted: sheep answers, VDI requests fail, but a listing is empty, exit 0.
    fresh = make_sheepdog_cluster()
    fresh.stop()
    fresh.start(formatted=False)
    assert fresh.status() == "Waiting for cluster to be formatted"
    create = fresh.dog("vdi", "create", "x", "4M", check=False)
    assert (create.returncode, _err(create).strip()) == (
        1, "Failed to create VDI x: Waiting for cluster to be formatted")
    read = fresh.dog("vdi", "read", "x", check=False)
    assert read.returncode == 1 and _err(read).endswith(": Waiting for cluster to be formatted\n")
    lst = fresh.dog("vdi", "list", "-r", check=False)
    assert (lst.returncode, lst.stdout, lst.stderr) == (0, b"", b"")
    node = fresh.dog("node", "info", "-r", check=False)
    assert node.returncode == 2 and "Waiting for cluster to be formatted" in _err(node)


def test_command_line_start_stop(tmp_path: Any) -> None:
    """``python tests/backends/sheepdog.py start DIR PORT`` / ``stop DIR``, as by hand."""
    port = harness.free_port(range(17030, 17100))
    script = [sys.executable, harness.__file__]
    directory = tmp_path / "by-hand"
    out = subprocess.run([*script, "start", str(directory), str(port)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    cluster = harness.SheepdogCluster(directory, port)
    try:
        started = json.loads(out)
        assert (started["port"], started["pid"]) == (port, cluster.pid())
        assert cluster.status().startswith("running")
    finally:
        subprocess.run([*script, "stop", str(directory)], timeout=60, check=True)
    assert cluster.pid() is None and cluster.processes() == []


def test_missing_binaries_say_how_to_provide_them(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Any) -> None:
    monkeypatch.delenv("MULTISTORE_SHEEPDOG_BIN", raising=False)
    monkeypatch.setenv("MULTISTORE_SHEEPDOG_TARBALL", str(tmp_path / "none.tar.gz"))
    monkeypatch.setenv("MULTISTORE_SHEEPDOG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(harness.SheepdogNotFound) as exc:
        harness.find_binaries()
    text = str(exc.value)
    for needed in ("shared/vendor/sheepdog-1.0-3ebe5ea7.tar.gz", "MULTISTORE_SHEEPDOG_TARBALL",
                   "MULTISTORE_SHEEPDOG_BIN", "scripts/deps/sheepdog.sh", "PATH"):
        assert needed in text
    monkeypatch.setenv("MULTISTORE_SHEEPDOG_BIN", str(tmp_path))
    with pytest.raises(harness.SheepdogError, match="holds no executable sheep and dog"):
        harness.find_binaries()


# -- sheep's wire protocol (what dog and QEMU speak) -------------------------------------
#
# include/sheepdog_proto.h, include/internal_proto.h. Every request is a 48-byte
# struct sd_req, then data_length bytes when flags has SD_FLAG_CMD_WRITE; every
# response a 48-byte struct sd_rsp, then its data_length bytes. All fields are in
# the host's byte order (sheep copies the structs as they are): little-endian here.

SD_PROTO_VER = 0x02             # requests with opcode < 0x80 (0 is accepted too)
SD_SHEEP_PROTO_VER = 0x0A       # internal requests (opcode >= 0x80) must carry this
OP_CREATE_AND_WRITE_OBJ, OP_READ_OBJ, OP_WRITE_OBJ = 0x01, 0x02, 0x03
OP_NEW_VDI, OP_GET_VDI_INFO, OP_DEL_VDI = 0x11, 0x14, 0x17
OP_STAT_SHEEP = 0x86
FLAG_CMD_WRITE = 0x01
RES_SUCCESS, RES_VDI_EXIST, RES_NO_VDI, RES_NO_SPACE = 0x00, 0x04, 0x08, 0x15
RES_WAIT_FOR_FORMAT = 0x16
SD_MAX_VDI_LEN = SD_MAX_VDI_TAG_LEN = 256
SD_INODE_HEADER_SIZE = 4664     # offsetof(struct sd_inode, data_vdi_id)
VDI_BIT = 1 << 63

# struct sd_req / sd_rsp: the common 16 bytes, then a 32-byte union.
HEADER = struct.Struct("<BBHIII")   # proto_ver opcode flags epoch id data_length
REQ_OBJ = struct.Struct("<QQBBBBIII")   # oid cow_oid copies copy_policy ec_index reserved
#                                         tgt_epoch offset __pad
REQ_VDI = struct.Struct("<QIBBBBII8x")  # vdi_size base_vdi_id copies copy_policy
#                                         store_policy block_size_shift snapid type
RSP_VDI = struct.Struct("<IIIIBB2x12x")  # result rsvd vdi_id attr_id copies block_size_shift
RSP_NODE = struct.Struct("<IIQQQ")      # result nr_nodes __reserved store_size store_free
# struct sd_inode, its header: name[256] tag[256] create_time snap_ctime vm_clock_nsec
# vdi_size vm_state_size (u64 each) copy_policy store_policy nr_copies block_size_shift
# (u8 each) snap_id vdi_id parent_vdi_id btree_counter (u32 each), then 1023 unused u32;
# then data_vdi_id[1 << 20] (u32), then gref[1 << 20] (8 bytes each).
INODE_HEAD = struct.Struct("<256s256sQQQQQBBBBIIII")


def vdi_oid(vid: int) -> int:
    """vid_to_vdi_oid: the inode object of VDI ``vid``."""
    return VDI_BIT | vid << 32


def data_oid(vid: int, idx: int) -> int:
    """vid_to_data_oid: data object ``idx`` (bytes idx*4MiB...) held by VDI ``vid``."""
    return vid << 32 | idx


class SheepError(Exception):
    def __init__(self, op: int, result: int) -> None:
        super().__init__(f"opcode {op:#04x}: result {result:#04x}")
        self.result = result


class SheepClient:
    """One TCP connection to sheep, one request at a time (``id`` lets a client
    pipeline, answers then come back in any order; not needed here)."""

    def __init__(self, port: int, address: str = "127.0.0.1", timeout: float = 30) -> None:
        self.sock = socket.create_connection((address, port), timeout=timeout)

    def close(self) -> None:
        self.sock.close()

    def _recv(self, n: int) -> bytes:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = self.sock.recv_into(view[got:])
            if not k:
                raise ConnectionError("sheep closed the connection")
            got += k
        return bytes(buf)

    def request(self, opcode: int, union: bytes, data: bytes = b"", *,
                read_length: int = 0, flags: int = 0) -> tuple[bytes, bytes]:
        """Send one request; return (the response's 32-byte union, its data)."""
        ver = SD_PROTO_VER if opcode < 0x80 else SD_SHEEP_PROTO_VER
        if data:
            flags |= FLAG_CMD_WRITE
        length = len(data) if data else read_length
        self.sock.sendall(HEADER.pack(ver, opcode, flags, 0, 0, length) + union + data)
        head = self._recv(48)
        _, _, _, _, _, rlength = HEADER.unpack_from(head)
        rdata = self._recv(rlength) if rlength else b""
        result = struct.unpack_from("<I", head, 16)[0]
        if result != RES_SUCCESS:
            raise SheepError(opcode, result)
        return head[16:], rdata

    # -- VDIs ---------------------------------------------------------------------

    @staticmethod
    def _name(name: str, tag: bool) -> bytes:
        raw = name.encode().ljust(SD_MAX_VDI_LEN, b"\0")
        return raw + bytes(SD_MAX_VDI_TAG_LEN) if tag else raw

    def lookup(self, name: str) -> tuple[int, int]:
        """SD_OP_GET_VDI_INFO: (vid, copies). Data: name[256] + tag[256]."""
        union, _ = self.request(OP_GET_VDI_INFO, REQ_VDI.pack(0, 0, 0, 0, 0, 0, 0, 0),
                                self._name(name, tag=True))
        _, _, vid, _, copies, _ = RSP_VDI.unpack(union)
        return vid, copies

    def create(self, name: str, size: int) -> tuple[int, int]:
        """SD_OP_NEW_VDI: (vid, copies). Data: name[256]; copies 0 = the cluster's,
        block_size_shift 0 = the cluster's (22: 4 MiB objects)."""
        union, _ = self.request(OP_NEW_VDI, REQ_VDI.pack(size, 0, 0, 0, 0, 0, 0, 0),
                                self._name(name, tag=False))
        _, _, vid, _, copies, _ = RSP_VDI.unpack(union)
        return vid, copies

    def delete(self, name: str) -> None:
        """What ``dog vdi delete`` does: unlink every data object from the inode
        (sheep then drops them), then SD_OP_DEL_VDI (name[256] + tag[256])."""
        vid, copies = self.lookup(name)
        head = self.inode_head(vid)
        n = -(-head["vdi_size"] // (1 << head["block_size_shift"]))
        if n:
            self.write(vdi_oid(vid), bytes(4 * n), SD_INODE_HEADER_SIZE, copies)
        self.request(OP_DEL_VDI, REQ_VDI.pack(0, 0, 0, 0, 0, 0, 0, 0),
                     self._name(name, tag=True))

    def inode_head(self, vid: int) -> dict[str, Any]:
        raw = self.read(vdi_oid(vid), INODE_HEAD.size)
        f = INODE_HEAD.unpack(raw)
        return {"name": f[0].rstrip(b"\0").decode(), "vdi_size": f[5], "nr_copies": f[9],
                "block_size_shift": f[10], "vdi_id": f[12], "store_policy": f[8]}

    def data_vdi_ids(self, vid: int, n: int) -> list[int]:
        """data_vdi_id[0:n]: which VDI holds each data object (0: never written;
        another vid: shared with a parent snapshot)."""
        raw = self.read(vdi_oid(vid), 4 * n, SD_INODE_HEADER_SIZE)
        return list(struct.unpack(f"<{n}I", raw))

    # -- objects --------------------------------------------------------------------

    def read(self, oid: int, length: int, offset: int = 0) -> bytes:
        """SD_OP_READ_OBJ: ``length`` bytes at ``offset`` in one object."""
        _, data = self.request(OP_READ_OBJ, REQ_OBJ.pack(oid, 0, 0, 0, 0, 0, 0, offset, 0),
                               read_length=length)
        return data

    def write(self, oid: int, data: bytes, offset: int, copies: int, *,
              create: bool = False) -> None:
        """SD_OP_WRITE_OBJ, or SD_OP_CREATE_AND_WRITE_OBJ for a new object."""
        op = OP_CREATE_AND_WRITE_OBJ if create else OP_WRITE_OBJ
        self.request(op, REQ_OBJ.pack(oid, 0, copies, 0, 0, 0, 0, offset, 0), data)

    def read_vdi(self, name: str) -> bytes:
        """The whole VDI, object by object, as ``dog vdi read`` returns it."""
        vid, _ = self.lookup(name)
        head = self.inode_head(vid)
        assert head["store_policy"] == 0        # > 4 TiB "hyper volumes" index by b-tree
        size, obj = head["vdi_size"], 1 << head["block_size_shift"]
        out = bytearray()
        for idx, holder in enumerate(self.data_vdi_ids(vid, -(-size // obj))):
            length = min(obj, size - idx * obj)
            out += self.read(data_oid(holder, idx), length) if holder else bytes(length)
        return bytes(out)

    def write_vdi(self, name: str, data: bytes) -> int:
        """Create VDI ``name`` of len(data) bytes and fill it, as ``dog vdi write``
        does: each object created, then its data_vdi_id entry set in the inode."""
        vid, copies = self.create(name, len(data))
        for idx in range(0, -(-len(data) // OBJ)):
            self.write(data_oid(vid, idx), data[idx * OBJ:(idx + 1) * OBJ], 0, copies,
                       create=True)
            self.write(vdi_oid(vid), struct.pack("<I", vid),
                       SD_INODE_HEADER_SIZE + 4 * idx, copies)
        return vid

    def stat_sheep(self) -> tuple[int, int]:
        """SD_OP_STAT_SHEEP (internal): this node's (store_size, store_free)."""
        union, _ = self.request(OP_STAT_SHEEP, bytes(32))
        _, _, _, size, free = RSP_NODE.unpack(union)
        return size, free


def test_wire_reads_what_dog_wrote(sheepdog_a: Any) -> None:
    size = 3 * OBJ + 777
    data = bytearray(_data(size, seed=3))
    data[OBJ:2 * OBJ] = bytes(OBJ)                  # object 1 never written: a hole
    c = sheepdog_a
    c.dog("vdi", "create", "wire-read", str(size))
    client = SheepClient(c.port)
    try:
        c.dog("vdi", "write", "wire-read", "0", str(OBJ), input=bytes(data[:OBJ]))
        c.dog("vdi", "write", "wire-read", str(2 * OBJ), input=bytes(data[2 * OBJ:]))
        vid, copies = client.lookup("wire-read")
        assert (vid, copies) == (c.vdis()["wire-read"]["vid"], 1)
        head = client.inode_head(vid)
        assert head == {"name": "wire-read", "vdi_size": size, "nr_copies": 1,
                        "block_size_shift": 22, "vdi_id": vid, "store_policy": 0}
        assert client.data_vdi_ids(vid, 4) == [vid, 0, vid, vid]
        got = client.read_vdi("wire-read")
        assert got == bytes(data) == c.dog("vdi", "read", "wire-read").stdout
        # A range inside one object.
        assert client.read(data_oid(vid, 2), 100, 5000) == bytes(data[2 * OBJ + 5000:][:100])
        with pytest.raises(SheepError) as missing:
            client.lookup("wire-nope")
        assert missing.value.result == RES_NO_VDI
    finally:
        client.close()
        c.dog("vdi", "delete", "wire-read")


def test_wire_writes_and_deletes_what_dog_reads(sheepdog_b: Any) -> None:
    c = sheepdog_b
    data = _data(2 * OBJ + 4097, seed=4)
    client = SheepClient(c.port)
    try:
        vid = client.write_vdi("wire-write", data)
        with pytest.raises(SheepError) as dup:
            client.create("wire-write", 4096)
        assert dup.value.result == RES_VDI_EXIST
        listed = c.vdis()["wire-write"]
        assert (listed["vid"], listed["size"], listed["used"]) == (vid, len(data), 3 * OBJ)
        assert c.dog("vdi", "read", "wire-write").stdout == data
        size, free = client.stat_sheep()        # the size moves with the disk's free space
        info = c.node_info()
        assert size - free == info["used"] and abs(size - info["size"]) < 2 ** 30
        client.delete("wire-write")
        assert "wire-write" not in c.vdis()
        # The data objects go (asynchronously), the inode object stays, marked deleted.
        leftover = [o for o in c.objects() if o[2:8] == f"{vid:06x}"]
        for _ in range(50):
            if leftover == [f"{vdi_oid(vid):016x}"]:
                break
            leftover = [o for o in c.objects() if o[2:8] == f"{vid:06x}"]
            time.sleep(0.1)
        assert leftover == [f"{vdi_oid(vid):016x}"]
    finally:
        client.close()
        c.dog("vdi", "delete", "wire-write")


def test_wire_full_and_unformatted(sheepdog_full: Any, make_sheepdog_cluster: Any) -> None:
    client = SheepClient(sheepdog_full.port)
    try:
        vid, copies = client.create("wire-full", OBJ)
        with pytest.raises(SheepError) as full:
            client.write(data_oid(vid, 0), _data(OBJ), 0, copies, create=True)
        assert full.value.result == RES_NO_SPACE
    finally:
        client.close()
        sheepdog_full.dog("vdi", "delete", "wire-full")
    fresh = make_sheepdog_cluster()
    fresh.stop()
    fresh.start(formatted=False)
    client = SheepClient(fresh.port)
    try:
        with pytest.raises(SheepError) as waiting:
            client.lookup("x")
        assert waiting.value.result == RES_WAIT_FOR_FORMAT
    finally:
        client.close()
