"""Add and get of one large image on one real Ceph cluster, three ways.

    .venv/bin/python benchmarks/bench_rbd.py [--size-mib 1024] [--rounds 3]

- **multistore**: ``StoreSet.add`` from an open file (md5 + sha512 computed
  on the way), ``StoreSet.get`` iterated to the end;
- **glance_store**: its rbd driver through its own multi-store API
  (``add_with_multihash`` / ``get``), installed from PyPI into
  ``.bench/venv-glance`` (created on first use, with Debian's rados/rbd
  linked in by ``scripts/deps/rbd.sh --link-python``);
- **rbd CLI**: ``rbd import`` / ``rbd export ... -`` to /dev/null, the limit
  (no hashing at all; the time includes the CLI's start and connection);
- **rbd driver alone**: multistore's rbd Writer/ReadStream driven directly
  from the file, without the core's md5/sha512: what the driver itself
  costs, against ``rbd import``.

``--variant LABEL=PYTHON`` (repeatable) adds the multistore and driver-alone
ways run by another interpreter, another checkout's venv (``multistore
[LABEL]``): a before/after comparison in one run, on one cluster.

Every measurement runs in a fresh process, so its peak RSS is its own;
rounds interleave the ways (in reverse order every other round), the table
shows medians. The cluster is
the test harness's (one mon, one memstore OSD, cephx, 127.0.0.1:16795-16796)
and is stopped by PID at the end. Needs root on a fresh machine (installs
Ceph through the harness).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GLANCE_VENV = ROOT / ".bench" / "venv-glance"     # .bench/ is git-ignored
MiB = 1024 * 1024
POOL, USER = "images", "glance"
DRIVER_ALONE = "rbd driver alone (no hashing)"
HASH_LIMIT = "hashing limit (md5 + sha512 in 2 threads; nothing written)"
WAYS = ("multistore", "glance_store", "rbd CLI", DRIVER_ALONE, HASH_LIMIT)


# -- workers (each runs in its own process) -----------------------------------

def _ini(conf_path: str, chunk_mib: int) -> str:
    return (f"[DEFAULT]\nenabled_backends = ceph:rbd\n"
            f"[glance_store]\ndefault_backend = ceph\n"
            f"[ceph]\nrbd_store_ceph_conf = {conf_path}\nrbd_store_user = {USER}\n"
            f"rbd_store_pool = {POOL}\nrbd_store_chunk_size = {chunk_mib}\n"
            f"rados_connect_timeout = 30\n")


def worker_multistore(args: argparse.Namespace) -> dict[str, Any]:
    import multistore
    from oslo_config import cfg

    conf_file = Path(args.tmp) / "multistore.conf"
    conf_file.write_text(_ini(args.ceph_conf, args.chunk_mib))
    conf = cfg.ConfigOpts()
    multistore.config.register_opts(conf)
    conf(["--config-file", str(conf_file)], project="multistore", default_config_files=[])
    with multistore.load(conf) as stores:
        driver = stores["ceph"].driver
        start, cpu_start = time.perf_counter(), time.process_time()
        if args.op == "add" and args.worker == "driver":
            # The driver alone, as the core drives it but without hashing.
            buf = memoryview(bytearray(driver.write_chunk_size))
            writer = driver.open_writer(args.image, args.size)
            with open(args.file, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    writer.write(buf[:n])
            location = writer.commit().location    # a str before the typed locations
            extra = {"location": location if isinstance(location, str) else location.format()}
        elif args.op == "add":
            with open(args.file, "rb") as f:
                result = stores.add(args.image, f, args.size)
            extra = {"location": result.location, "md5": result.checksum}
        elif args.worker == "driver":
            store = stores["ceph"]
            location = store.locate(args.location) if hasattr(store, "locate") else args.location
            stream = driver.open_reader(location, 0, None)
            n = sum(len(chunk) for chunk in stream)
            stream.close()
            assert n == args.size, n
            extra = {}
        else:
            loc = args.location
            n = 0
            with stores.get(loc) as reader:
                for chunk in reader:
                    n += len(chunk)
            assert n == args.size, n
            extra = {}
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu": time.process_time() - cpu_start, **extra}


def worker_glance(args: argparse.Namespace) -> dict[str, Any]:
    from glance_store import multi_backend
    from oslo_config import cfg

    conf_file = Path(args.tmp) / "glance.conf"
    conf_file.write_text(_ini(args.ceph_conf, args.chunk_mib))
    conf = cfg.CONF        # glance_store's multi-store API reads the global one
    conf.register_opt(cfg.DictOpt("enabled_backends"))   # glance registers it
    conf(args=[], default_config_files=[str(conf_file)])
    multi_backend.register_store_opts(conf)
    multi_backend.create_multi_stores(conf)
    multi_backend.verify_store()
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.op == "add":
        with open(args.file, "rb") as f:
            loc, size, md5, _, _ = multi_backend.add_with_multihash(
                conf, args.image, f, args.size, "ceph", "sha512")
        extra = {"location": loc, "md5": md5}
    else:
        data, size = multi_backend.get(args.location, "ceph")
        n = 0
        for chunk in data:
            n += len(chunk)
        assert n == args.size, n
        extra = {}
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu": time.process_time() - cpu_start, **extra}


def worker_hash_limit(args: argparse.Namespace) -> dict[str, Any]:
    from bench_file import hash_limit    # benchmarks/ is this script's directory

    cpu_start = time.process_time()
    seconds = hash_limit(args.file, args.size)
    return {"seconds": seconds, "cpu": time.process_time() - cpu_start}


def run_worker(args: argparse.Namespace) -> int:
    fn = {"multistore": worker_multistore, "driver": worker_multistore,
          "glance": worker_glance, "hashlimit": worker_hash_limit}[args.worker]
    out = fn(args)
    out["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))
    return 0


# -- the driver ---------------------------------------------------------------

def _spawn(cmd: list[str]) -> str:
    """Run ``cmd``; its stdout."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-3000:]}")
    return proc.stdout


