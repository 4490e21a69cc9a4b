"""Copies inside Ceph (RbdDriver.copy_within) and reads that fail over
between clusters, against real Ceph clusters.

One cluster with two pools (``images`` and ``images2``): librbd copies the
image inside the cluster. Two clusters: the copy is streamed. A cluster
frozen mid-read: the reader finishes from the other cluster's copy.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import multistore
from multistore import errors
from multistore.drivers import rbd as rbd_driver
from multistore.testing import random_bytes

MiB = 1024 * 1024
POOL2 = "images2"


def new_id() -> str:
    return str(uuid.uuid4())


def read(stores: multistore.StoreSet, location: str, store: str | None = None) -> bytes:
    with stores.get(location, store=store) as reader:
        return reader.read_all()


def leftovers(stores: multistore.StoreSet, image_id: str, *store_ids: str) -> list[Any]:
    """What the sweep would find of ``image_id`` (other tests' killed writers
    may leave partial images of their own in the shared clusters)."""
    return [lo for sid in store_ids for lo in stores[sid].driver.find_leftovers(0)
            if lo.handle.endswith("\\" + image_id)]


@pytest.fixture
def one_cluster(ceph_a, make_rbd_stores) -> Iterator[multistore.StoreSet]:
    """``fast`` (pool images) and ``cheap`` (pool images2) on cluster A."""
    ceph_a.add_pool(POOL2)
    with make_rbd_stores({"fast": (ceph_a, {}),
                          "cheap": (ceph_a, {"rbd_store_pool": POOL2})}) as stores:
        yield stores


def test_offloaded_copy_between_pools_equals_a_streamed_one(one_cluster, ceph_a,
                                                           monkeypatch):
    stores = one_cluster
    data = random_bytes(9 * MiB + 12345, seed=41)
    image_id = new_id()
    src = stores.add(image_id, data, len(data), store="fast")
    calls: list[Any] = []
    real = rbd_driver.RbdDriver.copy_within

    def spy(self: Any, *args: Any, **kw: Any) -> Any:
        result = real(self, *args, **kw)
        calls.append(result)
        return result

    monkeypatch.setattr(rbd_driver.RbdDriver, "copy_within", spy)
    offloaded, = stores.copy(src.location, ["cheap"], offload=True)
    assert len(calls) == 1 and calls[0] is not None        # librbd copied it
    monkeypatch.undo()
    assert offloaded.location == f"rbd://{ceph_a.fsid}/{POOL2}/{image_id}/snap"
    assert read(stores, offloaded.location) == data
    # The committed image is what a writer commits: snapshot snap, protected.
    import rbd
    driver = stores["cheap"].driver
    with rbd.Image(driver.pool_context(), image_id, read_only=True) as image:
        assert [s["name"] for s in image.list_snaps()] == ["snap"]
        assert image.is_protected_snap("snap")
        assert image.size() == len(data)
    # The same result as a streamed copy of the same image.
    stores.delete(offloaded.location)
    streamed, = stores.copy(src.location, ["cheap"])
    assert (offloaded.size, offloaded.checksum, offloaded.multihash, offloaded.metadata) == \
        (streamed.size, streamed.checksum, streamed.multihash, streamed.metadata)
    assert offloaded.checksum == hashlib.md5(data).hexdigest()
    assert offloaded.metadata == {"store": "cheap"}
    assert offloaded.size == len(data)
    assert not [n for n in ceph_a.pool_images(POOL2) if n.startswith("multistore-partial")]
    assert not leftovers(stores, image_id, "fast", "cheap")
    stores.delete(streamed.location)
    stores.delete(src.location)


def test_offloaded_copy_in_the_same_pool_is_refused_as_duplicate(ceph_a, make_rbd_stores):
    """Two stores on the same pool: the id exists, Duplicate, nothing left."""
    with make_rbd_stores({"fast": (ceph_a, {}), "twin": (ceph_a, {})}) as stores:
        data = random_bytes(MiB, seed=42)
        src = stores.add(new_id(), data, len(data), store="fast")
        parsed = rbd_driver.RbdLocation.parse(src.location)
        with pytest.raises(errors.Duplicate):
            stores["twin"].driver.copy_within(stores["fast"].driver, parsed,
                                              parsed.image_id)
        assert read(stores, src.location, store="fast") == data
        # Only the image itself (other tests' writers may leave their own partials).
        assert [n for n in ceph_a.images() if parsed.image_id in n] == [parsed.image_id]
        assert not leftovers(stores, parsed.image_id, "fast")
        stores.delete(src.location, store="fast")


def test_duplicate_target_is_refused_and_leaves_nothing(one_cluster, ceph_a):
    stores = one_cluster
    image_id = new_id()
    first, second = random_bytes(2 * MiB, seed=43), random_bytes(3 * MiB, seed=44)
    src = stores.add(image_id, first, len(first), store="fast")
    there = stores.add(image_id, second, len(second), store="cheap")
    with pytest.raises(errors.Duplicate):
        stores.copy(src.location, ["cheap"], offload=True)
    assert read(stores, there.location) == second        # never overwritten
    assert read(stores, src.location) == first
    assert not [n for n in ceph_a.pool_images(POOL2) if n.startswith("multistore-partial")]
    assert not leftovers(stores, image_id, "fast", "cheap")
    for loc in (src.location, there.location):
        stores.delete(loc)


def test_failed_offloaded_copy_leaves_nothing(one_cluster, ceph_a):
    """A copy whose source snapshot is gone fails; no partial image remains."""
    stores = one_cluster
    data = random_bytes(MiB, seed=45)
    src = stores.add(new_id(), data, len(data), store="fast")
    parsed = rbd_driver.RbdLocation.parse(src.location)
    missing = rbd_driver.RbdLocation(parsed.fsid, parsed.pool, new_id(), "snap")
    with pytest.raises(errors.NotFound):
        stores["cheap"].driver.copy_within(stores["fast"].driver, missing, missing.image_id)
    assert not [n for n in ceph_a.pool_images(POOL2) if n.startswith("multistore-partial")]
    assert not leftovers(stores, missing.image_id, "cheap")
    stores.delete(src.location)


def test_two_clusters_are_streamed(ceph_a, ceph_b, make_rbd_stores):
    with make_rbd_stores({"a": (ceph_a, {}), "b": (ceph_b, {})}) as stores:
        data = random_bytes(3 * MiB + 7, seed=46)
        image_id = new_id()
        src = stores.add(image_id, data, len(data), store="a")
        parsed = rbd_driver.RbdLocation.parse(src.location)
        # The driver declines another cluster's image ...
        assert stores["b"].driver.copy_within(stores["a"].driver, parsed, image_id) is None
        assert not [n for n in ceph_b.images() if image_id in n]
        # ... so the store set streams it.
        copied, = stores.copy(src.location, ["b"], offload=True)
        assert copied.location == f"rbd://{ceph_b.fsid}/images/{image_id}/snap"
        assert copied.checksum == hashlib.md5(data).hexdigest()
        assert copied.metadata == {"store": "b"}
        assert read(stores, copied.location) == data
        for loc in (src.location, copied.location):
            stores.delete(loc)


def test_reader_fails_over_when_a_cluster_freezes_mid_read(ceph_a, ceph_b, make_rbd_stores):
    """Cluster A preferred (weight), frozen mid-read: the read finishes from
    B's copy at the byte where A's stopped, byte-identical."""
    timeout = 3
    with make_rbd_stores({"a": (ceph_a, {"weight": 10, "rados_connect_timeout": timeout}),
                          "b": (ceph_b, {"weight": 1})}) as stores:
        data = random_bytes(40 * MiB, seed=47)
        image_id = new_id()
        a = stores.add(image_id, data, len(data), store="a")
        b, = stores.copy(a.location, ["b"])
        records = [{"url": b.location, "metadata": {"store": "b"}},
                   {"url": a.location, "metadata": {"store": "a"}}]
        got = bytearray()
        switch_at = None
        frozen_at = None
        try:
            with stores.open_best(records, checksum=a.checksum) as reader:
                for chunk in reader:
                    if reader.switches and switch_at is None:
                        switch_at = len(got)      # the bytes before B's first chunk
                    got += chunk
                    if frozen_at is None and len(got) >= 4 * MiB:
                        frozen_at = (len(got), time.monotonic())
                        ceph_a.freeze()
                ended = time.monotonic()
        finally:
            ceph_a.thaw()
        assert bytes(got) == data
        assert reader.stores == ["a", "b"]
        switch, = reader.switches
        assert (switch.from_store, switch.to_store) == ("a", "b")
        assert switch.position == switch_at
        # A's reads already in flight when it froze were still delivered
        # (READ_DEPTH pieces beyond what the consumer held, and whatever A
        # answered before SIGSTOP took hold: 17 MiB once on a loaded machine,
        # memstore answers 1 MiB per millisecond), then B took over mid-image.
        assert frozen_at is not None
        assert frozen_at[0] <= switch.position < len(data)
        assert switch.position % rbd_driver.READ_PIECE == 0
        # The client noticed within its operation timeout (plus the slack of
        # a loaded machine), not Ceph's default minutes.
        assert ended - frozen_at[1] < 4 * timeout + 10
        for loc in (a.location, b.location):
            stores.delete(loc)


def test_cluster_freezing_mid_copy_leaves_nothing(ceph_a, make_rbd_stores):
    """The cluster stops answering while librbd copies: a clear error within
    the timeout, the source intact, and no partial image once it is back."""
    import rados
    import rbd
    ceph_a.add_pool(POOL2)
    timeout = 3
    with make_rbd_stores({"fast": (ceph_a, {"rados_connect_timeout": timeout,
                                            "rbd_store_chunk_size": 1}),
                          "cheap": (ceph_a, {"rbd_store_pool": POOL2,
                                             "rados_connect_timeout": timeout,
                                             "rbd_store_chunk_size": 1})}) as stores:
        data = random_bytes(160 * MiB, seed=48)
        image_id = new_id()
        src = stores.add(image_id, data, len(data), store="fast")
        stores["cheap"].driver.pool_context()         # connected before the trouble
        watcher = rados.Rados(conffile=ceph_a.conf_path, rados_id=ceph_a.user,
                              conf={"client_mount_timeout": "10"})
        watcher.connect()
        seen: list[str] = []

        def freeze_once_copying() -> None:
            with watcher.open_ioctx(POOL2) as ioctx:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    seen.extend(n for n in rbd.RBD().list(ioctx)
                                if n.startswith(rbd_driver.PARTIAL_PREFIX))
                    if seen:
                        ceph_a.freeze()
                        return
                    time.sleep(0.01)

        spy = threading.Thread(target=freeze_once_copying)
        spy.start()
        start = time.monotonic()
        try:
            with pytest.raises(errors.BackendUnavailable) as info:
                stores.copy(src.location, ["cheap"], offload=True)
            elapsed = time.monotonic() - start
        finally:
            spy.join()
            ceph_a.thaw()
            watcher.shutdown()
        assert seen, "the copy ended before it could be interrupted"
        assert info.value.store == "cheap"
        assert elapsed < 60
        # Once the cluster is back, the store's next operations remove what
        # the copy left (after the OSD drops the lost session's watch).
        deadline = time.monotonic() + 60
        while stores["cheap"].driver._pending or \
                [n for n in ceph_a.pool_images(POOL2) if n.startswith("multistore-partial")]:
            assert time.monotonic() < deadline, ceph_a.pool_images(POOL2)
            time.sleep(1)
            stores["cheap"].driver.pool_context()     # any operation tries again
        assert not leftovers(stores, image_id, "fast", "cheap")
        assert read(stores, src.location) == data
        stores.delete(src.location)
