"""Swift add/get throughput and peak memory: multistore vs glance_store vs the swift CLI.

One command::

    .venv/bin/python benchmarks/bench_swift.py            # 1 GiB and 4 GiB
    .venv/bin/python benchmarks/bench_swift.py --sizes-mib 256

It starts a real Swift all-in-one and a real Keystone (tests/backends/swift.py,
ports 16000-16010; glance_store only speaks Keystone v3), then for each size
runs, each in a process of its own so that its peak RSS (``wait4``) is its
own:

- multistore: ``StoreSet.add`` from a generator, md5 + sha512, then a get;
- glance_store (PyPI, in ``.bench/venv-glance``, created on first use):
  ``multi_backend.add_with_multihash`` from a file-like, sha512, then a get;
- ``swift upload`` (stdin, SLO, same segment size) and ``swift download -o -``.

All three go through the same Keystone-protected proxy, with the same
segment size (glance_store's default 200 "MB" = 204,800,000 bytes) and
threshold. Data is generated on the fly (never held: a 4 MiB random block
repeated). Objects and segments are deleted after each run. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
GLANCE_VENV = ROOT / ".bench" / "venv-glance"
BLOCK = 4 * 1024 * 1024
MiB = 1024 * 1024
SEGMENT = 200 * 1000 * 1024          # glance_store's default chunk: 200 "MB"

GENERATOR = """
import os, sys
size = int(sys.argv[1])
block = os.urandom(BLOCK_SIZE)
out = sys.stdout.buffer
while size > 0:
    n = min(size, len(block))
    out.write(block[:n])
    size -= n
""".replace("BLOCK_SIZE", str(BLOCK))

MULTISTORE_WORKER = """
import json, os, sys, time
import multistore
from multistore.testing import make_conf
op, conf_dir, refs, image_id, size, concurrency = sys.argv[1:7]
size, concurrency = int(size), int(concurrency)
conf = make_conf({"DEFAULT": {"enabled_backends": {"swift1": "swift"}},
                  "glance_store": {"default_backend": "swift1"},
                  "swift1": {"swift_store_config_file": refs, "default_swift_reference": "ks",
                             "swift_store_container": "bench_ms",
                             "swift_store_create_container_on_put": True,
                             "swift_store_large_object_size": 100,
                             "swift_store_large_object_chunk_size": 200,
                             "swift_store_segment_concurrency": concurrency}}, conf_dir)
block = os.urandom(BLOCK_SIZE)
def data():
    left = size
    while left > 0:
        n = min(left, len(block))
        yield block if n == len(block) else block[:n]
        left -= n
with multistore.load(conf) as stores:
    location = f"swift+config://ks/bench_ms/{image_id}"
    t, cpu = time.monotonic(), time.process_time()
    if op == "add":
        r = stores.add(image_id, data(), size)
        assert r.size == size
    elif op == "get":
        n = 0
        with stores.get(location) as reader:
            for chunk in reader:
                n += len(chunk)
        assert n == size, n
    else:
        stores.delete(location)
    print(json.dumps({"seconds": time.monotonic() - t, "cpu": time.process_time() - cpu}))
""".replace("BLOCK_SIZE", str(BLOCK))

GLANCE_WORKER = """
import json, os, sys, time
from oslo_config import cfg
from glance_store import multi_backend
op, conf_dir, refs, image_id, size = sys.argv[1:6]
size = int(size)
path = os.path.join(conf_dir, "glance.conf")
with open(path, "w") as f:
    f.write(f'''[DEFAULT]
enabled_backends = swift1:swift
[glance_store]
default_backend = swift1
[swift1]
swift_store_config_file = {refs}
default_swift_reference = ks
swift_store_container = bench_gs
swift_store_create_container_on_put = True
swift_store_large_object_size = 100
swift_store_large_object_chunk_size = 200
swift_store_region = RegionOne
''')
conf = cfg.CONF    # glance_store looks its stores up in the global CONF
conf.register_opt(cfg.DictOpt("enabled_backends"))
conf(["--config-file", path], project="bench")
multi_backend.register_store_opts(conf)
multi_backend.create_multi_stores(conf)
block = os.urandom(BLOCK_SIZE)

