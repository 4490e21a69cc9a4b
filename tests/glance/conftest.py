"""The real Glance 33 for the Glance tests (session-scoped, stopped by PID).

``glance`` is one Glance API (tests/backends/glance.py) on 127.0.0.1:17300,
with this checkout of multistore on its PYTHONPATH, and three stores of
glance_store's own drivers: ``fast`` (file, the
default), ``cheap`` (file) and ``ceph`` (rbd, on ``glance_ceph``, a Ceph
cluster of its own on ports 17310-17319). Ports 17300-17399 belong to these
tests. A Glance or a cluster that cannot start fails the tests; nothing is
skipped.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_session import running, serving

_BACKENDS = Path(__file__).resolve().parents[1] / "backends"


def _load(name: str, path: Path) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)   # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)   # type: ignore[union-attr]
    return module


harness = _load("multistore_glance_harness", _BACKENDS / "glance.py")
# Not importable as "rbd": that is Ceph's own binding module.
ceph_harness = _load("multistore_ceph_harness_glance", _BACKENDS / "rbd.py")
backends = _load("multistore_glance_backends", Path(__file__).resolve().parent / "ms_backends.py")
swift_harness = _load("multistore_swift_harness_glance", _BACKENDS / "swift.py")
sheepdog_harness = _load("multistore_sheepdog_harness_glance", _BACKENDS / "sheepdog.py")
# Test modules reach this module's store helpers (rbd_store, swift_store) by
# this name: "conftest" names whichever conftest was imported last.
sys.modules["multistore_glance_conftest"] = sys.modules[__name__]

PORT = 17300
CEPH_PORTS = (17310, 17311)
#: The OSD's listeners (it opens 8), inside this suite's 17300-17399.
CEPH_OSD_PORTS = (17312, 17319)
MiB = harness.MiB


#: Where the servers' directories go (default: the system's temporary directory).
TMP_ENV = "MULTISTORE_GLANCE_TMP"


@pytest.fixture(scope="session")
def glance_ceph() -> Iterator[Any]:
    """A single-node Ceph (mon + memstore OSD) for the ``ceph`` store."""
    yield from running(lambda directory: ceph_harness.CephCluster(
        directory, *CEPH_PORTS, bind_ports=CEPH_OSD_PORTS, memstore_bytes=2 * 1024 ** 3),
        "multistore-glance-ceph-", "MULTISTORE_RBD_TMP")


def rbd_store(cluster: Any) -> tuple[str, dict[str, Any]]:
    """glance_store's rbd driver on ``cluster`` (short timeouts: tests must not wait)."""
    return ("rbd", {"rbd_store_ceph_conf": cluster.conf_path, "rbd_store_user": cluster.user,
                    "rbd_store_pool": cluster.pool, "rbd_store_chunk_size": 4,
                    "rados_connect_timeout": 10})


