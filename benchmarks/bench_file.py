#!/usr/bin/env python3
"""File-store benchmark: multistore against glance_store, side by side.

One command::

    python benchmarks/bench_file.py --sizes 64M,1G,4G --runs 3 \\
        --out benchmarks/results/file.md

* ``benchmarks/.venv-glance`` gets ``glance_store`` and ``oslo.config``
  from PyPI if it is missing; multistore runs in the project's own venv
  (``.venv`` at the repo root, ``pip install -e .``), or ``--python``.
* Every measured operation runs in a fresh subprocess, so the peak RSS
  reported (the process's ``VmHWM``) is that operation's alone.
* Source images (random data, one file per size) live in
  ``benchmarks/.data`` and are read once before every run so they sit in
  the page cache; stores are directories under ``benchmarks/.tmp``, on the
  same filesystem. After every operation its output is deleted and the
  machine synced, outside the timing, so no run pays for another's
  write-back.
* Implementations are interleaved (A, B, C, then C, B, A on the next run)
  and the table shows medians with the range of all runs.

This file is both the driver (stdlib only) and the worker
(``--worker JSON``, started with the interpreter of the implementation
measured).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MiB = 1024 * 1024
GiB = 1024 * MiB
GLANCE_VENV = os.path.join(HERE, ".venv-glance")

# (operation, implementation): what each row measures.
ROWS = [
    ("hash", "limit", "md5 + sha512 in two threads over the same buffers, nothing written"),
    ("add", "glance", "glance_store add (multi-store, sha512 multihash), no sync"),
    ("add", "glance+fsync", "glance_store add, then os.fsync of the file"),
    ("add", "ms-nosync", "multistore add, filesystem_store_fsync = false"),
    ("add", "ms-durable", "multistore add, durable (fsync on, the default)"),
    ("get", "glance", "glance_store get, whole image, discarded"),
    ("get", "ms", "multistore get, whole image, discarded"),
    ("copy2", "glance", "Glance's copy-image way: get + add to t1, get + add to t2"),
    ("copy2", "ms-nosync", "multistore copy(to=[t1, t2]), fsync off (like for like)"),
    ("copy2", "ms-durable", "multistore copy(to=[t1, t2]), fsync on (default)"),
]

# (label, numerator row, denominator row, target, like-for-like note)
RATIOS = [
    ("durable add vs glance add + fsync", ("add", "ms-durable"), ("add", "glance+fsync"), 1.3),
    ("add, fsync off, vs glance add", ("add", "ms-nosync"), ("add", "glance"), 1.5),
    ("add, fsync off, vs hashing limit", ("add", "ms-nosync"), ("hash", "limit"), 0.85),
    ("get vs glance get", ("get", "ms"), ("get", "glance"), None),
    ("copy to 2, fsync off, vs Glance's way", ("copy2", "ms-nosync"), ("copy2", "glance"), 2.5),
    ("copy to 2, durable, vs Glance's way", ("copy2", "ms-durable"), ("copy2", "glance"), None),
]


# -- worker ------------------------------------------------------------------

def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_ini(path: str, dirs: dict[str, str], fsync: bool | None,
              core: dict[str, str]) -> None:
    lines = ["[DEFAULT]",
             "enabled_backends = " + ", ".join(f"{s}:file" for s in dirs),
             "", "[glance_store]", f"default_backend = {next(iter(dirs))}"]
    lines += [f"{k} = {v}" for k, v in core.items()]
    for store, d in dirs.items():
        lines += ["", f"[{store}]", f"filesystem_store_datadir = {d}"]
        if fsync is not None:
            lines.append(f"filesystem_store_fsync = {str(fsync).lower()}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def glance_stores(ini: str):  # type: ignore[no-untyped-def]
    from oslo_config import cfg
    import glance_store
    from glance_store import multi_backend

    conf = cfg.CONF
    conf.register_opt(cfg.DictOpt("enabled_backends"))
    conf(["--config-file", ini], project="bench", default_config_files=[])
    glance_store.register_store_opts(conf)
    glance_store.create_multi_stores(conf)
    glance_store.verify_store()
    return conf, multi_backend


def ms_stores(ini: str):  # type: ignore[no-untyped-def]
    from oslo_config import cfg
    import multistore

    conf = cfg.ConfigOpts()
    multistore.register_opts(conf)
    conf(["--config-file", ini], default_config_files=[])
    return multistore.load(conf)


def hash_limit(src: str, size: int) -> float:
    """md5 and sha512 in two threads over the same in-memory buffers.

    The first 16 MiB of the image are read before timing; both threads hash
    them over and over in 4 MiB updates until ``size`` bytes are done. This
    is the best any add that hashes both can do on this machine.
    """
    import hashlib

    with open(src, "rb") as f:
        data = memoryview(f.read(min(size, 16 * MiB)))
    chunk = 4 * MiB

    def run(algo: str) -> None:
        h = hashlib.new(algo)
        left = size
        while left:
            for off in range(0, len(data), chunk):
                n = min(chunk, len(data) - off, left)
                h.update(data[off:off + n])
                left -= n
                if not left:
                    break
        h.hexdigest()

    threads = [threading.Thread(target=run, args=(a,)) for a in ("md5", "sha512")]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    t = os.times()
    return t.user + t.system


def worker(job: dict) -> dict:
    op, impl, src, size, work = (job["op"], job["impl"], job["src"],
                                 job["size"], job["work"])
    core = job.get("core", {})
    dirs = {s: os.path.join(work, s) for s in ("src", "t1", "t2")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    image_id = str(uuid.uuid4())
    # The image in the source store: a hard link to the cached source file.
    src_path = os.path.join(dirs["src"], image_id)
    os.link(src, src_path)
    src_uri = "file://" + src_path
    ini = os.path.join(work, "bench.ini")
    cpu0 = cpu_seconds()
    if op == "hash":
        elapsed = hash_limit(src, size)
        return {"seconds": elapsed, "rss": peak_rss_mib(), "cpu": cpu_seconds() - cpu0}
    if impl.startswith("glance"):
        write_ini(ini, {"t1": dirs["t1"], "src": dirs["src"], "t2": dirs["t2"]}, None, {})
        conf, mb = glance_stores(ini)
        cpu0 = cpu_seconds()
        t0 = time.perf_counter()
        if op == "add":
            with open(src, "rb") as f:
                loc, n, _, _, _ = mb.add_with_multihash(conf, image_id, f, size, "t1", "sha512")
            if impl == "glance+fsync":
                fd = os.open(loc[len("file://"):], os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
        elif op == "get":
            data, n = mb.get(src_uri, "src")
            got = 0
            for chunk in data:
                got += len(chunk)
            assert got == size, got
        elif op == "copy2":
            for target in ("t1", "t2"):
                data, n = mb.get(src_uri, "src")
                mb.add_with_multihash(conf, image_id, data, n, target, "sha512")
        elapsed = time.perf_counter() - t0
    else:
        fsync = {"ms-nosync": False, "ms-durable": True}.get(impl)
        write_ini(ini, {"t1": dirs["t1"], "src": dirs["src"], "t2": dirs["t2"]}, fsync, core)
        stores = ms_stores(ini)
        cpu0 = cpu_seconds()
        t0 = time.perf_counter()
        if op == "add":
            with open(src, "rb") as f:
                result = stores.add(image_id, f, size, store="t1")
            assert result.size == size
        elif op == "get":
            got = 0
            with stores.get(src_uri) as reader:
                for chunk in reader:
                    got += len(chunk)
            assert got == size, got
        elif op == "copy2":
            results = stores.copy(src_uri, to=["t1", "t2"])
            assert all(r.size == size for r in results)
        elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "rss": peak_rss_mib(), "cpu": cpu_seconds() - cpu0}


# -- driver ------------------------------------------------------------------

def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def size_label(size: int) -> str:
    if size % (1024 * MiB) == 0:
        return f"{size // (1024 * MiB)} GiB"
    return f"{size // MiB} MiB"


def ensure_glance_venv() -> str:
    python = os.path.join(GLANCE_VENV, "bin", "python")
    check = [python, "-c", "import glance_store, oslo_config"]
    if not os.path.exists(python) or subprocess.run(check, capture_output=True).returncode:
        print("creating", GLANCE_VENV, "with glance_store from PyPI", flush=True)
        subprocess.run([sys.executable, "-m", "venv", GLANCE_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "glance_store", "oslo.config"],
                       check=True)
    return python


def project_python(given: str | None) -> str:
    python = given or os.path.join(ROOT, ".venv", "bin", "python")
    if not os.path.exists(python):
        python = sys.executable
    if subprocess.run([python, "-c", "import multistore"], capture_output=True).returncode:
        sys.exit(f"{python} cannot import multistore: run `pip install -e .` at the repo root "
                 "in that venv, or pass --python")
    return python


def ensure_source(size: int, data_dir: str) -> str:
    path = os.path.join(data_dir, f"image-{size}.raw")
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path
    os.makedirs(data_dir, exist_ok=True)
    print(f"writing {size_label(size)} of random data to {path}", flush=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n
    os.replace(tmp, path)
    return path


def warm(path: str) -> None:
    buf = bytearray(16 * MiB)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def run_one(python: str, job: dict, env: dict) -> dict:
    shutil.rmtree(job["work"], ignore_errors=True)
    os.makedirs(job["work"])
    proc = subprocess.run([python, os.path.abspath(__file__), "--worker", json.dumps(job)],
                          capture_output=True, text=True, env=env)
    shutil.rmtree(job["work"], ignore_errors=True)
    os.sync()
    if proc.returncode:
        raise RuntimeError(f"{job['op']}/{job['impl']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_range(values: list[float], digits: int = 0) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def report(results: dict, sizes: list[int], rows: list, args: argparse.Namespace) -> str:
    out = ["# multistore vs glance_store, file store", "",
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
           f"runs per cell: {args.runs}, interleaved; MB/s = 10^6 bytes/s; "
           "median (min-max).", ""]
    if args.core:
        out += [f"multistore `[glance_store]` overrides: {args.core}", ""]
    out += ["| operation | implementation | " +
            " | ".join(f"{size_label(s)} MB/s" for s in sizes) + " | " +
            " | ".join(f"{size_label(s)} peak RSS MiB" for s in sizes) + " |",
            "|---|---|" + "---|" * (2 * len(sizes))]
    for op, impl, what in rows:
        cells, mems = [], []
        for s in sizes:
            r = results.get((op, impl, s), [])
            cells.append(fmt_range([s / x["seconds"] / 1e6 for x in r]) if r else "-")
            mems.append(fmt_range([x["rss"] for x in r]) if r else "-")
        out.append(f"| {op} | {impl}: {what} | " + " | ".join(cells) + " | "
                   + " | ".join(mems) + " |")
    out += ["", "## Ratios (median of the per-run ratios, range)", "",
            "| ratio | target | " + " | ".join(size_label(s) for s in sizes) + " |",
            "|---|---|" + "---|" * len(sizes)]
    for label, num, den, target in RATIOS:
        cells = []
        for s in sizes:
            a = results.get((*num, s), [])
            b = results.get((*den, s), [])
            if not a or not b:
                cells.append("-")
                continue
            ratios = [y["seconds"] / x["seconds"] for x, y in zip(a, b, strict=False)]
            mark = ""
            if target is not None:
                mark = " ok" if statistics.median(ratios) >= target else " MISSED"
            cells.append(fmt_range(ratios, 2) + mark)
        t = f">= {target}" if target else ""
        out.append(f"| {label} | {t} | " + " | ".join(cells) + " |")
    out += ["", "## CPU seconds per GiB of the measuring process (all threads; "
            "kernel write-back threads not included), median", "",
            "| operation | implementation | " + " | ".join(size_label(s) for s in sizes) + " |",
            "|---|---|" + "---|" * len(sizes)]
    for op, impl, _ in rows:
        cells = []
        for s in sizes:
            r = results.get((op, impl, s), [])
            cells.append(f"{statistics.median(x['cpu'] * GiB / s for x in r):.2f}" if r else "-")
        out.append(f"| {op} | {impl} | " + " | ".join(cells) + " |")
    mem_rows = []
    for s in sizes:
        g = results.get(("add", "glance", s), [])
        for impl in ("ms-nosync", "ms-durable"):
            m = results.get(("add", impl, s), [])
            if g and m:
                mem_rows.append(f"| add {impl}, {size_label(s)} | "
                                f"{max(x['rss'] for x in m):.1f} | "
                                f"{min(x['rss'] for x in g):.1f} |")
    if mem_rows:
        out += ["", "## Peak memory of add (max of multistore runs vs min of glance_store runs)",
                "", "| row | multistore MiB | glance_store MiB |", "|---|---|---|", *mem_rows]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--sizes", default="64M,1G,4G")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--ops", default="hash,add,get,copy2",
                   help="subset of hash,add,get,copy2")
    p.add_argument("--impls", default="",
                   help="only these implementations (comma separated, e.g. limit,ms-nosync)")
    p.add_argument("--python", help="interpreter of the venv with multistore installed")
    p.add_argument("--core", default="",
                   help="extra multistore [glance_store] options, e.g. "
                        "stream_chunk_size=8388608,stream_buffers=6")
    p.add_argument("--variant", action="append", default=[],
                   help="NAME=[DIR][+OPT=VALUE...]: also run the multistore rows with "
                        "DIR first on PYTHONPATH (another checkout) and/or other "
                        "[glance_store] options, shown as ms-...@NAME")
    p.add_argument("--data", default=os.path.join(HERE, ".data"))
    p.add_argument("--tmp", default=os.path.join(HERE, ".tmp"))
    p.add_argument("--out", help="write the markdown table here too")
    args = p.parse_args()

    if args.worker:
        result = worker(json.loads(args.worker))
        print(json.dumps(result))
        return

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    ops = args.ops.split(",")
    only = set(filter(None, args.impls.split(",")))
    core = dict(kv.split("=", 1) for kv in filter(None, args.core.split(",")))
    variants = {}
    for v in args.variant:
        name, _, spec = v.partition("=")
        path, *opts = spec.split("+")
        variants[name] = (path, {**core, **dict(o.split("=", 1) for o in opts)})
    glance_py = ensure_glance_venv()
    ms_py = project_python(args.python)
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    rows = []
    for op, impl, what in ROWS:
        if op not in ops:
            continue
        if impl.startswith("ms") and (not only or impl in only):
            for name, (path, opts) in variants.items():
                how = [path or "this checkout", *(f"{k}={v}" for k, v in opts.items())]
                rows.append((op, f"{impl}@{name}", f"{what} [{', '.join(how)}]"))
        if not only or impl in only:
            rows.append((op, impl, what))
    results: dict = {}
    for size in sizes:
        src = ensure_source(size, args.data)
        for run in range(args.runs):
            order = rows if run % 2 == 0 else rows[::-1]
            for op, impl, _ in order:
                warm(src)
                name, _, variant = impl.partition("@")
                env = dict(base_env)
                opts = core
                if variant:
                    path, opts = variants[variant]
                    if path:
                        env["PYTHONPATH"] = path
                python = glance_py if name.startswith("glance") else ms_py
                job = {"op": op, "impl": name, "src": src, "size": size,
                       "work": os.path.join(args.tmp, "work"), "core": opts}
                r = run_one(python, job, env)
                results.setdefault((op, impl, size), []).append(r)
                print(f"{size_label(size):>7} run {run + 1} {op:5} {impl:18} "
                      f"{size / r['seconds'] / 1e6:8.0f} MB/s {r['rss']:6.1f} MiB "
                      f"{r['cpu'] * GiB / size:5.2f} CPU s/GiB", flush=True)
    text = report(results, sizes, rows, args)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump([{"op": k[0], "impl": k[1], "size": k[2], "runs": v}
                       for k, v in results.items()], f, indent=1)


if __name__ == "__main__":
    main()
