"""Small process and port checks shared by the test servers' harnesses."""

from __future__ import annotations

import os
import socket


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:``port`` (it can be bound)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def program(pid: int) -> bytes:
    """The base name of the process's argv[0] (b"" if there is no such process)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.path.basename(f.read().split(b"\0")[0])
    except OSError:
        return b""
