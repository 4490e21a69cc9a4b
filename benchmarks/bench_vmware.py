"""vmware add and get side by side against one vcsim: multistore, glance_store, bare requests.

    .venv/bin/python benchmarks/bench_vmware.py [--sizes-mib 256 1024]

Starts a vcsim (tests/backends/vcsim.py, 127.0.0.1:17190-17199, TLS from
the test CA), then for each size: an add and a get by

- ``multistore``: ``StoreSet.add`` (md5 + sha512 on the way) and ``get``;
- ``glance_store``: glance_store 5.x's vmware driver (``add`` with sha512,
  ``get``), imported from the Glance venv (/opt/multistore-glance/...)
  behind this venv's oslo.vmware, which the Glance venv does not have;
  glance_store knows no port, so its host option is patched to
  ``127.0.0.1:<port>`` and its oslo.vmware session given the port;
- ``bare``: one requests PUT with Content-Length and one streamed GET of
  the same bytes, no hashing.

Each transfer runs in a fresh process that reports the transfer's wall
time and CPU seconds (all threads; from after the store is configured and
logged in) and the process's peak RSS; vcsim's CPU seconds over the transfer
are read from /proc. The data is a 64 MiB random buffer cycled. The cap
column: on 2 cores, client CPU + vcsim CPU per second of wall time can not
pass 2, so the best MB/s a transfer can reach is
``size / ((client CPU + vcsim CPU) / 2)``.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import resource
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
BUFFER = os.urandom(64 * MiB)
GLANCE_SITE = glob.glob("/opt/multistore-glance/*/venv/lib/python3*/site-packages")


def harness() -> Any:
    spec = importlib.util.spec_from_file_location("multistore_vcsim_harness",
                                                  ROOT / "tests" / "backends" / "vcsim.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def chunks(size: int, step: int = MiB) -> Any:
    view = memoryview(BUFFER)
    sent = 0
    while sent < size:
        n = min(step, size - sent)
        start = sent % len(BUFFER)
        n = min(n, len(BUFFER) - start)
        yield view[start:start + n]
        sent += n


class Sized:
    """An iterable with a length: requests sends Content-Length."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Any:
        return (bytes(c) for c in chunks(self.size))


class Reader:
    """A file-like source for glance_store (read(n))."""

    def __init__(self, size: int) -> None:
        self.it = chunks(size, 64 * 1024)
        self.rest = b""

    def read(self, n: int = -1) -> bytes:
        out = bytearray(self.rest)
        while n < 0 or len(out) < n:
            try:
                out += next(self.it)
            except StopIteration:
                break
        if n >= 0:
            self.rest = bytes(out[n:])
            return bytes(out[:n])
        self.rest = b""
        return bytes(out)


# -- the worker ------------------------------------------------------------------

