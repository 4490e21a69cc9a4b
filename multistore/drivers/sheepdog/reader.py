"""A get: the bytes of a range of a VDI, read with several requests in flight."""

from __future__ import annotations

import array
import collections
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

from multistore.drivers.sheepdog import protocol as proto

if TYPE_CHECKING:
    from multistore.drivers.sheepdog import SheepdogDriver

ZEROS = bytes(proto.PIECE)


class Chunks:
    """The bytes of an image from ``position`` to ``end``, piece by piece,
    with up to ``read_window`` reads in flight, each on a connection of its own:
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
            n = min(proto.PIECE, obj - inner, self.end - at)
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
                while len(inflight) < 2 * d.read_window:
                    piece, waiting = waiting or next(pieces, None), None
                    if piece is None:
                        break
                    idx, inner, n, holder = piece
                    if not holder:                  # never written: zeros
                        inflight.append((None, 0, n))
                        continue
                    if not free and len(conns) < d.read_window:
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
                    yield ZEROS if n == proto.PIECE else bytes(n)
                    continue
                _, data = busy.result(rid)
                free.append(busy)
                if data is None or len(data) != n:
                    raise proto.ProtocolError(f"sheep sent {0 if data is None else len(data)} "
                                              f"bytes of a {n}-byte piece")
                yield data
        finally:
            for conn in conns:
                d.release(conn)
