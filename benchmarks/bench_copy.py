#!/usr/bin/env python3
"""Copy offload against streamed copy, and what a reader loses when a copy dies.

::

    python benchmarks/bench_copy.py --size-mib 1024 --rounds 3

Rows (each in a fresh subprocess, rounds interleaved, medians):

* ``copy/offload`` — ``stores.copy(loc, ["b"])`` between two file stores on
  one filesystem: ``copy_file_range`` in the kernel, then the copy read back
  once to hash and check it (what the core always does).
* ``copy/streamed`` — the same copy with ``offload=False``: read, hash, write.
* ``failover`` — ``open_best`` over two copies where the preferred copy's
  reads break half way (a memory store whose reads raise a connection reset
  at 50 %): the time a whole read takes, against a read of the healthy copy
  alone; the difference is what the switch costs.

With ``--rbd``, two more rows on a real Ceph cluster (the test harness's:
one mon, one memstore OSD, 127.0.0.1:16793-16794, stopped by PID at the end;
needs root on a fresh machine), between two rbd stores on two pools of it:

* ``rbd/offload`` — ``copy(..., offload=True)``: librbd's ``Image.copy`` into
  the other pool, then the copy read back once to hash and check it;
* ``rbd/streamed`` — the same copy streamed: read, hash, write.

With ``--swift``, three rows on a real Swift all-in-one (the test harness's,
ports 16880-16883, two workers per storage server, stopped by PID at the
end), between two swift stores of one account (two containers; 200 MB
segments, as glance_store cuts them):

* ``swift/offload`` — ``copy(..., offload=True, verify="backend")`` with the
  image's recorded md5 and sha512: every segment copied by the Swift proxy
  (``X-Copy-From``), the ETags Swift computed taken as the check, nothing
  read back;
* ``swift/offload+read-back`` — the same copy checked the default way: read
  back once and hashed;
* ``swift/streamed`` — the copy streamed: read, hash, write.

MB/s, client CPU seconds per GiB (user + system of the worker, librbd's
threads included), the servers' CPU seconds per GiB for the swift rows
(every process of the Swift servers' process groups) and peak RSS
(``VmHWM``). Stdlib only in the driver; workers run in the project's venv.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MiB = 1024 * 1024
ROWS = ["copy/offload", "copy/streamed", "failover/healthy", "failover/switch"]
RBD_ROWS = ["rbd/offload", "rbd/streamed"]
RBD_POOL2 = "images2"
SWIFT_ROWS = ["swift/offload", "swift/offload+read-back", "swift/streamed"]
SWIFT_PORT = 16880


def load_harness(name: str) -> Any:
    """The test harness module ``tests/backends/<name>.py``."""
    import importlib.util
    path = os.path.join(ROOT, "tests", "backends", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"multistore_{name}_harness", path)
    assert spec is not None and spec.loader is not None
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    return harness


def swift_worker(spec: dict) -> dict:
    """A copy between two swift stores of one account (two containers)."""
    import multistore
    from multistore.sample import Generated
    from multistore.testing import make_conf

    sys.path.insert(0, HERE)
    from bench_swift import group_cpu

    size, tmp, row = spec["size"], spec["tmp"], spec["row"]
    common = {"swift_store_config_file": spec["refs"], "default_swift_reference": "ref1",
              "swift_store_create_container_on_put": True,
              "swift_store_large_object_size": 100, "swift_store_large_object_chunk_size": 200}
    sections: dict[str, Any] = {
        "DEFAULT": {"enabled_backends": {"a": "swift", "b": "swift"}},
        "glance_store": {"default_backend": "a"},
        "a": {**common, "swift_store_container": "bench_src"},
        "b": {**common, "swift_store_container": "bench_dst"}}
    servers = set(spec["servers"])
    with multistore.load(make_conf(sections, tmp)) as stores:
        src = stores.add("img", Generated(size, seed=1), size, store="a")
        s0, t0, c0 = group_cpu(servers), time.monotonic(), os.times()
        if row == "swift/streamed":
            copied, = stores.copy(src.location, ["b"])
        else:
            copied, = stores.copy(src.location, ["b"], offload=True,
                                  verify="backend" if row == "swift/offload" else "read-back",
                                  checksum=src.checksum, multihash=src.multihash)
        seconds, c1, s1 = time.monotonic() - t0, os.times(), group_cpu(servers)
        assert (copied.checksum, copied.multihash) == (src.checksum, src.multihash)
        for location in (copied.location, src.location):
            stores.delete(location)
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return {"seconds": seconds, "cpu": cpu, "server_cpu": s1 - s0,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def start_swift() -> tuple[Any, str]:
    """The test harness's Swift (two workers per storage server) and a
    references file for its test:tester account; (server, its directory)."""
    import tempfile
    harness = load_harness("swift")
    tmp = tempfile.mkdtemp(prefix="multistore-bench-copy-swift-")
    server = harness.SwiftAIO(os.path.join(tmp, "swift"), SWIFT_PORT, workers=2)
    try:
        server.start()
    except BaseException:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with open(os.path.join(tmp, "refs.conf"), "w") as f:
        f.write(f"[ref1]\nauth_address = {server.auth_url}\nuser = test:tester\n"
                f"key = {server.users['test:tester']}\nauth_version = 1\n")
    return server, tmp


def rbd_worker(spec: dict) -> dict:
    """A copy between two rbd stores on two pools of one cluster."""
    import multistore
    from multistore.sample import Generated
    from multistore.testing import make_conf

    size, tmp = spec["size"], spec["tmp"]
    common = {"rbd_store_ceph_conf": spec["ceph_conf"], "rbd_store_user": spec["user"],
              "rbd_store_chunk_size": 8, "rados_connect_timeout": 60}
    sections: dict[str, Any] = {"DEFAULT": {"enabled_backends": {"a": "rbd", "b": "rbd"}},
                                "glance_store": {"default_backend": "a"},
                                "a": {**common, "rbd_store_pool": spec["pool"]},
                                "b": {**common, "rbd_store_pool": RBD_POOL2}}
    with multistore.load(make_conf(sections, tmp)) as stores:
        source = stores.add("img", Generated(size, seed=1), size, store="a").location
        t0, c0 = time.monotonic(), os.times()
        copied, = stores.copy(source, ["b"], offload=spec["row"] == "rbd/offload")
        seconds, c1 = time.monotonic() - t0, os.times()
        for location in (copied.location, source):
            stores.delete(location)
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return {"seconds": seconds, "cpu": cpu,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def start_ceph() -> tuple[Any, str]:
    """The test harness's cluster with a second pool; (cluster, its directory)."""
    import tempfile
    harness = load_harness("rbd")
    tmp = tempfile.mkdtemp(prefix="multistore-bench-copy-")
    cluster = harness.CephCluster(os.path.join(tmp, "ceph"), 16793, 16794,
                                  memstore_bytes=6 * 1024 * MiB)
    try:
        cluster.start()
        cluster.add_pool(RBD_POOL2)
    except BaseException:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cluster, tmp


