"""A real OpenStack Swift all-in-one on 127.0.0.1, for the swift driver's tests.

Swift 2.38.3 runs from its own virtualenv (eventlet and Swift's pins stay
out of the test venv): ``$MULTISTORE_SWIFT_VENV`` or
``/opt/multistore-swift-venv``, made by ``scripts/deps/swift.sh`` and, if
missing, by :func:`ensure_venv` here (~30 s, PyPI).

One proxy, account, container and object server (``workers = 0``, one
replica, one device that is a plain directory), tempauth for v1 auth with
an in-process token cache (no memcached), syslog disabled (no UDP sockets);
everything listens on 127.0.0.1. Started in 2-5 s, stopped by PID.

Usage::

    with SwiftAIO(tmp_dir, base_port=16000) as swift:
        swift.auth_url      # http://127.0.0.1:16000/auth/v1.0
        swift.users         # {"test:tester": "testing", ...}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import runpy
import shutil
import signal
import ssl
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any



SWIFT_VERSION = "2.38.3"
DEFAULT_VENV = "/opt/multistore-swift-venv"
KEYSTONEMIDDLEWARE_VERSION = "13.0.1"
KEYSTONE_VERSION = "30.0.0"
DEFAULT_KEYSTONE_VENV = "/opt/multistore-keystone-venv"

#: tempauth users: account:user -> (key, groups). tester3 is not an admin.
USERS = {
    "test:tester": ("testing", ".admin"),
    "test2:tester2": ("testing2", ".admin"),
    "test:tester3": ("testing3", ""),
    "admin:admin": ("admin", ".admin .reseller_admin"),
}

NOSYSLOG = '''\
"""Swift logs to stderr only: no /dev/log here, and syslog over UDP would
open sockets bound to 0.0.0.0."""
import logging.handlers

logging.handlers.SysLogHandler.createSocket = lambda self: None
logging.handlers.SysLogHandler.emit = lambda self, record: None


def drop_syslog(conf, name, log_to_console, log_route, fmt, logger, adapted_logger):
    for h in list(logger.handlers):
        if isinstance(h, logging.handlers.SysLogHandler):
            logger.removeHandler(h)
            h.close()
'''

FAKECACHE = '''\
"""An in-process stand-in for memcache (valid: the proxy is one process)."""
import json
import time


class FakeCache:
    def __init__(self):
        self.data = {}

    def _live(self, key):
        item = self.data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires and expires < time.time():
            self.data.pop(key, None)
            return None
        return item

    @staticmethod
    def _expiry(t):
        if not t:
            return 0
        return t if t > 30 * 24 * 3600 else time.time() + t

    def get(self, key, raise_on_error=False):
        item = self._live(key)
        return None if item is None else json.loads(item[1])

    def set(self, key, value, serialize=True, time=0, min_compress_len=0,
            raise_on_error=False, **kwargs):
        self.data[key] = (self._expiry(time), json.dumps(value))

    def incr(self, key, delta=1, time=0):
        item = self._live(key)
        value = (json.loads(item[1]) if item else 0) + delta
        value = max(0, value)
        self.data[key] = (item[0] if item else self._expiry(time), json.dumps(value))
        return value

    def decr(self, key, delta=1, time=0):
        return self.incr(key, -delta, time)

    def delete(self, key, server_key=None):
        self.data.pop(key, None)

    def set_multi(self, mapping, server_key, serialize=True, time=0,
                  min_compress_len=0):
        for k, v in mapping.items():
            self.set(k, v, time=time)

    def get_multi(self, keys, server_key):
        return [self.get(k) for k in keys]


def filter_factory(global_conf, **local_conf):
    cache = FakeCache()

    def factory(app):
        def middleware(env, start_response):
            env['swift.cache'] = cache
            return app(env, start_response)
        return middleware
    return factory
'''

DEFAULT_SECTION = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = {workers}
user = {user}
swift_dir = {etc}
log_level = INFO
log_custom_handlers = nosyslog.drop_syslog
"""

