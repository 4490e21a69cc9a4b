"""The real OpenStack Glance 33 on 127.0.0.1, for the Glance tests.

Glance 33.0.0 (glance_store 5.7.0) runs from its own virtualenv,
``$MULTISTORE_GLANCE_VENV`` or ``/opt/multistore-glance/33.0.0/venv``, made by
``scripts/deps/glance.sh`` (and by :func:`ensure_venv` here if it is missing).
It runs as Glance 33 must, ``glance.wsgi.api:application`` under gunicorn
(the ``glance-api`` command refuses to run standalone), with:

- a SQLite database made by ``glance-manage db_sync``;
- no Keystone: a paste flavor ``trusted`` (``context`` without ``authtoken``)
  that takes the caller's identity from headers, which :class:`GlanceClient`
  sends (``X-Identity-Status: Confirmed``, roles admin, member, reader);
- the reserved ``os_glance_staging_store`` and ``os_glance_tasks_store`` as
  file stores in the server's directory;
- image import on, with glance-direct, web-download and copy-image;
- one gunicorn worker with threads (``gthread``): Glance 33 under a WSGI
  server runs import tasks in a native thread pool inside the worker
  (``[wsgi] task_pool_threads``, 16), so a worker must keep running between
  requests and serve the status polls while a task copies: a threaded worker
  does both (a sync worker also stops heartbeating during a long request and
  is killed after ``--timeout``, set to 600 s here).

SQLite takes one writer at a time: an import task writes to the database
after its image turns active, and a request writing at that moment fails
with "database is locked" (a 500). :meth:`GlanceClient.wait_stores` waits for
the image's tasks to end as well, so tests do not race them.

Usage::

    stores = {"fast": ("file", {}), "cheap": ("file", {}),
              "ceph": ("rbd", {"rbd_store_ceph_conf": ..., "rbd_store_user": ...})}
    with GlanceServer(tmp_dir, 17300, stores, default_backend="fast") as glance:
        client = glance.client()
        image = client.create_image(name="x")
        client.upload(image["id"], data, store="cheap")
        ...
        glance.restart(stores={**stores, "cheap": ("other-type", {})},
                       python_path=[build_multistore(tmp_dir / "ms")])

A store's options default to a ``store_description`` and, for a store whose
type is in ``file_types`` (``file``), ``filesystem_store_datadir`` =
``<dir>/stores/<id>``: a store switched between two file-like types keeps
its data directory. ``python_path`` puts directories on the
server's ``PYTHONPATH`` (a build of multistore, see :func:`build_multistore`)
so that third-party glance_store drivers load from there.

Everything listens on 127.0.0.1; the server is stopped by the PID gunicorn
writes (TERM, then KILL of its own process group). Run by hand:
``python tests/backends/glance.py start DIR PORT`` (two file stores, ``fast``
and ``cheap``) / ``python tests/backends/glance.py stop DIR``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

_alive = runpy.run_path(str(Path(__file__).with_name("procs.py")))["alive"]

ROOT = Path(__file__).resolve().parents[2]
DEPS_SCRIPT = ROOT / "scripts" / "deps" / "glance.sh"
GLANCE_VERSION = "33.0.0"
DEFAULT_VENV = f"/opt/multistore-glance/{GLANCE_VERSION}/venv"
MiB = 1024 * 1024

#: The paste flavor that trusts identity headers (no Keystone): Glance's own
#: ``keystone`` pipeline without ``authtoken``.
TRUSTED_PIPELINE = ("trusted = cors http_proxy_to_wsgi versionnegotiation osprofiler "
                    "context rootapp")

#: Headers of the caller, for the ``trusted`` flavor: an admin of one project.
PROJECT_ID = "5f0a6b0c1d2e4f30a1b2c3d4e5f60718"
USER_ID = "8e1f2d3c4b5a49687766554433221100"


class GlanceError(RuntimeError):
    """Glance did not install, start or stop."""


class GlanceHTTPError(RuntimeError):
    """Glance answered with an unexpected status."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{method} {path}: {status} "
                         f"{body[:2000].decode('utf-8', 'replace')}")