class Source:
    def __init__(self, size):
        self.left = size
        self.pos = 0
    def read(self, n=-1):
        # Full reads, like a file: glance_store's readers take a short read
        # for the end of the data.
        if n is None or n < 0:
            n = self.left
        n = min(n, self.left)
        parts = []
        while n > 0:
            take = min(n, len(block) - self.pos)
            parts.append(block[self.pos:self.pos + take])
            self.pos = (self.pos + take) % len(block)
            self.left -= take
            n -= take
        return b"".join(parts)

location = f"swift+config://ks/bench_gs/{image_id}"
t, cpu = time.monotonic(), time.process_time()
if op == "add":
    # Size 0 ("unknown", what glance passes for a chunked upload): with the
    # size given, glance_store announces a full chunk_size for the last,
    # shorter segment and that PUT hangs until Swift's client_timeout (60 s)
    # and fails (glance_store 5.x, swift/store.py add()).
    loc, written, md5, mh, meta = multi_backend.add_with_multihash(
        conf, image_id, Source(size), 0, "swift1", "sha512")
    assert written == size, written
elif op == "get":
    body, got = multi_backend.get(location, "swift1")
    n = 0
    for chunk in body:
        n += len(chunk)
    assert n == size, n
else:
    multi_backend.delete(location, "swift1")
