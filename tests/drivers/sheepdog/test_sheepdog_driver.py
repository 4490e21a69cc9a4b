"""The sheepdog driver against real clusters: what the conformance suite does not cover.

Locations as glance_store wrote them, images it wrote (``dog``, one process per
64 MiB chunk) read back, the add that stays invisible until commit, two
clusters in one store set, a full cluster, a cluster down, not formatted,
killed or frozen in the middle of an add or a get, a writer killed with
SIGKILL and the sweep after it.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sheepdog_stores import sheepdog_stores

import multistore
from multistore import errors
from multistore.drivers.sheepdog import SheepdogDriver, SheepdogLocation
from multistore.drivers.sheepdog import protocol as proto
from multistore.drivers.sheepdog import writer as writer_module
from multistore.testing import random_bytes

MiB = 1 << 20
OBJ = 4 * MiB


def new_id(tag: str = "") -> str:
    return f"{tag}{os.urandom(6).hex()}"


def read(stores: multistore.StoreSet, location: str, **kwargs: Any) -> bytes:
    with stores.get(location, **kwargs) as reader:
        return reader.read_all()


def wait_for(predicate: Callable[[], Any], seconds: float = 10, what: str = "") -> Any:
    end = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"not within {seconds} s: {what or predicate}")
        time.sleep(0.05)


def data_objects(cluster: Any, vid: int) -> list[str]:
    """The data objects of VDI ``vid`` on disk (the inode object, which sheep keeps
    marked deleted after a delete, is not one)."""
    return [o for o in cluster.objects() if o[:2] == "00" and o[2:8] == f"{vid:06x}"]


def pausing(data: bytes, at: int, action: Callable[[], None], step: int = OBJ,
            ) -> Iterator[bytes]:
    """``data`` in ``step`` pieces; ``action()`` once ``at`` bytes were handed over."""
    for i in range(0, len(data), step):
        if i == at:
            action()
        yield data[i:i + step]


def driver(stores: multistore.StoreSet, store: str) -> SheepdogDriver:
    found = stores[store].driver
    assert isinstance(found, SheepdogDriver)
    return found


# -- locations ---------------------------------------------------------------------------

def test_locations_as_glance_store_wrote_them() -> None:
    uid = "6e1a0c5e-1b2c-4d1e-9f00-2a4b6c8d0e1f"
    full = SheepdogLocation.parse(f"sheepdog://127.0.0.1:7000:{uid}")
    assert (full.address, full.port, full.image_id) == ("127.0.0.1", 7000, uid)
    assert full.format() == f"sheepdog://127.0.0.1:7000:{uid}"
    legacy = SheepdogLocation.parse(f"sheepdog://{uid}")
    assert (legacy.address, legacy.port, legacy.image_id) == (None, None, uid)
    assert legacy.format() == f"sheepdog://{uid}"
    named = SheepdogLocation.parse(f"sheepdog://sheep-1.example.org:7001:{uid}")
    assert (named.address, named.port) == ("sheep-1.example.org", 7001)
    v6 = SheepdogLocation("::1", 7000, "a:b")
    assert v6.format() == "sheepdog://[::1]:7000:a%3Ab"
    assert SheepdogLocation.parse(v6.format()) == v6
    # Odd ids are quoted, so ':' never splits them.
    odd = SheepdogLocation("10.0.0.1", 7000, "x:y z%?#")
    assert odd.format() == "sheepdog://10.0.0.1:7000:x%3Ay%20z%25%3F%23"
    assert SheepdogLocation.parse(odd.format()) == odd
    for bad in ("sheepdog://", "sheepdog://a:7000", "sheepdog://a:b:c:d",
                "sheepdog://a:0:x", "sheepdog://a:70000:x", "sheepdog://a:p:x",
                "sheepdog://a:7000:", "sheepdog://a/b", "sheepdog://[::1:7000:x",
                "sheepdog://[zz]:7000:x", "sheepdog://a:7000:x?y", "sheepdog://%zz",
                "sheepdog://-h:7000:x", "rbd://a:7000:x", "sheepdog://a:7000:" + "x" * 256,
                # ids no add could have made (the core's rules)
                "sheepdog://a:7000:a%2Fb", "sheepdog://a%5Cb", "sheepdog://a:7000:%2E%2E",
                "sheepdog://a:7000:tab%09"):
        with pytest.raises(ValueError):
            SheepdogLocation.parse(bad)


def test_ids_that_cannot_name_a_vdi_are_refused_at_add(sheepdog_a: Any, tmp_path: Path) -> None:
    with sheepdog_stores(tmp_path, {"sd": (sheepdog_a, {})}) as stores:
        # The core refuses these first; the driver says why on its own too.
        for bad in ("x" * 256, "\u00e9" * 128):
            with pytest.raises(errors.BadLocation, match="cannot name a Sheepdog VDI"):
                driver(stores, "sd").open_writer(bad, 1)
            with pytest.raises(errors.BadLocation):
                stores.add(bad, b"x", 1)
        # 255 bytes of UTF-8 is the longest name sheep keeps.
        longest = "\u00e9" * 127 + "x"
        result = stores.add(longest, b"longest", 7)
        assert read(stores, result.location) == b"longest"
        assert longest in sheepdog_a.vdis()
        stores.delete(result.location)


# -- glance_store's images, and dog's view of ours -------------------------------------------

def test_images_glance_store_wrote_read_as_they_are(sheepdog_a: Any, tmp_path: Path) -> None:
    """glance_store: ``dog vdi create`` at the size, then ``dog vdi write`` per 64 MiB."""
    c = sheepdog_a
    uid = new_id("gs-")
    size = 70 * MiB + 5
    data = bytearray(random_bytes(size, seed=11))
    data[8 * MiB:16 * MiB] = bytes(8 * MiB)             # zeros dog writes as they are
    data = bytes(data)
    c.dog("vdi", "create", uid, str(size))
    for off in range(0, size, 64 * MiB):
        piece = data[off:off + 64 * MiB]
        c.dog("vdi", "write", uid, str(off), str(len(piece)), input=piece)
    with sheepdog_stores(tmp_path, {"sd": (c, {})}) as stores:
        for url in (f"sheepdog://127.0.0.1:{c.port}:{uid}", f"sheepdog://{uid}"):
            assert stores.get_size(url) == size
            assert hashlib.md5(read(stores, url)).digest() == hashlib.md5(data).digest()
            assert read(stores, url, offset=OBJ - 3, length=OBJ + 6) == data[OBJ - 3:2 * OBJ + 3]
        vid = c.vdis()[uid]["vid"]
        assert data_objects(c, vid)
        stores.delete(f"sheepdog://{uid}")
        assert uid not in c.vdis()
        wait_for(lambda: not data_objects(c, vid), what="the data objects freed")


def test_dog_reads_what_multistore_wrote(sheepdog_b: Any, tmp_path: Path) -> None:
    c = sheepdog_b
    data = bytearray(random_bytes(5 * OBJ + 123, seed=12))
    data[OBJ:3 * OBJ] = bytes(2 * OBJ)                   # two objects of zeros: holes
    data[4 * OBJ + 10:4 * OBJ + 20] = bytes(10)
    data = bytes(data)
    with sheepdog_stores(tmp_path, {"herd": (c, {})}) as stores:
        uid = new_id()
        result = stores.add(uid, data, len(data))
        assert result.location == f"sheepdog://127.0.0.1:{c.port}:{uid}"
        assert c.dog("vdi", "read", uid).stdout == data
        listed = c.vdis()[uid]
        assert listed["size"] == len(data)
        assert listed["used"] == 4 * OBJ                 # the zero objects were never written
        assert len(data_objects(c, listed["vid"])) == 4
        stores.delete(result.location)
        assert uid not in c.vdis()
        wait_for(lambda: not data_objects(c, listed["vid"]), what="the data objects freed")
        with pytest.raises(errors.NotFound):
            stores.delete(result.location)


def test_a_get_racing_a_delete_never_reads_zeros(sheepdog_a: Any, tmp_path: Path) -> None:
    """A delete zeroes the inode's entries before DEL_VDI; a get opened meanwhile
    must not take the zeroed entries for holes: whole bytes, or NotFound."""
    c = sheepdog_a
    data = random_bytes(3 * OBJ, seed=26)
    outcomes: collections.Counter[str] = collections.Counter()
    with sheepdog_stores(tmp_path, {"sd": (c, {})}) as stores:
        for _ in range(15):
            result = stores.add(new_id(), data, len(data))
            deleter = threading.Thread(target=stores.delete, args=(result.location,))
            deleter.start()
            while deleter.is_alive():
                try:
                    got = read(stores, result.location)
                except errors.NotFound:
                    outcomes["not found"] += 1
                else:
                    assert got == data, "a get during a delete read wrong bytes"
                    outcomes["whole"] += 1
            deleter.join()
    assert outcomes["not found"]


def test_a_delete_that_died_is_swept(sheepdog_b: Any, tmp_path: Path) -> None:
    """A delete writes its record first: the image is absent from then on, and a
    sweep finishes a delete whose process died (here: one that lost its lease)."""
    c = sheepdog_b
    data = random_bytes(2 * OBJ, seed=27)
    with sheepdog_stores(tmp_path, {"herd": (c, {})}) as stores:
        result = stores.add(new_id(), data, len(data))
        uid = result.location.rpartition(":")[2]
        vid = c.vdis()[uid]["vid"]
        conn = proto.Connection(c.address, c.port, 10)
        try:                                    # a delete, stopped after its first step
            conn.write(proto.vdi_oid(vid), writer_module.AddRecord.mine(deleting=True).pack(),
                       writer_module.RECORD_OFFSET, 1, 0)
        finally:
            conn.close()
        with pytest.raises(errors.NotFound, match="being added or deleted"):
            stores.get_size(result.location)
        with pytest.raises(errors.NotFound):
            stores.delete(result.location)
        assert stores.sweep(grace=0) == []      # its process (this one) is alive
        driver(stores, "herd").lease = -1
        swept = stores.sweep(grace=0)
        assert [s.removed for s in swept] == [True] and "deleted by pid" in swept[0].name
        assert uid not in c.vdis()
        wait_for(lambda: not data_objects(c, vid), what="the objects freed")


def test_buffers_across_object_boundaries(sheepdog_b: Any, tmp_path: Path) -> None:
    """Core buffers of 6 MiB: pieces straddle 4 MiB objects, an object is created
    by one buffer and finished by the next (after its creation is answered)."""
    c = sheepdog_b
    data = bytearray(random_bytes(31 * MiB + 5, seed=25))
    data[7 * MiB:13 * MiB] = bytes(6 * MiB)          # zeros across three objects
    data[22 * MiB:22 * MiB + 3] = bytes(3)
    data = bytes(data)
    with sheepdog_stores(tmp_path, {"herd": (c, {"sheepdog_store_chunk_size": 8})},
                         stream_chunk_size=6 * MiB) as stores:
        for size in (len(data), None):
            uid = new_id()
            result = stores.add(uid, data, size)
            assert c.dog("vdi", "read", uid).stdout == data
            assert read(stores, result.location) == data
            assert read(stores, result.location, offset=7 * MiB - 1, length=6 * MiB + 2) == \
                data[7 * MiB - 1:13 * MiB + 1]
            # Of the 8 objects, object 2 (8-12 MiB) is all zeros: a hole.
            assert len(data_objects(c, c.vdis()[uid]["vid"])) == 7
            stores.delete(result.location)


def test_an_image_deleted_while_read_is_not_found(sheepdog_a: Any, tmp_path: Path) -> None:
    c = sheepdog_a
    data = random_bytes(6 * OBJ, seed=23)
    with sheepdog_stores(tmp_path, {"sd": (c, {"sheepdog_store_chunk_size": 4})}) as stores:
        result = stores.add(new_id(), data, len(data))
        vid = c.vdis()[result.location.rpartition(":")[2]]["vid"]
        with pytest.raises(errors.NotFound, match="deleted while being read"), \
                stores.get(result.location) as reader:
            for n, _ in enumerate(reader):
                if n == 0:
                    stores.delete(result.location)
                    wait_for(lambda: not data_objects(c, vid), what="the objects freed")


def test_unknown_size_grows_the_vdi(sheepdog_a: Any, tmp_path: Path) -> None:
    c = sheepdog_a
    data = random_bytes(70 * MiB + 1, seed=13)
    uid = new_id()
    sizes: list[int] = []
    with sheepdog_stores(tmp_path, {"sd": (c, {"sheepdog_store_chunk_size": 16})}) as stores:
        result = stores.add(uid, pausing(data, 40 * MiB, lambda: sizes.append(
            c.vdis()[uid]["size"])), None)
        assert 40 * MiB <= sizes[0] < len(data)          # grown as the data came
        assert c.vdis()[uid]["size"] == result.size == len(data)
        assert read(stores, result.location) == data
        stores.delete(result.location)


# -- an add is invisible until it commits -------------------------------------------------

def test_an_add_in_progress_is_invisible_and_not_duplicated(sheepdog_a: Any,
                                                            tmp_path: Path) -> None:
    c = sheepdog_a
    data = random_bytes(6 * OBJ, seed=14)
    uid = new_id()
    with sheepdog_stores(tmp_path, {"sd": (c, {})}) as stores:
        location = driver(stores, "sd").location_for(uid).format()
        seen: dict[str, Any] = {}

        def look() -> None:
            seen["listed"] = uid in c.vdis()
            for name, call in (("size", lambda: stores.get_size(location)),
                               ("get", lambda: read(stores, location)),
                               ("delete", lambda: stores.delete(location)),
                               ("add", lambda: stores.add(uid, b"other", 5))):
                try:
                    call()
                except errors.MultistoreError as exc:
                    seen[name] = exc
            seen["swept"] = stores.sweep(grace=0)

        result = stores.add(uid, pausing(data, 3 * OBJ, look), len(data))
        assert seen["listed"]                            # under its final name ...
        for name in ("size", "get", "delete"):            # ... but absent to readers
            assert isinstance(seen[name], errors.NotFound), name
            assert "incomplete" in str(seen[name])
        assert isinstance(seen["add"], errors.Duplicate)
        assert "being added" in str(seen["add"])
        assert seen["swept"] == []                        # a live writer's: left alone
        assert read(stores, result.location) == data


def test_a_live_writer_keeps_its_lease(sheepdog_b: Any, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer whose source stalls longer than the lease is not swept: its
    heartbeat (every HEARTBEAT s, here 0.2) keeps it alive; once it stops, it is."""
    monkeypatch.setattr(writer_module, "HEARTBEAT", 0.2)
    c = sheepdog_b
    data = random_bytes(3 * OBJ, seed=24)
    uid = new_id()
    with sheepdog_stores(tmp_path, {"herd": (c, {})}) as stores:
        driver(stores, "herd").lease = 1.0
        swept: list[Any] = []

        def stall() -> None:
            time.sleep(2.0)                         # twice the lease, without a write
            swept.extend(stores.sweep(grace=0))
        result = stores.add(uid, pausing(data, OBJ, stall), len(data))
        assert swept == []
        assert read(stores, result.location) == data
        stores.delete(result.location)

        # Without heartbeats, the same stall loses the lease: the sweep removes
        # the VDI, the add fails at commit and removes what it wrote since.
        monkeypatch.setattr(writer_module, "HEARTBEAT", 3600)
        seen: list[int] = []

        def stall_and_note() -> None:
            seen.append(c.vdis()[uid]["vid"])
            stall()
        with pytest.raises(errors.MultistoreError, match="removed .* while being written"):
            stores.add(uid, pausing(data, OBJ, stall_and_note), len(data))
        assert [s.removed for s in swept] == [True]
        assert uid not in c.vdis()
        wait_for(lambda: not data_objects(c, seen[0]), what="every object written freed")


