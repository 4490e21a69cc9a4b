"""Running a test server for a fixture: a fresh directory, stopped by PID and
removed at the end, even when the run is ended by SIGTERM (a CI timeout).
Shared by the fixtures of several directories (a module, not a conftest:
``from conftest import`` finds another directory's conftest)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def running(make: Callable[[Path], Any], prefix: str, tmp_env: str) -> Iterator[Any]:
    """Yield ``make(directory)`` started; stop it and remove the directory after.

    The directory is a new one named ``prefix...`` under ``$tmp_env`` (default:
    the system temporary directory, not pytest's, which other sessions on the
    machine may clean up). The server needs ``start()`` and an idempotent
    ``stop()`` that ends its processes by PID. A server that cannot start
    raises: the tests that need it fail, none is skipped.
    """
    # SIGTERM becomes KeyboardInterrupt, which runs the teardown; atexit
    # covers the exits that skip it.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    base = Path(os.environ.get(tmp_env) or tempfile.gettempdir())
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    server = make(directory)
    atexit.register(server.stop)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


#: :func:`running` as a context manager, for a fixture that yields something
#: made from the server: ``with serving(...) as server: yield server, url``.
serving = contextlib.contextmanager(running)
