"""Real Ceph clusters for tests of any directory (a pytest plugin, registered
once by tests/conftest.py; session-scoped, stopped by PID).

``ceph_a`` and ``ceph_b`` are two independent single-node clusters (mon +
memstore OSD, cephx) on 127.0.0.1 ports 16789-16792: the rbd driver's tests
use both, the sheepdog migration test moves images into ``ceph_a``. A plugin
rather than a conftest: a fixture defined in two conftests would be two
session fixtures, two clusters on the same ports. Tests share the clusters:
leave them as found (delete what you create). A cluster that cannot start
fails the tests that need it; nothing is skipped.

``rbd_options``/``rbd_sections`` build a store group's configuration for a
cluster; ``make_rbd_stores``/``write_rbd_config`` make a StoreSet of rbd
stores or a configuration file for child processes.

``ceph_faults`` is the fault suite's own: a bluestore OSD on a 4 GiB sparse
file, which keeps its data when killed, on ports 17400-17409 (the server
tests kill, freeze and fill it; 17300-17399 are the Glance tests).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from server_session import running

import multistore
from multistore.testing import make_conf, render_ini

PORTS = {"a": (16789, 16790), "b": (16791, 16792), "faults": (17400, 17401)}
#: Options of the clusters besides their mon ports.
OPTIONS: dict[str, dict[str, Any]] = {
    "faults": {"objectstore": "bluestore", "bind_ports": (17402, 17409)}}


def ceph_harness() -> Any:
    """tests/backends/rbd.py, loaded by path ("rbd" is Ceph's own module)."""
    name = "multistore_ceph_harness"        # the name tests/backends/cinder.py uses
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).resolve().parent / "backends" / "rbd.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)                 # type: ignore[union-attr]
    return sys.modules[name]


def _cluster(name: str) -> Iterator[Any]:
    def make(directory: Path) -> Any:
        return ceph_harness().CephCluster(directory, *PORTS[name], **OPTIONS.get(name, {}))
    return running(make, f"multistore-rbd-{name}-", "MULTISTORE_RBD_TMP")


@pytest.fixture(scope="session")
def ceph_a() -> Iterator[Any]:
    yield from _cluster("a")


@pytest.fixture(scope="session")
def ceph_b() -> Iterator[Any]:
    yield from _cluster("b")


@pytest.fixture(scope="session")
def ceph_faults() -> Iterator[Any]:
    yield from _cluster("faults")


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