def test_a_vdi_being_created_is_invisible(sheepdog_b: Any, tmp_path: Path) -> None:
    """Between NEW_VDI and the add record: the sentinel size, no data."""
    c = sheepdog_b
    uid = new_id()
    conn = proto.Connection(c.address, c.port, 10)
    try:
        vid, _ = conn.new_vdi(uid.encode(), OBJ * proto.MAX_OBJECTS, 22)
    finally:
        conn.close()
    with sheepdog_stores(tmp_path, {"herd": (c, {})}) as stores:
        location = f"sheepdog://{uid}"
        with pytest.raises(errors.NotFound, match="incomplete"):
            stores.get_size(location)
        with pytest.raises(errors.Duplicate):
            stores.add(uid, b"x", 1)
        assert stores.sweep(grace=0) == []                # too young: it may be an add
        driver(stores, "herd").lease = 0
        time.sleep(1.1)                                   # sheep's clock counts seconds
        swept = stores.sweep(grace=0)
        assert [(s.removed, s.size) for s in swept] == [(True, 0)]
        assert uid in swept[0].name and "died creating it" in swept[0].name
    assert uid not in c.vdis()


# -- two clusters, one store set ----------------------------------------------------------

def test_two_clusters_in_one_store_set(sheepdog_a: Any, sheepdog_b: Any,
                                       tmp_path: Path) -> None:
    uid = new_id()
    one, two = random_bytes(MiB + 1, seed=1), random_bytes(2 * MiB + 2, seed=2)
    with sheepdog_stores(tmp_path, {"one": (sheepdog_a, {}), "two": (sheepdog_b, {})}) \
            as stores:
        first = stores.add(uid, one, len(one), store="one")
        second = stores.add(uid, two, len(two), store="two")
        assert first.location != second.location
        assert stores.store_for(first.location).id == "one"
        assert stores.store_for(second.location).id == "two"
        assert (read(stores, first.location), read(stores, second.location)) == (one, two)
        # The legacy form names no cluster: the store must be named.
        legacy = f"sheepdog://{uid}"
        with pytest.raises(errors.BadLocation, match="could belong to stores one, two"):
            stores.get_size(legacy)
        assert read(stores, legacy, store="two") == two
        with pytest.raises(errors.BadLocation):
            stores.get(second.location, store="one")
        listing = {e["id"]: e["properties"] for e in stores.info(detail=True)}
        for sid, cluster in (("one", sheepdog_a), ("two", sheepdog_b)):
            facts = listing[sid]
            assert (facts["status"], facts["port"], facts["nodes"]) == ("running",
                                                                      cluster.port, 1)
            assert facts["capacity"] >= facts["used"] > 0
            assert facts["free"] == facts["capacity"] - facts["used"]
            assert facts["copies"] == 1 and facts["store_driver"] == "plain"
        stores.delete(first.location)
        assert read(stores, second.location) == two
        stores.delete(second.location)


