"""What a killed writer leaves in Swift, and StoreSet.sweep (issue 14)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import swiftclient

import multistore
from multistore.testing import make_conf

CHILD = r"""
import hashlib, json, os, sys, time
import multistore
from multistore.testing import make_conf, random_bytes

sections, conf_dir, image_id, mode, stop_file = sys.argv[1:6]
stores = multistore.load(make_conf(json.loads(sections), conf_dir))
piece = random_bytes(256 * 1024, seed=5)

def source():
    sent = 0
    while True:
        yield piece
        sent += len(piece)
        if mode == "dead" and sent >= 14_000_000:
            # The core hands the writer 4 MiB buffers: several segments are
            # stored by now, one in progress.
            print("ready", flush=True)
            time.sleep(3600)
        if mode == "live":
            if os.path.exists(stop_file):
                return
            time.sleep(0.1)                  # ~2.5 MB/s: 4 MiB reach the writer every 1.6 s

result = stores.add(image_id, source(), None)
print(json.dumps({"location": result.location, "md5": result.checksum}), flush=True)
"""


def segments(conn, container, image_id):
    try:
        listing = conn.get_container(container + "_segments", prefix=image_id + "/",
                                     full_listing=True)[1]
    except swiftclient.ClientException as exc:
        if exc.http_status == 404:
            return []
        raise
    return [o["name"] for o in listing]


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_sweep_removes_a_killed_uploads_segments_never_a_live_ones(refs_file, tmp_path,
                                                                    swift_conn):
    """A child killed with SIGKILL mid segmented add leaves segments; the
    sweep reports and removes them, while the segments of an upload still
    in progress in another process are kept and that image commits whole."""
    container = "sweep" + uuid.uuid4().hex[:8]
    sections = {"DEFAULT": {"enabled_backends": {"objects": "swift"}},
                "glance_store": {"default_backend": "objects"},
                "objects": {"swift_store_config_file": str(refs_file),
                            "swift_store_container": container,
                            "swift_store_create_container_on_put": True,
                            "swift_store_large_object_size": 1,
                            "swift_store_large_object_chunk_size": 1}}
    stop = tmp_path / "stop-live"
    dead_id, live_id = str(uuid.uuid4()), str(uuid.uuid4())

    def child(image_id, mode):
        conf_dir = tmp_path / f"conf-{mode}"
        return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(sections),
                                 str(conf_dir), image_id, mode, str(stop)],
                                stdout=subprocess.PIPE, text=True)

    live = child(live_id, "live")
    dead = child(dead_id, "dead")
    try:
        assert dead.stdout.readline().strip() == "ready"
        wait_for(lambda: len(segments(swift_conn, container, dead_id)) >= 6)
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait()
        orphans = segments(swift_conn, container, dead_id)
        assert len(orphans) >= 6
        wait_for(lambda: len(segments(swift_conn, container, live_id)) >= 2)
        time.sleep(5.5)          # the dead upload's newest segment is older than grace

        conf = make_conf(sections, tmp_path / "conf-sweeper")
        with multistore.load(conf) as stores:
            found = stores.sweep(grace=5.0, remove=False)
            assert [f.name.split("/")[1] for f in found] == [dead_id]
            assert found[0].size == len(orphans) * 1000 * 1024 and not found[0].removed
            assert segments(swift_conn, container, dead_id) == orphans
            live_before = segments(swift_conn, container, live_id)

            swept = stores.sweep(grace=5.0)
            assert [(s.name.split("/")[1], s.removed) for s in swept] == [(dead_id, True)]
            assert segments(swift_conn, container, dead_id) == []
            assert set(live_before) <= set(segments(swift_conn, container, live_id))

            stop.touch()
            out, _ = live.communicate(timeout=120)
            assert live.returncode == 0
            result = json.loads(out.strip().splitlines()[-1])
            # A committed image's segments are never leftovers, however old.
            assert stores.sweep(grace=0.0) == []
            digest = hashlib.md5()
            with stores.get(result["location"]) as reader:
                for chunk in reader:
                    digest.update(chunk)
            assert digest.hexdigest() == result["md5"]
            stores.delete(result["location"])
    finally:
        for proc in (live, dead):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert segments(swift_conn, container, live_id) == []


def test_multi_tenant_store_finds_nothing(tmp_path):
    """Multi-tenant images live in users' accounts, which the store cannot
    list without their tokens: the sweep finds nothing, and says so by
    returning an empty list rather than failing."""
    conf = make_conf({"DEFAULT": {"enabled_backends": {"mt": "swift"}},
                      "glance_store": {"default_backend": "mt"},
                      "mt": {"swift_store_multi_tenant": True}}, tmp_path)
    with multistore.load(conf) as stores:
        assert stores.sweep(grace=0.0) == []


@pytest.mark.parametrize("seed", [0, 2])
def test_sweep_lists_only_this_stores_containers(make_swift_stores, swift_conn, seed):
    """Segments in another store's container (whose name starts like this
    store's) are not this store's leftovers."""
    other = "glance_zz" + uuid.uuid4().hex[:8]
    swift_conn.put_container(other + "_segments")
    name = f"{uuid.uuid4()}/{'ab' * 8}/00000000"
    swift_conn.put_object(other + "_segments", name, b"x")
    with make_swift_stores(swift_store_multiple_containers_seed=seed) as stores:
        assert not [f for f in stores.sweep(grace=0.0, remove=False) if other in f.name]
    assert [o["name"] for o in swift_conn.get_container(other + "_segments")[1]] == [name]
    swift_conn.delete_object(other + "_segments", name)
