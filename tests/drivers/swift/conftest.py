"""Fixtures for the swift driver's tests: one real Swift all-in-one per session."""

from __future__ import annotations

import importlib.util
import logging
import os
import pathlib
import sys

import pytest

import multistore
from multistore.testing import make_conf

_HARNESS = pathlib.Path(__file__).resolve().parents[2] / "backends" / "swift.py"


def _load_harness():
    spec = importlib.util.spec_from_file_location("multistore_swift_backend", _HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()

#: Ports 16000-16099 belong to these tests: proxy, container, account, object.
BASE_PORT = int(os.environ.get("MULTISTORE_SWIFT_PORT", "16000"))
MB = 1000 * 1024    # glance_store's "MB"


@pytest.fixture(scope="session")
def swift_server(tmp_path_factory):
    server = harness.SwiftAIO(tmp_path_factory.mktemp("swift-aio"), BASE_PORT)
    server.start()     # a server that cannot start fails the tests
    try:
        yield server
    finally:
        server.stop()


def write_refs(path, refs):
    """A glance ``swift_store_config_file`` from {name: {key: value}}."""
    lines = []
    for name, values in refs.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {v}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def tempauth_ref(server, user="test:tester", **extra):
    return {"auth_address": server.auth_url, "user": user,
            "key": server.users[user], "auth_version": "1", **extra}


@pytest.fixture
def refs_file(swift_server, tmp_path):
    return write_refs(tmp_path / "glance-swift-store.conf",
                      {"ref1": tempauth_ref(swift_server),
                       "ref2": tempauth_ref(swift_server, "test2:tester2")})


@pytest.fixture
def make_swift_stores(refs_file, tmp_path):
    """make(**options) -> a StoreSet whose default store 'objects' is swift."""
    def make(**overrides):
        options = {"swift_store_config_file": refs_file,
                   "default_swift_reference": "ref1",
                   "swift_store_create_container_on_put": True,
                   "swift_store_large_object_size": 4,          # 4 MB: segments above
                   "swift_store_large_object_chunk_size": 1,    # 1 MB segments
                   **overrides}
        conf = make_conf({
            "DEFAULT": {"enabled_backends": {"objects": "swift"}},
            "glance_store": {"default_backend": "objects"},
            "objects": options,
        }, tmp_path)
        return multistore.load(conf)
    return make


@pytest.fixture
def swift_conn(swift_server):
    """A plain swiftclient connection as test:tester, to look behind the driver."""
    import swiftclient
    conn = swiftclient.Connection(authurl=swift_server.auth_url, user="test:tester",
                                  key=swift_server.users["test:tester"], retries=0)
    yield conn
    conn.close()


@pytest.fixture
def all_logs(caplog):
    """Every log record at DEBUG, from every logger."""
    caplog.set_level(logging.DEBUG)
    return caplog
