"""The raw cinder data path on the test deployment: what a cinder driver can reach.

    .venv/bin/python benchmarks/bench_cinder_raw.py [--size-mib 1024] [--rounds 3]

Starts the harness's deployment (``tests/backends/cinder.py``: Cinder 29 with
two RBD backends on a memstore Ceph, 127.0.0.1:17200-17299), then per round:
a volume of type ``netapp`` created as glance_store creates it, attached as
glance_store attaches it (os-brick RBD connector, ``do_local_attach=False``),
``--size-mib`` written through os-brick's ``RBDVolumeIOWrapper`` in
``--chunk-mib`` pieces (no hashing; the data is a 64 MiB random buffer
cycled), detached, attached again read-only and read back the same way
(discarded), deleted. Each transfer runs in a fresh process, which reports its
own wall time, CPU seconds (all threads, librbd's included) and peak RSS; the
parent reads the servers' CPU (``/proc``, per component) before and after.

Also reported: the deployment's start and stop times and per-component
memory (RSS/PSS) after start and after the rounds. Other work on a shared
machine moves every figure: the load average is printed with them.
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
MiB = 1024 * 1024
GiB = 1024 * MiB
SERVERS = ("ceph-osd", "ceph-mon", "volume", "api", "scheduler", "postgres", "rabbitmq")


def load_harness() -> Any:
    name = "multistore_cinder_harness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "tests" / "backends" / "cinder.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# -- the worker: one transfer in its own process -----------------------------------


def worker(args: argparse.Namespace) -> int:
    h = load_harness()
    d = h.CinderDeployment(args.dir, args.port)
    client = d.client()
    props = h.brick_connector_properties()
    chunk = args.chunk_mib * MiB
    size = args.size_mib * MiB
    t0 = time.monotonic()
    with h.Attachment(client, args.volume, d.keyring_path,
                      "rw" if args.op == "write" else "ro", props) as att:
        attach_s = time.monotonic() - t0
        f = att.file
        buf = os.urandom(64 * MiB) if args.op == "write" else b""
        pieces = [buf[i:i + chunk] for i in range(0, len(buf), chunk)]
        ru0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        done = 0
        f.seek(0)
        if args.op == "write":
            while done < size:
                piece = pieces[(done // chunk) % len(pieces)][:size - done]
                f.write(piece)
                done += len(piece)
            f.flush()
        else:
            while done < size:
                data = f.read(min(chunk, size - done))
                if not data:
                    break
                done += len(data)
        wall = time.monotonic() - w0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    if done != size:
        raise SystemExit(f"{args.op}: {done} bytes of {size}")
    json.dump({"wall": wall, "attach": attach_s,
               "cpu": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
               "maxrss_mib": ru1.ru_maxrss / 1024}, sys.stdout)
    return 0


# -- the parent ------------------------------------------------------------------------


def transfer(args: argparse.Namespace, d: Any, op: str, volume_id: str) -> dict[str, Any]:
    before = d.cpu_seconds()
    out = subprocess.run(
        [sys.executable, __file__, "--worker", "--op", op, "--volume", volume_id,
         "--dir", str(d.dir), "--port", str(d.base_port), "--size-mib", str(args.size_mib),
         "--chunk-mib", str(args.chunk_mib)],
        capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker {op} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout)
    after = d.cpu_seconds()
    result["servers"] = {k: after.get(k, 0) - before.get(k, 0) for k in SERVERS}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--chunk-mib", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--port", type=int, default=17200)
    p.add_argument("--dir")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--op", choices=["write", "read"])
    p.add_argument("--volume")
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    h = load_harness()
    directory = Path(tempfile.mkdtemp(prefix="multistore-cinder-bench-"))
    d = h.CinderDeployment(directory, args.port)
    report: dict[str, Any] = {"load_before": os.getloadavg()}
    try:
        d.start()
        report["start"] = dict(d.timings)
        report["memory_after_start"] = d.memory()
        client = d.client()
        rounds: list[dict[str, Any]] = []
        size_gb = -(-args.size_mib * MiB // GiB)
        for _ in range(args.rounds):
            image_id = str(uuid.uuid4())
            t0 = time.monotonic()
            volume = client.volumes.create(
                size_gb, name=f"image-{image_id}", volume_type="netapp",
                metadata={"glance_image_id": image_id,
                          "image_size": str(args.size_mib * MiB), "image_owner": d.project})
            h.wait_status(client, volume.id, "available")
            created = time.monotonic() - t0
            w = transfer(args, d, "write", volume.id)
            r = transfer(args, d, "read", volume.id)
            t0 = time.monotonic()
            client.volumes.delete(volume.id)
            h.wait_gone(client, volume.id)
            rounds.append({"create": created, "write": w, "read": r,
                           "delete": time.monotonic() - t0})
        report["rounds"] = rounds
        report["memory_after_rounds"] = d.memory()
    finally:
        d.stop()
        report["stop"] = d.timings.get("stop")
        report["load_after"] = os.getloadavg()
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(report, indent=1))
    print_table(report, args)
    return 0


def print_table(report: dict[str, Any], args: argparse.Namespace) -> None:
    gib = args.size_mib / 1024
    med = statistics.median
    rows = report["rounds"]
    print(f"\n{args.size_mib} MiB in {args.chunk_mib} MiB pieces, {len(rows)} rounds, medians "
          f"(min-max); load {report['load_before'][0]:.1f} -> {report['load_after'][0]:.1f}\n")
    print("| | MiB/s | client CPU s/GiB | ceph-osd CPU s/GiB | cinder-volume CPU s/GiB "
          "| other servers CPU s/GiB | client peak RSS MiB | attach s |")
    print("|---|---|---|---|---|---|---|---|")
    for op in ("write", "read"):
        speeds = [args.size_mib / r[op]["wall"] for r in rows]
        cells = [f"{med(speeds):.0f} ({min(speeds):.0f}-{max(speeds):.0f})"]
        for values in ([r[op]["cpu"] for r in rows],
                       [r[op]["servers"]["ceph-osd"] for r in rows],
                       [r[op]["servers"]["volume"] for r in rows],
                       [sum(v for k, v in r[op]["servers"].items()
                            if k not in ("ceph-osd", "volume")) for r in rows]):
            cells.append(f"{med(values) / gib:.2f}")
        cells.append(f"{med(r[op]['maxrss_mib'] for r in rows):.0f}")
        cells.append(f"{med(r[op]['attach'] for r in rows):.2f}")
        print(f"| {op} | " + " | ".join(cells) + " |")
    print(f"\nvolume create -> available: {med(r['create'] for r in rows):.2f} s; "
          f"delete -> gone: {med(r['delete'] for r in rows):.2f} s; "
          f"start {report['start']['start']} s; stop {report['stop']} s")


if __name__ == "__main__":
    sys.exit(main())