@pytest.fixture(scope="session")
def glance_stores(glance_ceph: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    return {"fast": ("file", {}), "cheap": ("file", {}), "ceph": rbd_store(glance_ceph)}


@pytest.fixture(scope="session")
def glance_multistore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout built into a directory of its own with Glance's pip (~2 s):
    for the server's PYTHONPATH, so Glance's shared venv stays unchanged."""
    return harness.build_multistore(tmp_path_factory.mktemp("glance-path") / "multistore")


@pytest.fixture(scope="session")
def glance(glance_stores: dict[str, tuple[str, dict[str, Any]]],
           glance_multistore: Path) -> Iterator[Any]:
    """The running Glance (a ``GlanceServer``); its default store is ``fast``.
    This checkout of multistore, built without its dependencies, is on the
    server's PYTHONPATH (``glance_multistore``)."""
    yield from running(lambda directory: harness.GlanceServer(
        directory, PORT, glance_stores, default_backend="fast",
        python_path=[glance_multistore]), "multistore-glance-", TMP_ENV)


@pytest.fixture
def client(glance: Any) -> Any:
    return glance.client()


@pytest.fixture
def image_data() -> bytes:
    """5 MiB and a bit: more than one rbd chunk (4 MiB), not a whole number of them."""
    return b"".join(harness.iter_bytes(5 * MiB + 12345, seed=1))



# -- multistore's drivers inside Glance (test_glance_multistore*.py) ---------

#: The Glance whose stores are multistore's drivers, through the adapter
#: (multistore/glance.py), beside one store of glance_store's own driver.
MS_PORT = 17320
#: Store types whose data directory the harness sets (filesystem_store_datadir).
MS_FILE_TYPES = ("file", "multistore_file")


#: The Swift all-in-one of these tests: proxy, container, account and object
#: servers on 17350-17353 (the swift driver's tests use 16000-16099).
MS_SWIFT_PORT = 17350


@pytest.fixture(scope="session")
def glance_swift() -> Iterator[Any]:
    """A real Swift (tests/backends/swift.py, tempauth) for the ``ms_swift`` store."""
    yield from running(lambda directory: swift_harness.SwiftAIO(directory, MS_SWIFT_PORT),
                       "multistore-glance-swift-", TMP_ENV)


def swift_store(swift: Any, directory: Path, url: str | None = None,
                **options: Any) -> tuple[str, dict[str, Any]]:
    """A ``multistore_swift`` store on ``swift`` as ``test:tester`` (through
    the proxy at ``url``, the main one by default): its references file in
    ``directory``; 5 MiB images are segmented (4 MB large objects, 1 MB
    segments); short timeouts, so that a test never waits long."""
    directory.mkdir(parents=True, exist_ok=True)
    refs = directory / "glance-swift-store.conf"
    auth = f"{url}/auth/v1.0" if url else swift.auth_url
    refs.write_text(f"[ref1]\nauth_address = {auth}\nuser = test:tester\n"
                    f"key = {swift.users['test:tester']}\nauth_version = 1\n")
    return ("multistore_swift", {
        "swift_store_config_file": refs, "default_swift_reference": "ref1",
        "swift_store_container": "glance", "swift_store_create_container_on_put": True,
        "swift_store_large_object_size": 4, "swift_store_large_object_chunk_size": 1,
        "swift_store_timeout": 10, "swift_store_retries": 0, **options})


@pytest.fixture(scope="session")
def glance_keystone(glance_swift: Any) -> Iterator[tuple[Any, str]]:
    """A real Keystone v3 on 17357 and a proxy of ``glance_swift`` that trusts
    it on 17354: glance_store's swift driver authenticates with Keystone v3
    only (5.7 turns every reference's auth_version into 3)."""
    with serving(lambda directory: swift_harness.KeystoneServer(
            directory, MS_SWIFT_PORT + 7, swift_url=f"http://127.0.0.1:{MS_SWIFT_PORT + 4}"),
            "multistore-glance-keystone-", TMP_ENV) as keystone:
        yield keystone, glance_swift.start_keystone_proxy(keystone, MS_SWIFT_PORT + 4)


def keystone_swift_options(keystone: Any, directory: Path, container: str) -> dict[str, Any]:
    """Options of a swift store (of either driver) as Keystone's ``demo`` user."""
    directory.mkdir(parents=True, exist_ok=True)
    refs = directory / "glance-swift-store.conf"
    refs.write_text(f"[ks]\nauth_address = {keystone.url}/v3\nuser = demo:demo\n"
                    f"key = {keystone.USERS['demo']}\nuser_domain_id = default\n"
                    "project_domain_id = default\nauth_version = 3\n")
    return {"swift_store_config_file": refs, "default_swift_reference": "ks",
            "swift_store_region": "RegionOne", "swift_store_container": container,
            "swift_store_create_container_on_put": True,
            "swift_store_large_object_size": 4, "swift_store_large_object_chunk_size": 1}


def swift_connection(swift: Any, url: str | None = None) -> Any:
    """A plain swiftclient connection as test:tester, to look behind the driver."""
    import swiftclient
    auth = f"{url}/auth/v1.0" if url else swift.auth_url
    return swiftclient.Connection(authurl=auth, user="test:tester",
                                  key=swift.users["test:tester"], retries=0)


#: The Sheepdog cluster of these tests (the sheepdog tests use 17000-17099).
MS_SHEEPDOG_PORT = 17365


@pytest.fixture(scope="session")
def glance_sheepdog() -> Iterator[Any]:
    """A one-node Sheepdog 1.0 (tests/backends/sheepdog.py) for ``ms_sheep``:
    glance_store dropped its sheepdog driver, multistore's brings it back."""
    yield from running(lambda directory: sheepdog_harness.SheepdogCluster(
        directory, MS_SHEEPDOG_PORT), "multistore-glance-sheepdog-", TMP_ENV)


@pytest.fixture(scope="session")
def ms_glance_stores(glance_ceph: Any, glance_swift: Any, glance_sheepdog: Any,
                     tmp_path_factory: pytest.TempPathFactory
                     ) -> dict[str, tuple[str, dict[str, Any]]]:
    """Stores of multistore's drivers: ``ms_fast`` (the default) and ``ms_cheap``
    (file), ``ms_ceph`` (rbd, on ``glance_ceph``), ``ms_swift`` (swift, on
    ``glance_swift``) and ``ms_sheep`` (sheepdog, on ``glance_sheepdog``); and
    ``gs_file``, glance_store's file driver, for copies between the two kinds."""
    ceph_kind, ceph_options = rbd_store(glance_ceph)
    return {"ms_fast": ("multistore_file", {}), "ms_cheap": ("multistore_file", {}),
            "ms_ceph": ("multistore_" + ceph_kind, ceph_options),
            "ms_swift": swift_store(glance_swift, tmp_path_factory.mktemp("ms-swift-refs")),
            "ms_sheep": ("multistore_sheepdog", {
                "sheepdog_store_address": "127.0.0.1",
                "sheepdog_store_port": glance_sheepdog.port, "sheepdog_store_timeout": 10}),
            "gs_file": ("file", {})}


@pytest.fixture(scope="session")
def ms_glance(ms_glance_stores: dict[str, tuple[str, dict[str, Any]]],
              glance_multistore: Path) -> Iterator[Any]:
    """A running Glance (a ``GlanceServer`` on 17320) whose stores are
    multistore's drivers, loaded by glance_store from the ``glance_store.drivers``
    entry points of this checkout's build."""
    yield from running(lambda directory: harness.GlanceServer(
        directory, MS_PORT, ms_glance_stores, default_backend="ms_fast",
        python_path=[glance_multistore], file_types=MS_FILE_TYPES),
        "multistore-ms-glance-", TMP_ENV)


@pytest.fixture
def ms_client(ms_glance: Any) -> Any:
    return ms_glance.client()


@pytest.fixture
def ms_backends(ms_glance: Any, glance_ceph: Any, glance_swift: Any,
                glance_sheepdog: Any) -> Any:
    """What is in each of ``ms_glance``'s backends, looked at directly."""
    return backends.Backends(ms_glance, ceph=glance_ceph,
                             swift=lambda: swift_connection(glance_swift),
                             sheepdog=glance_sheepdog)
