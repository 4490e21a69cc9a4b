"""The sheepdog wire client's timeouts, against a socket that stops mid-answer
(in addition to the fault suite's frozen sheep, where the moment of the
freeze inside an answer is left to chance)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from multistore.drivers.sheepdog import protocol as proto

TIMEOUT = 1.0


def _serve(listener: socket.socket, stall: float, done: threading.Event) -> None:
    conn, _ = listener.accept()
    with conn:
        head = conn.recv(proto.HEADER.size + 32, socket.MSG_WAITALL)
        _, _, _, _, rid, length = proto.HEADER.unpack_from(head)
        answer = proto.HEADER.pack(proto.PROTO_VER, 0, 0, 0, rid, length) + bytes(32)
        conn.sendall(answer + b"x" * (length // 2))
        time.sleep(stall)              # frozen mid-answer, then thawed
        with contextlib.suppress(OSError):      # the client may have given up
            conn.sendall(b"y" * (length - length // 2))
        done.wait(10)


@pytest.mark.parametrize("stall, times_out", [(0.2, False), (1.5 * TIMEOUT, True)])
def test_an_answer_stopping_midway_times_out_after_the_timeout(stall: float,
                                                               times_out: bool) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        done = threading.Event()
        server = threading.Thread(target=_serve, args=(listener, stall, done), daemon=True)
        server.start()
        conn = proto.Connection("127.0.0.1", listener.getsockname()[1], TIMEOUT)
        try:
            rid = conn.submit(proto.READ_OBJ, conn.obj_union(proto.data_oid(1, 0), 0),
                              read_length=256 * 1024)
            started = time.monotonic()
            if times_out:
                with pytest.raises(TimeoutError):
                    conn.result(rid)
                assert time.monotonic() - started < 1.4 * TIMEOUT
                assert conn.broken
            else:
                _, data = conn.result(rid)
                assert data == b"x" * (128 * 1024) + b"y" * (128 * 1024)
        finally:
            done.set()
            conn.close()
            server.join(10)