def test_two_stores_on_one_cluster_are_refused_at_load(sheepdog_a: Any, tmp_path: Path) -> None:
    """Every location of that cluster would belong to both."""
    with pytest.raises(errors.ConfigError, match="both use the Sheepdog cluster at "
                                                 f"127.0.0.1:{sheepdog_a.port}"):
        sheepdog_stores(tmp_path, {"x": (sheepdog_a, {}), "y": (sheepdog_a, {})})


# -- a full cluster, a cluster down or not formatted -------------------------------------------

def test_full_cluster_is_storage_full_and_leaves_nothing(sheepdog_full: Any,
                                                         tmp_path: Path) -> None:
    c = sheepdog_full
    before = (set(c.vdis()), c.node_info()["used"])
    data = random_bytes(16 * MiB, seed=15)
    with sheepdog_stores(tmp_path, {"small": (c, {})}) as stores:
        for size in (len(data), None):
            uid = new_id()
            with pytest.raises(errors.StorageFull) as info:
                stores.add(uid, data, size)
            assert info.value.store == "small"
            assert "no space" in str(info.value)
            assert set(c.vdis()) == before[0]
            with pytest.raises(errors.NotFound):
                stores.get_size(f"sheepdog://{uid}")
        wait_for(lambda: c.node_info()["used"] <= before[1] + OBJ,
                 what="the space written before the failure freed")


