"""Throughput of the http driver against a local nginx.

    python benchmarks/bench_http.py [--size-mib 1024] [--runs 3]

Starts nginx (tests/backends/nginx.py) on ports 18090-18092 in a temporary
directory, serves one image of ``--size-mib`` random MiB, and measures
(median of ``--runs``, MB/s):

- ``requests`` alone reading the body in 4 MiB blocks (the baseline);
- a whole-image ``get`` over http and https;
- 1 MiB ranged reads at random offsets (reads per second);
- ``get_size`` (HEAD) per second;
- ``copy`` from http into a file store (md5 + sha512 + write + fsync).

Figures on a shared 2-core machine are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

import multistore
from multistore.testing import make_conf

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]


def load_harness() -> object:
    spec = importlib.util.spec_from_file_location("bench_nginx",
                                                  ROOT / "tests" / "backends" / "nginx.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def median_rate(runs: int, amount: float, fn: Callable[[], object]) -> float:
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        rates.append(amount / (time.perf_counter() - started))
    return statistics.median(rates)


def drain(stores: multistore.StoreSet, url: str, **kwargs: object) -> int:
    total = 0
    with stores.get(url, **kwargs) as reader:   # type: ignore[arg-type]
        for chunk in reader:
            total += len(chunk)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MiB
    harness = load_harness()
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        nginx = harness.Nginx(Path(tmp) / "nginx", 18090, 18091, 18092)  # type: ignore[attr-defined]
        nginx.start()
        try:
            rng = random.Random(1)
            with open(nginx.docroot / "image", "wb") as f:
                for _ in range(args.size_mib):
                    f.write(rng.randbytes(MiB))
            conf = make_conf({
                "DEFAULT": {"enabled_backends": {"web": "http", "local": "file"}},
                "glance_store": {"default_backend": "local"},
                "web": {"https_ca_certificates_file": str(nginx.ca_file)},
                "local": {"filesystem_store_datadir": os.path.join(tmp, "local")},
            }, tmp)
            http_url = nginx.url("images/image")
            https_url = nginx.url("images/image", https=True)
            results: list[tuple[str, str]] = []
            mb = size / 1e6

            session = requests.Session()

            def baseline() -> None:
                with session.get(http_url, stream=True,
                                 headers={"Accept-Encoding": "identity"}) as response:
                    for _ in response.raw.stream(4 * MiB, decode_content=False):
                        pass

            results.append(("requests alone, http, 4 MiB blocks",
                            f"{median_rate(args.runs, mb, baseline):,.0f} MB/s"))
            with multistore.load(conf) as stores:
                for name, url in (("http", http_url), ("https", https_url)):
                    rate = median_rate(args.runs, mb, lambda u=url: drain(stores, u))
                    results.append((f"get, {name}", f"{rate:,.0f} MB/s"))
                offsets = [rng.randrange(0, size - MiB) for _ in range(200)]

                def ranged() -> None:
                    for offset in offsets:
                        drain(stores, http_url, offset=offset, length=MiB)

                rate = median_rate(args.runs, len(offsets), ranged)
                results.append(("1 MiB ranged reads, http", f"{rate:,.0f} reads/s"))
                rate = median_rate(args.runs, 500,
                                   lambda: [stores.get_size(http_url) for _ in range(500)])
                results.append(("get_size (HEAD), http", f"{rate:,.0f} calls/s"))
                counter = iter(range(1000))

                def copy() -> None:
                    result = stores.copy(http_url, to=["local"], image_id=f"c{next(counter)}")
                    stores.delete(result[0].location)

                rate = median_rate(args.runs, mb, copy)
                results.append(("copy http -> file (md5, sha512, fsync)", f"{rate:,.0f} MB/s"))
        finally:
            nginx.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"image {args.size_mib} MiB, median of {args.runs} runs")
    for name, value in results:
        print(f"  {name:42s} {value:>14s}")
    print(f"  {'peak RSS of this process':42s} {peak:>10,.0f} MiB")


if __name__ == "__main__":
    main()