def _python_worker(python: str, worker: str, op: str, common: list[str],
                   **extra: str) -> dict[str, Any]:
    cmd = [python, __file__, "--worker", worker, "--op", op, *common]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", v]
    out = _spawn(cmd)
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _run_child(cmd: list[str], env: dict[str, str], stdout: Any) -> dict[str, float]:
    """Run a command line tool; its wall seconds, CPU seconds and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime,
            "maxrss_mib": usage.ru_maxrss / 1024}


def _cluster_cpu(cluster: Any) -> float:
    """CPU seconds used so far by the cluster's daemons (mon and OSD)."""
    total = 0
    for daemon in cluster.DAEMONS:
        pid = cluster.pid(daemon)
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])      # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def ensure_glance_venv() -> str:
    python = GLANCE_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(GLANCE_VENV)], check=True)
    check = subprocess.run([str(python), "-c", "import glance_store"], capture_output=True)
    if check.returncode != 0:
        print("installing glance_store into " + str(GLANCE_VENV), file=sys.stderr)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "glance_store"],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"pip install glance_store failed: {done.stderr[-3000:]}")
    subprocess.run(["bash", str(ROOT / "scripts" / "deps" / "rbd.sh"), "--link-python",
                    str(python)], check=True)
    return str(python)


def load_harness() -> Any:
    path = ROOT / "tests" / "backends" / "rbd.py"
    spec = importlib.util.spec_from_file_location("multistore_ceph_harness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)     # type: ignore[union-attr]
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--chunk-mib", type=int, default=8)
    p.add_argument("--tmp")
    p.add_argument("--ways", default=",".join(WAYS),
                   help="comma-separated subset of: " + ", ".join(WAYS))
    p.add_argument("--variant", action="append", default=[], metavar="LABEL=PYTHON",
                   help="also run the multistore and driver-alone ways with this "
                        "interpreter (another checkout's venv), labelled LABEL")
    # worker mode
    p.add_argument("--worker", choices=["multistore", "driver", "glance", "hashlimit"])
    p.add_argument("--op", choices=["add", "get"])
    p.add_argument("--ceph-conf")
    p.add_argument("--file")
    p.add_argument("--image")
    p.add_argument("--location")
    p.add_argument("--size", type=int)
    args = p.parse_args(argv)
    unknown = set(args.ways.split(",")) - set(WAYS)
    if unknown:
        p.error(f"unknown --ways {', '.join(sorted(unknown))}; known: {', '.join(WAYS)}")
    if args.worker:
        return run_worker(args)

    harness = load_harness()
    ways = [way for way in WAYS if way in args.ways.split(",")]
    glance_python = ensure_glance_venv() if "glance_store" in ways else ""
    # way -> (interpreter, worker) for the ways run by a Python worker
    runners = {"multistore": (sys.executable, "multistore"),
               DRIVER_ALONE: (sys.executable, "driver"),
               "glance_store": (glance_python, "glance")}
    for variant in args.variant:
        label, sep, python = variant.partition("=")
        if not sep or not os.access(python, os.X_OK):
            p.error(f"--variant {variant!r}: expected LABEL=PYTHON (an executable)")
        for way, worker in (("multistore", "multistore"), (DRIVER_ALONE, "driver")):
            if way in ways:
                ways.append(f"{way} [{label}]")
                runners[f"{way} [{label}]"] = (python, worker)
    tmp = Path(tempfile.mkdtemp(prefix="multistore-bench-rbd-"))
    cluster = harness.CephCluster(tmp / "ceph", 16795, 16796, memstore_bytes=6 * 1024 * MiB)
    size = args.size_mib * MiB
    # results[way][op]: one dict per round (seconds, cpu, cluster_cpu, maxrss_mib)
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        way: {"add": [], "get": []} for way in ways}
    try:
        cluster.start()
        data = tmp / "image.raw"
        with open(data, "wb") as f:
            block = os.urandom(MiB)
            for i in range(args.size_mib):
                f.write(block[i % 251:] + block[:i % 251])
        subprocess.run(["cat", str(data)], stdout=subprocess.DEVNULL, check=True)  # page cache
        env = {**os.environ, "CEPH_CONF": cluster.conf_path}
        common = ["--ceph-conf", cluster.conf_path, "--tmp", str(tmp),
                  "--chunk-mib", str(args.chunk_mib), "--size", str(size)]

        def measure(way: str, op: str, run: Any, *a: Any, **kw: Any) -> dict[str, Any]:
            before = _cluster_cpu(cluster)
            sample: dict[str, Any] = run(*a, **kw)
            sample["cluster_cpu"] = _cluster_cpu(cluster) - before
            results[way][op].append(sample)
            print(f"  {way} {op}: {size / 1e6 / sample['seconds']:.0f} MB/s, CPU "
                  f"{sample['cpu']:.1f} + {sample['cluster_cpu']:.1f} s, peak RSS "
                  f"{sample['maxrss_mib']:.0f} MiB", file=sys.stderr)
            return sample

        for rnd in range(args.rounds):
            for way in list(results)[::-1 if rnd % 2 else 1]:
                image = f"bench-{uuid.uuid4()}"
                if way == "rbd CLI":
                    measure(way, "add", _run_child,
                            ["rbd", "--id", USER, "-p", POOL, "import", "--no-progress",
                         "--order", str(20 + args.chunk_mib.bit_length() - 1),
                             str(data), image], env, subprocess.DEVNULL)
                    with open(os.devnull, "wb") as devnull:
                        measure(way, "get", _run_child,
                                ["rbd", "--id", USER, "-p", POOL, "export", "--no-progress",
                                 image, "-"], env, devnull)
                    cluster.rbd("rm", "--no-progress", image)
                    continue
                if way == HASH_LIMIT:
                    measure(way, "add", _python_worker, sys.executable, "hashlimit", "add",
                            common, file=str(data))
                    continue
                python, worker = runners[way]
                added = measure(way, "add", _python_worker, python, worker, "add", common,
                                file=str(data), image=image)
                measure(way, "get", _python_worker, python, worker, "get", common,
                        location=added["location"])
                cluster.rbd("snap", "unprotect", f"{image}@snap")
                cluster.rbd("snap", "purge", "--no-progress", image)
                cluster.rbd("rm", "--no-progress", image)
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, args, size)
    return 0


