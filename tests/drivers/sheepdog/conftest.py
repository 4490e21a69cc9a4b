"""Real Sheepdog clusters for the sheepdog driver's tests (stopped by PID).

Session-scoped, shared by every test (leave them as found: delete what you
create):

- ``sheepdog_a``, ``sheepdog_b``: two independent one-node clusters on
  127.0.0.1:17000 and 127.0.0.1:17010 (objects on disk, 1 copy);
- ``sheepdog_small``: a third on 127.0.0.1:17020 whose objects live on a
  64 MiB tmpfs, for "full" tests (``sheepdog_full`` fills it for one test).

Function-scoped: ``make_sheepdog_cluster(**kwargs)`` starts a private cluster
on a free port in 17030-17099, stopped after the test: for kill, freeze and
restart tests, which must not disturb the shared ones.

The harness builds Sheepdog once if needed (see tests/backends/sheepdog.py
and scripts/deps/sheepdog.sh). A cluster that cannot start, or binaries that
cannot be found, fail the tests that need them, with the reason; nothing is
skipped. ``$MULTISTORE_SHEEPDOG_TMP`` moves the cluster directories (default:
the system temporary directory).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from server_session import running

# tests/ is not a package: load the harness by path, registered under a name
# the test modules import (``import multistore_sheepdog_harness as harness``).
_HARNESS = Path(__file__).resolve().parents[2] / "backends" / "sheepdog.py"
_spec = importlib.util.spec_from_file_location("multistore_sheepdog_harness", _HARNESS)
harness = importlib.util.module_from_spec(_spec)    # type: ignore[arg-type]
sys.modules[_spec.name] = harness                   # type: ignore[union-attr]
_spec.loader.exec_module(harness)                    # type: ignore[union-attr]

PORTS = {"a": 17000, "b": 17010, "small": 17020}
PRIVATE_PORTS = range(17030, 17100)
SMALL_SIZE = 64 * harness.MiB


def _running(name: str, port: int, **kwargs: Any) -> Iterator[Any]:
    return running(lambda directory: harness.SheepdogCluster(directory, port, **kwargs),
                   f"multistore-sheepdog-{name}-", "MULTISTORE_SHEEPDOG_TMP")


@pytest.fixture(scope="session")
def sheepdog_a() -> Iterator[Any]:
    yield from _running("a", PORTS["a"])


@pytest.fixture(scope="session")
def sheepdog_b() -> Iterator[Any]:
    yield from _running("b", PORTS["b"])


@pytest.fixture(scope="session")
def sheepdog_small() -> Iterator[Any]:
    yield from _running("small", PORTS["small"], size_limit=SMALL_SIZE)


@pytest.fixture
def sheepdog_full(sheepdog_small: Any) -> Iterator[Any]:
    """``sheepdog_small`` with no room left for one more object, for one test."""
    sheepdog_small.fill()
    try:
        yield sheepdog_small
    finally:
        sheepdog_small.unfill()


@pytest.fixture
def make_sheepdog_cluster() -> Iterator[Callable[..., Any]]:
    """``make(**SheepdogCluster kwargs)`` -> a started private cluster, stopped after the test."""
    started: list[Iterator[Any]] = []

    def make(**kwargs: Any) -> Any:
        port = harness.free_port(PRIVATE_PORTS)
        run = _running(f"p{port}", port, **kwargs)
        cluster = next(run)
        started.append(run)
        return cluster

    yield make
    for run in reversed(started):
        run.close()         # stops it, removes its directory (server_session.running)
