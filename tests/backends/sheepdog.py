"""A real one-node Sheepdog 1.0 cluster for tests: one ``sheep``, the ``local`` cluster driver.

Usage::

    cluster = SheepdogCluster(directory, port=17000)
    cluster.start()          # about 1 s once built; builds Sheepdog first if needed
    ...  cluster.address ("127.0.0.1"), cluster.port, cluster.dog("vdi", "list", "-r")
    cluster.stop()           # by PID, TERM then KILL

    with SheepdogCluster(directory, 17010, size_limit=64 * MiB) as small:
        ...                  # objects on a 64 MiB tmpfs: writes beyond it fail "no space"

``sheep`` listens on 127.0.0.1:<port> only and keeps everything in
``directory``: ``store/`` (metadata, ``sheep.log``, and the objects unless
size-limited), ``objects/`` (a tmpfs of ``size_limit`` bytes, when given),
``shm`` (the local cluster driver's state: one per cluster, or every sheep on
the machine would join one cluster), ``sheep.pid``. The cluster is formatted
with ``copies`` copies (1) and is ready when ``dog cluster info`` says running.

Fault helpers: ``kill()`` (SIGKILL; ``restart()`` brings the same data back),
``freeze()``/``thaw()`` (SIGSTOP/SIGCONT: connections are accepted by the
kernel and then hang, and ``dog`` waits for ever: always give it a timeout),
``fill()``/``unfill()`` (with ``size_limit``: a filler VDI takes all the
space left). Only the PID this harness started, or the one in its own PID
file whose command line names this directory, is ever signalled.

The binaries: :func:`find_binaries` (``$MULTISTORE_SHEEPDOG_BIN``, then
``sheep``/``dog`` on PATH, then the build cache of ``scripts/deps/sheepdog.sh``,
which it runs to build from the vendored tarball when nothing is found);
without any of them it raises :class:`SheepdogNotFound` saying how to
provide one.

Run by hand: ``python tests/backends/sheepdog.py start DIR [PORT [SIZE_LIMIT_MIB]]`` /
``python tests/backends/sheepdog.py stop DIR``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]
DEPS_SCRIPT = ROOT / "scripts" / "deps" / "sheepdog.sh"
ADDRESS = "127.0.0.1"
MiB = 1024 ** 2
OBJECT_SIZE = 4 * MiB           # SD_DATA_OBJ_SIZE, the default block_size_shift 22
FILLER = "_harness_filler"      # the VDI fill() writes
# What a cluster directory holds: start() empties a directory only if it holds nothing else.
OWN_FILES = ("store", "objects", "shm", "sheep.pid", "sheep.out")


class SheepdogError(RuntimeError):
    pass


class SheepdogNotFound(SheepdogError):
    """No sheep/dog binaries and no source to build them from."""


def find_binaries(*, build: bool = True) -> Path:
    """The directory holding ``sheep`` and ``dog``; see the module docstring.

    The search order and the cache layout live in scripts/deps/sheepdog.sh
    only (``--print-bin``); with ``build``, a miss runs that script once to
    build from the tarball (about a minute on 2 cores, as root for apt).
    """
    found = _deps("--print-bin")
    if found.returncode != 0 and build:
        built = _deps()
        if built.returncode != 0:
            raise SheepdogError(f"building Sheepdog failed ({DEPS_SCRIPT}):\n"
                                f"{built.stderr.strip()[-3000:]}")
        found = _deps("--print-bin")
    if found.returncode != 0:
        raise SheepdogNotFound(found.stderr.strip())
    return Path(found.stdout.strip())


def _deps(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(DEPS_SCRIPT), *args], capture_output=True,
                          text=True, timeout=1800, check=False)


class SheepdogCluster:
    """One single-node cluster in ``directory`` on 127.0.0.1:``port``; see the module docstring."""

    def __init__(self, directory: str | os.PathLike[str], port: int, *, copies: int = 1,
                 size_limit: int | None = None, nosync: bool = False,
                 bin_dir: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(directory).resolve()
        self.address = ADDRESS
        self.port = port
        self.copies = copies
        self.size_limit = size_limit
        self.nosync = nosync            # sheep -n: no O_SYNC on object writes
        self._bin = Path(bin_dir) if bin_dir else None
        self._proc: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self.start_seconds = 0.0        # the last start(): exec to "running"

    # -- paths ---------------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        if self._bin is None:
            self._bin = find_binaries()
        return self._bin

    @property
    def pid_path(self) -> Path:
        return self.dir / "sheep.pid"

    @property
    def log_path(self) -> Path:
        return self.dir / "store" / "sheep.log"

    @property
    def object_dir(self) -> Path:
        """Where sheep keeps the objects: one file per object, named by its OID in hex."""
        return self.dir / ("objects" if self.size_limit else "store/obj")

    def pid(self) -> int | None:
        """The running sheep's PID (ours, or this directory's PID file), else None."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and self._is_ours(pid) else None

    def processes(self) -> list[int]:
        """Every live process started on this directory: sheep and its logger."""
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        return [pid for pid in pids if self._is_ours(pid) and _alive(pid)]

    def _is_ours(self, pid: int) -> bool:
        """``pid`` is a sheep started on this directory (not a reused PID)."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return (os.path.basename(argv[0]) == b"sheep"
                and str(self.pid_path).encode() in argv)

    # -- start -----------------------------------------------------------------

    def start(self, timeout: float = 60, *, formatted: bool = True) -> SheepdogCluster:
        """Start a fresh cluster (the directory is emptied) and format it.

        With ``formatted=False`` sheep runs but the cluster waits to be formatted
        (every VDI request fails), as a cluster just set up by hand would.
        """
        self.bin_dir                    # noqa: B018  (find or build before the clock runs)
        if self.pid() is not None:
            raise SheepdogError(f"{self.dir} holds a running sheep already: stop it first")
        if not _port_free(self.port):
            raise SheepdogError(f"port {self.port} on {ADDRESS} is in use")

        strangers = sorted(set(os.listdir(self.dir)) - set(OWN_FILES)) if self.dir.exists() else []
        if strangers:
            raise SheepdogError(f"{self.dir} holds files that are not a cluster's "
                                f"({', '.join(strangers[:5])}): not emptying it")

        def fresh(deadline: float) -> None:
            self._unmount()
            if self.dir.exists():
                shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True)
            if self.size_limit:
                self._mount()
            self._launch(deadline)
            if formatted:
                self.dog("cluster", "format", "-c", str(self.copies))
                self._wait_running(deadline)
        return self._timed(fresh, timeout)

    def restart(self, timeout: float = 60) -> SheepdogCluster:
        """Start sheep again on the data it had (after kill() or stop()); no format."""
        if self.pid() is not None:
            raise SheepdogError(f"{self.dir}: sheep is running")

        def again(deadline: float) -> None:
            self._launch(deadline)
            self._wait_running(deadline)
        return self._timed(again, timeout)

    def _timed(self, steps: Callable[[float], None], timeout: float) -> SheepdogCluster:
        """Run start-up ``steps(deadline)``; stop whatever started if they fail."""
        t0 = time.monotonic()
        try:
            steps(t0 + timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _launch(self, deadline: float) -> None:
        """Run sheep in the foreground of a new session; return once it takes connections."""
        store = str(self.dir / "store")
        if self.size_limit:
            store += f",{self.object_dir}"      # metadata in store/, objects on the tmpfs
        argv = [str(self.bin_dir / "sheep"), "-f", "-b", ADDRESS, "-p", str(self.port),
                "-c", f"local:{self.dir / 'shm'}", "-P", str(self.pid_path)]
        if self.nosync:
            argv.append("-n")
        with open(self.dir / "sheep.out", "ab") as out:
            self._proc = subprocess.Popen(argv + [store], stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          cwd=self.dir)
        # The PID file is written at the end of sheep's start-up, the port a bit before.
        while not (self.pid_path.exists() and _port_open(self.port)):
            self._check(deadline, "sheep did not open its port")
            time.sleep(0.02)

    def _wait_running(self, deadline: float) -> None:
        while True:
            status = self.status()
            if status.startswith("running"):
                return
            self._check(deadline, f"the cluster is not running ({status!r})")
            time.sleep(0.05)

    def _check(self, deadline: float, what: str) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise SheepdogError(f"sheep exited with {self._proc.returncode}: "
                                f"{self._tail()}")
        if time.monotonic() > deadline:
            raise SheepdogError(f"{what} in time: {self._tail()}")

    def _tail(self, lines: int = 15) -> str:
        text = ""
        for path in (self.dir / "sheep.out", self.log_path):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                text += f"\n--- {path} (tail)\n" + "\n".join(tail)
        return text

    # -- size limit (tmpfs) -------------------------------------------------------

    def _mount(self) -> None:
        self.object_dir.mkdir()
        # tmpfs keeps user xattrs (Linux 6.6+), which sheep's multi-disk code needs.
        done = subprocess.run(["mount", "-t", "tmpfs", "-o",
                               f"size={self.size_limit},mode=0750", "tmpfs",
                               str(self.object_dir)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SheepdogError(f"size_limit needs a tmpfs at {self.object_dir} (root, "
                                f"CAP_SYS_ADMIN): mount failed: {done.stderr.strip()}")

    def _unmount(self) -> None:
        if os.path.ismount(self.dir / "objects"):
            subprocess.run(["umount", str(self.dir / "objects")], capture_output=True,
                           check=False)
            if os.path.ismount(self.dir / "objects"):     # still busy: detach it
                subprocess.run(["umount", "-l", str(self.dir / "objects")],
                               capture_output=True, check=False)

    # -- dog --------------------------------------------------------------------

    def dog(self, command: str, subcommand: str, *args: str, input: bytes | None = None,
            check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        """Run ``dog COMMAND SUBCOMMAND -a 127.0.0.1 -p PORT ARGS...``.

        With ``check``, a non-zero exit raises SheepdogError; mind that dog
        exits 0 from some failures (``vdi delete`` always does): look at stderr.
        """
        argv = [str(self.bin_dir / "dog"), command, subcommand, "-a", ADDRESS,
                "-p", str(self.port), *args]
        try:
            done = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise SheepdogError(f"{' '.join(argv)} did not finish in {timeout} s") from exc
        if check and done.returncode != 0:
            raise SheepdogError(f"{' '.join(argv[1:])} failed ({done.returncode}): "
                                f"{done.stderr.decode(errors='replace').strip()}")
        return done

    def status(self) -> str:
        """``dog cluster info``'s status line: "running, auto-recovery enabled",
        "Waiting for cluster to be formatted", ... or the last line of dog's error
        ("Failed to get node list" when sheep is down)."""
        done = self.dog("cluster", "info", "-r", check=False, timeout=10)
        out = done.stdout.decode(errors="replace").strip()
        if out:
            return out.splitlines()[0]
        err = done.stderr.decode(errors="replace").strip()
        return err.splitlines()[-1] if err else f"dog exited {done.returncode}"

    def vdis(self) -> dict[str, dict[str, int | str]]:
        """The VDIs (not snapshots), from ``dog vdi list -r``: name -> fields."""
        out = self.dog("vdi", "list", "-r").stdout.decode()
        vdis: dict[str, dict[str, int | str]] = {}
        for line in out.splitlines():
            # = NAME SNAPID SIZE USED SHARED CTIME VDI_ID(hex) COPIES TAG BLOCK_SHIFT;
            # TAG is empty for a VDI, hence the split on single spaces.
            f = line.split(" ")
            if f[0] != "=":
                continue        # "s" lines are snapshots
            vdis[f[1]] = {"size": int(f[3]), "used": int(f[4]), "vid": int(f[7], 16),
                          "copies": int(f[8]), "block_size_shift": int(f[10])}
        return vdis

    def node_info(self) -> dict[str, int]:
        """Capacity, used and available bytes (``dog node info -r``'s Total line)."""
        out = self.dog("node", "info", "-r").stdout.decode()
        for line in out.splitlines():
            f = line.split()
            if f and f[0] == "Total":
                return {"size": int(f[1]), "used": int(f[2]), "avail": int(f[3])}
        raise SheepdogError(f"dog node info printed no Total line: {out!r}")

    def objects(self) -> list[str]:
        """The object files sheep holds (OIDs in hex): inode objects start with 8."""
        return sorted(p.name for p in self.object_dir.iterdir() if p.is_file())

    # -- full ---------------------------------------------------------------------

    def fill(self) -> None:
        """Write a filler VDI until sheep answers "no space" (needs ``size_limit``)."""
        if not self.size_limit:
            raise SheepdogError("fill() needs a cluster started with size_limit")
        size = self.size_limit + OBJECT_SIZE
        self.dog("vdi", "create", FILLER, str(size))
        done = self.dog("vdi", "write", FILLER, input=b"\xa5" * size, check=False)
        if b"no space" not in done.stderr:
            raise SheepdogError(f"filling {self.dir} did not end in 'no space': "
                                f"{done.returncode} {done.stderr!r}")

    def unfill(self) -> None:
        self.dog("vdi", "delete", FILLER)

    # -- faults / stop -------------------------------------------------------------

    def _signal(self, signum: int) -> int | None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signum)
        return pid

    def freeze(self) -> None:
        """SIGSTOP sheep: it stops answering (dog then hangs), keeps its data."""
        if self._signal(signal.SIGSTOP) is not None:
            self.frozen = True

    def thaw(self, wait: bool = True) -> None:
        """SIGCONT sheep; with ``wait``, until the cluster says running again."""
        self._signal(signal.SIGCONT)
        self.frozen = False
        if wait:
            self._wait_running(time.monotonic() + 30)

    def kill(self) -> None:
        """SIGKILL sheep (a crash): the data stay, ``restart()`` brings them back.

        Its logger process (forked at start, in a session of its own) goes too.
        """
        pids = self.processes()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            self._wait_gone(pid, 10)
        self.frozen = False

    def stop(self, grace: float = 20) -> None:
        """End sheep (SIGTERM, then SIGKILL after ``grace`` s) and unmount the tmpfs."""
        pid = self.pid()
        if pid is not None:
            if self.frozen:
                os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
            if not self._wait_gone(pid, grace):
                os.kill(pid, signal.SIGKILL)
                self._wait_gone(pid, 10)
        for rest in self.processes():       # the logger, which ends with sheep
            if not self._wait_gone(rest, 5):
                os.kill(rest, signal.SIGKILL)
                self._wait_gone(rest, 10)
        self.frozen = False
        self._proc = None
        self._unmount()

    def _wait_gone(self, pid: int, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while _alive(pid):
            if self._proc is not None and self._proc.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=0.05)   # reaps our own child
            else:
                time.sleep(0.05)
            if time.monotonic() > end:
                return False
        return True

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SheepdogCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    """Running (a zombie, not yet reaped by its parent, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ADDRESS, port))
        except OSError:
            return False
    return True


def free_port(ports: range) -> int:
    """The first port of ``ports`` free on 127.0.0.1."""
    for port in ports:
        if _port_free(port):
            return port
    raise SheepdogError(f"no free port in {ports}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((ADDRESS, port)) == 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "start":
        port = int(argv[2]) if len(argv) > 2 else 17000
        limit = int(argv[3]) * MiB if len(argv) > 3 else None
        c = SheepdogCluster(argv[1], port, size_limit=limit).start()
        print(json.dumps({"address": c.address, "port": c.port, "pid": c.pid(),
                          "bin": str(c.bin_dir), "log": str(c.log_path),
                          "seconds": round(c.start_seconds, 2)}))
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        SheepdogCluster(argv[1], 0).stop()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