def test_cluster_filling_up_mid_add_frees_what_was_written(sheepdog_small: Any,
                                                          tmp_path: Path) -> None:
    """64 MiB of room, a 96 MiB image: sheep takes objects until it has no space."""
    c = sheepdog_small
    before = c.node_info()["used"]
    data = random_bytes(96 * MiB, seed=21)
    uid = new_id()
    seen: list[int] = []
    with sheepdog_stores(tmp_path, {"small": (c, {})}) as stores:
        with pytest.raises(errors.StorageFull, match="no space left"):
            stores.add(uid, pausing(data, 32 * MiB, lambda: seen.append(
                c.vdis()[uid]["vid"])), len(data))
        (vid,) = seen
        assert uid not in c.vdis()
        wait_for(lambda: not data_objects(c, vid), what="the objects written so far freed")
        wait_for(lambda: c.node_info()["used"] <= before + OBJ, what="the space back")
        # And the cluster takes an image that fits.
        fits = random_bytes(16 * MiB, seed=22)
        result = stores.add(uid, fits, len(fits))
        assert read(stores, result.location) == fits
        stores.delete(result.location)


def test_unformatted_cluster_is_unavailable(make_sheepdog_cluster: Any, tmp_path: Path) -> None:
    c = make_sheepdog_cluster()
    c.stop()
    c.start(formatted=False)
    with sheepdog_stores(tmp_path, {"new": (c, {})}) as stores:
        for call in (lambda: stores.add(new_id(), b"x", 1),
                     lambda: stores.get_size("sheepdog://x"),
                     lambda: read(stores, "sheepdog://x")):
            with pytest.raises(errors.BackendUnavailable) as info:
                call()
            assert info.value.store == "new"
            assert "Waiting for cluster to be formatted" in str(info.value)
            assert f"127.0.0.1:{c.port}" in str(info.value)
        facts = stores.info(detail=True)[0]["properties"]
        assert facts["status"] == "Waiting for cluster to be formatted"
        assert "capacity" not in facts


