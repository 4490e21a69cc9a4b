"""A real OpenStack Cinder on real Ceph, for the cinder driver's tests.

What :class:`CinderDeployment` starts, every process on 127.0.0.1 only and
each a private instance (own directory, own ports, own PID):

- a Ceph cluster (:class:`CephCluster` of ``tests/backends/rbd.py``: one
  mon, one memstore OSD, cephx) with one pool per volume backend and the
  client ``client.cinder`` allowed on every pool;
- PostgreSQL 15 (Debian's binaries, run as the ``postgres`` user: it refuses
  root), one database ``cinder``;
- RabbitMQ (Debian's), its own epmd and Erlang distribution port;
- Cinder 29 from PyPI, in its own venv (``scripts/deps/cinder.sh``):
  cinder-api (``auth_strategy = noauth``), cinder-scheduler and
  cinder-volume with one backend per pool, each the real
  ``cinder.volume.drivers.rbd.RBDDriver``; a volume type per backend
  (``volume_backend_name``); the default quota class unlimited.

Default ports, ``base_port`` + offset (17200-17299 belong to the cinder
tests): 0 cinder-api, 1 a second cinder-api speaking HTTPS only
(:meth:`~CinderDeployment.start_tls_api`), 2 PostgreSQL, 3 AMQP, 4 epmd,
5 Erlang distribution, 6 a third cinder-api behind Keystone
(:meth:`~CinderDeployment.start_keystone_api`), 10/11 the Ceph mon (v2/v1), 50-99 the OSD.

Auth (noauth): a request carries ``X-Auth-Token: <user>:<project>`` and is an
admin of that project; the project in the URL must be the token's (else
HTTP 400). A client uses the endpoint ``http://127.0.0.1:17200/v3/<project>``
with keystoneauth's ``token_endpoint.Token(endpoint, token)``: see
:meth:`~CinderDeployment.client`. Any project name is accepted
(``project_id_regex`` is widened), so a test can have a project of its own,
for instance one with a small quota (:meth:`~CinderDeployment.set_quota`).

The data path is os-brick's RBD connector with ``do_local_attach=False``
(librbd in the client process). Cinder no longer puts the cephx keyring in
``connection_info`` (OSSN-0085): the client adds it
(``connection_info["keyring"] = <keyring text>``), see
:func:`brick_connection_info`. :func:`brick_in_process` makes os-brick's
privsep run in the calling process (root only), as the tests need.
:class:`Attachment` attaches a volume the way glance_store does (reserve,
update with the connector, connect, complete) and yields os-brick's file-like
``RBDVolumeIOWrapper``; :func:`wait_status` and :func:`wait_gone` poll a
volume. os-brick's wrapper is read-write even for an ``ro`` attachment.

Usage::

    d = CinderDeployment(directory)          # directory: searchable by others
    d.start()                                # ~10-20 s; installs what is missing
    cc = d.client()                          # cinderclient v3, microversion 3.54
    d.info()                                 # endpoint, token, types, ceph.conf...
    d.kill_api() / d.start_api() / d.freeze_api() / d.thaw_api()
    d.stop()                                 # by PID (files in directory/run)

Run by hand: ``python tests/backends/cinder.py start DIR [BASE_PORT]`` prints
the :meth:`~CinderDeployment.info` JSON (also written to ``DIR/cinder.json``);
``python tests/backends/cinder.py stop DIR`` stops everything started there.
Use the project venv's python (``.venv/bin/python``): it has rados/rbd.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import runpy
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEPS_SCRIPT = ROOT / "scripts" / "deps" / "cinder.sh"
CINDER_VERSION = "29.0.0"
DEFAULT_VENV = f"/opt/multistore-cinder/venv-{CINDER_VERSION}"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
GiB = 1024 ** 3

#: volume type == backend section == volume_backend_name -> Ceph pool
BACKENDS = {"netapp": "netapp", "powerstore": "powerstore"}
HOST = "aio"
PROJECT = "multistore"
USER = "glance"
RBD_USER = "cinder"

OFFSETS = {"api": 0, "api-tls": 1, "postgres": 2, "amqp": 3, "epmd": 4, "erl-dist": 5,
           "api-keystone": 6,
           "mon-v2": 10, "mon-v1": 11, "osd-min": 50, "osd-max": 99}

#: Every process started here carries this variable (value: the deployment's
#: directory); stop() signals a PID only if its environment or command line
#: names the directory, so a recycled PID is never hit.
MARK = "MULTISTORE_CINDER_DIR"

CINDER_CONF = """\
[DEFAULT]
auth_strategy = noauth
# noauth tokens are "user:project"; the default regex ([0-9a-f-]+) would
# refuse project names such as "{project}" (404)
project_id_regex = [0-9a-zA-Z_\\-]+
transport_url = rabbit://cinder:cinder@127.0.0.1:{amqp}/
my_ip = 127.0.0.1
host = {host}
state_path = {dir}/state
api_paste_config = {dir}/etc/api-paste.ini
resource_query_filters_file = {dir}/etc/resource_filters.json
# never used by the RBD driver; a file that does not exist
rootwrap_config = {dir}/etc/rootwrap.conf
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = {api}
osapi_volume_workers = 1
enabled_backends = {backends}
graceful_shutdown_timeout = 5
debug = {debug}
use_stderr = true

[database]
connection = postgresql+psycopg2://cinder@127.0.0.1:{postgres}/cinder

[oslo_concurrency]
lock_path = {dir}/lock

