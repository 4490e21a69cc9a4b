"""Glance 33 with glance_store's drivers against Glance 33 with multistore's
(through the adapter, multistore/glance.py): upload, download and copy-image
of one image, same backends, interleaved, one run.

    .venv/bin/python benchmarks/bench_glance.py [--size-mib 1024] [--rounds 3]
        [--downloads 5] [--backends file,rbd] [--out FILE]

Two Glance servers run as in the tests (tests/backends/glance.py: gunicorn,
one ``gthread`` worker with 8 threads, SQLite), side by side, with the same
worker settings and the same store ids:

- **glance_store** on 127.0.0.1:17390: plain Glance, stores ``file1`` and
  ``file2`` (its file driver) and ``rbd`` (its rbd driver; ``file3``, a
  third file store, without the rbd backend);
- **multistore** on 127.0.0.1:17391: Glance with this checkout built onto its
  PYTHONPATH, the same stores as ``multistore_file`` and ``multistore_rbd``.

The file stores of both live on one filesystem; the rbd stores share one
Ceph cluster (one mon, one memstore OSD, 127.0.0.1:17380-17389) and pool.
For each backend in ``--backends`` and each round, the ways taken in turn
(their order reversed every other round): create an image and ``PUT /file``
into that backend's store (Content-Length, from a file in the page cache;
md5 checked by one untimed download per way); ``GET /file`` whole
``--downloads`` times per way (default 5; read and dropped), the ways
alternating; then copy-image to the two other stores (until the task ends)
and delete.

Per step: MB/s (10^6 bytes/s); the Glance worker's CPU seconds per GiB (all
its threads, /proc/<pid>/stat) and those of its busiest thread; the client's
(this process, which sends and receives the bytes on the same 2 cores); the
Ceph daemons'; the worker's peak RSS during the step (VmHWM, reset before
each step through /proc/<pid>/clear_refs), and that peak less the worker's
RSS at the step's start (what the step itself added; the peak alone also
holds what earlier steps left allocated). A file store's download is timed
from the disk (the file's pages dropped before each: multistore's file store
drops what it writes, glance_store's keeps it) and from the page cache.
``--ms-chunk-size``/``--ms-buffers`` set the multistore Glance's
``[glance_store] stream_chunk_size``/``stream_buffers``.
The table shows medians with the range of the rounds (downloads: of every
download; their ratio pairs each way's n-th download).

What 2 cores allow, computed in the same run: md5 and sha512 over 1 GiB in
this process (CPU s/GiB each), and for each upload its bound,
``min(2 cores / (worker + client + Ceph CPU s/GiB), 1 / busiest thread
CPU s/GiB)``; Glance's own per-GiB CPU is the worker's less the hashing.
Everything is stopped by PID at the end; data lives in a temporary
directory (``--tmp``, default the system's).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
GiB = 1024 * MiB
PORTS = {"glance_store": 17390, "multistore": 17391}
CEPH_PORTS = (17380, 17381)
CEPH_OSD_PORTS = (17382, 17389)
WAYS = tuple(PORTS)
SOURCE = {"file": "file1", "rbd": "rbd"}
TICK = os.sysconf("SC_CLK_TCK")


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)   # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)                  # type: ignore[union-attr]
    return module


harness = _load("multistore_glance_harness", ROOT / "tests" / "backends" / "glance.py")
ceph_harness = _load("multistore_ceph_harness_bench", ROOT / "tests" / "backends" / "rbd.py")


# -- CPU accounting -------------------------------------------------------------

def _ticks(stat_path: str) -> int:
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])          # utime + stime


def process_cpu(pids: list[int]) -> float:
    return sum(_ticks(f"/proc/{pid}/stat") for pid in pids) / TICK


def thread_cpu(pid: int) -> dict[int, float]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = _ticks(f"/proc/{pid}/task/{tid}/stat") / TICK
        except OSError:
            continue                                  # a thread that ended
    return out


class Meter:
    """Wall time and CPU seconds of a Glance worker (all threads, and the
    busiest one), of this process and of the Ceph daemons, around one step."""

    def __init__(self, server: Any, ceph: Any) -> None:
        self.worker = server.worker_pids()[0]
        self.ceph = [p for p in (ceph.pid(d) for d in ceph.DAEMONS) if p] if ceph else []

    def run(self, fn: Callable[[], Any]) -> dict[str, float]:
        # Reset the worker's peak RSS (VmHWM), so each step has its own.
        Path(f"/proc/{self.worker}/clear_refs").write_text("5")
        rss0 = harness._proc_status_kib(self.worker, "VmRSS") / 1024
        threads0 = thread_cpu(self.worker)
        worker0, ceph0 = process_cpu([self.worker]), process_cpu(self.ceph)
        client0, t0 = time.process_time(), time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
        client = time.process_time() - client0
        threads1 = thread_cpu(self.worker)
        busiest = max((c - threads0.get(t, 0.0) for t, c in threads1.items()), default=0.0)
        return {"seconds": seconds, "worker": process_cpu([self.worker]) - worker0,
                "busiest": busiest, "client": client,
                "ceph": process_cpu(self.ceph) - ceph0,
                "rss": harness._proc_status_kib(self.worker, "VmHWM") / 1024,
                "rss_start": rss0}


def hash_cpu_per_gib(algo: str) -> float:
    """CPU seconds one thread spends hashing 1 GiB with ``algo``."""
    block = os.urandom(64 * MiB)
    hasher = hashlib.new(algo, usedforsecurity=False)
    t0 = time.process_time()
    for _ in range(GiB // len(block)):
        hasher.update(block)
    return time.process_time() - t0


# -- the servers ------------------------------------------------------------------

def store_config(way: str, backends: list[str], ceph: Any) -> dict[str, tuple[str, dict]]:
    prefix = "multistore_" if way == "multistore" else ""
    stores: dict[str, tuple[str, dict]] = {
        "file1": (prefix + "file", {}), "file2": (prefix + "file", {})}
    if "rbd" in backends:
        stores["rbd"] = (prefix + "rbd", {
            "rbd_store_ceph_conf": ceph.conf_path, "rbd_store_user": ceph.user,
            "rbd_store_pool": ceph.pool, "rados_connect_timeout": 30})
    else:
        stores["file3"] = (prefix + "file", {})    # copy-image still goes to two stores
    return stores


def download(client: Any, image: str, size: int) -> None:
    """``GET /file`` whole, read in 1 MiB pieces and dropped."""
    conn = http.client.HTTPConnection(client.host, client.port, timeout=600)
    try:
        conn.request("GET", f"/v2/images/{image}/file", headers=client.identity)
        resp = conn.getresponse()
        got = 0
        buf = bytearray(MiB)
        while n := resp.readinto(buf):
            got += n
        if (resp.status, got) != (200, size):
            raise RuntimeError(f"download of {image}: {resp.status}, {got} bytes")
    finally:
        conn.close()


def cached(path: Path, cached: bool) -> None:
    """Put a file's pages in the page cache (read it) or out of it (sync, drop)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if cached:
            while os.read(fd, 16 * MiB):
                pass
        else:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class Round:
    """One backend's image in one Glance, step by step."""

    def __init__(self, way: str, server: Any, ceph: Any, backend: str) -> None:
        self.way, self.server, self.backend = way, server, backend
        self.client = server.client(timeout=900)
        self.meter = Meter(server, ceph)
        self.store = SOURCE[backend]
        self.targets = [s for s in server.stores if s != self.store]
        self.image = self.client.create_image(name=f"bench-{backend}")["id"]
        self.rows: dict[str, list[dict[str, float]]] = {}

    def step(self, name: str, fn: Callable[[], Any]) -> None:
        self.rows.setdefault(name, []).append(self.meter.run(fn))

    def upload(self, source: Path, size: int, md5: str, verify: bool) -> None:
        def put() -> None:
            with open(source, "rb") as f:
                self.client.upload(self.image, f, size, store=self.store)
        self.step("upload", put)
        if verify:
            got = self.client.download(self.image)
            if (got.status, got.md5) != (200, md5):
                raise RuntimeError(f"{self.way}: the image read back differs: {got}")

    def path(self) -> Path:
        return self.server.store_dir(self.store) / self.image

    def download(self, name: str, size: int) -> None:
        self.step(name, lambda: download(self.client, self.image, size))

    def copy(self) -> None:
        def copy_image() -> None:
            self.client.copy_image(self.image, stores=self.targets)
            self.client.wait_stores(self.image, [self.store, *self.targets], timeout=1800)
        self.step(f"copy-image to {' + '.join(self.targets)}", copy_image)

    def delete(self) -> None:
        self.client.delete(self.image)