def venv_path() -> Path:
    return Path(os.environ.get("MULTISTORE_GLANCE_VENV", DEFAULT_VENV))


def ensure_venv() -> Path:
    """Glance's venv, installed by scripts/deps/glance.sh if it is not there."""
    venv = venv_path()
    if not (venv / "bin" / "gunicorn").exists() or not (venv / "bin" / "glance-manage").exists():
        done = subprocess.run(["bash", str(DEPS_SCRIPT)], capture_output=True, text=True,
                              timeout=1800, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise GlanceError(f"{DEPS_SCRIPT} failed ({done.returncode}):\n"
                              f"{(done.stdout + done.stderr)[-3000:]}")
    return venv


def build_multistore(target: str | os.PathLike[str], source: str | os.PathLike[str] = ROOT,
                     venv: Path | None = None) -> Path:
    """Build ``source`` (a multistore checkout) into ``target`` with Glance's pip,
    without its dependencies (Glance has them) and without build isolation (no
    network), from a copy of the checkout (setuptools builds in the source
    tree). ``target`` then goes on :class:`GlanceServer`'s ``python_path``,
    and its entry points (``glance_store.drivers``) are visible to stevedore
    there. About 2 s; Glance's shared venv itself is left unchanged."""
    venv = venv or ensure_venv()
    source, target = Path(source), Path(target)
    shutil.rmtree(target, ignore_errors=True)
    copy = target.with_name(target.name + "-src")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(source / "multistore", copy / "multistore",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "setup.cfg", "README.md"):
        shutil.copy(source / name, copy / name)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-compile", "--target", str(target), str(copy)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, cwd=copy)
    shutil.rmtree(copy, ignore_errors=True)
    if done.returncode != 0:
        raise GlanceError(f"building multistore into {target} failed:\n{done.stderr[-3000:]}")
    return target


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _is_gunicorn(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"gunicorn" in f.read()
    except OSError:
        return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _proc_status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _ini_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return ", ".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _ini(sections: dict[str, dict[str, Any]]) -> str:
    out = []
    for name, options in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {_ini_value(v)}" for k, v in options.items())
        out.append("")
    return "\n".join(out)


StoresConfig = dict[str, tuple[str, dict[str, Any]]]


class GlanceServer:
    """One Glance API (one gunicorn master, ``workers`` threaded workers) whose
    configuration, database, stores, logs and PID file live in ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], port: int, stores: StoresConfig,
                 *, default_backend: str | None = None, workers: int = 1, threads: int = 8,
                 python_path: Iterable[str | os.PathLike[str]] = (),
                 extra_conf: dict[str, dict[str, Any]] | None = None,
                 file_types: Iterable[str] = ("file",), debug: bool = False) -> None:
        if not 17300 <= port <= 17399 and port != 0:
            raise ValueError("the Glance harness uses ports 17300-17399 only")
        self.dir = Path(directory).resolve()
        self.port = port
        self.stores: StoresConfig = dict(stores)
        self.default_backend = default_backend
        self.workers = workers
        self.threads = threads
        self.python_path = [str(p) for p in python_path]
        self.extra_conf = extra_conf or {}
        self.file_types = set(file_types)
        self.debug = debug
        self.pid: int | None = None
        self.start_seconds: float | None = None

    # -- paths ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def etc(self) -> Path:
        return self.dir / "etc"

    @property
    def conf_path(self) -> Path:
        return self.etc / "glance-api.conf"

    @property
    def db_path(self) -> Path:
        return self.dir / "glance.sqlite"

    @property
    def pid_path(self) -> Path:
        return self.dir / "run" / "gunicorn.pid"

    @property
    def log_path(self) -> Path:
        return self.dir / "log" / "glance-api.log"

    @property
    def staging_dir(self) -> Path:
        return self.dir / "staging"

    def store_dir(self, store_id: str) -> Path:
        """The data directory of a file store (as configured)."""
        _, options = self.stores[store_id]
        return Path(options.get("filesystem_store_datadir", self.dir / "stores" / store_id))

    # -- configuration -------------------------------------------------------

    def store_options(self, store_id: str) -> dict[str, Any]:
        kind, options = self.stores[store_id]
        opts: dict[str, Any] = {"store_description": f"{store_id} ({kind})"}
        if kind in self.file_types:
            opts["filesystem_store_datadir"] = str(self.store_dir(store_id))
        opts.update(options)
        return opts

    def write_config(self) -> None:
        if not self.stores:
            raise ValueError("Glance needs at least one store")
        default = self.default_backend or next(iter(self.stores))
        if default not in self.stores:
            raise ValueError(f"default_backend {default!r} is not a store")
        for sub in ("etc", "log", "run", "staging", "tasks"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        sections: dict[str, dict[str, Any]] = {
            "DEFAULT": {
                "enabled_backends": {sid: kind for sid, (kind, _) in self.stores.items()},
                "enabled_import_methods": "[glance-direct,web-download,copy-image]",
                "show_image_direct_url": True,
                "log_file": self.log_path,
                "debug": self.debug,
                "use_stderr": False,
            },
            "database": {"connection": f"sqlite:///{self.db_path}"},
            "paste_deploy": {"flavor": "trusted",
                             "config_file": self.etc / "glance-api-paste.ini"},
            "glance_store": {"default_backend": default},
            "oslo_concurrency": {"lock_path": self.dir / "run"},
            "os_glance_staging_store": {"filesystem_store_datadir": self.staging_dir},
            "os_glance_tasks_store": {"filesystem_store_datadir": self.dir / "tasks"},
        }
        for sid in self.stores:
            sections[sid] = self.store_options(sid)
            if "filesystem_store_datadir" in sections[sid]:
                Path(sections[sid]["filesystem_store_datadir"]).mkdir(parents=True,
                                                                      exist_ok=True)
        for name, options in self.extra_conf.items():
            sections.setdefault(name, {}).update(options)
        self.conf_path.write_text(_ini(sections))
        (self.etc / "glance-api-paste.ini").write_text(self._paste_ini())

    def _paste_ini(self) -> str:
        """Glance's shipped paste file plus the ``trusted`` flavor."""
        shipped = (venv_path() / "etc" / "glance" / "glance-api-paste.ini").read_text()
        lines = []
        for line in shipped.splitlines():
            if line.startswith("disable_by_file_path"):
                line = f"disable_by_file_path = {self.dir / 'run' / 'healthcheck_disable'}"
            lines.append(line)
            if line.startswith("keystone+cachemanagement ="):
                lines.append(TRUSTED_PIPELINE)
        if TRUSTED_PIPELINE not in lines:
            raise GlanceError("the shipped glance-api-paste.ini has no [composite:api] "
                              "keystone+cachemanagement line to add the trusted flavor after")
        lines += ["", "[composite:glance-api-trusted]",
                  "paste.composite_factory = glance.api:root_app_factory",
                  "/: api", "/healthcheck: healthcheck", ""]
        return "\n".join(lines)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["OS_GLANCE_CONFIG_DIR"] = str(self.etc)
        if self.python_path:
            env["PYTHONPATH"] = os.pathsep.join(self.python_path)
        return env

    def db_sync(self) -> None:
        venv = ensure_venv()
        done = subprocess.run(
            [str(venv / "bin" / "glance-manage"), "--config-file", str(self.conf_path),
             "db_sync"], env=self._env(), capture_output=True, text=True, timeout=300,
            stdin=subprocess.DEVNULL, cwd=self.dir)
        if done.returncode != 0:
            raise GlanceError(f"glance-manage db_sync failed ({done.returncode}):\n"
                              f"{(done.stdout + done.stderr)[-3000:]}")

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 90.0) -> GlanceServer:
        """Write the configuration, create the database if there is none, start
        gunicorn and return once ``/versions`` answers. Raises GlanceError."""
        venv = ensure_venv()
        if self.running():
            raise GlanceError(f"{self.dir} holds a running Glance (pid {self.pid}): stop it")
        if _port_open(self.port):
            raise GlanceError(f"port {self.port} on 127.0.0.1 is in use")
        began = time.monotonic()
        self.write_config()
        if not self.db_path.exists():
            self.db_sync()
        self.pid_path.unlink(missing_ok=True)
        with open(self.dir / "log" / "gunicorn.log", "ab") as log:
            proc = subprocess.Popen(
                [str(venv / "bin" / "gunicorn"), "--chdir", str(self.dir),
                 "-b", f"127.0.0.1:{self.port}", "-w", str(self.workers),
                 "-k", "gthread", "--threads", str(self.threads),
                 "--timeout", "600", "--graceful-timeout", "30", "--no-control-socket",
                 "--pid", str(self.pid_path), "glance.wsgi.api:application"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                # gunicorn puts the directory it starts in on sys.path, ahead
                # of PYTHONPATH: started from a checkout, Glance would import
                # that checkout's multistore instead of python_path's build.
                env=self._env(), start_new_session=True, cwd=self.dir)
        self.pid = proc.pid
        try:
            self._wait_ready(began + timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self.pid is not None
        while True:
            if not _alive(self.pid):
                _reap(self.pid)
                raise GlanceError(f"gunicorn (pid {self.pid}) exited:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/versions")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise GlanceError(f"Glance did not answer /versions in time:\n{self.log_tail()}")
            time.sleep(0.1)

    def running(self) -> bool:
        pid = self.pid or self._pid_from_file()
        return pid is not None and _alive(pid) and _is_gunicorn(pid)

    def _pid_from_file(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def worker_pids(self) -> list[int]:
        return _children(self.pid) if self.pid else []

    def stop(self, grace: float = 40.0) -> None:
        """TERM to the gunicorn master (by PID), which stops its workers (they
        drain the task pool); after ``grace`` KILL its own process group."""
        pid = self.pid or self._pid_from_file()
        self.pid = None
        if pid is None or not _alive(pid) or not _is_gunicorn(pid):
            if pid is not None:
                _reap(pid)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < end:
            _reap(pid)
            time.sleep(0.05)
        if _alive(pid) or any(_alive(w) for w in _children(pid)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)   # start_new_session: pgid == pid
        while _alive(pid):
            _reap(pid)
            time.sleep(0.05)
        _reap(pid)
        self.pid_path.unlink(missing_ok=True)

    def restart(self, stores: StoresConfig | None = None, *,
                default_backend: str | None = None, timeout: float = 90.0,
                **changes: Any) -> GlanceServer:
        """Stop, change the stores (or ``python_path``, ``extra_conf``, ...),
        start again on the same database and the same data."""
        self.stop()
        if stores is not None:
            self.stores = dict(stores)
        if default_backend is not None:
            self.default_backend = default_backend
        for name, value in changes.items():
            if name not in ("python_path", "extra_conf", "file_types", "workers", "threads",
                            "debug"):
                raise TypeError(f"restart cannot change {name!r}")
            if name == "python_path":
                value = [str(p) for p in value]
            elif name == "file_types":
                value = set(value)
            setattr(self, name, value)
        return self.start(timeout)

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- inspection ----------------------------------------------------------

    def rss_kib(self) -> dict[str, int]:
        """Current and peak RSS of the workers (summed) and of the master, KiB."""
        workers = self.worker_pids()
        return {"worker": sum(_proc_status_kib(p, "VmRSS") for p in workers),
                "worker_peak": sum(_proc_status_kib(p, "VmHWM") for p in workers),
                "master": _proc_status_kib(self.pid, "VmRSS") if self.pid else 0}

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for name in ("gunicorn.log", "glance-api.log"):
            with contextlib.suppress(OSError):
                text = (self.dir / "log" / name).read_text(errors="replace")
                out.append(f"--- {name} (tail)\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(out)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def files(self, store_id: str) -> list[str]:
        """Names of the files in a file store's data directory (not multistore's
        partial-file directory, which must be empty)."""
        from multistore.testing import image_files
        d = self.store_dir(store_id)
        return image_files(d) if d.exists() else []

    def client(self, **kwargs: Any) -> GlanceClient:
        return GlanceClient(self.url, **kwargs)

    def __enter__(self) -> GlanceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Download:
    """What a download returned: status, headers, size and md5 of the body."""

    def __init__(self, status: int, headers: dict[str, str], size: int, md5: str,
                 seconds: float, body: bytes | None) -> None:
        self.status = status
        self.headers = headers
        self.size = size
        self.md5 = md5
        self.seconds = seconds
        self.body = body

    def __repr__(self) -> str:
        return f"Download(status={self.status}, size={self.size}, md5={self.md5})"


class GlanceClient:
    """Glance's v2 REST API over http.client, with the identity headers of the
    ``trusted`` paste flavor. Methods raise GlanceHTTPError on an unexpected
    status; ``request`` returns whatever came."""

    def __init__(self, url: str, *, project_id: str = PROJECT_ID, user_id: str = USER_ID,
                 roles: str = "admin,member,reader", timeout: float = 300.0) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host = host
        self.port = int(port)
        self.timeout = timeout
        self.identity = {"X-Identity-Status": "Confirmed", "X-Roles": roles,
                         "X-Project-Id": project_id, "X-User-Id": user_id,
                         "X-Tenant-Id": project_id}

    def _conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout,
                                          blocksize=MiB)

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None, json_body: Any = None
                ) -> tuple[int, dict[str, str], bytes]:
        hdrs = {**self.identity, **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn = self._conn()
        try:
            conn.request(method, path, body=body, headers=hdrs,
                         encode_chunked=hdrs.get("Transfer-Encoding") == "chunked")
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def _call(self, method: str, path: str, expect: tuple[int, ...], **kw: Any) -> Any:
        status, _, data = self.request(method, path, **kw)
        if status not in expect:
            raise GlanceHTTPError(method, path, status, data)
        return json.loads(data) if data.strip() else None

    # -- stores / discovery ---------------------------------------------------

    def versions(self) -> Any:
        return self._call("GET", "/versions", (200,))

    def stores(self, detail: bool = False) -> list[dict[str, Any]]:
        path = "/v2/info/stores/detail" if detail else "/v2/info/stores"
        return self._call("GET", path, (200,))["stores"]

    def import_info(self) -> Any:
        return self._call("GET", "/v2/info/import", (200,))

    # -- images ----------------------------------------------------------------

    def create_image(self, name: str = "test", disk_format: str = "raw",
                     container_format: str = "bare", **props: Any) -> dict[str, Any]:
        body = {"name": name, "disk_format": disk_format,
                "container_format": container_format, **props}
        return self._call("POST", "/v2/images", (201,), json_body=body)

    def get_image(self, image_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v2/images/{image_id}", (200,))

    def images(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v2/images?limit=1000", (200,))["images"]

    def locations(self, image_id: str) -> list[dict[str, Any]]:
        """``GET /v2/images/{id}/locations`` (service API; the admin role may):
        ``[{"url": ..., "metadata": {"store": ...}}, ...]``."""
        return self._call("GET", f"/v2/images/{image_id}/locations", (200,))

    def delete(self, image_id: str) -> None:
        self._call("DELETE", f"/v2/images/{image_id}", (204,))

    def delete_from_store(self, image_id: str, store: str) -> None:
        """``DELETE /v2/stores/{store}/{id}``: remove one store's copy."""
        self._call("DELETE", f"/v2/stores/{store}/{image_id}", (204,))

    def tasks(self, image_id: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/v2/images/{image_id}/tasks", (200,))["tasks"]

    def _data_headers(self, size: int | None, store: str | None,
                      extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Content-Type": "application/octet-stream"}
        if size is None:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(size)
        if store:
            headers["X-Image-Meta-Store"] = store
        headers.update(extra or {})
        return headers

    def _send(self, image_id: str, path: str, data: bytes | BinaryIO | Iterable[bytes],
              size: int | None, store: str | None, headers: dict[str, str] | None,
              expect: tuple[int, ...]) -> int:
        if isinstance(data, bytes):
            size = len(data)
        url = f"/v2/images/{image_id}/{path}"
        status, _, body = self.request("PUT", url, body=data,
                                       headers=self._data_headers(size, store, headers))
        if status not in expect:
            raise GlanceHTTPError("PUT", url, status, body)
        return status

    def upload(self, image_id: str, data: bytes | BinaryIO | Iterable[bytes],
               size: int | None = None, *, store: str | None = None,
               headers: dict[str, str] | None = None, expect: tuple[int, ...] = (204,)
               ) -> int:
        """``PUT /v2/images/{id}/file`` to ``store`` (``X-Image-Meta-Store``);
        bytes go with Content-Length, a file or iterator with ``size`` or
        chunked. Returns the status."""
        return self._send(image_id, "file", data, size, store, headers, expect)

    def stage(self, image_id: str, data: bytes | BinaryIO | Iterable[bytes],
              size: int | None = None, expect: tuple[int, ...] = (204,)) -> int:
        """``PUT /v2/images/{id}/stage`` (the first half of glance-direct)."""
        return self._send(image_id, "stage", data, size, None, None, expect)

    def import_image(self, image_id: str, method: str = "glance-direct", *,
                     stores: list[str] | None = None, all_stores: bool | None = None,
                     all_stores_must_succeed: bool | None = None, uri: str | None = None,
                     expect: tuple[int, ...] = (202,)) -> int:
        """``POST /v2/images/{id}/import``; returns the status (202 accepted)."""
        body: dict[str, Any] = {"method": {"name": method}}
        if uri is not None:
            body["method"]["uri"] = uri
        if stores is not None:
            body["stores"] = stores
        if all_stores is not None:
            body["all_stores"] = all_stores
        if all_stores_must_succeed is not None:
            body["all_stores_must_succeed"] = all_stores_must_succeed
        status, _, data = self.request("POST", f"/v2/images/{image_id}/import",
                                       json_body=body)
        if status not in expect:
            raise GlanceHTTPError("POST", f"/v2/images/{image_id}/import", status, data)
        return status

    def copy_image(self, image_id: str, stores: list[str] | None = None,
                   all_stores: bool = False, **kw: Any) -> int:
        """copy-image import of an active image: to ``stores`` or to all stores."""
        return self.import_image(image_id, "copy-image", stores=stores,
                                 all_stores=True if all_stores else None, **kw)

    def download(self, image_id: str, *, byte_range: str | None = None, keep: bool = False,
                 sink: Callable[[bytes], Any] | None = None) -> Download:
        """``GET /v2/images/{id}/file`` (``byte_range`` as in ``bytes=0-99``), read in
        1 MiB pieces: md5 and size of the body (and the body with ``keep``)."""
        headers = dict(self.identity)
        if byte_range:
            headers["Range"] = byte_range
        conn = self._conn()
        began = time.monotonic()
        try:
            conn.request("GET", f"/v2/images/{image_id}/file", headers=headers)
            resp = conn.getresponse()
            md5 = hashlib.md5(usedforsecurity=False)
            size = 0
            kept = bytearray() if keep else None
            while True:
                piece = resp.read(MiB)
                if not piece:
                    break
                md5.update(piece)
                size += len(piece)
                if kept is not None:
                    kept += piece
                if sink is not None:
                    sink(piece)
            return Download(resp.status, dict(resp.getheaders()), size, md5.hexdigest(),
                            time.monotonic() - began, bytes(kept) if kept is not None else None)
        finally:
            conn.close()

    def upload_and_disconnect(self, image_id: str, data: bytes, declared_size: int,
                              *, store: str | None = None, path: str = "file",
                              linger: float = 0.5) -> None:
        """Send ``PUT /v2/images/{id}/<path>`` declaring ``declared_size``
        bytes, send only ``data``, wait ``linger`` s and close the socket: a
        client that went away mid-upload."""
        headers = self._data_headers(declared_size, store, None)
        conn = self._conn()
        conn.putrequest("PUT", f"/v2/images/{image_id}/{path}")
        for k, v in {**self.identity, **headers}.items():
            conn.putheader(k, v)
        conn.endheaders()
        assert conn.sock is not None
        conn.sock.sendall(data)
        time.sleep(linger)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()

    # -- waiting ----------------------------------------------------------------

    def wait_image(self, image_id: str, until: Callable[[dict[str, Any]], bool],
                   timeout: float = 120.0, what: str = "the condition") -> dict[str, Any]:
        """Poll the image until ``until(image)``; raise TimeoutError with the last
        image and its tasks otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            image = self.get_image(image_id)
            if until(image):
                return image
            if time.monotonic() > deadline:
                with contextlib.suppress(GlanceHTTPError):
                    image["_tasks"] = self.tasks(image_id)
                raise TimeoutError(f"image {image_id}: no {what} in {timeout} s: "
                                   f"{json.dumps(image, indent=1)}")
            time.sleep(0.2)

    def wait_status(self, image_id: str, status: str, timeout: float = 120.0
                    ) -> dict[str, Any]:
        return self.wait_image(image_id, lambda i: i["status"] == status, timeout,
                               f"status {status}")

    def wait_stores(self, image_id: str, stores: Iterable[str], timeout: float = 120.0
                    ) -> dict[str, Any]:
        """Until the image is active in every one of ``stores`` (its ``stores``
        property lists them), no import is in flight and every task of the
        image has ended: the task thread writes to the database after the
        image is active, and SQLite takes one writer at a time (a DELETE at
        that moment can fail with "database is locked", a 500)."""
        want = set(stores)
        deadline = time.monotonic() + timeout

        def done(image: dict[str, Any]) -> bool:
            return (image["status"] == "active" and want <= image_stores(image)
                    and not image.get("os_glance_importing_to_stores"))
        image = self.wait_image(image_id, done, timeout, f"stores {sorted(want)}")
        self.wait_tasks(image_id, max(1.0, deadline - time.monotonic()))
        return image

    def wait_tasks(self, image_id: str, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Until every task of the image has ended (success or failure)."""
        deadline = time.monotonic() + timeout
        while True:
            tasks = self.tasks(image_id)
            if tasks and all(t["status"] in ("success", "failure") for t in tasks):
                return tasks
            if time.monotonic() > deadline:
                raise TimeoutError(f"image {image_id}: tasks still running: {tasks}")
            time.sleep(0.2)


def image_stores(image: dict[str, Any]) -> set[str]:
    """The store ids of an image record's ``stores`` property."""
    return set(filter(None, image.get("stores", "").split(",")))


def iter_bytes(size: int, seed: int = 0, piece: int = MiB) -> Iterator[bytes]:
    """``size`` deterministic, incompressible-looking bytes in ``piece`` blocks."""
    block = hashlib.sha512(str(seed).encode()).digest() * (piece // 64 + 1)
    n = 0
    i = 0
    while n < size:
        head = i.to_bytes(8, "little")
        chunk = (head + block)[: min(piece, size - n)]
        yield chunk
        n += len(chunk)
        i += 1


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "start":
        directory = Path(argv[1]).resolve()
        server = GlanceServer(directory, int(argv[2]),
                              {"fast": ("file", {}), "cheap": ("file", {})})
        server.start()
        print(json.dumps({"url": server.url, "pid": server.pid, "conf": str(server.conf_path),
                          "seconds": round(server.start_seconds or 0, 1)}))
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        GlanceServer(argv[1], 0, {}).stop()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
