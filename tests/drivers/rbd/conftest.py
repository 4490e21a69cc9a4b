"""Real Ceph clusters for the rbd driver's tests (session-scoped, stopped by PID).

``ceph_a`` and ``ceph_b`` are two independent single-node clusters (mon +
memstore OSD, cephx) on 127.0.0.1 ports 16789-16792. A cluster that cannot
start fails the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import multistore
from multistore.testing import make_conf, render_ini

_HARNESS = Path(__file__).resolve().parents[2] / "backends" / "rbd.py"
# Not importable as "rbd": that is Ceph's own binding module.
_spec = importlib.util.spec_from_file_location("multistore_ceph_harness", _HARNESS)
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)   # type: ignore[union-attr]

PORTS = {"a": (16789, 16790), "b": (16791, 16792)}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _cluster(name: str) -> Iterator[Any]:
    # A test run ended by SIGTERM (a CI timeout) must still stop its
    # daemons: turn it into KeyboardInterrupt, which runs the teardown.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    base = Path(os.environ.get("MULTISTORE_RBD_TMP") or tempfile.gettempdir())
    directory = Path(tempfile.mkdtemp(prefix=f"multistore-rbd-{name}-", dir=base))
    cluster = harness.CephCluster(directory, *PORTS[name])
    atexit.register(cluster.stop)     # idempotent; for exits that skip teardown
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def ceph_a() -> Iterator[Any]:
    yield from _cluster("a")


@pytest.fixture(scope="session")
def ceph_b() -> Iterator[Any]:
    yield from _cluster("b")


def rbd_options(cluster: Any, **overrides: Any) -> dict[str, Any]:
    """A store group's options for ``cluster`` (short timeouts: tests must not wait)."""
    return {"rbd_store_ceph_conf": cluster.conf_path, "rbd_store_user": cluster.user,
            "rbd_store_pool": cluster.pool, "rbd_store_chunk_size": 4,
            "rados_connect_timeout": 10, **overrides}


Layout = dict[str, tuple[Any, dict[str, Any]]]


def rbd_sections(stores: Layout, default: str | None = None) -> dict[str, Any]:
    """The configuration of ``{"fast": (cluster, {opts}), ...}``."""
    sections: dict[str, Any] = {
        "DEFAULT": {"enabled_backends": {sid: "rbd" for sid in stores}},
        "glance_store": {"default_backend": default or next(iter(stores))},
    }
    for sid, (cluster, opts) in stores.items():
        sections[sid] = rbd_options(cluster, **opts)
    return sections


@pytest.fixture
def make_rbd_stores(tmp_path: Path) -> Callable[..., multistore.StoreSet]:
    """``make({"fast": (cluster, {opts}), ...}, default="fast")`` -> StoreSet."""
    def make(stores: Layout, default: str | None = None) -> multistore.StoreSet:
        return multistore.load(make_conf(rbd_sections(stores, default), tmp_path))
    return make


@pytest.fixture
def write_rbd_config(tmp_path: Path) -> Callable[..., Path]:
    """``write({"fast": (cluster, {opts}), ...}, default="fast")`` -> the path of
    a configuration file (for child processes)."""
    def write(stores: Layout, default: str | None = None) -> Path:
        path = tmp_path / "rbd-stores.conf"
        path.write_text(render_ini(rbd_sections(stores, default)))
        return path
    return write