def round_of(order: tuple[str, ...], servers: dict[str, Any], ceph: Any, backend: str,
             source: Path, size: int, md5: str, verify: bool,
             downloads: int) -> dict[str, dict[str, list[dict[str, float]]]]:
    """One round of one backend: each way's upload; ``downloads`` downloads
    per way, the ways alternating (one download takes 0.4-1.5 s: a single
    one per way is as much the machine's moment as the code); each way's
    copy-image. A file store's image is downloaded from the disk (its pages
    dropped before each download: multistore's file store drops what it
    wrote, glance_store's keeps it), then from the page cache."""
    rounds = {way: Round(way, servers[way], ceph, backend) for way in order}
    for r in rounds.values():
        r.upload(source, size, md5, verify)
    steps = ([("download (from disk)", False), ("download (page cache)", True)]
             if backend == "file" else [("download", None)])
    for name, in_cache in steps:
        for n in range(downloads):
            for way in order if n % 2 == 0 else order[::-1]:
                # Pages dropped before every download from the disk; put in
                # the page cache once (a download leaves them there).
                if in_cache is False or (in_cache and n == 0):
                    cached(rounds[way].path(), in_cache)
                rounds[way].download(name, size)
    for r in rounds.values():
        r.copy()
        r.delete()
    return {way: r.rows for way, r in rounds.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--downloads", type=int, default=5,
                        help="downloads per way, round and kind (the ways alternating)")
    parser.add_argument("--backends", default="file,rbd",
                        help="comma-separated: file, rbd")
    parser.add_argument("--tmp", default=None, help="directory for the data")
    parser.add_argument("--out", default=None, help="also write the report here")
    parser.add_argument("--ms-chunk-size", type=int, default=None,
                        help="[glance_store] stream_chunk_size of the multistore Glance")
    parser.add_argument("--ms-buffers", type=int, default=None,
                        help="[glance_store] stream_buffers of the multistore Glance")
    args = parser.parse_args()
    if args.downloads < 1:
        parser.error("--downloads: at least 1")
    if args.ms_buffers is not None and args.ms_buffers < 2:
        # The option's minimum: Glance would refuse its store at the first upload.
        parser.error("--ms-buffers: stream_buffers is at least 2")
    backends = [b for b in args.backends.split(",") if b]
    size = args.size_mib * MiB
    results: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    servers: dict[str, Any] = {}
    ceph = None
    with tempfile.TemporaryDirectory(prefix="bench-glance-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "image.raw"
        md5 = hashlib.md5(usedforsecurity=False)
        with open(source, "wb") as f:
            for piece in harness.iter_bytes(size, seed=7):
                f.write(piece)
                md5.update(piece)
        build = harness.build_multistore(tmp / "multistore")
        try:
            if "rbd" in backends:
                ceph = ceph_harness.CephCluster(tmp / "ceph", *CEPH_PORTS,
                                                bind_ports=CEPH_OSD_PORTS,
                                                memstore_bytes=2 * size + 2 * GiB)
                ceph.start()
            core = {k: v for k, v in (("stream_chunk_size", args.ms_chunk_size),
                                      ("stream_buffers", args.ms_buffers)) if v}
            for way in WAYS:
                servers[way] = harness.GlanceServer(
                    tmp / way, PORTS[way], store_config(way, backends, ceph),
                    default_backend="file1",
                    python_path=[build] if way == "multistore" else [],
                    file_types=("file", "multistore_file"),
                    extra_conf={"glance_store": core} if way == "multistore" and core else None)
                servers[way].start()
            idle = {way: s.rss_kib() for way, s in servers.items()}
            for n in range(args.rounds):
                order = WAYS if n % 2 == 0 else tuple(reversed(WAYS))
                for backend in backends:
                    done = round_of(order, servers, ceph, backend, source, size,
                                    md5.hexdigest(), n == 0, args.downloads)
                    for way, steps in done.items():
                        for step, rows in steps.items():
                            results.setdefault((backend, step, way), []).extend(rows)
                        print(f"round {n + 1} {backend} {way}: " + ", ".join(
                            f"{s} " + "/".join(f"{size / r['seconds'] / 1e6:.0f}" for r in rows)
                            + " MB/s" for s, rows in steps.items()), file=sys.stderr, flush=True)
            peak = {way: s.rss_kib() for way, s in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
            if ceph is not None:
                ceph.stop()
    hashing = {algo: hash_cpu_per_gib(algo) for algo in ("md5", "sha512")}
    text = report(results, size, args, hashing, idle, peak)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def report(results: dict[tuple[str, str, str], list[dict[str, float]]], size: int,
           args: argparse.Namespace, hashing: dict[str, float],
           idle: dict[str, dict[str, int]], peak: dict[str, dict[str, int]]) -> str:
    def per_gib(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] * GiB / size for r in rows)

    def growth(rows: list[dict[str, float]]) -> float:
        return max(r["rss"] - r["rss_start"] for r in rows)

    def run_peak(way: str) -> float:
        return max(r["rss"] for (_, _, w), rows in results.items() if w == way for r in rows)

    def speeds(rows: list[dict[str, float]]) -> list[float]:
        return [size / r["seconds"] / 1e6 for r in rows]

    def cell(rows: list[dict[str, float]]) -> str:
        s = speeds(rows)
        return f"{statistics.median(s):.0f} ({min(s):.0f}-{max(s):.0f})"

    hash_total = hashing["md5"] + hashing["sha512"]
    lines = [
        f"Glance {harness.GLANCE_VERSION}, {args.size_mib} MiB, {args.rounds} rounds "
        f"interleaved, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; medians (min-max); "
        "CPU in s/GiB.", "",
        "| backend | step | glance_store MB/s | multistore MB/s | ratio | "
        "worker CPU gs / ms | busiest thread gs / ms | client CPU gs / ms | "
        "Ceph CPU gs / ms | worker peak RSS MiB gs / ms | peak over the step's start gs / ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    bounds = []
    for backend, step in dict.fromkeys((b, s) for b, s, _ in results):
        gs, ms = results[(backend, step, "glance_store")], results[(backend, step, "multistore")]
        ratios = [m / g for g, m in zip(speeds(gs), speeds(ms), strict=True)]
        lines.append(
            f"| {backend} | {step} | {cell(gs)} | {cell(ms)} | "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
            + " | ".join(f"{per_gib(gs, k):.2f} / {per_gib(ms, k):.2f}"
                         for k in ("worker", "busiest", "client", "ceph"))
            + f" | {max(r['rss'] for r in gs):.0f} / {max(r['rss'] for r in ms):.0f} | "
            + f"{growth(gs):.0f} / {growth(ms):.0f} |")
        if step == "upload":
            for way, rows in (("glance_store", gs), ("multistore", ms)):
                cpu = per_gib(rows, "worker") + per_gib(rows, "client") + per_gib(rows, "ceph")
                cores = (os.cpu_count() or 2) / cpu
                thread = 1 / per_gib(rows, "busiest")
                bounds.append(
                    f"| {backend} | {way} | {statistics.median(speeds(rows)):.0f} | "
                    f"{per_gib(rows, 'worker') - hash_total:.2f} | {GiB * cores / 1e6:.0f} | "
                    f"{GiB * thread / 1e6:.0f} | {GiB * min(cores, thread) / 1e6:.0f} |")
    lines += [
        "", f"Hashing in this process, one thread each: md5 {hashing['md5']:.2f}, "
        f"sha512 {hashing['sha512']:.2f}, together {hash_total:.2f} CPU s/GiB.", "",
        "What the CPU allows an upload (MB/s): 2 cores over the worker + client + Ceph "
        "CPU per GiB, and one core over the busiest thread's.", "",
        "| backend | way | measured | Glance's own CPU s/GiB (worker less hashing) | "
        "2-core bound | busiest-thread bound | bound |", "|---|---|---|---|---|---|---|",
        *bounds, "",
        "Glance worker RSS (MiB): " + "; ".join(
            f"{way} idle {idle[way]['worker'] / 1024:.0f}, at the end "
            f"{peak[way]['worker'] / 1024:.0f}" for way in WAYS)
        + "; the run's peak (the highest of any step) " + ", ".join(
            f"{way} {run_peak(way):.0f}" for way in WAYS)
        + ". Peak RSS per step: the highest of the rounds, VmHWM reset before each step "
        "(so it holds what earlier steps left allocated); over the step's start: the "
        "most the step itself added, of its rounds."
        + (f" multistore's [glance_store]: stream_chunk_size {args.ms_chunk_size}, "
           f"stream_buffers {args.ms_buffers}." if args.ms_chunk_size or args.ms_buffers
           else "")]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