[coordination]
backend_url = file://{dir}/lock
{backend_sections}"""

BACKEND_SECTION = """
[{name}]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = {name}
rbd_pool = {pool}
rbd_ceph_conf = {ceph_conf}
rbd_user = {rbd_user}
rbd_cluster_name = ceph
"""

TLS_CONF = """\
[DEFAULT]
osapi_volume_listen_port = {port}
osapi_volume_use_ssl = true

[ssl]
cert_file = {tls}/server.pem
key_file = {tls}/server.key
"""

KEYSTONE_CONF = """\
[DEFAULT]
auth_strategy = keystone
osapi_volume_listen_port = {port}

[keystone_authtoken]
www_authenticate_uri = {keystone}/v3
auth_url = {keystone}/v3
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = admin
username = admin
password = {password}
"""

RABBITMQ_CONF = """\
listeners.tcp.1 = 127.0.0.1:{amqp}
default_user = cinder
default_pass = cinder
default_vhost = /
log.console = true
log.console.level = warning
log.file = false
"""


class CinderError(RuntimeError):
    pass


def venv_path() -> Path:
    return Path(os.environ.get("MULTISTORE_CINDER_VENV", DEFAULT_VENV))


def ensure_installed() -> None:
    """Run scripts/deps/cinder.sh unless Cinder's venv, PostgreSQL and RabbitMQ are there."""
    venv = venv_path()
    if ((venv / ".multistore-installed").exists() and (PG_BIN / "postgres").exists()
            and Path(RABBITMQ_SERVER).exists() and shutil.which("ceph")):
        return
    done = subprocess.run(["bash", str(DEPS_SCRIPT)], capture_output=True, text=True,
                          timeout=1800, check=False)
    if done.returncode != 0:
        raise CinderError(f"{DEPS_SCRIPT} failed ({done.returncode}):\n"
                          f"{(done.stdout + done.stderr)[-3000:]}")


def _ceph_harness() -> Any:
    """tests/backends/rbd.py, loaded by path ("rbd" is Ceph's own module)."""
    name = "multistore_ceph_harness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("rbd.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _tls() -> Any:
    """tests/backends/tls.py (the shared test CA), by path: tests/ is not a package."""
    return types.SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("tls.py"))))


