"""govmomi's vCenter simulator (vcsim) on 127.0.0.1 with TLS, for the vmware driver's tests.

Usage::

    sim = Vcsim(directory, port=17100)
    sim.start()          # < 1 s; builds vcsim first if needed (scripts/deps/vmware.sh)
    sim.host, sim.port, sim.username, sim.password, sim.ca_file
    sim.datacenter       # "DC0" (sim.datacenters: every one)
    sim.datastores       # ["LocalDS_0"] (+ "SmallDS" with small_datastore_bytes)
    sim.wsdl_url         # what oslo.vmware loads by default: vcsim serves it here
    sim.stop()           # by PID: TERM (vcsim removes its datastore directories), then KILL

The inventory is vcsim's default vCenter one: per datacenter a standalone
host and a cluster of three, two VMs per resource pool (so recursive
property traversal, which crashes vcsim 0.24.2 when VMs exist, must be
avoided), one datastore ``LocalDS_0`` shared by the hosts. vcsim keeps a
datastore's files in a plain directory, here under ``directory/datastores``.

* TLS: an RSA-2048 server certificate from the shared test CA
  (tests/backends/tls.py) in ``directory/tls``, kept across restarts;
  vcsim's built-in one is RSA-1024, which OpenSSL 3 refuses.
* Login: only ``username``/``password`` (vcsim's default takes any).
* WSDL: vcsim has none; one is generated (tests/backends/vcsim_wsdl.py) into
  ``directory/wsdl`` and served at ``/sdk/vimService.wsdl``, where
  oslo.vmware looks by default; ``wsdl_file_url`` names the same files.
* ``small_datastore_bytes``: one more datastore, ``SmallDS``, on a tmpfs of
  that size mounted in vcsim's own mount namespace (it vanishes with the
  process, whatever ends it; root needed); a PUT that fills it is answered
  500 (``stock_put=True``: 200, as vcsim does, the file truncated).
* ``idle_timeout``: sessions idle that long expire (vCenter's default is 30 min).
* ``refresh_interval``: vcsim measures a datastore's free space
  (``summary.freeSpace``, from statfs) at start only, and its
  ``RefreshDatastore`` fails; ours measures again this often (0: never).
* A restart (``stop``/``kill`` then ``start``) is a fresh inventory and
  fresh datastores, with the same address, credentials and CA.
* ``freeze``/``thaw``: SIGSTOP/SIGCONT, the server stops answering (TCP
  connections are still accepted by the kernel) but keeps its state.

Run by hand: ``python tests/backends/vcsim.py start DIR PORT`` (prints the
connection details as JSON) / ``python tests/backends/vcsim.py stop DIR``.
"""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parents[2]
DEPS_SCRIPT = ROOT / "scripts" / "deps" / "vmware.sh"
#: Ports for the vmware tests; other backends' tests use other ranges.
PORTS = range(17100, 17200)
SMALL_DATASTORE = "SmallDS"


class VcsimError(RuntimeError):
    pass


