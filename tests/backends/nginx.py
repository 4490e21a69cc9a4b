"""A real nginx on 127.0.0.1 for the http driver's tests.

One nginx master process serves, from a temporary directory:

- plain HTTP and HTTPS (a certificate issued by a test CA made with the
  ``openssl`` CLI) on two ports, with the same locations:

  ``/images/<name>``
      static files (nginx answers ``Range`` requests with 206);
  ``/private/<name>``
      the same files behind basic auth (user ``USER``, password ``PASSWORD``);
  ``/nolength/<name>``
      the same files through a filter that drops ``Content-Length`` and
      ``Accept-Ranges``: the body comes chunked and ``Range`` is ignored;
  ``/nohead/<name>``
      the same files, but HEAD is refused (403), as for URLs signed for GET;
  ``/chunked/<name>``
      the same files proxied without ``Content-Length`` (the body comes
      chunked) but with ``Range`` support (206 and ``Content-Range``);
  ``/hop/301/<name>``
      a chain of five redirects, one of each kind (301 302 303 307 308, the
      307 one relative), ending at ``/images/<name>``; ``/hop/extra/<name>``
      adds a sixth;
  ``/loop/a`` and ``/loop/b``
      redirect to each other;
  ``/to-https/<name>``, ``/to-ftp``, ``/to-file``, ``/to-localhost/<name>``, ``/to-private/<name>``
      redirects to the HTTPS port, to non-http schemes, to another host
      name (``localhost``) for ``/private/<name>``, and to ``/private/<name>``;
  ``/status/<code>``
      answers with that status (one of :data:`STATUSES`);

- a forward HTTP proxy on a third port (``proxy_pass`` to the requested
  host), which logs every request it relays to ``proxy.log``.

The access log ``access.log`` records each request's ``Range`` header.
The server is started by :meth:`Nginx.start` and stopped by its PID. For the
fault suite, :meth:`Nginx.kill` (SIGKILL), :meth:`Nginx.restart`,
:meth:`Nginx.freeze` (SIGSTOP) and :meth:`Nginx.thaw` (SIGCONT) act on its
process group: the master and its worker, nothing else.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import shutil
import signal
import socket
import subprocess
import time
import types
from pathlib import Path
from typing import Any
from urllib.parse import quote

USER = "glance"
#: A password with characters that must be escaped in a URL (nginx
#: stops a password at ":", so there is none).
PASSWORD = "s3cr@t/pw%#"

#: Statuses served at ``/status/<code>``.
STATUSES = (403, 410, 500, 502, 503)

_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {root}/nginx.pid;
error_log {root}/error.log info;

events {{
    worker_connections 512;
}}

http {{
    types {{ }}
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 10000;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    log_format ranges '$server_port "$request" $status range="$http_range" '
                      'if_range="$http_if_range" sent=$body_bytes_sent conn=$connection';

    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl;
        server_name 127.0.0.1 localhost;
        ssl_certificate {root}/server.pem;
        ssl_certificate_key {root}/server.key;
        access_log {root}/access.log ranges;
        root {root}/www;

        location /images/ {{ }}
        location /private/ {{
            auth_basic "multistore tests";
            auth_basic_user_file {root}/htpasswd;
            alias {root}/www/images/;
        }}
        location /nolength/ {{
            alias {root}/www/images/;
            sub_filter_types *;
            sub_filter "multistore-this-never-matches" "";
        }}
        location /nohead/ {{
            alias {root}/www/images/;
            if ($request_method = HEAD) {{ return 403; }}
        }}
        location /chunked/ {{
            proxy_pass http://127.0.0.1:{http_port}/images/;
            sub_filter_types *;
            sub_filter "multistore-this-never-matches" "";
            sub_filter_last_modified on;
        }}
        location ~ ^/hop/extra/(.*)$ {{ return 301 /hop/301/$1; }}
        location ~ ^/hop/301/(.*)$ {{ return 301 /hop/302/$1; }}
        location ~ ^/hop/302/(.*)$ {{ return 302 /hop/303/$1; }}
        location ~ ^/hop/303/(.*)$ {{ return 303 /hop/307/$1; }}
        location ~ ^/hop/307/(.*)$ {{ absolute_redirect off; return 307 /hop/308/$1; }}
        location ~ ^/hop/308/(.*)$ {{ return 308 /images/$1; }}
        location = /loop/a {{ return 302 /loop/b; }}
        location = /loop/b {{ return 302 /loop/a; }}
        location ~ ^/to-https/(.*)$ {{ return 302 https://127.0.0.1:{https_port}/images/$1; }}
        location = /to-ftp {{ return 302 ftp://127.0.0.1/image; }}
        location = /to-file {{ return 302 file:///etc/passwd; }}
        location ~ ^/to-localhost/(.*)$ {{ return 302 http://localhost:{http_port}/private/$1; }}
        location ~ ^/to-private/(.*)$ {{ return 302 /private/$1; }}
{statuses}
    }}

    server {{
        listen 127.0.0.1:{proxy_port};
        access_log {root}/proxy.log ranges;
        location / {{
            proxy_pass http://$http_host$request_uri;
            proxy_set_header Host $http_host;
            proxy_buffering off;
        }}
    }}
}}
"""