SERVER_CONF = DEFAULT_SECTION + """\
devices = {devices}
mount_check = false
disable_fallocate = true

[pipeline:main]
pipeline = {kind}-server

[app:{kind}-server]
use = egg:swift#{kind}

{extra}
"""

EXTRA_SECTIONS = {
    "account": "[account-replicator]\n[account-auditor]\n[account-reaper]\n",
    "container": "[container-replicator]\n[container-updater]\n[container-auditor]\n"
                 "[container-sync]\n",
    "object": "[object-replicator]\n[object-reconstructor]\n[object-updater]\n"
              "[object-auditor]\n",
}

PROXY_CONF = DEFAULT_SECTION + """\

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk \
    tempurl slo dlo {auth} container-quotas copy versioned_writes proxy-logging \
    proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:tempauth]
use = egg:swift#tempauth
{users}

[filter:cache]
paste.filter_factory = fakecache:filter_factory

# Swift serves segments after the 10th at 1 per second by default: lifted,
# so that tests with small segments (and benchmarks) measure the data path.
[filter:slo]
use = egg:swift#slo
rate_limit_after_segment = 100000
[filter:dlo]
use = egg:swift#dlo
rate_limit_after_segment = 100000

{filters}
{extra}
"""

#: Paste filters of the proxy taken as Swift ships them.
PLAIN_FILTERS = ("catch_errors", "gatekeeper", "healthcheck", "proxy_logging",
                 "listing_formats", "bulk", "tempurl", "copy", "container_quotas",
                 "versioned_writes")

DASHLESS = ("catch_errors", "listing_formats", "versioned_writes")

RINGS = """\
import sys
from swift.common.ring import RingBuilder
etc = sys.argv[1]
for name, port in (("object", {object}), ("container", {container}), ("account", {account})):
    b = RingBuilder(8, 1, 1)
    b.add_dev({{"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": port,
               "device": "d1", "weight": 1.0}})
    b.rebalance()
    b.save(f"{{etc}}/{{name}}.builder")
    b.get_ring().save(f"{{etc}}/{{name}}.ring.gz")
"""


def venv_path() -> Path:
    return Path(os.environ.get("MULTISTORE_SWIFT_VENV", DEFAULT_VENV))


def ensure_venv() -> Path:
    """The Swift server venv, created (pip, ~30 s) if it is not there yet."""
    venv = venv_path()
    if (venv / "bin" / "swift-proxy-server").exists() and list(
            venv.glob("lib/python*/site-packages/keystonemiddleware")):
        return venv
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"swift=={SWIFT_VERSION}",
                    f"keystonemiddleware=={KEYSTONEMIDDLEWARE_VERSION}"], check=True)
    return venv


def ensure_keystone_venv() -> Path:
    """Keystone's own venv (``$MULTISTORE_KEYSTONE_VENV``), created if missing (~60 s)."""
    venv = Path(os.environ.get("MULTISTORE_KEYSTONE_VENV", DEFAULT_KEYSTONE_VENV))
    if (venv / "bin" / "keystone-manage").exists() and (venv / "bin" / "gunicorn").exists():
        return venv
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                    f"keystone=={KEYSTONE_VERSION}", "gunicorn"], check=True)
    return venv