def worker(spec: dict) -> dict:
    import multistore
    from multistore.drivers.memory import MemoryDriver
    from multistore.sample import Generated
    from multistore.testing import local_layout, make_conf

    row, size, tmp = spec["row"], spec["size"], spec["tmp"]
    if row.startswith("rbd/"):
        return rbd_worker(spec)
    if row.startswith("swift/"):
        return swift_worker(spec)

    class Dying(MemoryDriver):
        def open_reader(self, location, offset, length, context=None):
            inner = super().open_reader(location, offset, length, context)
            if self.store_id != "fragile":
                return inner
            half = size // 2

            def chunks():
                sent = 0
                for chunk in inner:
                    if sent + len(chunk) > half:
                        raise ConnectionResetError("the server went away")
                    sent += len(chunk)
                    yield chunk
            return multistore.ReadStream(chunks(), inner.size)

    sections = local_layout(tmp, file_stores=("a", "b"), memory_stores=("fragile",))
    sections["fragile"]["weight"] = 10
    with multistore.load(make_conf(sections, tmp), drivers={"memory": Dying}) as stores:
        data = Generated(size, seed=1)
        if row.startswith("copy"):
            source = stores.add("img", data, size, store="a").location
        else:
            stores.add("img", data, size, store="fragile")
            copy = stores.add("img", data, size, store="a").location
            locations = [copy] if row == "failover/healthy" else \
                [copy, "memory://fragile/img"]
        t0, c0 = time.monotonic(), os.times()
        if row == "copy/offload":
            stores.copy(source, ["b"], offload=True)
        elif row == "copy/streamed":
            stores.copy(source, ["b"])
        else:
            with stores.open_best(locations) as reader:
                for _ in reader:
                    pass
        seconds, c1 = time.monotonic() - t0, os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return {"seconds": seconds, "cpu": cpu,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    p.add_argument("--rbd", action="store_true",
                   help="also the rbd rows, on a Ceph cluster started for the run")
    p.add_argument("--only-rbd", action="store_true", help="only the rbd rows")
    p.add_argument("--swift", action="store_true",
                   help="also the swift rows, on a Swift all-in-one started for the run")
    p.add_argument("--only-swift", action="store_true", help="only the swift rows")
    p.add_argument("--worker")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    size = args.size_mib * MiB
    only = args.only_rbd or args.only_swift
    rows = ([] if only else ROWS) + \
        (RBD_ROWS if args.rbd or args.only_rbd else []) + \
        (SWIFT_ROWS if args.swift or args.only_swift else [])
    results: dict[str, list[dict]] = {row: [] for row in rows}
    cluster, ceph_tmp = start_ceph() if set(rows) & set(RBD_ROWS) else (None, "")
    swift, swift_tmp = start_swift() if set(rows) & set(SWIFT_ROWS) else (None, "")
    try:
        for round_ in range(args.rounds):
            for row in (rows if round_ % 2 == 0 else rows[::-1]):
                tmp = os.path.join(HERE, ".tmp", "copy")
                shutil.rmtree(tmp, ignore_errors=True)
                os.makedirs(tmp)
                spec = {"row": row, "size": size, "tmp": tmp}
                if cluster is not None:
                    spec.update(ceph_conf=cluster.conf_path, user=cluster.user,
                                pool=cluster.pool)
                if swift is not None:
                    spec.update(refs=os.path.join(swift_tmp, "refs.conf"),
                                servers=sorted(swift.pids.values()))
                out = subprocess.run([args.python, __file__, "--worker", json.dumps(spec)],
                                     check=True, capture_output=True, text=True).stdout
                results[row].append(json.loads(out.splitlines()[-1]))
                shutil.rmtree(tmp, ignore_errors=True)
                subprocess.run(["sync"], check=False)
    finally:
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(ceph_tmp, ignore_errors=True)
        if swift is not None:
            swift.stop()
            shutil.rmtree(swift_tmp, ignore_errors=True)
    gib = size / (1024 * MiB)
    print(f"| row ({args.size_mib} MiB, {args.rounds} rounds, medians) | MB/s | "
          f"client CPU s/GiB | server CPU s/GiB | peak RSS MiB |")
    print("|---|---|---|---|---|")
    med = {}
    for row, runs in results.items():
        med[row] = statistics.median(r["seconds"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs) / gib
        server = f"{statistics.median(r['server_cpu'] for r in runs) / gib:.2f}" \
            if "server_cpu" in runs[0] else "-"
        rss = max(r["rss_mib"] for r in runs)
        print(f"| {row} | {size / med[row] / 1e6:,.0f} | {cpu:.2f} | {server} | {rss:.0f} |")
    if "copy/offload" in med:
        print(f"\noffload / streamed: {med['copy/streamed'] / med['copy/offload']:.2f}x; "
              f"a switch at 50 % cost "
              f"{med['failover/switch'] - med['failover/healthy']:+.3f} s "
              "against reading the healthy copy alone")
    if "rbd/offload" in med:
        print(f"rbd, two pools of one cluster: offload / streamed "
              f"{med['rbd/streamed'] / med['rbd/offload']:.2f}x")
    if "swift/offload" in med:
        print(f"swift, two containers of one account: offload / streamed "
              f"{med['swift/streamed'] / med['swift/offload']:.2f}x (checked by the "
              f"backend), {med['swift/streamed'] / med['swift/offload+read-back']:.2f}x "
              "(read back)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