print(json.dumps({"seconds": time.monotonic() - t, "cpu": time.process_time() - cpu}))
""".replace("BLOCK_SIZE", str(BLOCK))


def load_harness():
    spec = importlib.util.spec_from_file_location("multistore_swift_backend",
                                                  ROOT / "tests" / "backends" / "swift.py")
    module = importlib.util.module_from_spec(spec)   # type: ignore[arg-type]
    sys.modules[spec.name] = module                   # type: ignore[union-attr]
    spec.loader.exec_module(module)                   # type: ignore[union-attr]
    return module


def ensure_glance_venv() -> pathlib.Path:
    python = GLANCE_VENV / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import glance_store, swiftclient"],
                                          capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(GLANCE_VENV)], check=True)
    subprocess.run([str(GLANCE_VENV / "bin" / "pip"), "install", "-q", "glance_store",
                    "python-swiftclient"], check=True)
    return python


def run(argv, *, stdin=None, env=None, stdout=subprocess.PIPE):
    """Run a process; (its stdout, wall seconds, CPU seconds, peak RSS in MiB)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=env)
    out = proc.stdout.read() if stdout == subprocess.PIPE else b""
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return out, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def group_cpu(pgids: set[int]) -> float:
    """CPU seconds used so far by every live process in these process groups
    (the servers and the workers they fork)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:            # pgrp
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", default="1024,4096")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, tools interleaved (reversed every other round)")
    parser.add_argument("--concurrency", default="1",
                        help="multistore's swift_store_segment_concurrency values to run "
                             "(1: streamed segments, >1: buffered, uploaded in parallel)")
    parser.add_argument("--workers", type=int, default=2,
                        help="Swift server workers (object/container/account servers "
                             "and the Keystone proxy); 0 = one process each")
    parser.add_argument("--only", default="multistore,glance_store,swift-cli")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=PYTHON",
                        help="also run multistore with another interpreter (another "
                             "checkout's venv, say the previous main), interleaved, "
                             "as 'multistore@NAME'")
    parser.add_argument("--get-ways", action="store_true",
                        help="instead: what the Swift servers spend per GiB on GETs of "
                             "one large object read in different ways (through the "
                             "SLO/DLO middleware or segment by segment; 64 KiB or "
                             "1 MiB reads), tempauth, first size only")
    args = parser.parse_args()
    sizes = [int(s) * MiB for s in args.sizes_mib.split(",")]
    if args.get_ways:
        return get_ways(sizes[0], args.rounds, args.workers)
    variants = {"": sys.executable}
    for spec in args.variant:
        name, _, python = spec.partition("=")
        variants["@" + name] = python
    tools = []
    for tool in args.only.split(","):
        if tool == "multistore":
            tools += [f"multistore{v} c={c}" for v in variants
                      for c in args.concurrency.split(",")]
        else:
            tools.append(tool)

    harness = load_harness()
    glance_python = ensure_glance_venv() if "glance_store" in tools else None
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-swift-", dir=ROOT / ".bench"
                                         if (ROOT / ".bench").exists() else None))
    swift = harness.SwiftAIO(work / "swift", 16000, workers=args.workers)
    keystone = harness.KeystoneServer(work / "keystone", 16010,
                                      swift_url="http://127.0.0.1:16004")
    # samples[(size, tool, op)] = [{"seconds", "cpu", "server_cpu", "rss"}, ...]
    samples: dict[tuple[int, str, str], list[dict[str, float]]] = {}
    failures: dict[str, int] = {}
    try:
        swift.start()
        keystone.start()
        proxy = swift.start_keystone_proxy(keystone, 16004)
        servers = {*swift.pids.values(), keystone.pid}   # each leads its process group
        refs = work / "glance-swift-store.conf"
        refs.write_text(textwrap.dedent(f"""\
            [ks]
            auth_address = {keystone.url}/v3
            user = demo:demo
            key = {keystone.USERS['demo']}
            user_domain_id = default
            project_domain_id = default
            auth_version = 3
            """))
        storage_url = f"{proxy}/v1/AUTH_{keystone.project_ids['demo']}"
        swift_bin = str(pathlib.Path(sys.executable).parent / "swift")
        generator = [sys.executable, "-c", GENERATOR]

        def one(size: int, tool: str, op: str, image_id: str, conf_dir: pathlib.Path) -> None:
            before = group_cpu(servers)
            if tool.startswith("multistore") or tool == "glance_store":
                variant = tool.partition(" ")[0][len("multistore"):]
                # -P: import multistore from the variant's own install, not
                # from the current directory.
                worker = [variants[variant], "-P", "-c", MULTISTORE_WORKER] \
                    if tool.startswith("multistore") else [str(glance_python), "-c", GLANCE_WORKER]
                extra = [tool.partition("c=")[2]] if tool.startswith("multistore") else []
                for attempt in range(3):
                    before = group_cpu(servers)
                    try:
                        out, _, _, rss = run(worker + [op, str(conf_dir), str(refs),
                                                       image_id, str(size), *extra])
                        break
                    except RuntimeError as exc:
                        # An add that fails is counted and run again (it left
                        # nothing: the id is free), a get or delete fails the run.
                        if op != "add" or attempt == 2:
                            raise
                        failures[tool] = failures.get(tool, 0) + 1
                        print(f"{tool} add failed, run again: {str(exc)[-300:]}",
                              file=sys.stderr, flush=True)
                timed = json.loads(out)
                seconds, cpu = timed["seconds"], timed["cpu"]
            else:
                token = keystone.token("demo", keystone.USERS["demo"])
                base = [swift_bin, "--os-auth-token", token, "--os-storage-url", storage_url]
                if op == "add":
                    gen = subprocess.Popen(generator + [str(size)], stdout=subprocess.PIPE)
                    _, seconds, cpu, rss = run(base + ["upload", "bench_cli", "-",
                                                       "--object-name", image_id,
                                                       "--segment-size", str(SEGMENT),
                                                       "--use-slo"], stdin=gen.stdout)
                    gen.wait()
                elif op == "get":
                    with open(os.devnull, "wb") as null:
                        _, seconds, cpu, rss = run(base + ["download", "bench_cli", image_id,
                                                           "-o", "-"], stdout=null)
                else:
                    _, seconds, cpu, rss = run(base + ["delete", "bench_cli", image_id])
            samples.setdefault((size, tool, op), []).append(
                {"seconds": seconds, "cpu": cpu, "server_cpu": group_cpu(servers) - before,
                 "rss": rss})

        for rnd in range(args.rounds):
            for size in sizes:
                for tool in (tools if rnd % 2 == 0 else tools[::-1]):
                    image_id = str(uuid.uuid4())
                    conf_dir = work / f"conf-{image_id}"
                    conf_dir.mkdir()
                    for op in ("add", "get", "delete"):
                        one(size, tool, op, image_id, conf_dir)
                    shutil.rmtree(conf_dir, ignore_errors=True)
                    add = samples[(size, tool, "add")][-1]
                    print(f"round {rnd + 1}: {size // MiB} MiB {tool}: add "
                          f"{size / add['seconds'] / 1e6:.0f} MB/s; object-server disk now "
                          f"{swift.disk_usage() // MiB} MiB", file=sys.stderr, flush=True)
    except Exception:
        print(swift.log_tail("proxy-keystone", 30), file=sys.stderr)
        raise
    finally:
        swift.stop()
        keystone.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(samples, sizes, tools, args.rounds, hash_cpu_per_gib())
    for tool, count in failures.items():
        print(f"{tool}: {count} add(s) failed and were run again")
    return 0


def get_ways(size: int, rounds: int, workers: int) -> int:
    """Server CPU per GiB of GETs by way of reading (see --get-ways)."""
    import swiftclient  # type: ignore[import-untyped]

    harness = load_harness()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-swift-ways-"))
    swift = harness.SwiftAIO(work / "swift", 16000, workers=workers)
    try:
        swift.start()
        servers = set(swift.pids.values())

        def connect() -> Any:
            return swiftclient.Connection(authurl=swift.auth_url, user="test:tester",
                                          key=swift.users["test:tester"], retries=0)
        conn = connect()
        conn.put_container("w")
        conn.put_container("w_segments")
        block = os.urandom(BLOCK)
        segments, left = [], size
        while left:
            n = min(SEGMENT, left)
            name = f"s/{len(segments):04d}"
            etag = conn.put_object("w_segments", name, (block * (n // BLOCK + 1))[:n])
            segments.append((name, etag, n))
            left -= n
        conn.put_object("w", "slo", json.dumps([{"path": f"/w_segments/{n}", "etag": e,
                                                 "size_bytes": b} for n, e, b in segments]),
                        query_string="multipart-manifest=put")
        conn.put_object("w", "dlo", b"", headers={"X-Object-Manifest": "w_segments/s/"})

        def whole(name: str, chunk: int) -> int:
            c = connect()
            got = sum(map(len, c.get_object("w", name, resp_chunk_size=chunk)[1]))
            c.close()
            return got

        def direct(chunk: int) -> int:
            c = connect()
            got = sum(sum(map(len, c.get_object("w_segments", n, resp_chunk_size=chunk,
                                                headers={"If-Match": e})[1]))
                      for n, e, _ in segments)
            c.close()
            return got
        ways = {f"{what}, {chunk // 1024} KiB reads": (what, chunk)
                for what in ("SLO via proxy", "DLO via proxy", "segments directly")
                for chunk in (64 * 1024, MiB)}
        samples: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
        for rnd in range(rounds):
            for way in (list(ways) if rnd % 2 == 0 else list(ways)[::-1]):
                what, chunk = ways[way]
                before, start = group_cpu(servers), time.monotonic()
                got = direct(chunk) if what.startswith("segments") else \
                    whole("slo" if what.startswith("SLO") else "dlo", chunk)
                assert got == size, got
                samples[way].append((group_cpu(servers) - before, time.monotonic() - start))
    finally:
        swift.stop()
        shutil.rmtree(work, ignore_errors=True)
    gib = size / (1024 * MiB)
    print(f"\nGET of {size // MiB} MiB in {SEGMENT}-byte segments, medians of {rounds} rounds\n")
    print("| way | Swift servers CPU s/GiB | MB/s |")
    print("|---|---|---|")
    for way, xs in samples.items():
        print(f"| {way} | {statistics.median(x[0] for x in xs) / gib:.2f} | "
              f"{size / 1e6 / statistics.median(x[1] for x in xs):.0f} |")
    return 0


def hash_cpu_per_gib() -> float:
    """CPU seconds md5 + sha512 take per GiB here (bench_file's hashing limit)."""
    from bench_file import hash_limit    # benchmarks/ is this script's directory

    with tempfile.NamedTemporaryFile() as f:
        f.write(os.urandom(16 * MiB))
        f.flush()
        start = time.process_time()
        hash_limit(f.name, 1024 * MiB)
        return time.process_time() - start


def report(samples: dict[tuple[int, str, str], list[dict[str, float]]],
           sizes: list[int], tools: list[str], rounds: int, hashing: float) -> None:
    def med(size: int, tool: str, op: str, key: str) -> float:
        return statistics.median(x[key] for x in samples[(size, tool, op)])

    def mbps(size: int, tool: str, op: str) -> float:
        return size / 1e6 / med(size, tool, op, "seconds")

    def cpu(size: int, tool: str, op: str) -> str:
        gib = size / (1024 * MiB)
        return (f"{med(size, tool, op, 'cpu') / gib:.1f} + "
                f"{med(size, tool, op, 'server_cpu') / gib:.1f}")

    print(f"\nMedians of {rounds} rounds; MB/s = 10^6 bytes/s; CPU = CPU seconds per GiB, "
          f"client + Swift/Keystone servers; RSS = the client's peak, max of the rounds.\n")
    print("| size | tool | add MB/s | get MB/s | add CPU s/GiB | get CPU s/GiB "
          "| add peak RSS MiB | get peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for size in sizes:
        for tool in tools:
            rss = [max(x["rss"] for x in samples[(size, tool, op)]) for op in ("add", "get")]
            print(f"| {size // MiB} MiB | {tool} | {mbps(size, tool, 'add'):.0f} | "
                  f"{mbps(size, tool, 'get'):.0f} | {cpu(size, tool, 'add')} | "
                  f"{cpu(size, tool, 'get')} | {rss[0]:.0f} | {rss[1]:.0f} |")
    print()
    cores = os.cpu_count() or 1
    for size in sizes:
        for tool in tools:
            if not tool.startswith("multistore") or "glance_store" not in tools:
                continue
            ratios = [g["seconds"] / m["seconds"] for m, g in
                      zip(samples[(size, tool, "add")],
                          samples[(size, "glance_store", "add")], strict=True)]
            # Any add that hashes spends the hashing's CPU plus what the
            # servers spend on the bytes (the least of the three tools):
            # their sum per GiB bounds its speed on this machine's cores.
            gib = size / (1024 * MiB)
            servers = min(med(size, t, "add", "server_cpu") for t in tools) / gib
            bound = cores * 1024 * MiB / 1e6 / (hashing + servers)
            print(f"{size // MiB} MiB: {tool} add / glance_store add = "
                  f"{statistics.median(ratios):.2f}x (per round: "
                  f"{', '.join(f'{r:.2f}' for r in ratios)}; target >= 1.5x); "
                  f"get {mbps(size, tool, 'get') / mbps(size, 'glance_store', 'get'):.2f}x")
            print(f"    CPU bound on {cores} cores: md5 + sha512 {hashing:.1f} + Swift servers "
                  f"{servers:.1f} CPU s/GiB (a client doing nothing but hash) -> at most "
                  f"{bound:.0f} MB/s = {bound / mbps(size, 'glance_store', 'add'):.2f}x "
                  f"glance_store; {tool} reached {mbps(size, tool, 'add') / bound:.0%} of it")


if __name__ == "__main__":
    sys.exit(main())