class SwiftAIO:
    """Proxy, account, container and object servers on ports base..base+3."""

    KINDS = ("account", "container", "object", "proxy")

    def __init__(self, base_dir: str | os.PathLike[str], base_port: int = 16000,
                 users: dict[str, tuple[str, str]] | None = None,
                 proxy_extra: str = "", auth_filter: str = "tempauth",
                 workers: int = 0) -> None:
        self.dir = Path(base_dir)
        self.ports = {"proxy": base_port, "container": base_port + 1,
                      "account": base_port + 2, "object": base_port + 3}
        self.users = {u: k for u, (k, _) in (users or USERS).items()}
        self._user_specs = users or USERS
        self.proxy_extra = proxy_extra
        self.auth_filter = auth_filter
        # workers > 0 (benchmarks): the object/container/account servers and
        # the Keystone proxy fork workers; the tempauth proxy keeps one process
        # (its token cache lives in it).
        self.workers = workers
        self.pids: dict[str, int] = {}
        self.ca_file: Path | None = None     # set by start_tls_proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    @property
    def auth_url(self) -> str:
        return f"{self.url}/auth/v1.0"

    def storage_url(self, account: str) -> str:
        return f"{self.url}/v1/AUTH_{account}"

    # -- lifecycle -----------------------------------------------------------

    def write_config(self) -> None:
        etc, lib = self.dir / "etc", self.dir / "lib"
        devices = self.dir / "srv" / "node"
        for d in (etc, lib, devices / "d1", self.dir / "log", self.dir / "run"):
            d.mkdir(parents=True, exist_ok=True)
        (lib / "nosyslog.py").write_text(NOSYSLOG)
        (lib / "fakecache.py").write_text(FAKECACHE)
        (etc / "swift.conf").write_text(
            "[swift-hash]\nswift_hash_path_prefix = aio-prefix\n"
            "swift_hash_path_suffix = aio-suffix\n\n"
            "[storage-policy:0]\nname = Policy-0\ndefault = yes\n")
        user = _user_name()
        for kind in ("account", "container", "object"):
            (etc / f"{kind}-server.conf").write_text(SERVER_CONF.format(
                port=self.ports[kind], user=user, workers=self.workers, etc=etc,
                devices=devices, kind=kind,
                extra=EXTRA_SECTIONS[kind]))
        (etc / "proxy-server.conf").write_text(PROXY_CONF.format(
            port=self.ports["proxy"], user=user, workers=0, etc=etc, users=self._users(),
            auth=self.auth_filter, extra=self.proxy_extra, filters=self._plain_filters()))

    def start(self, timeout: float = 60.0) -> None:
        venv = ensure_venv()
        for port in self.ports.values():
            if _port_open(port):
                raise RuntimeError(f"port {port} is already in use on 127.0.0.1")
        self.write_config()
        etc = self.dir / "etc"
        subprocess.run([str(venv / "bin" / "python"), "-c",
                        RINGS.format(**self.ports), str(etc)], check=True,
                       stdout=subprocess.DEVNULL)
        env = dict(os.environ, PYTHONPATH=str(self.dir / "lib"))
        try:
            for kind in self.KINDS:
                log = open(self.dir / "log" / f"{kind}.log", "ab")
                proc = subprocess.Popen(
                    [str(venv / "bin" / f"swift-{kind}-server"),
                     str(etc / f"{kind}-server.conf"), "--verbose"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env, start_new_session=True)
                log.close()
                self.pids[kind] = proc.pid
                (self.dir / "run" / f"{kind}.pid").write_text(str(proc.pid))
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def start_keystone_proxy(self, keystone: KeystoneServer, port: int | None = None,
                             timeout: float = 60.0) -> str:
        """A second proxy on the same servers, authenticating with Keystone
        (authtoken + keystoneauth): returns its URL."""
        port = port or self.ports["proxy"] + 4
        conf = PROXY_CONF.format(
            port=port, user=_user_name(), workers=self.workers, etc=self.dir / "etc",
            users="", auth="authtoken keystoneauth",
            extra=KEYSTONE_PROXY_FILTERS.format(keystone=keystone.url,
                                                admin_password=keystone.ADMIN_PASSWORD),
            filters=self._plain_filters())
        return self._start_proxy("proxy-keystone", port, conf, timeout)

    def start_tls_proxy(self, port: int | None = None, timeout: float = 60.0) -> str:
        """A second tempauth proxy on the same servers that speaks only
        HTTPS, with a certificate from a throw-away CA (``self.ca_file``);
        tempauth hands out https storage URLs on it. Returns its URL."""
        port = port or self.ports["proxy"] + 5
        tls = self.dir / "tls"
        tls.mkdir(exist_ok=True)
        _tls().make_certificates(tls)
        self.ca_file = tls / "ca.pem"
        conf = PROXY_CONF.format(
            port=port, user=_user_name(), workers=0, etc=self.dir / "etc", users=self._users(),
            auth=self.auth_filter, extra=self.proxy_extra, filters=self._plain_filters())
        conf = conf.replace("[DEFAULT]\n", f"[DEFAULT]\ncert_file = {tls / 'server.pem'}\n"
                                            f"key_file = {tls / 'server.key'}\n", 1)
        return self._start_proxy("proxy-tls", port, conf, timeout, scheme="https")

    def start_fault_proxy(self, port: int | None = None, timeout: float = 60.0) -> str:
        """A tempauth proxy of its own on the same servers, for fault tests
        to kill, freeze and restart (:meth:`kill`, :meth:`freeze`,
        :meth:`thaw`, :meth:`restart` with ``"proxy-faults"``) while the
        other proxies keep serving. Returns its URL."""
        port = port or self.ports["proxy"] + 6
        conf = PROXY_CONF.format(
            port=port, user=_user_name(), workers=0, etc=self.dir / "etc", users=self._users(),
            auth=self.auth_filter, extra=self.proxy_extra, filters=self._plain_filters())
        # Container info (a quota set or lifted) is cached for a second only.
        conf = conf.replace("account_autocreate = true\n", "account_autocreate = true\n"
                            "recheck_container_existence = 1\n"
                            "recheck_account_existence = 1\n", 1)
        return self._start_proxy("proxy-faults", port, conf, timeout)

    def kill(self, name: str) -> None:
        """SIGKILL one server (its process group) and reap it."""
        pid = self.pids[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def freeze(self, name: str) -> None:
        os.killpg(self.pids[name], signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        os.killpg(self.pids[name], signal.SIGCONT)

    def restart(self, name: str, timeout: float = 60.0) -> str:
        """Start a proxy again from its configuration (after :meth:`kill`)."""
        if _alive(self.pids[name]):
            self.kill(name)
        conf = (self.dir / "etc" / f"{name}-server.conf").read_text()
        port = self.ports.pop(name)
        deadline = time.monotonic() + timeout
        while _port_open(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        return self._start_proxy(name, port, conf, timeout)

    def _users(self) -> str:
        """tempauth's user lines."""
        return "\n".join(f"user_{u.replace(':', '_')} = {key} {groups}".rstrip()
                         for u, (key, groups) in self._user_specs.items())

    @staticmethod
    def _plain_filters() -> str:
        return "\n".join(f"[filter:{f if f in DASHLESS else f.replace('_', '-')}]\n"
                         f"use = egg:swift#{f}" for f in PLAIN_FILTERS)

    def _start_proxy(self, name: str, port: int, conf: str, timeout: float,
                     scheme: str = "http") -> str:
        """Start one more proxy server from ``conf``; its URL once it answers."""
        venv = ensure_venv()
        if _port_open(port):
            raise RuntimeError(f"port {port} is already in use on 127.0.0.1")
        self.ports[name] = port
        conf_path = self.dir / "etc" / f"{name}-server.conf"
        conf_path.write_text(conf)
        env = dict(os.environ, PYTHONPATH=str(self.dir / "lib"))
        log = open(self.dir / "log" / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [str(venv / "bin" / "swift-proxy-server"), str(conf_path), "--verbose"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True)
        log.close()
        self.pids[name] = proc.pid
        url = f"{scheme}://127.0.0.1:{port}"
        context = ssl.create_default_context(cafile=str(self.ca_file)) \
            if scheme == "https" else None
        deadline = time.monotonic() + timeout
        while True:
            if not _alive(proc.pid):
                raise RuntimeError(f"{name} exited:\n" + self.log_tail(name))
            try:
                with urllib.request.urlopen(f"{url}/healthcheck", timeout=5,
                                            context=context):
                    return url
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for kind, pid in self.pids.items():
                if not _alive(pid):
                    raise RuntimeError(f"swift {kind} server exited; see "
                                       f"{self.dir / 'log' / (kind + '.log')}:\n"
                                       + self.log_tail(kind))
            try:
                self._probe()
                return
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                last = exc
                time.sleep(0.2)
        raise RuntimeError(f"swift did not become ready in {timeout} s: {last}")

    def _probe(self) -> None:
        """A full round trip: health, auth, container PUT+DELETE."""
        with urllib.request.urlopen(f"{self.url}/healthcheck", timeout=5) as r:
            if r.read() != b"OK":
                raise RuntimeError("healthcheck not OK")
        user = next(iter(self.users))
        req = urllib.request.Request(self.auth_url, headers={
            "X-Auth-User": user, "X-Auth-Key": self.users[user]})
        with urllib.request.urlopen(req, timeout=5) as r:
            token, url = r.headers["X-Auth-Token"], r.headers["X-Storage-Url"]
        for method in ("PUT", "DELETE"):
            req = urllib.request.Request(f"{url}/_probe", method=method,
                                         headers={"X-Auth-Token": token})
            with urllib.request.urlopen(req, timeout=5):
                pass

    def stop(self) -> None:
        """SIGTERM to every server at once, then SIGKILL their process groups."""
        pids = dict(self.pids)
        for pid in pids.values():
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
            time.sleep(0.1)
        for pid in pids.values():
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)   # start_new_session: pid == pgid
        for pid in pids.values():
            _reap(pid)
        self.pids.clear()

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, kind: str, lines: int = 20) -> str:
        try:
            text = (self.dir / "log" / f"{kind}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def logs(self) -> str:
        return "\n".join((self.dir / "log" / f"{k}.log").read_text(errors="replace")
                         for k in self.KINDS if (self.dir / "log" / f"{k}.log").exists())

    def object_files(self, account: str, container: str, obj: str) -> list[Path]:
        """The object server's ``.data`` files of an object (``account`` as
        in the storage URL: ``AUTH_test``), found as Swift hashes paths."""
        digest = hashlib.md5(f"aio-prefix/{account}/{container}/{obj}aio-suffix".encode(),
                             usedforsecurity=False).hexdigest()
        partition = int(digest[:8], 16) >> (32 - 8)       # the rings' part power is 8
        where = self.dir / "srv" / "node" / "d1" / "objects" / str(partition) / \
            digest[-3:] / digest
        return sorted(where.glob("*.data"))

    def rot_object(self, account: str, container: str, obj: str, offset: int = 0) -> None:
        """Flip one byte of an object on the object server's disk, as bit rot
        would: its stored ETag (metadata) stays, its bytes no longer match it."""
        files = self.object_files(account, container, obj)
        if not files:
            raise FileNotFoundError(f"no data file of /{account}/{container}/{obj}")
        with open(files[-1], "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0xFF]))

    def disk_usage(self) -> int:
        total = 0
        for root, _, files in os.walk(self.dir / "srv"):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.path.getsize(os.path.join(root, name))
        return total

    def __enter__(self) -> SwiftAIO:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


KEYSTONE_CONF = """\
[DEFAULT]
log_file = {dir}/keystone.log
[database]
connection = sqlite:///{dir}/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = {dir}/fernet-keys
[fernet_receipts]
key_repository = {dir}/fernet-receipts
[credential]
key_repository = {dir}/credential-keys
"""

KEYSTONE_WSGI = """\
import sys
sys.argv = sys.argv[:1]     # keystone parses the command line: not gunicorn's
from keystone.wsgi.api import application  # noqa: E402,F401
"""

KEYSTONE_PROXY_FILTERS = """
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = {keystone}/v3
auth_url = {keystone}/v3
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = admin
username = admin
password = {admin_password}
delay_auth_decision = True

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
"""


class KeystoneServer:
    """A real Keystone (v3, sqlite, fernet tokens) under gunicorn on 127.0.0.1.

    :meth:`start` bootstraps the admin, then creates the ``object-store``
    service with ``swift_url``'s endpoints and two projects with a member
    user each (``demo``/``demopw``, ``other``/``otherpw``).
    """

    ADMIN_PASSWORD = "adminpw"
    USERS = {"demo": "demopw", "other": "otherpw"}

    def __init__(self, base_dir: str | os.PathLike[str], port: int, swift_url: str) -> None:
        self.dir = Path(base_dir)
        self.port = port
        self.swift_url = swift_url
        self.pid: int | None = None
        self.project_ids: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        venv = ensure_keystone_venv()
        if _port_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use on 127.0.0.1")
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "keystone.conf"
        conf.write_text(KEYSTONE_CONF.format(dir=self.dir))
        (self.dir / "ks_wsgi.py").write_text(KEYSTONE_WSGI)
        env = dict(os.environ, OS_KEYSTONE_CONFIG_FILES=str(conf))
        manage = [str(venv / "bin" / "keystone-manage"), "--config-file", str(conf)]
        owner = ["--keystone-user", _user_name(), "--keystone-group", _user_name()]
        for step in (["db_sync"], ["fernet_setup", *owner], ["credential_setup", *owner],
                     ["bootstrap", "--bootstrap-password", self.ADMIN_PASSWORD,
                      "--bootstrap-region-id", "RegionOne",
                      "--bootstrap-public-url", f"{self.url}/v3",
                      "--bootstrap-internal-url", f"{self.url}/v3"]):
            subprocess.run(manage + step, check=True, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = open(self.dir / "gunicorn.log", "ab")
        proc = subprocess.Popen(
            [str(venv / "bin" / "gunicorn"), "--chdir", str(self.dir),
             "-b", f"127.0.0.1:{self.port}", "-w", "1",
             "--control-socket", str(self.dir / "gunicorn.ctl"), "ks_wsgi:application"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
        log.close()
        self.pid = proc.pid
        try:
            deadline = time.monotonic() + timeout
            while True:
                if not _alive(proc.pid):
                    raise RuntimeError("keystone exited; see " + str(self.dir / "gunicorn.log"))
                try:
                    with urllib.request.urlopen(f"{self.url}/v3", timeout=5):
                        break
                except (OSError, urllib.error.URLError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
            self._populate(self.swift_url)
        except BaseException:
            self.stop()
            raise

    def token(self, user: str = "admin", password: str | None = None,
              project: str | None = None) -> str:
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"},
            "password": password or self.ADMIN_PASSWORD}}},
            "scope": {"project": {"name": project or user, "domain": {"id": "default"}}}}}
        return self._call("POST", "/v3/auth/tokens", body, token=None,
                          header="X-Subject-Token")

    def _call(self, method: str, path: str, body: Any, token: str | None,
              header: str | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["X-Auth-Token"] = token
        req = urllib.request.Request(self.url + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body else None)
        with urllib.request.urlopen(req, timeout=30) as r:
            if header:
                return r.headers[header]
            text = r.read()
            return json.loads(text) if text else None

    def _populate(self, swift_url: str) -> None:
        admin = self.token()
        service = self._call("POST", "/v3/services", {"service": {
            "type": "object-store", "name": "swift"}}, admin)["service"]["id"]
        for interface in ("public", "internal", "admin"):
            self._call("POST", "/v3/endpoints", {"endpoint": {
                "service_id": service, "interface": interface, "region_id": "RegionOne",
                "url": f"{swift_url}/v1/AUTH_$(project_id)s"}}, admin)
        roles = self._call("GET", "/v3/roles?name=member", None, admin)["roles"]
        member = roles[0]["id"]
        for name, password in self.USERS.items():
            project = self._call("POST", "/v3/projects", {"project": {
                "name": name, "domain_id": "default"}}, admin)["project"]["id"]
            user = self._call("POST", "/v3/users", {"user": {
                "name": name, "password": password, "domain_id": "default",
                "default_project_id": project}}, admin)["user"]["id"]
            self._call("PUT", f"/v3/projects/{project}/users/{user}/roles/{member}",
                       None, admin)
            self.project_ids[name] = project

    def stop(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        _reap(pid)


def _user_name() -> str:
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _port_open(port: int) -> bool:
    import socket
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":   # manual use: python tests/backends/swift.py DIR
    aio = SwiftAIO(sys.argv[1] if len(sys.argv) > 1 else "/tmp/swift-aio")
    t0 = time.monotonic()
    aio.start()
    print(f"swift ready at {aio.auth_url} in {time.monotonic() - t0:.1f} s; pids {aio.pids}")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        aio.stop()


def _tls() -> Any:
    """tests/backends/tls.py (the test CA), by path: tests/ is not a package."""
    return types.SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("tls.py"))))