class CinderDeployment:
    """Ceph + PostgreSQL + RabbitMQ + cinder-{api,scheduler,volume} in ``directory``."""

    SERVICES = ("api", "scheduler", "volume")

    def __init__(self, directory: str | os.PathLike[str], base_port: int = 17200, *,
                 backends: dict[str, str] | None = None, project: str = PROJECT,
                 user: str = USER, memstore_bytes: int = 6 * GiB,
                 debug: bool = False) -> None:
        self.dir = Path(directory).resolve()
        self.base_port = base_port
        self.ports = {k: base_port + v for k, v in OFFSETS.items()}
        self.backends = dict(backends or BACKENDS)
        self.project = project
        self.user = user
        self.memstore_bytes = memstore_bytes
        self.debug = debug
        self.ceph = _ceph_harness().CephCluster(
            self.dir / "ceph", self.ports["mon-v2"], self.ports["mon-v1"],
            pool=next(iter(self.backends.values())), user=RBD_USER,
            memstore_bytes=memstore_bytes,
            bind_ports=(self.ports["osd-min"], self.ports["osd-max"]))
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.tls_url: str | None = None
        self.ca_file: str | None = None
        self.timings: dict[str, float] = {}

    # -- what a client needs ----------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def endpoint(self, project: str | None = None, *, tls: bool = False) -> str:
        """The volume v3 endpoint of ``project`` (glance_store's endpoint template
        ``http://127.0.0.1:17200/v3/%(tenant)s``, filled in)."""
        base = self.tls_url if tls else self.api_url
        if base is None:
            raise CinderError("no HTTPS endpoint: call start_tls_api() first")
        return f"{base}/v3/{project or self.project}"

    def token(self, project: str | None = None, user: str | None = None) -> str:
        """noauth's token: ``user:project``."""
        return f"{user or self.user}:{project or self.project}"

    def headers(self, project: str | None = None) -> dict[str, str]:
        return {"X-Auth-Token": self.token(project)}

    @property
    def ceph_conf(self) -> str:
        return self.ceph.conf_path

    @property
    def keyring_path(self) -> str:
        """client.cinder's keyring (what os-brick needs in connection_info)."""
        return self.ceph.keyring_path

    @property
    def rbd_user(self) -> str:
        return RBD_USER

    @property
    def volume_types(self) -> list[str]:
        return list(self.backends)

    def pool_of(self, volume_type: str) -> str:
        return self.backends[volume_type]

    def add_pool(self, pool: str) -> None:
        """A pool beside the volume backends' (an rbd store's), client.cinder
        allowed on it as on theirs (idempotent)."""
        backend_pools = set(self.backends.values()) - {self.ceph.pool}
        self.ceph.extra_pools = sorted(set(self.ceph.extra_pools) | backend_pools)
        self.ceph.add_pool(pool)

    def info(self) -> dict[str, Any]:
        return {
            "dir": str(self.dir), "api_url": self.api_url, "endpoint": self.endpoint(),
            "endpoint_template": f"{self.api_url}/v3/%(tenant)s",
            "tls_endpoint": self.endpoint(tls=True) if self.tls_url else None,
            "ca_file": self.ca_file,
            "project": self.project, "user": self.user, "auth": "noauth",
            "token": self.token(), "headers": self.headers(),
            "volume_types": {t: {"backend": t, "pool": p, "host": f"{HOST}@{t}#{t}"}
                             for t, p in self.backends.items()},
            "ceph_conf": self.ceph_conf, "keyring": self.keyring_path,
            "rbd_user": self.rbd_user, "fsid": self.ceph.fsid, "ports": self.ports,
            "venv": str(venv_path()), "timings": self.timings,
        }

    # -- start ---------------------------------------------------------------

    def start(self, timeout: float = 240) -> CinderDeployment:
        t0 = time.monotonic()
        ensure_installed()
        self.timings["install-check"] = round(time.monotonic() - t0, 2)
        if any(self._pid(k) for k in self._all_kinds()):
            raise CinderError(f"{self.dir} holds a deployment already: stop it first")
        busy = [p for k, p in self.ports.items()
                if not k.startswith("osd") and k not in ("api-tls", "api-keystone")
                and not _port_free(p)]
        if busy:
            raise CinderError(f"ports in use on 127.0.0.1: {busy}")
        try:
            self._start(t0, t0 + timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = round(time.monotonic() - t0, 2)
        self._write_info()
        return self

    def _mark(self, t0: float, what: str) -> None:
        self.timings[what] = round(time.monotonic() - t0, 2)

    def _start(self, t0: float, deadline: float) -> None:
        if self.dir.exists():
            for sub in ("etc", "log", "run", "state", "lock", "pg", "rabbitmq", "tls",
                        "ceph"):
                shutil.rmtree(self.dir / sub, ignore_errors=True)
        for sub in ("etc", "log", "run", "state", "lock", "rabbitmq"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._check_searchable()
        self._start_rabbitmq()
        self._start_postgres(deadline)
        self._mark(t0, "postgres")
        self._write_cinder_conf()
        sync = self._spawn("db-sync", [self._bin("cinder-manage"), *self._conf_args(),
                                       "db", "sync"], group=False)
        self.ceph.start(timeout=max(10, deadline - time.monotonic()))
        self._add_pools(deadline)
        self._mark(t0, "ceph")
        while sync.poll() is None:
            self._check(deadline, "cinder-manage db sync did not finish")
            time.sleep(0.1)
        if sync.returncode != 0:
            raise CinderError("cinder-manage db sync failed:\n" + self.log_tail("db-sync"))
        self._mark(t0, "db-sync")
        while not _port_open(self.ports["amqp"]):
            self._check(deadline, "RabbitMQ did not open its port")
            time.sleep(0.1)
        self._mark(t0, "rabbitmq")
        # cinder-volume before cinder-scheduler: a scheduler that starts when the
        # volume services consume RPC asks them for their capabilities at once.
        # In any other order, the first capabilities can cross the scheduler's
        # start and get lost: the pools then appear only at the next periodic
        # report, 60 s later (seen in 1 start of 1 with all three together).
        for service in ("api", "volume"):
            self._spawn(service, [self._bin(f"cinder-{service}"), *self._conf_args()])
        self._wait_volume_rpc(deadline)
        self._mark(t0, "volume")
        self._spawn("scheduler", [self._bin("cinder-scheduler"), *self._conf_args()])
        self._wait_api(deadline)
        self._mark(t0, "api")
        self._wait_pools(deadline)
        self._mark(t0, "pools")
        for vtype in self.backends:
            self.request("POST", "/types", {"volume_type": {
                "name": vtype, "extra_specs": {"volume_backend_name": vtype}}})
        self.request("PUT", "/os-quota-class-sets/default", {"quota_class_set": {
            k: -1 for k in ("volumes", "snapshots", "gigabytes", "backups",
                            "backup_gigabytes", "groups", "per_volume_gigabytes")}})

    def _check_searchable(self) -> None:
        """PostgreSQL runs as ``postgres``: it must reach its data directory."""
        os.chmod(self.dir, 0o711)
        for parent in self.dir.parents:
            if not os.stat(parent).st_mode & 0o001:
                raise CinderError(f"{parent} is not searchable by others: the postgres "
                                  f"user could not reach {self.dir}/pg (use a directory "
                                  f"such as tempfile.mkdtemp() under /tmp)")

    def _bin(self, name: str) -> str:
        return str(venv_path() / "bin" / name)

    def _conf_args(self, *extra: str) -> list[str]:
        args = ["--config-file", str(self.dir / "etc" / "cinder.conf")]
        for conf in extra:
            args += ["--config-file", conf]
        return args

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.pop("PYTHONPATH", None)
        return {**env, MARK: str(self.dir), **extra}

    def _spawn(self, kind: str, argv: list[str], *, env: dict[str, str] | None = None,
               group: bool = True, cwd: str | None = None) -> subprocess.Popen[bytes]:
        """Start one process (its own session, so its group is ``pid``); its PID
        goes to run/<kind>.pid, its output to log/<kind>.log."""
        with open(self.dir / "log" / f"{kind}.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env or self._env(),
                                    start_new_session=True, cwd=cwd)
        self._procs[kind] = proc
        if group:
            (self.dir / "run" / f"{kind}.pid").write_text(str(proc.pid))
        return proc

    def _start_rabbitmq(self) -> None:
        etc, rabbit = self.dir / "etc", self.dir / "rabbitmq"
        (etc / "rabbitmq.conf").write_text(RABBITMQ_CONF.format(amqp=self.ports["amqp"]))
        (etc / "rabbitmq-enabled-plugins").write_text("[].\n")
        epmd = str(self.ports["epmd"])
        # Erlang would start a detached epmd (on 0.0.0.0:4369, no PID file):
        # ours comes first, on loopback and its own port, under a known PID.
        self._spawn("epmd", ["epmd", "-port", epmd, "-address", "127.0.0.1"],
                    env=self._env(ERL_EPMD_PORT=epmd))
        self._spawn("rabbitmq", [RABBITMQ_SERVER], env=self._env(
            HOME=str(rabbit), ERL_EPMD_PORT=epmd, ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_CONF_ENV_FILE="/dev/null",
            RABBITMQ_NODENAME=f"multistore-cinder-{self.base_port}@localhost",
            RABBITMQ_DIST_PORT=str(self.ports["erl-dist"]),
            RABBITMQ_CONFIG_FILE=str(etc / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(etc / "rabbitmq-enabled-plugins"),
            RABBITMQ_MNESIA_BASE=str(rabbit / "mnesia"), RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_LOGS="-", RABBITMQ_PLUGINS_EXPAND_DIR=str(rabbit / "plugins-expand"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"))

    def _as_postgres(self, *argv: str) -> list[str]:
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
                *argv]

    def _start_postgres(self, deadline: float) -> None:
        pg = self.dir / "pg"
        pg.mkdir(mode=0o700)
        shutil.chown(pg, "postgres", "postgres")
        done = subprocess.run(
            self._as_postgres(str(PG_BIN / "initdb"), "-D", str(pg), "-U", "cinder",
                              "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "-N"),
            capture_output=True, text=True, cwd=str(pg), timeout=120, check=False)
        if done.returncode != 0:
            raise CinderError(f"initdb failed: {done.stdout}{done.stderr}")
        port = str(self.ports["postgres"])
        # No Unix socket (-k ''): TCP on 127.0.0.1 only. setpriv execs, so the
        # PID is the postmaster's.
        self._spawn("postgres", self._as_postgres(
            str(PG_BIN / "postgres"), "-D", str(pg), "-h", "127.0.0.1", "-p", port,
            "-k", "", "-c", "max_connections=200", "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "shared_buffers=32MB"), cwd=str(pg))
        psql = [str(PG_BIN / "psql"), "-q", "-h", "127.0.0.1", "-p", port, "-U", "cinder",
                "-d", "postgres", "-c", "CREATE DATABASE cinder"]
        while True:
            done = subprocess.run(psql, capture_output=True, text=True, timeout=30,
                                  check=False)
            if done.returncode == 0:
                return
            self._check(deadline, f"PostgreSQL did not answer ({done.stderr.strip()})")
            time.sleep(0.1)

    def _write_cinder_conf(self) -> None:
        etc = self.dir / "etc"
        wheel_etc = venv_path() / "etc" / "cinder"
        for name in ("api-paste.ini", "resource_filters.json"):
            shutil.copy(wheel_etc / name, etc / name)
        sections = "".join(BACKEND_SECTION.format(
            name=name, pool=pool, ceph_conf=self.ceph.conf_path, rbd_user=RBD_USER)
            for name, pool in self.backends.items())
        (etc / "cinder.conf").write_text(CINDER_CONF.format(
            project=self.project, amqp=self.ports["amqp"], host=HOST, dir=self.dir,
            api=self.ports["api"], backends=",".join(self.backends),
            debug=str(self.debug).lower(), postgres=self.ports["postgres"],
            backend_sections=sections))

    def _add_pools(self, deadline: float) -> None:
        """The pools after the first (CephCluster makes one), and client.cinder's
        caps on all of them; returns once each pool takes a write."""
        import rados
        pools = list(dict.fromkeys(self.backends.values()))
        admin = rados.Rados(conffile=self.ceph.conf_path, rados_id="admin",
                            conf={"client_mount_timeout": "10",
                                  "rados_mon_op_timeout": "30"})
        admin.connect()
        try:
            for pool in pools[1:]:
                for cmd in ({"prefix": "osd pool create", "pool": pool, "pg_num": 8,
                             "pgp_num": 8},
                            {"prefix": "osd pool application enable", "pool": pool,
                             "app": "rbd"}):
                    self._mon(admin, cmd)
            osd = ", ".join(f"profile rbd pool={p}" for p in pools)
            mgr = ", ".join(f"profile rbd pool={p}" for p in pools)
            self._mon(admin, {"prefix": "auth caps", "entity": f"client.{RBD_USER}",
                              "caps": ["mon", "profile rbd", "osd", osd, "mgr", mgr]})
        finally:
            admin.shutdown()
        client = rados.Rados(conffile=self.ceph.conf_path, rados_id=RBD_USER,
                             conf={"client_mount_timeout": "10",
                                   "rados_osd_op_timeout": "5"})
        client.connect()
        try:
            for pool in pools:
                while True:
                    try:
                        with client.open_ioctx(pool) as ioctx:
                            ioctx.write_full("_probe", b"ok")
                            ioctx.remove_object("_probe")
                        break
                    except rados.Error:
                        self._check(deadline, f"Ceph pool {pool} did not take a write")
                        time.sleep(0.2)
        finally:
            client.shutdown()

    @staticmethod
    def _mon(admin: Any, cmd: dict[str, Any]) -> None:
        ret, _out, err = admin.mon_command(json.dumps(cmd), b"", timeout=30)
        if ret != 0:
            raise CinderError(f"ceph {cmd['prefix']}: {err} ({ret})")

    def _wait_api(self, deadline: float, url: str | None = None,
                  context: ssl.SSLContext | None = None, kind: str = "api") -> None:
        """Until the API answers its version document (HTTP 300)."""
        url = url or self.api_url
        while True:
            try:
                with urllib.request.urlopen(url + "/", timeout=5, context=context):
                    return
            except urllib.error.HTTPError:
                return          # any HTTP answer: it is up
            except OSError:
                pass
            self._check(deadline, f"cinder-{kind} did not answer", kinds=(kind,))
            time.sleep(0.2)

    def _wait_volume_rpc(self, deadline: float) -> None:
        """Until every backend's cinder-volume process serves RPC (its log line
        after the RPC servers started)."""
        line = "Driver post RPC initialization completed successfully"
        while True:
            text = (self.dir / "log" / "volume.log").read_text(errors="replace")
            if text.count(line) >= len(self.backends):
                return
            self._check(deadline, "cinder-volume did not initialise its backends")
            time.sleep(0.2)

    def pools(self, project: str | None = None) -> list[dict[str, Any]]:
        """The scheduler's pools (``scheduler-stats/get_pools?detail=True``)."""
        return self.request("GET", "/scheduler-stats/get_pools?detail=True",
                            project=project)["pools"]

    def _wait_pools(self, deadline: float) -> None:
        """Until the scheduler lists every backend's pool. Asked only once the
        scheduler runs, and with a short timeout: a get_pools call that cinder-api
        sends before the scheduler's queue exists is lost and would hang for
        rpc_response_timeout (60 s)."""
        want = {f"{HOST}@{t}#{t}" for t in self.backends}
        started = "Starting cinder-scheduler node"
        while started not in (self.dir / "log" / "scheduler.log").read_text(errors="replace"):
            self._check(deadline, "cinder-scheduler did not start")
            time.sleep(0.1)
        while True:
            try:
                pools = self.request("GET", "/scheduler-stats/get_pools", timeout=3)["pools"]
                if want <= {p["name"] for p in pools}:
                    return
            except (OSError, CinderError):
                pass
            self._check(deadline, f"the scheduler did not list the pools {sorted(want)}")
            time.sleep(0.2)

    def _check(self, deadline: float, what: str, kinds: tuple[str, ...] | None = None) -> None:
        for kind, proc in self._procs.items():
            if kinds is not None and kind not in kinds:
                continue
            if kind != "db-sync" and proc.poll() is not None:
                raise CinderError(f"{kind} exited ({proc.returncode}):\n"
                                  + self.log_tail(kind))
        if time.monotonic() > deadline:
            raise CinderError(f"{what} in time\n" + "\n".join(
                f"--- {k}\n{self.log_tail(k, 10)}" for k in self._procs))

    def rbd_images(self, pool: str) -> list[str]:
        """The RBD images in ``pool``, listed with librbd as client.cinder."""
        import rados
        import rbd
        conn = rados.Rados(conffile=self.ceph_conf, rados_id=RBD_USER,
                           conf={"client_mount_timeout": "10"})
        conn.connect()
        try:
            with conn.open_ioctx(pool) as ioctx:
                return sorted(rbd.RBD().list(ioctx))
        finally:
            conn.shutdown()

    # -- admin requests ---------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *,
                project: str | None = None, timeout: float = 30,
                headers: dict[str, str] | None = None) -> Any:
        """One call to the v3 API as an admin of ``project``; the JSON answer."""
        url = self.endpoint(project) + path
        req = urllib.request.Request(
            url, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     **self.headers(project), **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read()
        except urllib.error.HTTPError as exc:
            raise CinderError(f"{method} {path}: HTTP {exc.code} "
                              f"{exc.read().decode(errors='replace')[:500]}") from exc
        return json.loads(text) if text else None

    def set_quota(self, project: str, **limits: int) -> dict[str, Any]:
        """Real Cinder quotas for ``project``, e.g. ``gigabytes=2, volumes=3``
        (-1: unlimited); the project's quota set as Cinder then reports it."""
        return self.request("PUT", f"/os-quota-sets/{project}",
                            {"quota_set": dict(limits)})["quota_set"]

    def quota_usage(self, project: str) -> dict[str, Any]:
        return self.request("GET", f"/os-quota-sets/{project}?usage=True",
                            project=project)["quota_set"]

    def volumes(self, project: str | None = None, *,
                all_projects: bool = False) -> list[dict[str, Any]]:
        """Cinder's own volume list (detail), for leak checks."""
        query = "?all_tenants=1" if all_projects else ""
        return self.request("GET", f"/volumes/detail{query}", project=project)["volumes"]

    def client(self, project: str | None = None, *, version: str = "3.54",
               tls: bool = False, cacert: str | None = None, insecure: bool = False,
               timeout: float | None = 60, retries: int = 0) -> Any:
        """A cinderclient v3 Client as glance_store makes one without service
        credentials: keystoneauth Token plugin with a fixed endpoint."""
        from cinderclient import client as cinder_client
        from keystoneauth1 import session as ks_session
        from keystoneauth1 import token_endpoint
        auth = token_endpoint.Token(self.endpoint(project, tls=tls), self.token(project))
        verify: bool | str = True
        if tls:
            verify = False if insecure else (cacert or self.ca_file or True)
        sess = ks_session.Session(auth=auth, verify=verify, timeout=timeout)
        return cinder_client.Client(version, session=sess, retries=retries)

    # -- a second API over HTTPS ------------------------------------------------

    def start_tls_api(self, timeout: float = 60) -> str:
        """A second cinder-api on ``base_port + 1`` that speaks HTTPS only
        (Cinder's own TLS: ``osapi_volume_use_ssl``), with a certificate from
        the shared test CA (``self.ca_file``) for 127.0.0.1 and localhost.
        Same database, bus and backends. Returns its URL; idempotent."""
        if self.tls_url and self._alive_kind("api-tls"):
            return self.tls_url
        tls = self.dir / "tls"
        tls.mkdir(exist_ok=True)
        if not (tls / "ca.pem").exists():
            _tls().make_certificates(tls)
        conf = self.dir / "etc" / "cinder-tls.conf"
        conf.write_text(TLS_CONF.format(port=self.ports["api-tls"], tls=tls))
        if not _port_free(self.ports["api-tls"]):
            raise CinderError(f"port {self.ports['api-tls']} is in use on 127.0.0.1")
        self.ca_file = str(tls / "ca.pem")
        url = f"https://127.0.0.1:{self.ports['api-tls']}"
        self._spawn("api-tls", [self._bin("cinder-api"), *self._conf_args(str(conf))])
        self._wait_api(time.monotonic() + timeout, url,
                       ssl.create_default_context(cafile=self.ca_file), kind="api-tls")
        self.tls_url = url
        self._write_info()
        return url

    # -- a third API behind Keystone ---------------------------------------------

    def start_keystone_api(self, keystone_url: str, admin_password: str,
                           timeout: float = 60) -> str:
        """A third cinder-api on ``base_port + 6`` with ``auth_strategy =
        keystone`` (keystonemiddleware's auth_token against ``keystone_url``,
        as its ``admin`` in project ``admin``): same database, bus and
        backends. Register it in Keystone's catalog yourself (a ``volumev3``
        service). Returns its URL; idempotent."""
        url = f"http://127.0.0.1:{self.ports['api-keystone']}"
        if self._alive_kind("api-keystone"):
            return url
        conf = self.dir / "etc" / "cinder-keystone.conf"
        conf.write_text(KEYSTONE_CONF.format(port=self.ports["api-keystone"],
                                             keystone=keystone_url, password=admin_password))
        if not _port_free(self.ports["api-keystone"]):
            raise CinderError(f"port {self.ports['api-keystone']} is in use on 127.0.0.1")
        self._spawn("api-keystone", [self._bin("cinder-api"), *self._conf_args(str(conf))])
        self._wait_api(time.monotonic() + timeout, url, kind="api-keystone")
        return url

    # -- faults -------------------------------------------------------------------

    def kill_api(self) -> None:
        """SIGKILL cinder-api (launcher and worker): connections are refused."""
        self._signal_group("api", signal.SIGKILL)
        self._wait_gone("api", 10)
        (self.dir / "run" / "api.pid").unlink(missing_ok=True)

    def start_api(self, timeout: float = 60) -> None:
        """Start cinder-api again (after kill_api) and wait until it answers."""
        if self._alive_kind("api"):
            return
        self._spawn("api", [self._bin("cinder-api"), *self._conf_args()])
        self._wait_api(time.monotonic() + timeout)

    def freeze_api(self) -> None:
        """SIGSTOP cinder-api: the kernel still accepts connections, nothing answers."""
        self._signal_group("api", signal.SIGSTOP)
        (self.dir / "run" / "api.frozen").touch()

    def thaw_api(self) -> None:
        self._signal_group("api", signal.SIGCONT)
        (self.dir / "run" / "api.frozen").unlink(missing_ok=True)

    # -- processes, memory, CPU -------------------------------------------------

    def _all_kinds(self) -> list[str]:
        return ["api", "api-tls", "api-keystone", "scheduler", "volume", "rabbitmq", "epmd",
                "postgres"]

    def _pid(self, kind: str) -> int | None:
        try:
            pid = int((self.dir / "run" / f"{kind}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and self._ours(pid) else None

    def _ours(self, pid: int) -> bool:
        needle = str(self.dir).encode()
        for name in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as f:
                    data = f.read()
            except OSError:
                return False
            if (name == "environ" and f"{MARK}=".encode() + needle + b"\0" in data) \
                    or (name == "cmdline" and needle in data):
                return True
        return False

    def _alive_kind(self, kind: str) -> bool:
        return self._pid(kind) is not None

    def _group(self, kind: str) -> list[int]:
        """Every live process of ``kind``'s process group (started with its own session)."""
        leader = self._pid(kind)
        if leader is None:
            return []
        return [pid for pid, fields in _proc_stats() if int(fields[2]) == leader]

    def processes(self) -> dict[str, list[int]]:
        """PIDs by component: each service's whole group, Ceph's daemons, and for
        PostgreSQL the postmaster and its children (backends leave the group)."""
        out = {kind: self._group(kind) for kind in self._all_kinds()}
        pg = self._pid("postgres")
        if pg is not None:
            out["postgres"] = sorted(set(out["postgres"]) | set(_children(pg)) | {pg})
        for daemon in ("mon.a", "osd.0"):
            pid = self.ceph.pid(daemon)
            out[f"ceph-{daemon.split('.')[0]}"] = [pid] if pid and _alive(pid) else []
        return {k: v for k, v in out.items() if v}

    def memory(self) -> dict[str, dict[str, float]]:
        """RSS and PSS in MiB per component (``/proc/<pid>/smaps_rollup``)."""
        out = {}
        for kind, pids in self.processes().items():
            rss = pss = 0
            for pid in pids:
                with contextlib.suppress(OSError):
                    for line in open(f"/proc/{pid}/smaps_rollup"):
                        if line.startswith("Rss:"):
                            rss += int(line.split()[1])
                        elif line.startswith("Pss:"):
                            pss += int(line.split()[1])
            out[kind] = {"rss_mib": round(rss / 1024, 1), "pss_mib": round(pss / 1024, 1),
                         "processes": len(pids)}
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds so far per component: its live processes and
        the children they have reaped (cinder-volume runs the ``ceph`` CLI for
        every attachment)."""
        stats = dict(_proc_stats())
        return {kind: sum(sum(int(x) for x in stats[p][11:15]) for p in pids if p in stats)
                / os.sysconf("SC_CLK_TCK") for kind, pids in self.processes().items()}

    def listeners(self) -> list[tuple[str, str, int]]:
        """Every listening TCP socket and bound UDP socket of the deployment's
        processes: (component, address, port)."""
        inodes: dict[str, str] = {}
        for kind, pids in self.processes().items():
            for pid in pids:
                with contextlib.suppress(OSError):
                    for fd in os.listdir(f"/proc/{pid}/fd"):
                        with contextlib.suppress(OSError):
                            target = os.readlink(f"/proc/{pid}/fd/{fd}")
                            if target.startswith("socket:["):
                                inodes[target[8:-1]] = kind
        out = []
        for table, listening in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"),
                                 ("udp6", "07")):
            with contextlib.suppress(OSError), open(f"/proc/net/{table}") as f:
                for line in list(f)[1:]:
                    fields = line.split()
                    if fields[3] != listening or fields[9] not in inodes:
                        continue
                    addr, port = fields[1].split(":")
                    out.append((inodes[fields[9]], _ip(addr), int(port, 16)))
        return sorted(set(out))

    # -- stop -------------------------------------------------------------------

    def _signal_group(self, kind: str, sig: int) -> None:
        pid = self._pid(kind)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)

    def _wait_gone(self, kind: str, grace: float) -> bool:
        end = time.monotonic() + grace
        while time.monotonic() < end:
            if not self._group(kind) and self._pid(kind) is None:
                return True
            time.sleep(0.05)
        return False

    def _stop_kind(self, kind: str, sig: int, grace: float) -> None:
        """``sig`` to the kind's group (postgres: to the postmaster only), KILL
        after ``grace`` seconds."""
        pid = self._pid(kind)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if kind == "api" and (self.dir / "run" / "api.frozen").exists():
                os.killpg(pid, signal.SIGCONT)
            if kind == "postgres":
                os.kill(pid, sig)
            else:
                os.killpg(pid, sig)
        if not self._wait_gone(kind, grace):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self._wait_gone(kind, 10)

    def stop(self, grace: float = 10) -> None:
        """Everything started here, by the PIDs in ``run/``: the Cinder services
        first (TERM), then PostgreSQL (INT: fast shutdown), RabbitMQ, epmd and
        Ceph in parallel. What has not ended after ``grace`` s gets KILL."""
        t0 = time.monotonic()
        sync = self._procs.get("db-sync")
        if sync is not None and sync.poll() is None:      # a start that failed early
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sync.pid, signal.SIGKILL)
        threads = [threading.Thread(target=self._stop_kind, args=(k, signal.SIGTERM, grace))
                   for k in ("api", "api-tls", "api-keystone", "scheduler", "volume")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        threads = [threading.Thread(target=self._stop_kind, args=args) for args in (
            ("postgres", signal.SIGINT, grace), ("rabbitmq", signal.SIGTERM, grace))]
        threads.append(threading.Thread(target=self.ceph.stop))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._stop_kind("epmd", signal.SIGTERM, grace)
        for proc in self._procs.values():      # reap our children
            with contextlib.suppress(Exception):
                proc.wait(timeout=0)
        self._procs.clear()
        for name in [f"{k}.pid" for k in self._all_kinds()] + ["api.frozen"]:
            (self.dir / "run" / name).unlink(missing_ok=True)
        self.timings["stop"] = round(time.monotonic() - t0, 2)

    # -- logs -------------------------------------------------------------------

    def log_tail(self, kind: str, lines: int = 20) -> str:
        try:
            text = (self.dir / "log" / f"{kind}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _write_info(self) -> None:
        (self.dir / "cinder.json").write_text(json.dumps(self.info(), indent=2) + "\n")

    def __enter__(self) -> CinderDeployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the client's data path: os-brick's RBD connector ---------------------------

_BRICK_LOCK = threading.Lock()
_BRICK_READY = False


def brick_in_process() -> None:
    """Make os-brick's privileged calls run in this process (no privsep daemon,
    no sudo, no rootwrap): what the tests need, as root. Idempotent."""
    global _BRICK_READY
    with _BRICK_LOCK:
        if _BRICK_READY:
            return
        if os.geteuid() != 0:
            raise CinderError("os-brick's privsep in process needs root")
        import os_brick.privileged
        os_brick.privileged.default.set_client_mode(False)
        os_brick.privileged.brick_privsep_hide_output.set_client_mode(False)
        _BRICK_READY = True


def brick_connector_properties() -> dict[str, Any]:
    """What glance_store sends in attachment_update: os-brick's
    ``get_connector_properties`` for this host (multipath off)."""
    brick_in_process()
    from os_brick.initiator import connector
    return connector.get_connector_properties(
        "sudo", "127.0.0.1", False, False, host=socket.gethostname())


def rbd_connector() -> Any:
    """os-brick's RBD connector with ``do_local_attach=False`` (librbd in process)."""
    brick_in_process()
    from os_brick.initiator import connector
    return connector.InitiatorConnector.factory("RBD", "sudo", do_local_attach=False)


def brick_connection_info(connection_info: dict[str, Any], keyring_path: str) -> dict[str, Any]:
    """``connection_info`` from the attachments API, with the cephx keyring
    that Cinder no longer sends (os-brick would read /etc/ceph otherwise)."""
    return {**connection_info, "keyring": Path(keyring_path).read_text()}


class Attachment:
    """One attachment of a volume to this host, made the way glance_store makes
    it: reserve (``attachments.create`` without a connector), ``update`` with
    os-brick's connector properties (mountpoint ``glance_store``), os-brick
    ``connect_volume``, then ``complete``. ``file`` is os-brick's
    ``RBDVolumeIOWrapper`` (read/write/seek/tell/flush; ``write`` returns None)."""

    def __init__(self, client: Any, volume_id: str, keyring_path: str, mode: str = "rw",
                 connector_properties: dict[str, Any] | None = None) -> None:
        self.client = client
        self.volume_id = volume_id
        self.keyring_path = keyring_path
        self.mode = mode
        self.properties = connector_properties
        self.id: str | None = None
        self.connection_info: dict[str, Any] = {}
        self.connector: Any = None
        self.device: dict[str, Any] | None = None

    @property
    def file(self) -> Any:
        assert self.device is not None
        return self.device["path"]

    def brick_info(self) -> dict[str, Any]:
        return brick_connection_info(self.connection_info, self.keyring_path)

    @contextlib.contextmanager
    def read_only_handle(self) -> Iterator[Any]:
        """A second handle on the attached image, opened read-only by librbd
        (writes raise ``rbd.ReadOnlyImage``), through os-brick's own handle
        maker; its temporary ceph.conf (with the keyring) is removed after."""
        handle = self.connector._get_rbd_handle(self.brick_info(), read_only=True)
        try:
            yield handle
        finally:
            try:
                handle.close()
            finally:
                Path(handle.rbd_conf).unlink(missing_ok=True)

    def open(self) -> Attachment:
        props = self.properties or brick_connector_properties()
        att = self.client.attachments.create(self.volume_id, None, mode=self.mode)
        self.id = att["id"]
        try:
            updated = self.client.attachments.update(
                self.id, dict(props, mountpoint="glance_store"))
            self.connection_info = dict(updated.connection_info)
            self.connector = rbd_connector()
            self.device = self.connector.connect_volume(self.brick_info())
            self.client.attachments.complete(self.id)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """os-brick disconnect, then ``attachments.delete`` (volume back to
        ``available``). Idempotent."""
        try:
            if self.device is not None:
                device, self.device = self.device, None
                self.connector.disconnect_volume(self.brick_info(), device)
        finally:
            if self.id is not None:
                att, self.id = self.id, None
                self.client.attachments.delete(att)

    def __enter__(self) -> Attachment:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_status(client: Any, volume_id: str, expected: str, *,
                transitional: tuple[str, ...] = ("creating", "extending", "attaching",
                                                 "detaching", "reserved", "downloading"),
                timeout: float = 120) -> Any:
    """Poll until the volume leaves its transitional states; it must then be
    ``expected`` (CinderError otherwise, with the status seen)."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        volume = client.volumes.get(volume_id)
        if volume.status not in transitional:
            if volume.status != expected:
                raise CinderError(f"volume {volume_id} is {volume.status}, "
                                  f"expected {expected}")
            return volume
        if time.monotonic() > deadline:
            raise CinderError(f"volume {volume_id} still {volume.status} after {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def wait_gone(client: Any, volume_id: str, timeout: float = 120) -> float:
    """Poll until Cinder answers 404 for the volume; the seconds it took."""
    from cinderclient import exceptions as cinder_exceptions
    t0 = time.monotonic()
    delay = 0.05
    while True:
        try:
            volume = client.volumes.get(volume_id)
        except cinder_exceptions.NotFound:
            return time.monotonic() - t0
        if volume.status == "error_deleting":
            raise CinderError(f"volume {volume_id} went to error_deleting")
        if time.monotonic() - t0 > timeout:
            raise CinderError(f"volume {volume_id} still {volume.status} after {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


# -- helpers ------------------------------------------------------------------------


def _ip(hex_addr: str) -> str:
    """An address from /proc/net/tcp{,6} (little-endian 32-bit words)."""
    raw = bytes.fromhex(hex_addr)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def _port_free(port: int) -> bool:
    return bool(_ceph_harness()._port_free(port))


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    """Running and not a zombie (reaps it when it is our child)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return bool(_ceph_harness()._alive(pid))


def _proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after the command name) of every
    live process: [0] state, [1] ppid, [2] pgrp, [11] utime, [12] stime, [13]
    cutime, [14] cstime."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z":
                yield int(entry), fields


def _children(pid: int) -> list[int]:
    return [child for child, fields in _proc_stats() if int(fields[1]) == pid]


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "start":
        d = CinderDeployment(argv[1], int(argv[2]) if len(argv) > 2 else 17200)
        d.start()
        print(json.dumps(d.info(), indent=2))
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        d = CinderDeployment(argv[1])
        d.stop()
        print(json.dumps({"stopped": str(d.dir), "seconds": d.timings["stop"]}))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
