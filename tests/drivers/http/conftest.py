"""Fixtures for the http driver: a real nginx, and a TCP proxy that breaks
connections on purpose.

Ports (this driver's range is 18080-18099): nginx HTTP 18080, HTTPS 18081,
forward proxy 18082; the breaking proxy 18083; a Python server answering
ranges in pieces 18084; a Python server answering every request with a
redirect 18085; a port that records connections (and answers nothing)
18086; a server that never answers 18098; nothing listens on 18099. The
benchmark's nginx uses 18090-18092. The fault tests' own nginx, killed and
frozen on purpose, listens on 18100-18102.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import multistore
from multistore.testing import make_conf
from server_session import running

HTTP_PORT, HTTPS_PORT, PROXY_PORT, BREAKING_PORT = 18080, 18081, 18082, 18083
CAPPED_PORT, REDIRECT_PORT, LISTEN_PORT = 18084, 18085, 18086
SILENT_PORT, DEAD_PORT = 18098, 18099
FAULT_HTTP_PORT, FAULT_HTTPS_PORT, FAULT_PROXY_PORT = 18100, 18101, 18102


def _load_harness() -> Any:
    """tests/backends/nginx.py, by path (tests/ is not a package)."""
    name = "multistore_tests_backends_nginx"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[2] / "backends" / "nginx.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()
Nginx = harness.Nginx


def running_nginx(prefix: str, *ports: int) -> Iterator[Any]:
    """An nginx on ``ports`` (HTTP, HTTPS, proxy) in a directory of its own,
    outside pytest's temporary directories (which other pytest sessions on
    the machine may clean up), stopped and removed at the end; a failure to
    start fails the tests."""
    return running(lambda directory: Nginx(str(directory), *ports), prefix,
                   "MULTISTORE_HTTP_TMP")


@pytest.fixture(scope="session")
def nginx_server() -> Iterator[Any]:
    """The nginx server for the whole session."""
    yield from running_nginx("multistore-http-nginx-", HTTP_PORT, HTTPS_PORT, PROXY_PORT)


@pytest.fixture
def nginx(nginx_server: Any) -> Any:
    """The session's nginx, checked to be still running before each test."""
    nginx_server.check_alive()
    return nginx_server


@pytest.fixture(scope="module")
def fault_nginx_server() -> Iterator[Any]:
    """A private nginx for the tests that kill and freeze it (the session's
    nginx, which other tests use, is never disturbed)."""
    yield from running_nginx("multistore-http-faults-", FAULT_HTTP_PORT, FAULT_HTTPS_PORT,
                             FAULT_PROXY_PORT)


@pytest.fixture
def fault_nginx(fault_nginx_server: Any) -> Iterator[Any]:
    """The private nginx, running and thawed before and after each test (a
    test that failed half way may have left it killed or frozen), its
    images removed after the test."""
    def ensure() -> None:
        process = fault_nginx_server.process
        if process is None or process.poll() is not None:
            fault_nginx_server.restart()
        else:
            fault_nginx_server.thaw()
    ensure()
    yield fault_nginx_server
    ensure()
    for path in fault_nginx_server.docroot.iterdir():
        path.unlink()


@pytest.fixture
def make_http_stores(nginx: Any, tmp_path: Path) -> Callable[..., multistore.StoreSet]:
    """``make(web options..., with_file=False)``: a StoreSet whose default store
    ``web`` is an http store; ``with_file`` adds a file store ``local``."""
    counter = iter(range(1_000_000))

    def make(with_file: bool = False, **options: Any) -> multistore.StoreSet:
        directory = tmp_path / f"conf{next(counter)}"
        directory.mkdir()
        enabled = {"web": "http"}
        sections: dict[str, dict[str, Any]] = {"web": {"store_description": "the web",
                                                       **options}}
        if with_file:
            enabled["local"] = "file"
            sections["local"] = {"filesystem_store_datadir": str(tmp_path / "local")}
        conf = make_conf({"DEFAULT": {"enabled_backends": enabled},
                          "glance_store": {"default_backend": "web"}, **sections},
                         directory)
        return multistore.load(conf)
    return make


