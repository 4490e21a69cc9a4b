"""Upload, download and copy-image of one image through the real Glance 33.

    .venv/bin/python benchmarks/bench_glance.py [--size-mib 256] [--rounds 3]

Glance runs as in the tests (tests/backends/glance.py: gunicorn, one gthread
worker with 8 threads, SQLite) on 127.0.0.1:17390 with two stores of
glance_store's file driver, ``a`` and ``b``. Each round: create an image,
``PUT /file`` into ``a`` with Content-Length from a file in the page cache,
``PUT /file`` of a second image chunked, ``GET /file`` of the whole image
(md5 compared), copy-image of it to ``b`` (until the task ends), delete. Per
step: MB/s (10^6 bytes/s) and the Glance worker's CPU seconds per GiB, from
its /proc/<pid>/stat; at the end the worker's peak RSS (VmHWM) and the
master's RSS. Also the time to start Glance (config, db_sync, first 200)
and to restart it on the same database.
The table shows medians with the range of the rounds. Everything is stopped
by PID at the end; data lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("multistore_glance_harness",
                                               ROOT / "tests" / "backends" / "glance.py")
harness = importlib.util.module_from_spec(_spec)   # type: ignore[arg-type]
sys.modules[_spec.name] = harness                  # type: ignore[union-attr]
_spec.loader.exec_module(harness)                  # type: ignore[union-attr]

MiB = 1024 * 1024
GiB = 1024 * MiB
PORT = 17390


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])     # utime + stime
    return total / os.sysconf("SC_CLK_TCK")


def timed(server: Any, size: int, fn: Any) -> tuple[float, float]:
    """(MB/s, worker CPU s per GiB) of ``fn()``."""
    workers = server.worker_pids()
    cpu0, t0 = cpu_seconds(workers), time.perf_counter()
    fn()
    seconds, cpu = time.perf_counter() - t0, cpu_seconds(workers) - cpu0
    return size / seconds / 1e6, cpu * GiB / size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MiB
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-glance-") as tmp:
        source = Path(tmp) / "image.raw"
        md5 = hashlib.md5(usedforsecurity=False)
        with open(source, "wb") as f:
            for piece in harness.iter_bytes(size, seed=7):
                f.write(piece)
                md5.update(piece)
        server = harness.GlanceServer(Path(tmp) / "glance", PORT,
                                      {"a": ("file", {}), "b": ("file", {})})
        server.start()
        try:
            client = server.client()
            rss_idle = server.rss_kib()
            for _ in range(args.rounds):
                image = client.create_image(name="bench")["id"]
                other = client.create_image(name="bench-chunked")["id"]

                def upload(image: str = image) -> None:
                    with open(source, "rb") as f:
                        client.upload(image, f, size, store="a")

                def upload_chunked(other: str = other) -> None:
                    with open(source, "rb") as f:
                        client.upload(other, iter(lambda f=f: f.read(MiB), b""), store="a")

                def download(image: str = image) -> None:
                    got = client.download(image)
                    assert (got.status, got.md5) == (200, md5.hexdigest()), got

                def copy(image: str = image) -> None:
                    client.copy_image(image, stores=["b"])
                    client.wait_stores(image, ["a", "b"], timeout=600)

                for name, fn in (("upload (Content-Length)", upload),
                                 ("upload (chunked)", upload_chunked),
                                 ("download", download), ("copy-image to 1 store", copy)):
                    results.setdefault(name, []).append(timed(server, size, fn))
                client.delete(image)
                client.delete(other)
            rss = server.rss_kib()
            first_start = server.start_seconds
            server.restart()
        finally:
            server.stop()
    print(f"Glance {harness.GLANCE_VERSION}, glance_store's file driver, "
          f"{args.size_mib} MiB, {args.rounds} rounds, medians (min-max)\n")
    print("| step | MB/s | worker CPU s/GiB |\n|---|---|---|")
    for name, rows in results.items():
        speeds, cpus = [r[0] for r in rows], [r[1] for r in rows]
        print(f"| {name} | {statistics.median(speeds):.0f} ({min(speeds):.0f}-"
              f"{max(speeds):.0f}) | {statistics.median(cpus):.2f} |")
    print(f"\nstart (config + db_sync + first 200): {first_start:.1f} s, restart on the "
          f"same database: {server.start_seconds:.1f} s; "
          f"worker RSS idle {rss_idle['worker'] / 1024:.0f} MiB, peak "
          f"{rss['worker_peak'] / 1024:.0f} MiB; master RSS {rss['master'] / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