def test_cluster_down_is_unavailable(make_sheepdog_cluster: Any, tmp_path: Path) -> None:
    c = make_sheepdog_cluster()
    with sheepdog_stores(tmp_path, {"gone": (c, {})}) as stores:
        result = stores.add(new_id(), b"data", 4)
        c.kill()
        t0 = time.monotonic()
        for call in (lambda: stores.add(new_id(), b"x", 1),
                     lambda: stores.get_size(result.location),
                     lambda: read(stores, result.location),
                     lambda: stores.delete(result.location)):
            with pytest.raises(errors.BackendUnavailable, match="Connection refused") as info:
                call()
            assert info.value.store == "gone"
        assert time.monotonic() - t0 < 10
        facts = stores.info(detail=True)[0]["properties"]
        assert facts["status"].startswith("unreachable: cannot reach the Sheepdog cluster")
        c.restart()
        assert read(stores, result.location) == b"data"


# -- failures in the middle of an add or a get -------------------------------------------------

TIMEOUT = 2.0


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_cluster_lost_mid_add(make_sheepdog_cluster: Any, tmp_path: Path, fault: str) -> None:
    c = make_sheepdog_cluster()
    data = random_bytes(40 * MiB, seed=16)
    uid = new_id()
    with sheepdog_stores(tmp_path, {"sd": (c, {"sheepdog_store_timeout": TIMEOUT,
                                               "sheepdog_store_chunk_size": 8})}) as stores:
        t0 = time.monotonic()
        with pytest.raises(errors.BackendUnavailable) as info:
            stores.add(uid, pausing(data, 12 * MiB, getattr(c, fault)), len(data))
        elapsed = time.monotonic() - t0
        assert info.value.store == "sd" and info.value.operation == "add"
        if fault == "freeze":
            assert f"did not answer within {TIMEOUT:g} s" in str(info.value)
            assert elapsed < 3 * TIMEOUT + 5        # the write, then the failed cleanup
            c.thaw()
        else:
            assert elapsed < 5
            c.restart()
        # The cleanup could not reach sheep: the partial VDI is left, invisible,
        # and known to this process as abandoned.
        assert uid in c.vdis()
        with pytest.raises(errors.NotFound):
            stores.get_size(f"sheepdog://{uid}")
        vid = c.vdis()[uid]["vid"]
        swept = stores.sweep(grace=0)
        assert [(s.store, s.removed) for s in swept] == [("sd", True)]
        assert uid in swept[0].name and swept[0].size == len(data)
        assert uid not in c.vdis()
        wait_for(lambda: not data_objects(c, vid), what="the partial image's objects freed")
        result = stores.add(uid, data, len(data))      # the id is free again
        assert read(stores, result.location) == data


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_cluster_lost_mid_get(make_sheepdog_cluster: Any, tmp_path: Path, fault: str) -> None:
    c = make_sheepdog_cluster()
    data = random_bytes(48 * MiB, seed=17)
    with sheepdog_stores(tmp_path, {"sd": (c, {"sheepdog_store_timeout": TIMEOUT,
                                               "sheepdog_store_chunk_size": 8})}) as stores:
        result = stores.add(new_id(), data, len(data))
        got = bytearray()
        t0 = time.monotonic()
        with pytest.raises(errors.BackendUnavailable) as info, \
                stores.get(result.location) as reader:
            for chunk in reader:
                got += chunk
                if len(got) == 8 * MiB:
                    getattr(c, fault)()
                    t0 = time.monotonic()
        elapsed = time.monotonic() - t0
        assert info.value.store == "sd" and info.value.operation == "get"
        assert bytes(got) == data[:len(got)]
        if fault == "freeze":      # a read that timed out is resumed once, then fails
            assert f"did not answer within {TIMEOUT:g} s" in str(info.value)
            assert elapsed < 2 * TIMEOUT + 3
            c.thaw()
        else:                      # refused: resumed 4 times, 0.5 + 1 + 2 + 4 s apart
            assert "gave up after 4 attempts" in str(info.value)
            assert 7 < elapsed < 15
            c.restart()
        assert read(stores, result.location) == data


