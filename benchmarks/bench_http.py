"""Throughput of the http driver against a local nginx.

    python benchmarks/bench_http.py [--size-mib 1024] [--runs 3] [--variant NAME=DIR ...]

Starts nginx (tests/backends/nginx.py) on ports 18090-18092 in a temporary
directory, serves one image of ``--size-mib`` random MiB, and measures
(median of ``--runs``, MB/s):

- ``requests`` alone reading the body in 4 MiB blocks (the baseline);
- a whole-image ``get`` over http and https;
- 1 MiB ranged reads at random offsets (reads per second);
- ``get_size`` (HEAD) per second;
- ``copy`` from http into a file store (md5 + sha512 + write + fsync);

and for each, the CPU this process spent (every thread), per GiB or per
call: on a busy machine it moves less than the rates.

With ``--variant NAME=DIR`` (repeatable), every run of every measurement is
a fresh process, once with this checkout and once per variant with ``DIR``
first on ``PYTHONPATH`` (another checkout, say ``git worktree add
/tmp/base main``), interleaved (the order reversed every other run); the
table gives the median (min-max) of each, and each process's peak RSS.

Figures on a shared 2-core machine are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]
PORTS = (18090, 18091, 18092)


def load_harness() -> Any:
    spec = importlib.util.spec_from_file_location("bench_nginx",
                                                  ROOT / "tests" / "backends" / "nginx.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def median_rate(runs: int, amount: float, fn: Callable[[], object]) -> tuple[float, float]:
    """The median rate (``amount`` per second) of ``runs`` calls, and the
    median CPU seconds (this process, every thread) per ``amount``: on a
    busy machine the CPU a call costs moves less than its rate."""
    rates, cpu = [], []
    for _ in range(runs):
        started, cpu0 = time.perf_counter(), time.process_time()
        fn()
        rates.append(amount / (time.perf_counter() - started))
        cpu.append((time.process_time() - cpu0) / amount)
    return statistics.median(rates), statistics.median(cpu)


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def drain(stores: Any, url: str, **kwargs: object) -> int:
    total = 0
    with stores.get(url, **kwargs) as reader:
        for chunk in reader:
            total += len(chunk)
    return total


def measure(nginx: Any, tmp: str, size_mib: int, runs: int) -> list[tuple[str, float, str]]:
    """Every measurement, as (name, median, unit); imports multistore here, so
    that a variant's process imports its own."""
    import multistore
    from multistore.testing import make_conf

    size = size_mib * MiB
    rng = random.Random(1)
    conf = make_conf({
        "DEFAULT": {"enabled_backends": {"web": "http", "local": "file"}},
        "glance_store": {"default_backend": "local"},
        "web": {"https_ca_certificates_file": str(nginx.ca_file)},
        "local": {"filesystem_store_datadir": os.path.join(tmp, "local")},
    }, tempfile.mkdtemp(prefix="conf-", dir=tmp))
    http_url = nginx.url("images/image")
    https_url = nginx.url("images/image", https=True)
    results: list[tuple[str, float, str]] = []
    mb = size / 1e6

    def add(name: str, amount: float, unit: str, fn: Callable[[], object]) -> None:
        rate, cpu = median_rate(runs, amount, fn)
        results.append((name, rate, unit))
        if unit == "MB/s":
            results.append((f"{name}, client CPU", cpu * 1e3 * 1.073741824, "CPU s/GiB"))
        else:
            results.append((f"{name}, client CPU", cpu * 1e6, "CPU µs/call"))

    session = requests.Session()

    def baseline() -> None:
        with session.get(http_url, stream=True,
                         headers={"Accept-Encoding": "identity"}) as response:
            for _ in response.raw.stream(4 * MiB, decode_content=False):
                pass

    add("requests alone, http, 4 MiB blocks", mb, "MB/s", baseline)
    with multistore.load(conf) as stores:
        for name, url in (("http", http_url), ("https", https_url)):
            add(f"get, {name}", mb, "MB/s", lambda u=url: drain(stores, u))
        offsets = [rng.randrange(0, size - MiB) for _ in range(200)]

        def ranged() -> None:
            for offset in offsets:
                drain(stores, http_url, offset=offset, length=MiB)

        add("1 MiB ranged reads, http", len(offsets), "reads/s", ranged)
        add("get_size (HEAD), http", 500, "calls/s",
            lambda: [stores.get_size(http_url) for _ in range(500)])
        counter = iter(range(1000))

        def copy() -> None:
            result = stores.copy(http_url, to=["local"], image_id=f"c{next(counter)}")
            stores.delete(result[0].location)

        add("copy http -> file (md5, sha512, fsync)", mb, "MB/s", copy)
    results.append(("peak RSS of the process",
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MiB"))
    return results


def run_variants(args: argparse.Namespace, tmp: str) -> None:
    """Each run of every variant in a process of its own, interleaved."""
    variants = {"this checkout": str(ROOT)}
    for spec in args.variant:
        name, _, path = spec.partition("=")
        variants[name] = os.path.abspath(path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found: dict[str, dict[str, list[float]]] = {name: {} for name in variants}
    units: dict[str, str] = {}
    for run in range(args.runs):
        order = list(variants.items())
        for name, path in order if run % 2 == 0 else order[::-1]:
            done = subprocess.run(
                [sys.executable, __file__, "--size-mib", str(args.size_mib), "--child", tmp],
                env={**env, "PYTHONPATH": path}, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{name} failed:\n{done.stdout}{done.stderr}")
            for row, value, unit in json.loads(done.stdout.splitlines()[-1]):
                found[name].setdefault(row, []).append(value)
                units[row] = unit
            print(f"run {run + 1}: {name} done", flush=True)
    print(f"\nimage {args.size_mib} MiB, {args.runs} runs of each, interleaved, each in a "
          "fresh process: median (min-max)\n")
    print("| measurement | " + " | ".join(f"{n} ({variants[n]})" for n in variants) + " |")
    print("|---|" + "---|" * len(variants))
    for row, unit in units.items():
        cells = [found[n][row] for n in variants]
        print(f"| {row} ({unit}) | " + " | ".join(
            f"{fmt(statistics.median(c))} ({fmt(min(c))}-{fmt(max(c))})" for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=DIR: also measure the checkout in DIR, interleaved")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    harness = load_harness()
    if args.child:   # nginx is running, the image is there: one run of everything
        nginx = harness.Nginx(Path(args.child) / "nginx", *PORTS)
        with tempfile.TemporaryDirectory(dir=args.child) as tmp:
            print(json.dumps(measure(nginx, tmp, args.size_mib, 1)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        nginx = harness.Nginx(Path(tmp) / "nginx", *PORTS)
        nginx.start()
        try:
            rng = random.Random(1)
            with open(nginx.docroot / "image", "wb") as f:
                for _ in range(args.size_mib):
                    f.write(rng.randbytes(MiB))
            if args.variant:
                run_variants(args, tmp)
                return
            results = measure(nginx, tmp, args.size_mib, args.runs)
        finally:
            nginx.stop()
    print(f"image {args.size_mib} MiB, median of {args.runs} runs")
    for name, value, unit in results:
        print(f"  {name:50s} {f'{fmt(value)} {unit}':>18s}")


if __name__ == "__main__":
    main()