class Listener:
    """A listening TCP port, served by a thread: :meth:`handle` gets every
    connection accepted. As it is, it records them (and closes each at
    once), for tests that assert that nothing connected."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.accepted: list[Any] = []
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(peer)
            self.handle(client)

    def handle(self, client: socket.socket) -> None:
        client.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()


# -- a proxy that breaks connections ---------------------------------------

class BreakingProxy(Listener):
    """A TCP proxy to nginx's HTTP port that breaks chosen connections.

    ``plan[i]`` says what happens to the i-th connection accepted (later
    ones pass through untouched):

    - ``None``: pass through;
    - ``("cut", n)``: forward ``n`` bytes of the answer (headers included),
      then close both sides (the client sees the body end early);
    - ``("reset", n)``: the same, closing with a TCP reset;
    - ``("stall", n)``: forward ``n`` bytes, then nothing more (the
      connection stays open until the proxy stops);
    - ``("close", 0)``: close as soon as the connection is accepted.

    ``on_break(i)`` is called when connection i is broken (before the
    client can notice).
    """

    def __init__(self, port: int, target_port: int,
                 plan: Sequence[tuple[str, int] | None] = (),
                 on_break: Callable[[int], None] | None = None) -> None:
        self.port = port
        self.target_port = target_port
        self.plan = list(plan)
        self.on_break = on_break
        self.connections = 0
        self.broken: list[int] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        super().__init__("127.0.0.1", port)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
        return sock

    def handle(self, client: socket.socket) -> None:
        client.settimeout(None)
        index = self.connections
        self.connections += 1
        action = self.plan[index] if index < len(self.plan) else None
        threading.Thread(target=self._serve, args=(index, self._track(client), action),
                         daemon=True).start()

    def _serve(self, index: int, client: socket.socket,
               action: tuple[str, int] | None) -> None:
        if action is not None and action[0] == "close":
            self._break(index)
            client.close()
            return
        upstream = self._track(socket.create_connection(("127.0.0.1", self.target_port)))
        pump = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
        pump.start()
        limit = None if action is None else action[1]
        sent = 0
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    client.sendall(data[:limit - sent])
                    self._break(index)
                    if action[0] == "stall":   # type: ignore[index]
                        self._stop.wait()
                    elif action[0] == "reset":   # type: ignore[index]
                        # Closing with a zero linger time sends a reset.
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          struct.pack("ii", 1, 0))
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            # A socket another thread is reading from must be shut down
            # before close() takes effect.
            _shutdown(client, socket.SHUT_RD)
            _shutdown(upstream, socket.SHUT_RDWR)
            pump.join(timeout=5)
            if not (action and action[0] == "reset"):
                _shutdown(client, socket.SHUT_WR)
            client.close()
            upstream.close()

    def _break(self, index: int) -> None:
        self.broken.append(index)
        if self.on_break is not None:
            self.on_break(index)

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass

    def stop(self) -> None:
        super().stop()
        with self._lock:
            for sock in self._sockets:
                _shutdown(sock, socket.SHUT_RDWR)   # wakes a thread blocked in recv
                sock.close()


def _shutdown(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(how)


@pytest.fixture
def breaking_proxy(nginx: Any) -> Iterator[Callable[..., BreakingProxy]]:
    """``start(plan, on_break=None)``: a BreakingProxy in front of nginx."""
    started: list[BreakingProxy] = []

    def start(plan: Sequence[tuple[str, int] | None],
              on_break: Callable[[int], None] | None = None) -> BreakingProxy:
        proxy = BreakingProxy(BREAKING_PORT, HTTP_PORT, plan, on_break)
        started.append(proxy)
        return proxy
    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A URL whose server accepts connections and never answers."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", SILENT_PORT))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{SILENT_PORT}/images/never"
    finally:
        listener.close()


# -- a server that answers ranges in pieces ------------------------------------

class CappedRanges(http.server.BaseHTTPRequestHandler):
    """Serves ``self.server.images`` (name -> bytes); answers at most
    ``self.server.cap`` bytes per 206, as some CDNs do. Under ``/always206/``
    even a request without ``Range`` gets a (capped) 206."""

    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self.answer(head=True)

    def do_GET(self) -> None:
        self.answer(head=False)

    def answer(self, head: bool) -> None:
        server: Any = self.server
        data = server.images.get(self.path.rsplit("/", 1)[-1])
        if data is None:
            self.send_error(404)
            return
        wanted = self.headers.get("Range")
        if head or (wanted is None and not self.path.startswith("/always206/")):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)
            return
        first, _, last = (wanted or "bytes=0-").removeprefix("bytes=").partition("-")
        start = int(first)
        stop = min(len(data) - 1, int(last) if last else len(data) - 1,
                   start + server.cap - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{stop}/{len(data)}")
        self.send_header("Content-Length", str(stop + 1 - start))
        self.end_headers()
        self.wfile.write(data[start:stop + 1])

    def log_message(self, format: str, *args: Any) -> None:
        self.server.requests.append(self.requestline)   # type: ignore[attr-defined]


@pytest.fixture
def capped_server() -> Iterator[Any]:
    """An HTTP server (Python's) that serves ranges at most 1 MiB at a time."""
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", CAPPED_PORT), CappedRanges)
    server.daemon_threads = True
    server.images, server.cap, server.requests = {}, 1024 * 1024, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- a server that redirects, and a port that records connections ----------------

class Redirecting(http.server.BaseHTTPRequestHandler):
    """Answers every request with ``302 Location: <self.server.target><path>``."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server: Any = self.server
        server.requests.append(self.requestline)
        self.send_response(302)
        self.send_header("Location", server.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def redirector() -> Iterator[Callable[..., Any]]:
    """``start(target, host="127.0.0.1")``: an HTTP server on ``host``:REDIRECT_PORT
    redirecting every path to ``target`` + path; ``server.url(path)``,
    ``server.requests``."""
    started: list[Any] = []

    def start(target: str, host: str = "127.0.0.1") -> Any:
        server: Any = http.server.ThreadingHTTPServer((host, REDIRECT_PORT), Redirecting)
        server.daemon_threads = True
        server.target, server.requests = target.rstrip("/"), []
        server.url = lambda path: f"http://{host}:{REDIRECT_PORT}/{path.lstrip('/')}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server
    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def listener() -> Iterator[Callable[..., Listener]]:
    """``start(host="127.0.0.2")``: a Listener on ``host``:LISTEN_PORT."""
    started: list[Listener] = []

    def start(host: str = "127.0.0.2") -> Listener:
        started.append(Listener(host, LISTEN_PORT))
        return started[-1]
    yield start
    for one in started:
        one.stop()