def test_get_resumes_across_a_sheep_restart(make_sheepdog_cluster: Any, tmp_path: Path) -> None:
    c = make_sheepdog_cluster()
    data = random_bytes(48 * MiB, seed=18)
    with sheepdog_stores(tmp_path, {"sd": (c, {"sheepdog_store_chunk_size": 8})}) as stores:
        result = stores.add(new_id(), data, len(data))
        got = bytearray()
        with stores.get(result.location, offset=MiB + 1) as reader:
            for chunk in reader:
                got += chunk
                if len(got) < 8 * MiB <= len(got) + len(chunk):
                    c.kill()
                    threading.Timer(0.3, c.restart).start()
        assert bytes(got) == data[MiB + 1:]


# -- a writer killed with SIGKILL, and the sweep -------------------------------------------------

CHILD = textwrap.dedent("""
    import sys, time
    from oslo_config import cfg
    import multistore
    conf = cfg.ConfigOpts()
    multistore.register_opts(conf)
    conf(["--config-file", sys.argv[1]], project="multistore", default_config_files=[])
    stores = multistore.load(conf)
    def slow():
        block = bytes(range(256)) * 16384                  # 4 MiB, not zeros
        for i in range(1000):
            print(i, flush=True)
            yield block
            time.sleep(0.05)
    stores.add(sys.argv[2], slow(), None)
""")