def worker(a: argparse.Namespace) -> int:
    url = f"https://127.0.0.1:{a.port}/folder/openstack_glance/{a.image}" \
          "?dsName=LocalDS_0&dcPath=DC0"
    location = a.location
    clock: list[float] = []

    def start() -> None:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        clock[:] = [time.monotonic(), ru.ru_utime + ru.ru_stime]

    if a.who == "bare":
        import requests
        start()
        if a.op == "add":
            r = requests.put(url, data=Sized(a.size), verify=a.ca, timeout=120)
            assert r.status_code in (200, 201), r.status_code
        else:
            with requests.get(url, verify=a.ca, stream=True, timeout=120) as r:
                got = sum(len(c) for c in r.raw.stream(4 * MiB, decode_content=False))
            assert got == a.size, got
    elif a.who == "multistore":
        import multistore
        from multistore.testing import make_conf
        conf = make_conf({
            "DEFAULT": {"enabled_backends": {"vmw": "vmware"}},
            "glance_store": {"default_backend": "vmw"},
            "vmw": {"vmware_server_host": "127.0.0.1", "vmware_server_port": a.port,
                    "vmware_server_username": a.user, "vmware_server_password": a.password,
                    "vmware_ca_file": a.ca, "vmware_datastores": "DC0:LocalDS_0"}})
        with multistore.load(conf) as stores:
            start()
            if a.op == "add":
                location = stores.add(a.image, (bytes(c) for c in chunks(a.size)),
                                      a.size).location
            else:
                with stores.get(location) as reader:
                    got = sum(len(c) for c in reader)
                assert got == a.size, got
    else:
        sys.path.extend(GLANCE_SITE)
        # glance_store's requests sessions take verify from the environment
        # when it names a CA bundle: point it at the test CA.
        os.environ["REQUESTS_CA_BUNDLE"] = a.ca
        import warnings
        warnings.simplefilter("ignore")
        import glance_store
        from glance_store._drivers import vmware_datastore as vd
        from oslo_config import cfg
        from oslo_vmware import api
        real = api.VMwareAPISession

        def session(host: str, *args: Any, **kwargs: Any) -> Any:
            return real(host.rpartition(":")[0], *args, port=a.port, **kwargs)

        vd.api.VMwareAPISession = session
        conf = cfg.ConfigOpts()
        glance_store.register_opts(conf)
        conf([], project="bench")
        conf.set_override("stores", ["vsphere"], "glance_store")
        conf.set_override("default_store", "vsphere", "glance_store")
        for k, v in {"vmware_server_host": "127.0.0.1", "vmware_server_username": a.user,
                     "vmware_server_password": a.password, "vmware_ca_file": a.ca,
                     "vmware_datastores": ["DC0:LocalDS_0"],
                     "vmware_task_poll_interval": 1}.items():
            conf.set_override(k, v, "glance_store")
        store = vd.Store(conf)
        original = store._option_get

        def option_get(param: str) -> Any:
            value = original(param)
            return f"{value}:{a.port}" if param == "vmware_server_host" else value

        store._option_get = option_get
        store.configure()
        start()
        if a.op == "add":
            location = store.add(a.image, Reader(a.size), a.size, "sha512")[0]
        else:
            from glance_store import location as gl
            loc = gl.Location("vsphere", vd.StoreLocation, conf, uri=location)
            it, size = store.get(loc)
            got = sum(len(c) for c in it)
            assert got == a.size, got
    wall = time.monotonic() - clock[0]
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall": wall, "cpu": ru.ru_utime + ru.ru_stime - clock[1],
                      "rss_mib": ru.ru_maxrss / 1024, "location": location}))
    return 0


# -- the parent -----------------------------------------------------------------

def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(sim: Any, who: str, op: str, size: int, image: str, location: str = "") -> dict:
    pid = sim.pid()
    before = cpu_of(pid)
    out = subprocess.run(
        [sys.executable, __file__, "worker", who, op, str(size), image, str(sim.port),
         sim.ca_file, sim.username, sim.password, location],
        capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(f"{who} {op} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["server_cpu"] = cpu_of(pid) - before
    return result


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes-mib", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--port", type=int, default=17190)
    a = p.parse_args()
    h = harness()
    sim = h.Vcsim(tempfile.mkdtemp(prefix="multistore-bench-vcsim-"), a.port)
    sim.start()
    rows = []
    try:
        for mib in a.sizes_mib:
            size = mib * MiB
            for who in ("multistore", "glance_store", "bare"):
                image = str(uuid.uuid4())
                add = run(sim, who, "add", size, image)
                get = run(sim, who, "get", size, image,
                          add["location"] or f"vsphere://127.0.0.1:{a.port}/folder/"
                          f"openstack_glance/{image}?dsName=LocalDS_0&dcPath=DC0")
                for op, r in (("add", add), ("get", get)):
                    gib = size / GiB
                    cap = size / MiB / ((r["cpu"] + r["server_cpu"]) / 2)
                    rows.append((mib, who, op, size / MiB / r["wall"], r["cpu"] / gib,
                                 r["server_cpu"] / gib, r["rss_mib"], cap))
                os.remove(next((sim.dir / "datastores").glob("govcsim-DC0-LocalDS_0-*"))
                          / "openstack_glance" / image)
    finally:
        sim.purge()         # stopped by PID, its directory removed
    load = os.getloadavg()[0]
    print(f"load average {load:.1f}, {os.cpu_count()} CPUs")
    print("| size MiB | client | op | MB/s | client CPU s/GiB | vcsim CPU s/GiB | peak RSS MiB "
          "| 2-core cap MB/s |")
    print("|---|---|---|---|---|---|---|---|")
    for mib, who, op, mbs, cpu, scpu, rss, cap in rows:
        print(f"| {mib} | {who} | {op} | {mbs:.0f} | {cpu:.2f} | {scpu:.2f} | {rss:.0f} "
              f"| {cap:.0f} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        n = argparse.Namespace()
        (n.who, n.op, size, n.image, port, n.ca, n.user, n.password, n.location) = \
            sys.argv[2:11]
        n.size, n.port = int(size), int(port)
        sys.exit(worker(n))
    sys.exit(main())
