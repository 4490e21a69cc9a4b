"""vcsim (govmomi's vCenter simulator) for the vmware driver's tests, stopped by PID.

``vcsim`` and ``vcsim_b`` are two independent simulators on 127.0.0.1, on
the first free ports from 17100 (tests/backends/vcsim.py; another run of
these tests may hold 17100): vcsim's default inventory, with VMs;
TLS from the test CA; datacenter ``DC0`` with datastore ``LocalDS_0``, and on
``vcsim`` also ``SmallDS``, an 8 MiB tmpfs that fills up. ``make_vcsim``
starts a private one (ports 17110-17199) for a test that kills, freezes or
reconfigures it, stopped after the test. ``vim_session`` opens an
oslo.vmware session as glance_store does (the WSDL from the server), TLS
verified with the test CA. A simulator that cannot start fails the tests
that need it; nothing is skipped.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vmware_stores import vmware_options

_HARNESS = Path(__file__).resolve().parents[2] / "backends" / "vcsim.py"
_spec = importlib.util.spec_from_file_location("multistore_vcsim_harness", _HARNESS)
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness
_spec.loader.exec_module(harness)   # type: ignore[union-attr]

MiB = 1024 * 1024
SMALL_DATASTORE_BYTES = 8 * MiB
SESSION_PORTS = range(17100, 17110)
PRIVATE_PORTS = range(17110, 17200)
_taken: set[int] = set()


def _port(ports: range) -> int:
    """The first port of ``ports`` free on 127.0.0.1 and not given out by this run."""
    for port in ports:
        if port not in _taken and harness._port_free(port):
            _taken.add(port)
            return port
    raise harness.VcsimError(f"no free port in {ports.start}-{ports.stop - 1}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _directory(name: str) -> Path:
    base = Path(os.environ.get("MULTISTORE_VCSIM_TMP") or tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix=f"multistore-vcsim-{name}-", dir=base))


def _start(sim: Any) -> Any:
    # A run ended by SIGTERM (a CI timeout) must still stop vcsim.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    atexit.register(sim.purge)      # idempotent; for exits that skip teardown
    try:
        return sim.start()
    except BaseException:
        sim.purge()
        raise


def _run(sim: Any) -> Iterator[Any]:
    try:
        yield _start(sim)
    finally:
        sim.purge()


@pytest.fixture(scope="session")
def vcsim() -> Iterator[Any]:
    yield from _run(harness.Vcsim(_directory("a"), _port(SESSION_PORTS),
                                  small_datastore_bytes=SMALL_DATASTORE_BYTES))


@pytest.fixture(scope="session")
def vcsim_b() -> Iterator[Any]:
    yield from _run(harness.Vcsim(_directory("b"), _port(SESSION_PORTS), username="glance-b",
                                  password="other-Secret-2"))


@pytest.fixture
def make_vcsim() -> Iterator[Callable[..., Any]]:
    """``make_vcsim(**Vcsim options)`` -> a started private simulator."""
    started: list[Any] = []

    def make(**options: Any) -> Any:
        sim = harness.Vcsim(_directory("private"), _port(PRIVATE_PORTS), **options)
        started.append(sim)
        return _start(sim)

    yield make
    for sim in started:
        sim.purge()
        _taken.discard(sim.port)


@pytest.fixture
def vim_session() -> Iterator[Callable[..., Any]]:
    """``vim_session(sim, **VMwareAPISession options)`` -> a logged-in session, logged out after."""
    from vcsim_client import open_session

    opened: list[Any] = []

    def make(sim: Any, **options: Any) -> Any:
        session = open_session(sim, **options)
        opened.append(session)
        return session

    yield make
    for session in opened:
        # A test may have ended the session or the server.
        with contextlib.suppress(Exception):
            session.vim.Logout(session.vim.service_content.sessionManager)


@pytest.fixture
def make_vmware_stores(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make_vmware_stores(sim, **options)`` -> a StoreSet: the vmware store
    ``vmw`` (default) and a file store ``local``; more vmware stores with
    ``extra={"vmw2": (sim, options)}``. Closed after the test."""
    import multistore
    from multistore.testing import make_conf

    made: list[Any] = []

    def make(sim: Any, extra: dict[str, tuple[Any, dict[str, Any]]] | None = None,
             **overrides: Any) -> Any:
        extra = extra or {}
        enabled = {"vmw": "vmware", "local": "file", **{k: "vmware" for k in extra}}
        sections: dict[str, dict[str, Any]] = {
            "DEFAULT": {"enabled_backends": enabled},
            "glance_store": {"default_backend": "vmw"},
            "vmw": vmware_options(sim, **overrides),
            "local": {"filesystem_store_datadir": str(tmp_path / "local")},
        }
        for store_id, (other, options) in extra.items():
            sections[store_id] = vmware_options(other, **options)
        stores = multistore.load(make_conf(sections, tmp_path / f"conf{len(made)}"))
        made.append(stores)
        return stores

    yield make
    for stores in made:
        with contextlib.suppress(Exception):
            stores.close()
