"""Add and get on one real Sheepdog cluster, side by side, at several image sizes.

    .venv/bin/python benchmarks/bench_sheepdog.py [--sizes-mib 256,1024] [--rounds 3]

Ways (``--ways`` picks some):

- **multistore**: ``StoreSet.add`` from an open file (md5 + sha512 computed
  on the way), ``StoreSet.get`` iterated to the end and discarded;
- **glance_store way**: what glance_store's last sheepdog driver (1.0.x) did,
  replayed: ``dog vdi list -r`` (exists?), ``dog vdi create`` at the size,
  then per 64 MiB chunk read from the file: md5 and sha512 updated in the
  same thread, one ``dog vdi write NAME OFFSET LEN`` fed the chunk on stdin;
  get: ``dog vdi list -r`` twice (exists, size), then one ``dog vdi read NAME
  OFFSET LEN`` per 64 MiB chunk. (Its code cannot be installed any more: it
  left glance_store in 1.1.0 and needs Python 2-era dependencies.)
- **dog whole**: ``dog vdi create`` + one ``dog vdi write`` of the whole image
  from the file on stdin; ``dog vdi read`` of the whole image to /dev/null. No
  hashing: the limit of the CLI way.
- **driver alone**: multistore's sheepdog Writer and ReadStream driven
  directly, without the core's md5/sha512: what moving the bytes costs.
- **hashing limit**: md5 and sha512 in two threads over buffers in memory,
  nothing written: the best any add that hashes can do on this machine.

Times and CPU of the Python ways cover the operation, not the interpreter's
start; those of ``dog whole`` cover the dog process (its start is the way's).

Every measurement runs in a fresh process (its peak RSS is its own, dog
children included); rounds alternate the ways. Each round, every way adds its
own image, then every way reads one of them ``--gets`` times, the ways
interleaved, so that the gets compare the same bytes at the same moments. The
tables show medians. CPU is
client (the measured process and its children) + sheep, per GiB. The cluster
is the test harness's (one sheep, objects on disk, synchronous writes as sheep
does by default), on a free port in 17030-17099, stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import hashlib
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
MiB = 1024 * 1024
CHUNK = 64 * MiB                # glance_store's sheepdog_store_chunk_size default
MULTISTORE, GLANCE, DOG, DRIVER, HASH = ("multistore", "glance_store way", "dog whole",
                                         "driver alone", "hashing limit")
WAYS = (MULTISTORE, GLANCE, DOG, DRIVER, HASH)


# -- workers (each in its own process) --------------------------------------------------

def _stores(args: argparse.Namespace) -> Any:
    import multistore
    from oslo_config import cfg

    conf_file = Path(args.tmp) / "multistore.conf"
    conf_file.write_text(f"[DEFAULT]\nenabled_backends = sd:sheepdog\n"
                         f"[glance_store]\ndefault_backend = sd\n"
                         f"[sd]\nsheepdog_store_address = 127.0.0.1\n"
                         f"sheepdog_store_port = {args.port}\n"
                         f"sheepdog_store_chunk_size = {args.chunk_mib}\n")
    conf = cfg.ConfigOpts()
    multistore.register_opts(conf)
    conf(["--config-file", str(conf_file)], project="multistore", default_config_files=[])
    return multistore.load(conf)


def _cpu() -> float:
    """CPU seconds of this process (every thread) and of its waited-for children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def worker_multistore(args: argparse.Namespace) -> dict[str, Any]:
    with _stores(args) as stores:
        driver = stores["sd"].driver
        start, cpu = time.perf_counter(), _cpu()
        if args.op == "add" and args.worker == "driver":
            buf = memoryview(bytearray(driver.write_chunk_size))
            writer = driver.open_writer(args.image, args.size)
            with open(args.file, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    writer.write(buf[:n])
            writer.commit()
        elif args.op == "add":
            with open(args.file, "rb") as f:
                result = stores.add(args.image, f, args.size)
            assert result.size == args.size
        else:
            location = f"sheepdog://127.0.0.1:{args.port}:{args.image}"
            if args.worker == "driver":
                stream = driver.open_reader(driver.parse_location(location), 0, None)
                n = sum(len(chunk) for chunk in stream)
                stream.close()
            else:
                with stores.get(location) as reader:
                    n = sum(len(chunk) for chunk in reader)
            assert n == args.size, n
        return {"seconds": time.perf_counter() - start, "cpu": _cpu() - cpu}


def _dog(args: argparse.Namespace, *argv: str, data: bytes | None = None) -> bytes:
    """One dog process, as glance_store's processutils.execute ran it."""
    done = subprocess.run([args.dog, "vdi", argv[0], "-a", "127.0.0.1", "-p", str(args.port),
                           *argv[1:]], input=data, capture_output=True, check=False)
    if done.returncode:
        raise RuntimeError(f"dog vdi {' '.join(argv)}: {done.stderr.decode()}")
    return done.stdout


def worker_glance(args: argparse.Namespace) -> dict[str, Any]:
    start, cpu = time.perf_counter(), _cpu()
    name = args.image
    if args.op == "add":
        if _dog(args, "list", "-r", name):
            raise RuntimeError("exists")
        _dog(args, "create", name, str(args.size))
        md5, sha512 = hashlib.md5(), hashlib.sha512()
        offset = 0
        with open(args.file, "rb") as f:
            while chunk := f.read(CHUNK):
                md5.update(chunk)
                sha512.update(chunk)
                _dog(args, "write", name, str(offset), str(len(chunk)), data=chunk)
                offset += len(chunk)
        assert offset == args.size
    else:
        for _ in range(3):                  # exist(), get_size() in get and in the iterator
            size = int(_dog(args, "list", "-r", name).split(b" ")[3])
        left, n = size, 0
        while left > 0:
            chunk = _dog(args, "read", name, str(size - left), str(min(CHUNK, left)))
            left -= len(chunk)
            n += len(chunk)
        assert n == args.size
    return {"seconds": time.perf_counter() - start, "cpu": _cpu() - cpu}


def worker_hash_limit(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_file import hash_limit

    cpu = _cpu()
    return {"seconds": hash_limit(args.file, args.size), "cpu": _cpu() - cpu}


def run_worker(args: argparse.Namespace) -> int:
    fn = {"multistore": worker_multistore, "driver": worker_multistore,
          "glance": worker_glance, "hashlimit": worker_hash_limit}[args.worker]
    out = fn(args)
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["maxrss_mib"] = max(me.ru_maxrss, kids.ru_maxrss) / 1024
    print("RESULT " + json.dumps(out))
    return 0


# -- the driver ------------------------------------------------------------------------

def _python_worker(worker: str, op: str, common: list[str], **extra: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", worker, "--op", op, *common]
    for k, v in extra.items():
        cmd += [f"--{k}", v]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    sample: dict[str, Any] = json.loads(line[len("RESULT "):])
    return sample           # time and CPU of the operation, not of Python's start


def _run_dog(cmd: list[str], stdin: Any, stdout: Any) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0 or err:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime,
            "maxrss_mib": usage.ru_maxrss / 1024}


def _sheep_cpu(cluster: Any) -> float:
    total = 0
    for pid in cluster.processes():
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def load_harness() -> Any:
    path = ROOT / "tests" / "backends" / "sheepdog.py"
    spec = importlib.util.spec_from_file_location("multistore_sheepdog_harness", path)
    module = importlib.util.module_from_spec(spec)    # type: ignore[arg-type]
    spec.loader.exec_module(module)                   # type: ignore[union-attr]
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes-mib", default="256,1024")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ways", default=",".join(WAYS),
                   help="comma-separated subset of: " + ", ".join(WAYS))
    p.add_argument("--nosync", action="store_true", help="run sheep with -n (no O_SYNC)")
    p.add_argument("--gets", type=int, default=3,
                   help="reads of each image per round (gets vary more than adds)")
    p.add_argument("--chunk-mib", type=int, default=64,
                   help="sheepdog_store_chunk_size of the multistore ways (MiB in flight)")
    # worker mode
    p.add_argument("--worker", choices=["multistore", "driver", "glance", "hashlimit"])
    p.add_argument("--op", choices=["add", "get"])
    p.add_argument("--port", type=int)
    p.add_argument("--dog")
    p.add_argument("--tmp")
    p.add_argument("--file")
    p.add_argument("--image")
    p.add_argument("--size", type=int)
    args = p.parse_args(argv)
    ways = [w for w in WAYS if w in args.ways.split(",")]
    unknown = set(args.ways.split(",")) - set(WAYS)
    if unknown:
        p.error(f"unknown --ways {', '.join(sorted(unknown))}; known: {', '.join(WAYS)}")
    if args.worker:
        return run_worker(args)

    harness = load_harness()
    tmp = Path(tempfile.mkdtemp(prefix="multistore-bench-sheepdog-"))
    port = harness.free_port(range(17030, 17100))
    cluster = harness.SheepdogCluster(tmp / "cluster", port, nosync=args.nosync)
    dog = str(cluster.bin_dir / "dog")
    sizes = [int(s) for s in args.sizes_mib.split(",")]
    # results[size][way][op]: one sample per round (seconds, cpu, sheep_cpu, maxrss_mib)
    results: dict[int, dict[str, dict[str, Samples]]] = {
        s: {w: {"add": [], "get": []} for w in ways} for s in sizes}
    try:
        cluster.start()
        files = {}
        for size_mib in sizes:
            files[size_mib] = tmp / f"image-{size_mib}.raw"
            with open(files[size_mib], "wb") as f:
                block = os.urandom(MiB)
                for i in range(size_mib):
                    f.write(block[i % 251:] + block[:i % 251])

        def measure(size_mib: int, way: str, op: str, run: Any, *a: Any,
                    **kw: Any) -> None:
            before = _sheep_cpu(cluster)
            sample = run(*a, **kw)
            sample["sheep_cpu"] = _sheep_cpu(cluster) - before
            results[size_mib][way][op].append(sample)

        for rnd in range(args.rounds):
            order = ways if rnd % 2 == 0 else ways[::-1]
            for size_mib in sizes:
                size, path = size_mib * MiB, files[size_mib]
                subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
                common = ["--port", str(port), "--dog", dog, "--tmp", str(tmp),
                          "--size", str(size), "--chunk-mib", str(args.chunk_mib)]
                workers = {MULTISTORE: "multistore", DRIVER: "driver", GLANCE: "glance"}
                images = []
                for way in order:                   # the adds
                    image = f"bench-{uuid.uuid4()}"
                    if way == HASH:
                        measure(size_mib, way, "add", _python_worker, "hashlimit", "add",
                                common, file=str(path))
                        continue
                    images.append(image)
                    if way == DOG:
                        cluster.dog("vdi", "create", image, str(size))
                        with open(path, "rb") as src:
                            measure(size_mib, way, "add", _run_dog,
                                    [dog, "vdi", "write", "-p", str(port), image], src,
                                    subprocess.DEVNULL)
                    else:
                        measure(size_mib, way, "add", _python_worker, workers[way], "add",
                                common, file=str(path), image=image)
                # The gets: every way reads the same image, the ways interleaved.
                shared = images[-1]
                for g in range(args.gets):
                    for way in (order if g % 2 == 0 else order[::-1]):
                        if way == DOG:
                            with open(os.devnull, "wb") as sink:
                                measure(size_mib, way, "get", _run_dog,
                                        [dog, "vdi", "read", "-p", str(port), shared],
                                        subprocess.DEVNULL, sink)
                        elif way != HASH:
                            measure(size_mib, way, "get", _python_worker, workers[way], "get",
                                    common, image=shared)
                for image in images:
                    cluster.dog("vdi", "delete", image)
                print(f"round {rnd + 1}/{args.rounds}, {size_mib} MiB done", file=sys.stderr)
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, args)
    return 0


