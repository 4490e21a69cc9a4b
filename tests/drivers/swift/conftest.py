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
from server_session import running, serving
from swift_refs import tempauth_ref, write_refs
import contextlib

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


#: Where the servers' directories go (default: the system's temporary directory).
TMP_ENV = "MULTISTORE_SWIFT_TMP"


@pytest.fixture(scope="session")
def swift_server():
    yield from running(lambda directory: harness.SwiftAIO(directory, BASE_PORT),
                       "multistore-swift-", TMP_ENV)


@pytest.fixture(scope="session")
def swift_tls_url(swift_server):
    """An HTTPS-only tempauth proxy on the same servers (port base + 5);
    its CA is ``swift_server.ca_file``."""
    return swift_server.start_tls_proxy(BASE_PORT + 5)


@pytest.fixture(scope="session")
def swift_fault_proxy(swift_server):
    """A tempauth proxy of its own (port base + 6) that fault tests kill,
    freeze and restart: ``swift_server.kill("proxy-faults")`` ..."""
    return swift_server.start_fault_proxy(BASE_PORT + 6)


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


class DroppingProxy:
    """A TCP forwarder to Swift's proxy that can cut one connection after
    a number of response bytes, like a network failure mid-download."""

    def __init__(self, target_port, port):
        import socket
        import threading
        self.target_port = target_port
        self.port = port
        self.budget = None
        self.drops = 0
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def drop_after(self, nbytes):
        with self.lock:
            self.budget = nbytes

    def _accept(self):
        import socket
        import threading
        while not self.stopping.is_set():
            try:
                client, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True),
                             daemon=True).start()

    def _pump(self, src, dst, response):
        import socket
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if response:
                    with self.lock:
                        cut = False
                        if self.budget is not None:
                            if len(data) >= self.budget:
                                data, cut = data[:self.budget], True
                                self.budget = None
                                self.drops += 1
                            else:
                                self.budget -= len(data)
                    if cut:
                        dst.sendall(data)
                        raise OSError("dropped")
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self):
        self.stopping.set()
        self.thread.join()
        self.server.close()


@pytest.fixture
def dropping_proxy(swift_server):
    proxy = DroppingProxy(swift_server.ports["proxy"], BASE_PORT + 50)
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def keystone(swift_server):
    """A real Keystone v3 and a second Swift proxy that trusts it: (keystone, proxy URL)."""
    with serving(lambda directory: harness.KeystoneServer(
            directory, BASE_PORT + 10, swift_url=f"http://127.0.0.1:{BASE_PORT + 4}"),
            "multistore-swift-keystone-", TMP_ENV) as server:
        yield server, swift_server.start_keystone_proxy(server, BASE_PORT + 4)