def test_writer_killed_mid_add_is_swept(sheepdog_b: Any, tmp_path: Path) -> None:
    c = sheepdog_b
    uid = new_id("killed-")
    with sheepdog_stores(tmp_path, {"herd": (c, {})}) as stores:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "multistore.conf"),
                                  uid], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            while int(child.stdout.readline() or -1) < 5:
                assert child.poll() is None
            # Alive and writing: invisible, and not a leftover.
            assert uid in c.vdis()
            with pytest.raises(errors.NotFound):
                stores.get_size(f"sheepdog://{uid}")
            assert stores.sweep(grace=0) == []
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        finally:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            child.wait(10)
        vid = c.vdis()[uid]["vid"]
        assert data_objects(c, vid)
        assert stores.sweep(grace=3600, remove=False) == []     # too recent for this grace
        found = stores.sweep(grace=0, remove=False)
        assert [(f.removed, f.store) for f in found] == [(False, "herd")]
        assert f"pid {child.pid} on" in found[0].name and found[0].size >= 4 * OBJ
        swept = stores.sweep(grace=0)
        assert [s.removed for s in swept] == [True]
        assert uid not in c.vdis()
        wait_for(lambda: not data_objects(c, vid), what="the dead writer's objects freed")
        assert stores.sweep(grace=0) == []


def test_a_leftover_touched_again_is_not_removed(sheepdog_a: Any, tmp_path: Path) -> None:
    """remove_leftover checks again: a record that moved (a live writer) is InUse."""
    c = sheepdog_a
    uid = new_id()
    with sheepdog_stores(tmp_path, {"sd": (c, {})}) as stores:
        d = driver(stores, "sd")
        writer = d.open_writer(uid, 2 * OBJ)
        try:
            writer.write(memoryview(random_bytes(OBJ, seed=19)))
            d.lease = -1                             # every heartbeat looks missed
            (leftover,) = d.find_leftovers(grace=-1)
            conn = proto.Connection(c.address, c.port, 10)
            try:                                     # the writer's heartbeat
                vid = c.vdis()[uid]["vid"]
                conn.write(proto.vdi_oid(vid), struct.pack("<Q", time.time_ns()),
                           proto.INODE_HEADER_SIZE - 128 + 8, 1, 0)
            finally:
                conn.close()
            with pytest.raises(errors.InUse, match="changed since it was found"):
                d.remove_leftover(leftover)
            d.lease = 120
            writer.write(memoryview(random_bytes(OBJ, seed=20)))
            stored = writer.commit()
        except BaseException:
            writer.abort()
            raise
        assert stores.get_size(stored.location.format()) == 2 * OBJ
        stores.delete(stored.location.format())
