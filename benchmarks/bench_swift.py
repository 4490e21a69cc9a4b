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
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

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
    t = time.monotonic()
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
    print(json.dumps({"seconds": time.monotonic() - t}))
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
t = time.monotonic()
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
print(json.dumps({"seconds": time.monotonic() - t}))
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
    """Run a process; (its stdout, wall seconds, its peak RSS in MiB)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=env)
    out = proc.stdout.read() if stdout == subprocess.PIPE else b""
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    print(f"    {os.path.basename(argv[0])} {argv[3] if len(argv) > 3 else ''}: wall {wall:.1f} s, "
          f"cpu {usage.ru_utime + usage.ru_stime:.1f} s", file=sys.stderr)
    return out, wall, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", default="1024,4096")
    parser.add_argument("--concurrency", default="1,3",
                        help="multistore's swift_store_segment_concurrency values to run "
                             "(1: streamed segments, >1: buffered, uploaded in parallel)")
    parser.add_argument("--workers", type=int, default=2,
                        help="Swift server workers (object/container/account servers "
                             "and the Keystone proxy); 0 = one process each")
    parser.add_argument("--only", default="multistore,glance_store,swift-cli")
    args = parser.parse_args()
    sizes = [int(s) * MiB for s in args.sizes_mib.split(",")]
    tools = []
    for tool in args.only.split(","):
        if tool == "multistore":
            tools += [f"multistore c={c}" for c in args.concurrency.split(",")]
        else:
            tools.append(tool)

    harness = load_harness()
    glance_python = ensure_glance_venv() if "glance_store" in tools else None
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-swift-", dir=ROOT / ".bench"
                                         if (ROOT / ".bench").exists() else None))
    swift = harness.SwiftAIO(work / "swift", 16000, workers=args.workers)
    keystone = harness.KeystoneServer(work / "keystone", 16010)
    rows: list[dict] = []
    try:
        swift.start()
        keystone.start("http://127.0.0.1:16004")
        proxy = swift.start_keystone_proxy(keystone, 16004)
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
        for size in sizes:
            for tool in tools:
                image_id = str(uuid.uuid4())
                conf_dir = work / f"conf-{image_id}"
                conf_dir.mkdir()
                result = {"size": size, "tool": tool}
                for op in ("add", "get", "delete"):
                    if tool.startswith("multistore"):
                        out, wall, rss = run([sys.executable, "-c", MULTISTORE_WORKER, op,
                                              str(conf_dir), str(refs), image_id, str(size),
                                              tool.partition("c=")[2]])
                        seconds = json.loads(out)["seconds"]
                    elif tool == "glance_store":
                        out, wall, rss = run([str(glance_python), "-c", GLANCE_WORKER, op,
                                              str(conf_dir), str(refs), image_id, str(size)])
                        seconds = json.loads(out)["seconds"]
                    else:
                        token = keystone.token("demo", keystone.USERS["demo"])
                        base = [swift_bin, "--os-auth-token", token,
                                "--os-storage-url", storage_url]
                        if op == "add":
                            gen = subprocess.Popen(generator + [str(size)],
                                                   stdout=subprocess.PIPE)
                            _, wall, rss = run(base + ["upload", "bench_cli", "-",
                                                       "--object-name", image_id,
                                                       "--segment-size", str(SEGMENT),
                                                       "--use-slo"], stdin=gen.stdout)
                            gen.wait()
                        elif op == "get":
                            with open(os.devnull, "wb") as null:
                                _, wall, rss = run(base + ["download", "bench_cli", image_id,
                                                           "-o", "-"], stdout=null)
                        else:
                            _, wall, rss = run(base + ["delete", "bench_cli", image_id])
                        seconds = wall
                    result[op] = (seconds, rss)
                shutil.rmtree(conf_dir, ignore_errors=True)
                rows.append(result)
                add_s, add_rss = result["add"]
                get_s, get_rss = result["get"]
                print(f"{size // MiB} MiB {tool}: add {size / add_s / 1e6:.0f} MB/s "
                      f"({add_rss:.0f} MiB RSS), get {size / get_s / 1e6:.0f} MB/s "
                      f"({get_rss:.0f} MiB RSS); object-server disk now "
                      f"{swift.disk_usage() // MiB} MiB", flush=True)
    except Exception:
        print(swift.log_tail("proxy-keystone", 30), file=sys.stderr)
        raise
    finally:
        swift.stop()
        keystone.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print("| size | tool | add MB/s | add peak RSS MiB | get MB/s | get peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        (add_s, add_rss), (get_s, get_rss) = r["add"], r["get"]
        print(f"| {r['size'] // MiB} MiB | {r['tool']} | {r['size'] / add_s / 1e6:.0f} | "
              f"{add_rss:.0f} | {r['size'] / get_s / 1e6:.0f} | {get_rss:.0f} |")
    by = {(r["size"], r["tool"]): r for r in rows}
    for size in sizes:
        gs = by.get((size, "glance_store"))
        for tool in tools:
            ms = by.get((size, tool))
            if ms and gs and tool.startswith("multistore"):
                print(f"{size // MiB} MiB: {tool} add is {gs['add'][0] / ms['add'][0]:.2f}x "
                      f"glance_store, get {gs['get'][0] / ms['get'][0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
