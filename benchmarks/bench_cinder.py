"""Add and get of large images on the real Cinder: multistore, glance_store, the raw path.

    .venv/bin/python benchmarks/bench_cinder.py [--sizes-mib 1024,4096] [--rounds 3]
        [--dir DIR]   # a deployment already running (tests/backends/cinder.py start DIR)

On the test deployment (``tests/backends/cinder.py``: Cinder 29, two RBD
backends on a memstore Ceph, 127.0.0.1:17200-17299; started here unless
``--dir`` names a running one), volume type ``netapp``, per size and round,
interleaved (the order reversed every other round):

- **multistore**: ``StoreSet.add`` (md5 + sha512 on the way) and
  ``StoreSet.get`` read to the end, through the cinder driver;
- **glance_store**: glance_store 5.7's own cinder driver through its
  multi-store API (``add_with_multihash``, ``get_from_backend``), from the
  venv ``scripts/deps/cinder.sh`` makes;
- **raw**: what any cinder store must do, without hashing: create the volume
  and wait, attach it as glance_store does (os-brick's RBD connector,
  ``do_local_attach=False``), write it in 4 MiB pieces through os-brick's
  file object, detach; attach, read it back, detach (the harness's
  ``Attachment``). Its transfer alone is shown too;
- **hashing limit**: md5 and sha512 of the image in two threads, nothing
  written: the CPU an add that computes both cannot avoid.

The source is a 64 MiB random buffer cycled, read in 4 MiB pieces by both
libraries. Every transfer is a fresh process (its peak RSS is its own:
imports included); client CPU from ``getrusage``, the servers' CPU
(cinder-api/-volume/-scheduler, PostgreSQL, RabbitMQ, Ceph) from /proc
before and after. glance_store and multistore get the cephx keyring the same
way (a ``keyring = <path>`` line for os-brick's temporary ceph.conf: Cinder
no longer sends it) and run os-brick's privileged calls in process (root).
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
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
GiB = 1024 * MiB
GLANCE_STORE_VENV = Path(os.environ.get("MULTISTORE_GLANCE_STORE_CINDER_VENV",
                                        "/opt/multistore-cinder/glance_store-5.7.0"))
PROJECT = "bench"
VOLUME_TYPE = "netapp"
SERVERS = ("ceph-osd", "ceph-mon", "volume", "api", "scheduler", "postgres", "rabbitmq")
WAYS = ("multistore", "glance_store", "raw", "hash")


class Source:
    """``size`` bytes: a 64 MiB random buffer, cycled; read(n) as a file."""

    def __init__(self, size: int) -> None:
        self.size, self.pos = size, 0
        self.buf = os.urandom(64 * MiB)

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n is None or n < 0 else min(n, self.size - self.pos)
        if n <= 0:
            return b""
        start = self.pos % len(self.buf)
        out = self.buf[start:start + n]
        self.pos += len(out)
        return out


def _keyring_line(connection_properties: dict[str, Any], keyring: str) -> dict[str, Any]:
    return {**connection_properties, "keyring": f"keyring = {keyring}"}


def _brick_in_process(keyring: str) -> None:
    """os-brick's privileged calls here (root); the keyring for glance_store's
    os-brick handles as multistore gives it to its own."""
    import os_brick.privileged
    from os_brick.initiator.connectors import rbd
    os_brick.privileged.default.set_client_mode(False)
    original = rbd.RBDConnector._get_rbd_handle

    def handle(self: Any, connection_properties: dict[str, Any], read_only: bool = False,
               ) -> Any:
        return original(self, _keyring_line(connection_properties, keyring), read_only)
    rbd.RBDConnector._get_rbd_handle = handle


# -- workers: one transfer each, in a fresh process -------------------------------------


def worker_multistore(args: argparse.Namespace) -> dict[str, Any]:
    import multistore
    from oslo_config import cfg
    conf_file = Path(args.tmp) / "multistore.conf"
    conf_file.write_text(
        "[DEFAULT]\nenabled_backends = netapp:cinder\n[glance_store]\ndefault_backend = netapp\n"
        f"[netapp]\ncinder_store_auth_type = noauth\ncinder_store_user_name = glance\n"
        f"cinder_store_project_name = {PROJECT}\n"
        f"cinder_endpoint_template = {args.api}/v3/%(tenant)s\n"
        f"cinder_volume_type = {VOLUME_TYPE}\ncinder_rbd_keyring_file = {args.keyring}\n")
    conf = cfg.ConfigOpts()
    multistore.register_opts(conf)
    conf(["--config-file", str(conf_file)], project="multistore", default_config_files=[])
    with multistore.load(conf) as stores:
        start = time.perf_counter()
        if args.op == "add":
            result = stores.add(str(uuid.uuid4()), Source(args.size), args.size)
            out = {"location": result.location, "md5": result.checksum}
        else:
            n = 0
            with stores.get(args.location) as reader:
                for chunk in reader:
                    n += len(chunk)
            assert n == args.size, n
            out = {}
        out["seconds"] = time.perf_counter() - start
    return out


def worker_glance(args: argparse.Namespace) -> dict[str, Any]:
    from glance_store import multi_backend
    from oslo_config import cfg
    from oslo_context import context as oslo_context
    _brick_in_process(args.keyring)
    conf_file = Path(args.tmp) / "glance_store.conf"
    conf_file.write_text(
        "[DEFAULT]\nenabled_backends = netapp:cinder\n[glance_store]\ndefault_backend = netapp\n"
        f"[oslo_concurrency]\nlock_path = {args.tmp}\n"
        f"[netapp]\ncinder_endpoint_template = {args.api}/v3/%(project_id)s\n")
    conf = cfg.CONF        # glance_store's multi-store API reads the global one
    conf.register_opt(cfg.DictOpt("enabled_backends"))   # glance registers it
    conf(args=[], default_config_files=[str(conf_file)])
    multi_backend.register_store_opts(conf)
    multi_backend.create_multi_stores(conf)
    multi_backend.verify_store()
    # Set only now: with cinder_volume_type and no service credentials,
    # glance_store 5.7's configure_add calls get_cinderclient() without a
    # context (AttributeError: 'NoneType' object has no attribute 'user_id').
    conf.set_override("cinder_volume_type", VOLUME_TYPE, group="netapp")
    context = oslo_context.RequestContext(user_id="glance", project_id=PROJECT)
    context.service_catalog = []     # Glance's RequestContext has one
    start = time.perf_counter()
    if args.op == "add":
        url, size, md5, _, _ = multi_backend.add_with_multihash(
            conf, str(uuid.uuid4()), Source(args.size), args.size, "netapp", "sha512",
            context=context)
        assert size == args.size
        out = {"location": url, "md5": md5}
    else:
        chunks, _ = multi_backend.get(args.location, "netapp", context=context)
        n = sum(len(chunk) for chunk in chunks)
        assert n == args.size, n
        out = {}
    out["seconds"] = time.perf_counter() - start
    return out


def worker_raw(args: argparse.Namespace) -> dict[str, Any]:
    h = load_harness()
    d = h.CinderDeployment(args.dir, args.port)
    client = d.client(PROJECT)
    chunk = 4 * MiB
    start = time.perf_counter()
    # This host's connector properties, as every driver computes them in a
    # fresh process (os-brick's privileged probes: about 0.1-0.5 s).
    props = h.brick_connector_properties()
    if args.op == "add":
        volume = client.volumes.create(-(-args.size // GiB), name=f"image-{uuid.uuid4()}",
                                       volume_type=VOLUME_TYPE)
        volume_id = volume.id
        h.wait_status(client, volume_id, "available", timeout=300)
        source = Source(args.size)
    else:
        volume_id = args.location
    with h.Attachment(client, volume_id, d.keyring_path,
                      "rw" if args.op == "add" else "ro", props) as att:
        f = att.file
        moved, begun = 0, time.perf_counter()
        if args.op == "add":
            while data := source.read(chunk):
                f.write(data)
                moved += len(data)
            f.flush()
        else:
            while moved < args.size:
                data = f.read(min(chunk, args.size - moved))
                if not data:
                    break
                moved += len(data)
        transfer = time.perf_counter() - begun
    assert moved == args.size, moved
    return {"location": volume_id, "seconds": time.perf_counter() - start,
            "transfer": transfer}


def worker_hash(args: argparse.Namespace) -> dict[str, Any]:
    source = Source(args.size)
    hashes = [hashlib.md5(), hashlib.sha512()]
    start = time.perf_counter()
    pieces = [source.buf[i:i + 4 * MiB] for i in range(0, len(source.buf), 4 * MiB)]

    def run(h: Any) -> None:
        for n in range(args.size // (4 * MiB)):
            h.update(pieces[n % len(pieces)])
    threads = [threading.Thread(target=run, args=(h,)) for h in hashes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"seconds": time.perf_counter() - start}


def run_worker(args: argparse.Namespace) -> int:
    work = {"multistore": worker_multistore, "glance_store": worker_glance,
            "raw": worker_raw, "hash": worker_hash}[args.worker]
    before = resource.getrusage(resource.RUSAGE_SELF)
    out = work(args)
    after = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    out["maxrss_mib"] = after.ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)
    return 0


# -- the parent --------------------------------------------------------------------------


def load_harness() -> Any:
    name = "multistore_cinder_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "tests" / "backends" / "cinder.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


def transfer(args: argparse.Namespace, d: Any, way: str, op: str, size: int,
             location: str = "") -> dict[str, Any]:
    python = str(GLANCE_STORE_VENV / "bin" / "python") if way == "glance_store" \
        else sys.executable
    before = d.cpu_seconds()
    done = subprocess.run(
        [python, __file__, "--worker", way, "--op", op, "--size", str(size),
         "--location", location, "--dir", str(d.dir), "--port", str(d.base_port),
         "--api", d.api_url, "--keyring", d.keyring_path, "--tmp", args.tmp],
        capture_output=True, text=True, check=False)
    after = d.cpu_seconds()
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{way} {op} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    result["servers"] = sum(after.get(k, 0) - before.get(k, 0) for k in SERVERS)
    return result


def remove(d: Any, h: Any, location: str) -> None:
    volume_id = location.rsplit("/", 1)[-1]
    client = d.client(PROJECT)
    client.volumes.delete(volume_id)
    h.wait_gone(client, volume_id, timeout=300)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes-mib", default="1024,4096")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ways", default=",".join(WAYS))
    p.add_argument("--dir", help="a running deployment's directory (else one is started)")
    p.add_argument("--port", type=int, default=17200)
    # worker mode
    p.add_argument("--worker", choices=WAYS)
    p.add_argument("--op", choices=["add", "get"])
    p.add_argument("--size", type=int)
    p.add_argument("--location", default="")
    p.add_argument("--api")
    p.add_argument("--keyring")
    p.add_argument("--tmp")
    args = p.parse_args(argv)
    if args.worker:
        return run_worker(args)

    h = load_harness()
    ways = [w for w in WAYS if w in args.ways.split(",")]
    sizes = [int(s) * MiB for s in args.sizes_mib.split(",")]
    args.tmp = tempfile.mkdtemp(prefix="multistore-bench-cinder-")
    own = args.dir is None
    if own:
        os.chmod(args.tmp, 0o711)
        d = h.CinderDeployment(Path(args.tmp) / "cinder", args.port)
        d.start()
    else:
        d = h.CinderDeployment(args.dir, args.port)
    load = os.getloadavg()
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    try:
        for rnd in range(args.rounds):
            order = ways if rnd % 2 == 0 else ways[::-1]
            for size in sizes:
                for way in order:
                    ops = ["add"] if way == "hash" else ["add", "get"]
                    location = ""
                    for op in ops:
                        r = transfer(args, d, way, op, size, location)
                        results.setdefault((way, op, size), []).append(r)
                        location = r.get("location", location)
                    if way != "hash":
                        remove(d, h, location)
                    print(f"round {rnd + 1}: {way} {size // MiB} MiB done", file=sys.stderr)
    finally:
        if own:
            d.stop()
        shutil.rmtree(args.tmp, ignore_errors=True)
    report(results, ways, sizes, args, load)
    return 0


def report(results: dict[tuple[str, str, int], list[dict[str, Any]]], ways: list[str],
           sizes: list[int], args: argparse.Namespace, load: tuple[float, ...]) -> None:
    def med(way: str, op: str, size: int, key: str) -> float:
        return float(statistics.median(r[key] for r in results[(way, op, size)]))

    def mbps(way: str, op: str, size: int, key: str = "seconds") -> float:
        return size / 1e6 / med(way, op, size, key)

    def cpu(way: str, op: str, size: int, key: str) -> float:
        return med(way, op, size, key) / (size / GiB)

    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load average at start {load[0]:.1f}; medians of {args.rounds} rounds, "
          "interleaved; MB/s = 10^6 bytes/s; CPU = CPU seconds per GiB, client + servers; "
          "RSS = the client process's peak\n")
    print("| size | way | add MB/s | get MB/s | add CPU s/GiB | get CPU s/GiB "
          "| peak RSS add MiB | peak RSS get MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for size in sizes:
        for way in ways:
            if way == "hash":
                print(f"| {size // MiB} MiB | hashing limit | {mbps(way, 'add', size):.0f} | - "
                      f"| {cpu(way, 'add', size, 'cpu'):.1f} + 0 | - | - | - |")
                continue
            cells = []
            for op in ("add", "get"):
                cells.append((f"{mbps(way, op, size):.0f}",
                              f"{cpu(way, op, size, 'cpu'):.1f} + "
                              f"{cpu(way, op, size, 'servers'):.1f}",
                              f"{max(r['maxrss_mib'] for r in results[(way, op, size)]):.0f}"))
            label = way
            if way == "raw":
                label = (f"raw (transfer alone: add {mbps(way, 'add', size, 'transfer'):.0f}, "
                         f"get {mbps(way, 'get', size, 'transfer'):.0f})")
            print(f"| {size // MiB} MiB | {label} | {cells[0][0]} | {cells[1][0]} "
                  f"| {cells[0][1]} | {cells[1][1]} | {cells[0][2]} | {cells[1][2]} |")
    if not {"multistore", "glance_store", "raw", "hash"} <= set(ways):
        return
    print()
    cores = os.cpu_count() or 1
    for size in sizes:
        ms, gs = mbps("multistore", "add", size), mbps("glance_store", "add", size)
        moving = cpu("raw", "add", size, "cpu") + cpu("raw", "add", size, "servers")
        hashing = cpu("hash", "add", size, "cpu")
        # What the machine gave this run: the hashing run's CPU seconds per
        # wall second (2 threads that never wait: 2.0 on 2 idle cores).
        got = med("hash", "add", size, "cpu") / med("hash", "add", size, "seconds")
        bound_free = cores * GiB / 1e6 / (hashing + moving)
        bound_now = got * GiB / 1e6 / (hashing + moving)
        # glance_store hashes and writes in one thread: one core at most.
        gs_free = GiB / 1e6 / cpu("glance_store", "add", size, "cpu")
        ms_all = cpu("multistore", "add", size, "cpu") + cpu("multistore", "add", size, "servers")
        gs_all = cpu("glance_store", "add", size, "cpu") + \
            cpu("glance_store", "add", size, "servers")
        print(f"- {size // MiB} MiB add: multistore {ms / gs:.2f}x glance_store (target 1.5x = "
              f"{1.5 * gs:.0f} MB/s). The add is CPU work: hashing {hashing:.1f} + moving "
              f"the bytes (raw add, client and servers) {moving:.1f} CPU s/GiB. On "
              f"{cores} free cores that bounds it at {bound_free:.0f} MB/s, and glance_store "
              f"(one thread, {cpu('glance_store', 'add', size, 'cpu'):.1f} client CPU "
              f"s/GiB) at {gs_free:.0f} MB/s (it reached {gs / gs_free:.0%}): the bounds "
              f"differ {bound_free / gs_free:.2f}x. In this "
              f"run the hashing limit got {got:.2f} of {cores} cores (the machine is "
              f"shared), which bounds an add at {bound_now:.0f} MB/s: multistore reached "
              f"{ms / bound_now:.0%} of that; with no core free the CPU each spends per GiB "
              f"({ms_all:.1f} and {gs_all:.1f} CPU s/GiB) bounds the ratio at "
              f"{gs_all / ms_all:.2f}x.")
        mg, rg = mbps("multistore", "get", size), mbps("raw", "get", size)
        print(f"- {size // MiB} MiB get: multistore {mg / rg:.0%} of the raw path "
              "(target 95%).")
    small, large = sizes[0], sizes[-1]
    for op in ("add", "get"):
        a = max(r["maxrss_mib"] for r in results[("multistore", op, small)])
        b = max(r["maxrss_mib"] for r in results[("multistore", op, large)])
        print(f"- multistore peak RSS, {op}: {a:.0f} MiB at {small // MiB} MiB, {b:.0f} MiB "
              f"at {large // MiB} MiB.")


if __name__ == "__main__":
    sys.exit(main())