def vcsim_binary() -> str:
    """The vcsim binary, installed and built first if needed (~30 s once, as root)."""
    try:
        done = subprocess.run(["bash", str(DEPS_SCRIPT), "--binary"], capture_output=True,
                              text=True, timeout=1800, check=False)
    except subprocess.TimeoutExpired as exc:
        raise VcsimError(f"{DEPS_SCRIPT} --binary did not finish in 30 min") from exc
    if done.returncode != 0 or not done.stdout.strip():
        raise VcsimError(f"{DEPS_SCRIPT} --binary failed ({done.returncode}): "
                         f"{done.stderr.strip()[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


class Vcsim:
    """One vcsim in ``directory`` on 127.0.0.1:``port``; see the module docstring."""

    def __init__(self, directory: str | os.PathLike[str], port: int, *,
                 username: str = "multistore", password: str = "vcsim-Secret-1",
                 datacenters: int = 1, datastores: int = 1, vms: int = 2,
                 small_datastore_bytes: int | None = None, idle_timeout: float = 0,
                 refresh_interval: float = 0.2, stock_put: bool = False,
                 full_wsdl: bool = False) -> None:
        if port not in PORTS:
            raise ValueError(f"port {port} is outside the vmware tests' range "
                             f"{PORTS.start}-{PORTS.stop - 1}")
        self.dir = Path(directory).resolve()
        self.host = "127.0.0.1"
        self.port = port
        self.username = username
        self.password = password
        self.datacenters = [f"DC{i}" for i in range(datacenters)]
        self.datastores = [f"LocalDS_{i}" for i in range(datastores)]
        if small_datastore_bytes:
            self.datastores.append(SMALL_DATASTORE)
        self.vms = vms
        self.small_datastore_bytes = small_datastore_bytes
        self.idle_timeout = idle_timeout
        self.refresh_interval = refresh_interval
        self.stock_put = stock_put
        #: every vim25 operation in the WSDL, not only a driver's (suds parses it in 4-5 s)
        self.full_wsdl = full_wsdl
        self.frozen = False
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what clients need ------------------------------------------------

    @property
    def datacenter(self) -> str:
        return self.datacenters[0]

    @property
    def datastore(self) -> str:
        return self.datastores[0]

    @property
    def ca_file(self) -> str:
        return str(self.dir / "tls" / "ca.pem")

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def wsdl_url(self) -> str:
        return f"{self.url}/sdk/vimService.wsdl"

    @property
    def wsdl_file_url(self) -> str:
        return (self.dir / "wsdl" / "vimService.wsdl").as_uri()

    @property
    def log_path(self) -> Path:
        return self.dir / "vcsim.log"

    @property
    def pid_path(self) -> Path:
        return self.dir / "vcsim.pid"

    def folder_url(self, path: str, datastore: str | None = None,
                   datacenter: str | None = None) -> str:
        """``https://host:port/folder/<path>?dcPath=...&dsName=...``, as glance_store builds it."""
        from urllib.parse import quote, urlencode
        query = urlencode({"dcPath": datacenter or self.datacenter,
                           "dsName": datastore or self.datastore})
        return f"{self.url}/folder/{quote(path.lstrip('/'))}?{query}"

    def datastore_path(self, datastore: str | None = None, datacenter: str | None = None
                       ) -> Path:
        """The directory holding a datastore's files, as this process can reach it."""
        name, dc = datastore or self.datastore, datacenter or self.datacenter
        if name == SMALL_DATASTORE:
            pid = self.pid()
            if pid is None:
                raise VcsimError("vcsim is not running: its tmpfs is gone")
            return Path(f"/proc/{pid}/root") / self.dir.relative_to("/") / "small" / dc
        found = sorted((self.dir / "datastores").glob(f"govcsim-{dc}-{name}-*"))
        if len(found) != 1:
            raise VcsimError(f"no single directory for datastore {dc}/{name}: {found}")
        return found[0]

    def pid(self) -> int | None:
        """vcsim's PID, from the PID file, if that process is alive and is vcsim."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid     # ours; maybe still unshare/sh, about to exec vcsim
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and _is_vcsim(pid) else None

    def rss_bytes(self) -> int:
        """vcsim's resident memory now (VmRSS)."""
        pid = self.pid()
        if pid is None:
            raise VcsimError("vcsim is not running")
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise VcsimError("no VmRSS")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    # -- start ------------------------------------------------------------

    def start(self, timeout: float = 60) -> Vcsim:
        binary = vcsim_binary()
        if self.pid() is not None:
            raise VcsimError(f"{self.dir} has a running vcsim (pid {self.pid()}): stop it first")
        if not _port_free(self.port):
            raise VcsimError(f"port {self.port} on 127.0.0.1 is in use")
        tls = self.dir / "tls"
        if not (tls / "server.pem").exists():
            tls.mkdir(parents=True, exist_ok=True)
            _tls().make_certificates(tls, server_key="rsa")
        wsdl = self.dir / "wsdl"
        gen = _wsdl()
        gen.generate(wsdl, None if self.full_wsdl else gen.OPERATIONS)
        datastores = self.dir / "datastores"
        shutil.rmtree(datastores, ignore_errors=True)     # a killed vcsim's leftovers
        datastores.mkdir(parents=True)
        command = [binary, "-l", f"{self.host}:{self.port}",
                   "-tlscert", str(tls / "server.pem"), "-tlskey", str(tls / "server.key"),
                   "-username", self.username, "-password", self.password,
                   "-dc", str(len(self.datacenters)),
                   "-ds", str(len(self.datastores) - bool(self.small_datastore_bytes)),
                   "-vm", str(self.vms), "-wsdl", str(wsdl),
                   "-idle-timeout", f"{self.idle_timeout}s",
                   "-refresh", f"{self.refresh_interval}s"]
        if self.stock_put:
            command.append("-stock-put")
        if self.small_datastore_bytes:
            small = self.dir / "small"
            small.mkdir(exist_ok=True)
            command += ["-datastore", f"{SMALL_DATASTORE}={small}/{{dc}}"]
            # Its own mount namespace: the tmpfs is seen by vcsim only and goes
            # with it. unshare and sh exec, so the PID is vcsim's.
            command = ["unshare", "--mount", "--propagation", "private", "--",
                       "sh", "-c", 'mount -t tmpfs -o "size=$1,mode=0700" tmpfs "$2" && '
                       'shift 2 && exec "$@"', "sh", str(self.small_datastore_bytes),
                       str(small), *command]
        env = {**os.environ, "TMPDIR": str(datastores)}
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)
        self.pid_path.write_text(f"{self._proc.pid}\n")
        try:
            self._wait_ready(started + timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, deadline: float) -> None:
        context = self.ssl_context()
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise VcsimError(f"vcsim exited ({self._proc.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/about", context=context,
                                            timeout=2) as res:
                    if res.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise VcsimError(f"vcsim did not answer on {self.url}:\n{self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- faults -----------------------------------------------------------

    def _signal(self, signum: int) -> int:
        pid = self.pid()
        if pid is None:
            raise VcsimError("vcsim is not running")
        os.kill(pid, signum)
        return pid

    def freeze(self) -> None:
        """SIGSTOP: vcsim stops answering, keeps its sessions and files."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT: vcsim answers again, as it was."""
        self._signal(signal.SIGCONT)
        self.frozen = False

    def kill(self) -> None:
        """SIGKILL, as a crash: sessions lost; the datastore directories stay until start()."""
        pid = self._signal(signal.SIGKILL)
        self.frozen = False
        self._reap(pid, 10)

    # -- stop -------------------------------------------------------------

    def stop(self, grace: float = 10) -> None:
        """End vcsim by its PID file: TERM (it removes its datastores), then KILL."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)    # were it frozen, by us or another process
            if not self._reap(pid, grace):
                os.kill(pid, signal.SIGKILL)
                self._reap(pid, 10)
        self.frozen = False
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        self.pid_path.unlink(missing_ok=True)

    def _reap(self, pid: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    return True
            elif not _alive(pid):
                return True
            time.sleep(0.02)
        return False

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "host": self.host, "port": self.port,
                "username": self.username, "password": self.password,
                "ca_file": self.ca_file, "datacenter": self.datacenter,
                "datastores": self.datastores, "wsdl_url": self.wsdl_url,
                "pid": self.pid()}


def _tls() -> Any:
    """tests/backends/tls.py (the test CA), by path: tests/ is not a package."""
    return types.SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("tls.py"))))


def _wsdl() -> Any:
    return types.SimpleNamespace(
        **runpy.run_path(str(Path(__file__).with_name("vcsim_wsdl.py"))))


_procs = runpy.run_path(str(Path(__file__).with_name("procs.py")))
_port_free, _alive = _procs["port_free"], _procs["alive"]


def _is_vcsim(pid: int) -> bool:
    return bool(_procs["program"](pid) == b"vcsim")


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "start":
        sim = Vcsim(argv[1], int(argv[2]))
        sim.start()
        print(json.dumps({**sim.describe(), "seconds": round(sim.start_seconds, 2)}))
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        Vcsim(argv[1], PORTS.start).stop()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