Samples = list[dict[str, float]]


def _median(samples: Samples, key: str) -> float:
    return statistics.median(s[key] for s in samples)


def _mbps(samples: Samples, size_mib: int) -> float:
    return size_mib * MiB / 1e6 / _median(samples, "seconds")


def _cpu_per_gib(samples: Samples, size_mib: int) -> float:
    """Client + sheep CPU seconds per GiB."""
    return statistics.median(s["cpu"] + s["sheep_cpu"] for s in samples) / (size_mib / 1024)


def _cells(samples: Samples, size_mib: int) -> tuple[str, str, str]:
    if not samples:
        return "-", "-", "-"
    gib = size_mib / 1024
    return (f"{_mbps(samples, size_mib):.0f}",
            f"{_median(samples, 'cpu') / gib:.2f} + {_median(samples, 'sheep_cpu') / gib:.2f}",
            f"{max(s['maxrss_mib'] for s in samples):.0f}")


def report(results: dict[int, dict[str, dict[str, Samples]]],
           args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    print(f"\nSheepdog 1.0, one sheep, objects on disk{' (sheep -n)' if args.nosync else ''}; "
          f"sheepdog_store_chunk_size {args.chunk_mib} MiB; {cores} cores; "
          f"medians of {args.rounds} rounds (gets: {args.rounds * args.gets} reads); "
          "MB/s = 10^6 bytes/s; "
          "CPU = CPU seconds per GiB, client + sheep; RSS = peak of the measuring process "
          "(dog processes included)\n")
    print("| size | way | add MB/s | get MB/s | add CPU s/GiB | get CPU s/GiB "
          "| peak RSS add MiB | peak RSS get MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for size_mib, by_way in results.items():
        for way, ops in by_way.items():
            (am, ac, ar), (gm, gc, gr) = _cells(ops["add"], size_mib), _cells(ops["get"],
                                                                              size_mib)
            print(f"| {size_mib} MiB | {way} | {am} | {gm} | {ac} | {gc} | {ar} | {gr} |")
    for size_mib, by_way in results.items():
        if set(by_way) != set(WAYS):
            continue            # the ratios need every way

        def mbps(way: str, op: str, size_mib: int = size_mib,
                 by_way: dict[str, dict[str, Samples]] = by_way) -> float:
            return _mbps(by_way[way][op], size_mib)

        def cpu(way: str, size_mib: int = size_mib,
                by_way: dict[str, dict[str, Samples]] = by_way) -> float:
            return _cpu_per_gib(by_way[way]["add"], size_mib)
        print(f"\n{size_mib} MiB: add multistore / glance_store way = "
              f"{mbps(MULTISTORE, 'add') / mbps(GLANCE, 'add'):.2f}x (target >= 1.5x); "
              f"get multistore / dog whole = "
              f"{mbps(MULTISTORE, 'get') / mbps(DOG, 'get'):.0%} (target >= 90%)")
        # What the cores allow: an add that hashes spends the hashing's CPU plus
        # what moving the bytes costs the client and sheep (the cheaper of the
        # driver alone and dog); their sum per GiB bounds its speed.
        moving = min(cpu(DRIVER), cpu(DOG))
        bound = cores * 1024 * MiB / 1e6 / (cpu(HASH) + moving)
        print(f"{size_mib} MiB: add CPU bound on {cores} cores: hashing {cpu(HASH):.2f} + "
              f"moving the bytes (client + sheep) {moving:.2f} CPU s/GiB -> at most "
              f"{bound:.0f} MB/s; multistore reached {mbps(MULTISTORE, 'add') / bound:.0%} "
              f"of it, and {mbps(MULTISTORE, 'add') / mbps(HASH, 'add'):.0%} of hashing "
              f"alone's speed in this run ({mbps(HASH, 'add'):.0f} MB/s); the driver alone "
              f"(no hashing) reached {mbps(DRIVER, 'add') / mbps(DOG, 'add'):.0%} of dog whole")


if __name__ == "__main__":
    sys.exit(main())
