"""A real single-node Ceph cluster for tests: one mon, one memstore OSD, cephx.

Usage::

    cluster = CephCluster(directory, v2_port=16789, v1_port=16790)
    cluster.start()          # a few seconds; installs the Debian packages if missing
    ...  cluster.conf_path, cluster.user ("glance"), cluster.pool ("images"), cluster.fsid
    cluster.stop()           # by PID file, TERM then KILL

Everything listens on 127.0.0.1 only (mon on the two given ports, the OSD
picks free ports in ``bind_ports``, 6800-7300 unless given). No ceph-mgr:
RBD needs none, nor does Ceph's full ratio. Readiness is a real object write
through the client user. Daemons are ended by the PIDs in their own PID
files, nothing else. ``freeze()``/``thaw()`` SIGSTOP/SIGCONT the daemons, to
make the cluster unreachable without losing its data (memstore keeps
everything in RAM: a stopped OSD loses its objects).

``objectstore="bluestore"`` gives an OSD that survives ``kill -9``: bluestore
on a sparse file (``osd.0/block``, ``block_bytes``, 4 GiB) with a 128 MiB
cache, started in 4.7-6.6 s here where memstore takes 3.5-5 s. Then
``kill()`` (SIGKILL the mon and the OSD) and ``restart()`` (both back on
their data, 2.8-3.5 s) work. ``set_full(True)`` sets Ceph's full ratios
below what the OSD holds, and returns once the mon has flagged the pool
``full`` (1.5-5.5 s); ``set_full(False)`` puts them back (0.95/0.90/0.85).

Run by hand: ``python tests/backends/rbd.py start DIR [V2PORT V1PORT]`` /
``python tests/backends/rbd.py stop DIR``.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEPS_SCRIPT = ROOT / "scripts" / "deps" / "rbd.sh"
GiB = 1024 ** 3

CONF_TEMPLATE = """\
[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = {dir}/ceph.$name.keyring
run dir = {dir}/run
crash dir = {dir}/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
paxos propose interval = 0.1
paxos min wait = 0.01
mon osd prime pg temp = false
# A PG's read lease lasts 0.8 x the heartbeat grace (16 s by default): an
# OSD frozen (SIGSTOP) for longer finds its PGs "laggy" when it is thawed and
# delays every op for good (one OSD, no peer to renew the lease with).
osd heartbeat grace = 600
ms bind port min = {bind_min}
ms bind port max = {bind_max}

[mon]
mon data = {dir}/$name
mon data avail warn = 1
mon data avail crit = 0
mon cluster log file = {dir}/log/cluster.log
log file = {dir}/log/$name.log
pid file = {dir}/run/$name.pid
admin socket = {dir}/run/$name.asok
keyring = {dir}/$name/keyring

[osd]
osd data = {dir}/$name
{objectstore}
osd class load list = *
osd class default list = *
# A client that vanished keeps its watches (which refuse an image's removal)
# for this long; Ceph's default is 30 s, shorter keeps the tests short.
osd client watch timeout = 10
log file = {dir}/log/$name.log
pid file = {dir}/run/$name.pid
admin socket = {dir}/run/$name.asok
keyring = {dir}/$name/keyring
"""

MEMSTORE = """\
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd memory target = 1073741824"""

#: An OSD that keeps its data through kill -9: bluestore on a sparse file
#: (``osd.0/block``) in the cluster's directory, small caches.
BLUESTORE = """\
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {block_bytes}
bluestore fsck on mkfs = false
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 134217728"""

class CephError(RuntimeError):
    pass


def ensure_installed() -> None:
    """Install Ceph (scripts/deps/rbd.sh) unless present; make rados/rbd importable."""
    if shutil.which("ceph-mon") is None or shutil.which("ceph-osd") is None:
        _run(["bash", str(DEPS_SCRIPT)], timeout=900)
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError:
        _run(["bash", str(DEPS_SCRIPT), "--link-python", sys.executable], timeout=60)
        import importlib
        import site
        site.addsitedir(os.path.join(sys.prefix, "debian-ceph"))
        importlib.invalidate_caches()


def _run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 60,
         cwd: str | None = None) -> str:
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise CephError(f"{' '.join(cmd)} did not finish in {timeout} s") from exc
    if done.returncode != 0:
        raise CephError(f"{' '.join(cmd)} failed ({done.returncode}): "
                        f"{done.stderr.strip()[-2000:]}")
    return done.stdout


_procs = runpy.run_path(str(Path(__file__).with_name("procs.py")))
_port_free, _alive = _procs["port_free"], _procs["alive"]


class CephCluster:
    """One single-node cluster in ``directory``; see the module docstring."""

    DAEMONS = ("osd.0", "mon.a")    # stop order

    def __init__(self, directory: str | os.PathLike[str], v2_port: int, v1_port: int,
                 *, pool: str = "images", user: str = "glance",
                 memstore_bytes: int = 6 * GiB,
                 bind_ports: tuple[int, int] = (6800, 7300),
                 objectstore: str = "memstore", block_bytes: int = 4 * GiB) -> None:
        self.dir = Path(directory).resolve()
        self.v2_port = v2_port
        self.v1_port = v1_port
        self.pool = pool
        self.user = user
        self.memstore_bytes = memstore_bytes
        self.bind_ports = bind_ports    # the OSD's listeners (it needs ~8)
        if objectstore not in ("memstore", "bluestore"):
            raise ValueError(f"objectstore {objectstore!r}: memstore or bluestore")
        self.objectstore = objectstore
        self.block_bytes = block_bytes  # bluestore's sparse block file
        self.fsid = ""
        self.frozen = False
        self.extra_pools: list[str] = []

    # -- paths -------------------------------------------------------------

    @property
    def conf_path(self) -> str:
        return str(self.dir / "ceph.conf")

    @property
    def keyring_path(self) -> str:
        return str(self.dir / f"ceph.client.{self.user}.keyring")

    @property
    def admin_keyring_path(self) -> str:
        return str(self.dir / "ceph.client.admin.keyring")

    def pid(self, daemon: str) -> int | None:
        try:
            return int((self.dir / "run" / f"{daemon}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _env(self) -> dict[str, str]:
        return {**os.environ, "CEPH_CONF": self.conf_path}

    # -- start -------------------------------------------------------------

    def start(self, timeout: float = 120) -> CephCluster:
        ensure_installed()
        if (self.dir / "run").exists() and any(self.pid(d) for d in self.DAEMONS):
            raise CephError(f"{self.dir} holds a cluster already: stop it first")
        for port in (self.v2_port, self.v1_port):
            if not _port_free(port):
                raise CephError(f"port {port} on 127.0.0.1 is in use")
        try:
            self._start(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, deadline: float) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        for sub in ("log", "run", "crash", "osd.0"):
            (self.dir / sub).mkdir(parents=True)
        self.fsid = str(uuid.uuid4())
        d = str(self.dir)
        store = (BLUESTORE if self.objectstore == "bluestore" else MEMSTORE).format(
            memstore_bytes=self.memstore_bytes, block_bytes=self.block_bytes)
        Path(self.conf_path).write_text(CONF_TEMPLATE.format(
            fsid=self.fsid, v2=self.v2_port, v1=self.v1_port, dir=d, objectstore=store,
            bind_min=self.bind_ports[0], bind_max=self.bind_ports[1]))
        bare = {**os.environ, "CEPH_CONF": "/dev/null"}
        mon_keyring = f"{d}/mon.keyring"
        _run(["ceph-authtool", "--create-keyring", mon_keyring, "--gen-key", "-n", "mon.",
              "--cap", "mon", "allow *"], env=bare)
        _run(["ceph-authtool", "--create-keyring", self.admin_keyring_path, "--gen-key",
              "-n", "client.admin", "--cap", "mon", "allow *", "--cap", "osd", "allow *",
              "--cap", "mgr", "allow *", "--cap", "mds", "allow *"], env=bare)
        _run(["ceph-authtool", mon_keyring, "--import-keyring", self.admin_keyring_path],
             env=bare)
        _run(["monmaptool", "--create", "--fsid", self.fsid, "--addv", "a",
              f"[v2:127.0.0.1:{self.v2_port},v1:127.0.0.1:{self.v1_port}]",
              f"{d}/monmap"], env=bare)
        env = self._env()
        _run(["ceph-mon", "--mkfs", "-i", "a", "--monmap", f"{d}/monmap",
              "--keyring", mon_keyring], env=env)
        if not (self.dir / "mon.a" / "store.db" / "CURRENT").exists():
            raise CephError("ceph-mon --mkfs created no store")
        _run(["ceph-mon", "-i", "a"], env=env)      # daemonizes

        admin = self._admin(deadline)
        try:
            osd_uuid = str(uuid.uuid4())
            osd_id = self._mon(admin, {"prefix": "osd new", "uuid": osd_uuid})
            if str(osd_id.get("osdid", osd_id)) != "0":
                raise CephError(f"unexpected OSD id {osd_id}")
            key = self._mon(admin, {"prefix": "auth get-or-create", "entity": "osd.0",
                                    "caps": ["osd", "allow *", "mon", "allow profile osd",
                                             "mgr", "allow profile osd"]}, plain=True)
            (self.dir / "osd.0" / "keyring").write_text(key)
            _run(["ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid], env=env,
                 timeout=max(10, deadline - time.monotonic()))
            _run(["ceph-osd", "-i", "0"], env=env)  # daemonizes
            self._wait_osd_up(admin, deadline)
            self._mon(admin, {"prefix": "osd pool create", "pool": self.pool,
                              "pg_num": 8, "pgp_num": 8})
            self._mon(admin, {"prefix": "osd pool application enable", "pool": self.pool,
                              "app": "rbd"})
            key = self._mon(admin, {"prefix": "auth get-or-create",
                                    "entity": f"client.{self.user}",
                                    "caps": ["mon", "profile rbd",
                                             "osd", f"profile rbd pool={self.pool}",
                                             "mgr", f"profile rbd pool={self.pool}"]},
                            plain=True)
            Path(self.keyring_path).write_text(key)
        finally:
            admin.shutdown()
        self.wait_ready(deadline - time.monotonic())

    def _wait_osd_up(self, admin: Any, deadline: float, after: int = 0) -> int:
        """Until the mon has osd.0 up, booted after osdmap epoch ``after``;
        returns the epoch it came up in."""
        while True:
            dump = self._mon(admin, {"prefix": "osd dump"})
            for o in dump["osds"]:
                if o["osd"] == 0 and o["up"] and o["up_from"] > after:
                    return int(o["up_from"])
            self._check(deadline, "the OSD did not come up")
            time.sleep(0.1)

    def wait_ready(self, timeout: float = 60) -> None:
        """Return once the pool takes a real write from the client user."""
        import rados
        deadline = time.monotonic() + timeout
        while True:
            client = rados.Rados(conffile=self.conf_path, rados_id=self.user,
                                 conf={"rados_osd_op_timeout": "5",
                                       "client_mount_timeout": "5"})
            try:
                client.connect()
                with client.open_ioctx(self.pool) as ioctx:
                    ioctx.write_full("_probe", b"ok")
                    ioctx.remove_object("_probe")
                return
            except rados.Error:
                self._check(deadline, "the pool never took a write")
                time.sleep(0.2)
            finally:
                client.shutdown()

    def _admin(self, deadline: float) -> Any:
        import rados
        while True:
            admin = rados.Rados(conffile=self.conf_path, rados_id="admin",
                                conf={"client_mount_timeout": "3",
                                      "rados_mon_op_timeout": "10"})
            try:
                admin.connect()
                return admin
            except rados.Error:
                admin.shutdown()
                self._check(deadline, "the mon did not answer")
                time.sleep(0.2)

    def _check(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            logs = ""
            for f in sorted((self.dir / "log").glob("*.log")):
                logs += f"\n--- {f.name} (tail)\n" + "\n".join(
                    f.read_text(errors="replace").splitlines()[-15:])
            raise CephError(f"{what} in time{logs}")
        for daemon in self.DAEMONS:
            pid = self.pid(daemon)
            if pid is not None and not _alive(pid):
                raise CephError(f"{daemon} (pid {pid}) died: see {self.dir}/log")

    @staticmethod
    def _mon(admin: Any, cmd: dict[str, Any], plain: bool = False) -> Any:
        if not plain:
            cmd = {**cmd, "format": "json"}
        ret, out, err = admin.mon_command(json.dumps(cmd), b"", timeout=30)
        if ret != 0:
            raise CephError(f"ceph {cmd['prefix']}: {err} ({ret})")
        text = out.decode()
        return text if plain else (json.loads(text) if text.strip() else {})

    # -- admin helpers for tests -------------------------------------------

    def rbd(self, *args: str, timeout: float = 120) -> str:
        """Run the ``rbd`` CLI as the client user."""
        return _run(["rbd", "--id", self.user, "-p", self.pool, *args],
                    env=self._env(), timeout=timeout)

    def images(self) -> list[str]:
        return json.loads(self.rbd("ls", "--format", "json") or "[]")

    def objects(self) -> list[str]:
        out = _run(["rados", "--id", self.user, "-p", self.pool, "ls"], env=self._env())
        return out.split()

    def add_pool(self, pool: str) -> None:
        """Create another rbd pool (if missing) and let the client user use it
        as it uses ``self.pool``; new connections get the new capabilities."""
        admin = self._admin(time.monotonic() + 30)
        try:
            if pool not in admin.list_pools():
                self._mon(admin, {"prefix": "osd pool create", "pool": pool,
                                  "pg_num": 8, "pgp_num": 8})
                self._mon(admin, {"prefix": "osd pool application enable", "pool": pool,
                                  "app": "rbd"})
            pools = sorted({self.pool, pool, *self.extra_pools})
            osd = ", ".join(f"profile rbd pool={p}" for p in pools)
            self._mon(admin, {"prefix": "auth caps", "entity": f"client.{self.user}",
                              "caps": ["mon", "profile rbd", "osd", osd, "mgr", osd]})
            self.extra_pools = [p for p in pools if p != self.pool]
        finally:
            admin.shutdown()

    def pool_images(self, pool: str) -> list[str]:
        """The images of another pool (``rbd ls``, partial ones included)."""
        return json.loads(_run(["rbd", "--id", self.user, "-p", pool, "ls", "--format",
                                "json"], env=self._env()) or "[]")

    # -- freeze / stop ------------------------------------------------------

    def freeze(self) -> None:
        """SIGSTOP every daemon: the cluster stops answering, keeps its data."""
        for daemon in self.DAEMONS:
            pid = self.pid(daemon)
            if pid is not None:
                os.kill(pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self, wait: bool = True) -> None:
        """SIGCONT every daemon; with ``wait``, until the pool takes writes again."""
        for daemon in reversed(self.DAEMONS):
            pid = self.pid(daemon)
            if pid is not None:
                os.kill(pid, signal.SIGCONT)
        self.frozen = False
        if wait:
            self.wait_ready()

    def kill(self) -> None:
        """SIGKILL the OSD and the mon: a crash, nothing flushed or said to
        clients. A bluestore cluster comes back with its data (:meth:`restart`)."""
        pids = [p for p in map(self.pid, self.DAEMONS)
                if p is not None and _alive(p) and _is_ceph(p)]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            while _alive(pid):
                time.sleep(0.02)
        self.frozen = False

    def restart(self, timeout: float = 120) -> None:
        """Start killed daemons again on their data; return once the pool
        takes writes from the client user."""
        if self.objectstore != "bluestore":
            raise CephError("a killed memstore OSD lost its data: nothing to restart")
        deadline = time.monotonic() + timeout
        env = self._env()
        if not self._running("mon.a"):
            _run(["ceph-mon", "-i", "a"], env=env)
        admin = self._admin(deadline)
        try:
            dump = self._mon(admin, {"prefix": "osd dump"})
            since = max(o["up_from"] for o in dump["osds"] if o["osd"] == 0)
            if not self._running("osd.0"):
                _run(["ceph-osd", "-i", "0"], env=env)
                self._wait_osd_up(admin, deadline, after=since)
        finally:
            admin.shutdown()
        self.wait_ready(deadline - time.monotonic())

    def _running(self, daemon: str) -> bool:
        pid = self.pid(daemon)
        return pid is not None and _alive(pid) and _is_ceph(pid)

    def set_full(self, full: bool, timeout: float = 60) -> None:
        """Ceph's full ratio below (``full``) or back above what the OSD holds;
        returns once the pool carries (or has lost) the ``full`` flag."""
        ratios = {"nearfull": 0.0001, "backfillfull": 0.0001, "full": 0.0001} if full \
            else {"full": 0.95, "backfillfull": 0.90, "nearfull": 0.85}
        deadline = time.monotonic() + timeout
        admin = self._admin(deadline)
        try:
            for kind, ratio in ratios.items():
                self._mon(admin, {"prefix": f"osd set-{kind}-ratio", "ratio": ratio})
            while True:
                pools = self._mon(admin, {"prefix": "osd dump"})["pools"]
                flags = next(p["flags_names"] for p in pools if p["pool_name"] == self.pool)
                if ("full" in flags.split(",")) == full:
                    return
                self._check(deadline, f"the pool {'never became' if full else 'stayed'} full")
                time.sleep(0.2)
        finally:
            admin.shutdown()

    def stop(self, grace: float = 20) -> None:
        """End the daemons by their PID files: the OSD, then the mon."""
        if self.frozen:
            self.thaw(wait=False)
        for daemon in self.DAEMONS:
            pid = self.pid(daemon)
            if pid is None or not _alive(pid) or not _is_ceph(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            end = time.monotonic() + grace
            while _alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                while _alive(pid):
                    time.sleep(0.05)

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _is_ceph(pid: int) -> bool:
    return bool(_procs["program"](pid).startswith(b"ceph-"))


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "start":
        ports = [int(p) for p in argv[2:4]] or [16789, 16790]
        c = CephCluster(argv[1], *ports)
        t = time.monotonic()
        c.start()
        print(json.dumps({"conf": c.conf_path, "user": c.user, "pool": c.pool,
                          "keyring": c.keyring_path, "fsid": c.fsid,
                          "seconds": round(time.monotonic() - t, 1)}))
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        CephCluster(argv[1], 0, 0).stop()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