def report(results: dict[str, dict[str, list[dict[str, float]]]],
           args: argparse.Namespace, size: int) -> None:
    gib = size / (1024 * MiB)

    def median(way: str, op: str, key: str) -> float:
        return statistics.median(s[key] for s in results[way][op])

    def mbps(way: str, op: str) -> float:
        return size / 1e6 / median(way, op, "seconds")

    def cpu_per_gib(way: str, op: str) -> float:
        return (median(way, op, "cpu") + median(way, op, "cluster_cpu")) / gib

    def cells(way: str, op: str) -> tuple[str, str, str]:
        if not results[way][op]:
            return "-", "-", "-"
        return (f"{mbps(way, op):.0f}",
                f"{median(way, op, 'cpu') / gib:.1f} + "
                f"{median(way, op, 'cluster_cpu') / gib:.1f}",
                f"{max(s['maxrss_mib'] for s in results[way][op]):.0f}")

    print(f"\n{args.size_mib} MiB image, rbd_store_chunk_size {args.chunk_mib} MiB, "
          f"memstore OSD, medians of {args.rounds} rounds (MB/s = 10^6 bytes/s; CPU = "
          f"CPU seconds per GiB, client + Ceph daemons)\n")
    print("| way | add MB/s | get MB/s | add CPU s/GiB | get CPU s/GiB "
          "| peak RSS add (MiB) | peak RSS get (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for way in results:
        (am, ac, ar), (gm, gc, gr) = cells(way, "add"), cells(way, "get")
        print(f"| {way} | {am} | {gm} | {ac} | {gc} | {ar} | {gr} |")
    if not all(way in results for way in WAYS):
        return          # the ratios below need every way
    m, g, c, d, h = WAYS
    print(f"\nadd: multistore / glance_store = {mbps(m, 'add') / mbps(g, 'add'):.2f}x "
          f"(target >= 1.5x); multistore / rbd import = "
          f"{mbps(m, 'add') / mbps(c, 'add'):.0%} (target >= 80%)")
    print(f"add, driver alone (no md5/sha512) / rbd import = "
          f"{mbps(d, 'add') / mbps(c, 'add'):.0%}")
    # What the cores allow: any add that hashes spends the hashing's CPU plus
    # what moving the bytes costs the client and the cluster (the cheaper of
    # rbd import and the bare driver); their sum per GiB bounds its speed.
    cores = os.cpu_count() or 1
    moving = min(cpu_per_gib(c, "add"), cpu_per_gib(d, "add"))
    need = cpu_per_gib(h, "add") + moving
    bound = cores * 1024 * MiB / 1e6 / need
    print(f"add, CPU bound on {cores} cores: hashing {cpu_per_gib(h, 'add'):.1f} + moving the "
          f"bytes (client and Ceph) {moving:.1f} CPU s/GiB -> at most {bound:.0f} MB/s = "
          f"{bound / mbps(c, 'add'):.0%} of rbd import; multistore reached "
          f"{mbps(m, 'add') / bound:.0%} of that bound")
    print(f"get: multistore / glance_store = {mbps(m, 'get') / mbps(g, 'get'):.2f}x; "
          f"multistore / rbd export = {mbps(m, 'get') / mbps(c, 'get'):.0%} (target >= 100%)")


if __name__ == "__main__":
    sys.exit(main())