class NginxError(RuntimeError):
    """nginx could not be set up or started."""


class Nginx:
    """One nginx master process with its own directory and ports."""

    user = USER
    password = PASSWORD

    def __init__(self, root: str | os.PathLike[str], http_port: int, https_port: int,
                 proxy_port: int, host: str = "127.0.0.1") -> None:
        self.root = Path(root)
        self.host = host
        self.http_port = http_port
        self.https_port = https_port
        self.proxy_port = proxy_port
        self.docroot = self.root / "www" / "images"
        self.ca_file = self.root / "ca.pem"
        self.process: subprocess.Popen[bytes] | None = None

    # -- set-up ------------------------------------------------------------

    def prepare(self) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise NginxError("nginx is not installed: run scripts/deps/http.sh as root")
        self.binary = binary
        for sub in ("www/images", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        _tls().make_certificates(self.root)
        (self.root / "htpasswd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        user = "user root root;" if os.geteuid() == 0 else ""
        (self.root / "nginx.conf").write_text(_CONF.format(
            root=self.root, user=user, http_port=self.http_port,
            https_port=self.https_port, proxy_port=self.proxy_port,
            statuses="\n".join(f"        location = /status/{code} {{ return {code}; }}"
                                for code in STATUSES)))

    # -- life cycle ------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        self.prepare()
        self._launch(timeout)

    def _launch(self, timeout: float) -> None:
        log = open(self.root / "stderr.log", "ab")
        try:
            self.process = subprocess.Popen(
                [self.binary, "-p", str(self.root), "-c", str(self.root / "nginx.conf"),
                 "-e", str(self.root / "error.log")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        ports = [self.http_port, self.https_port, self.proxy_port]
        while ports:
            if self.process.poll() is not None:
                raise NginxError(f"nginx exited with status {self.process.returncode}:\n"
                                 + self.logs())
            if time.monotonic() > deadline:
                self.stop()
                raise NginxError(f"nginx did not listen on {ports} within {timeout}s:\n"
                                 + self.logs())
            try:
                socket.create_connection((self.host, ports[0]), timeout=1).close()
                ports.pop(0)
            except OSError:
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop the master (which stops its worker) by PID."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        self._signal_group(process, signal.SIGCONT)    # a frozen server cannot stop
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._signal_group(process, signal.SIGKILL)
            process.wait(timeout=10)

    # -- faults (the fault suite's hooks) ------------------------------------

    def kill(self) -> None:
        """SIGKILL the master and its worker at once (their process group):
        connections drop, the ports refuse connections until :meth:`restart`."""
        process = self.process
        if process is None or process.poll() is not None:
            raise NginxError("nginx is not running")
        workers = self._workers(process.pid)
        self._signal_group(process, signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.01)

    def restart(self, timeout: float = 20.0) -> None:
        """Start again (same directory, certificates and ports) after :meth:`kill`
        and wait until every port answers."""
        if self.process is not None and self.process.poll() is None:
            raise NginxError("nginx is still running")
        self._launch(timeout)

    def freeze(self) -> None:
        """SIGSTOP the master and its worker: connections stay open and
        new ones are accepted by the kernel, but nothing is answered."""
        assert self.process is not None
        self._signal_group(self.process, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT what :meth:`freeze` stopped."""
        assert self.process is not None
        self._signal_group(self.process, signal.SIGCONT)

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
        # The master leads its own process group (start_new_session): the
        # group is this server's processes and nothing else.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)

    @staticmethod
    def _workers(master: int) -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            if fields and int(fields[1]) == master:     # the parent's pid
                found.append(int(entry))
        return found

    def check_alive(self) -> None:
        """Raise NginxError (with nginx's logs) if the server stopped or lost
        its files since it started."""
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise NginxError(f"nginx is not running (exit status {code}):\n" + self.logs())
        if not self.docroot.is_dir():
            raise NginxError(f"nginx's document root {self.docroot} disappeared")

    def logs(self) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    # -- content and addresses ---------------------------------------------

    def put(self, name: str, data: bytes) -> None:
        """Serve ``data`` as ``/images/<name>`` (and under the other locations)."""
        path = self.docroot / name
        temp = path.with_name(f".{name}.tmp")
        temp.write_bytes(data)
        temp.rename(path)

    def url(self, path: str, *, https: bool = False, auth: bool | str = False,
            host: str | None = None) -> str:
        """``http(s)://[auth@]host:port/path``.

        ``auth``: True for the test user and password (escaped), or a
        ``user:password`` string written as given.
        """
        scheme, port = ("https", self.https_port) if https else ("http", self.http_port)
        if auth is True:
            auth = f"{quote(USER, safe='')}:{quote(PASSWORD, safe='')}"
        userinfo = f"{auth}@" if auth else ""
        return f"{scheme}://{userinfo}{host or self.host}:{port}/{path.lstrip('/')}"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.host}:{self.proxy_port}"

    def access_log(self, name: str = "access.log") -> list[str]:
        path = self.root / name
        return path.read_text().splitlines() if path.exists() else []


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _tls() -> Any:
    """tests/backends/tls.py (the test CA), by path: tests/ is not a package."""
    return types.SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("tls.py"))))
