"""Glance 33 storing through multistore's drivers (issue 13), through Glance's
REST API only, against the backends themselves.

``ms_glance`` (conftest.py) is a real Glance whose stores are multistore's
drivers loaded by glance_store from the ``glance_store.drivers`` entry points
(``multistore_file``...), beside ``gs_file``, a store of glance_store's own
file driver. Every test checks in the backend, directly, that the bytes are
there (and nothing else: no partial data) and then gone, and that the
locations Glance records are exactly those glance_store's driver writes.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any

import pytest

harness = sys.modules["multistore_glance_harness"]     # loaded by conftest.py
backends_mod = sys.modules["multistore_glance_backends"]
MiB = harness.MiB
md5 = backends_mod.md5

#: Every store of ms_glance, and those of multistore's drivers.
ALL = ("ms_fast", "ms_cheap", "ms_ceph", "ms_swift", "ms_sheep", "gs_file")
MULTISTORE = ("ms_fast", "ms_cheap", "ms_ceph", "ms_swift", "ms_sheep")


def written_by_multistore(glance: Any, store: str, image_id: str) -> bool:
    """Whether multistore's core logged writing the image into the store
    (multistore.storeset's INFO line, in Glance's log)."""
    return f"image {image_id} to store {store}: " in glance.log_text()


def check_image(client: Any, backends: Any, image_id: str, data: bytes,
                stores: set[str]) -> None:
    """Active in exactly ``stores`` with the checksums of ``data``; one location
    per store, in glance_store's URL form, with ``{'store': id}`` as metadata;
    the bytes in each backend (read there), written by multistore's core in
    multistore's stores, and nothing else of the image in any backend; a
    whole download through Glance that matches."""
    image = client.get_image(image_id)
    assert image["status"] == "active"
    assert harness.image_stores(image) == stores
    assert image["size"] == len(data)
    assert image["checksum"] == md5(data)
    assert (image["os_hash_algo"], image["os_hash_value"]) == \
        ("sha512", hashlib.sha512(data).hexdigest())
    locations = client.locations(image_id)
    assert sorted((loc["url"], loc["metadata"]) for loc in locations) == \
        sorted((backends.expected_url(s, image_id), {"store": s}) for s in stores)
    for store in ALL:
        if store in stores:
            assert backends.read(store, image_id) == data, store
            assert written_by_multistore(backends.glance, store, image_id) == \
                (store in MULTISTORE), store
        else:
            assert not backends.holds(store, image_id), store
        assert backends.leftovers(store, {image_id} if store in stores else set()) == [], \
            store
    got = client.download(image_id)
    assert (got.status, got.size, got.md5) == (200, len(data), md5(data))


def check_gone(backends: Any, image_id: str) -> None:
    for store in ALL:
        assert not backends.holds(store, image_id), store
        assert backends.leftovers(store) == [], store


def test_stores_listing(ms_client: Any) -> None:
    """``/v2/info/stores`` lists multistore's stores like any other; Glance's
    ``stores/detail`` answers 500 for any type it does not know (discovery.py
    lists rbd, file, cinder, swift, s3 and http only): Glance's limitation,
    the same for every third-party driver."""
    stores = ms_client.stores()
    assert [s["id"] for s in stores] == list(ALL)
    assert [s["id"] for s in stores if s.get("default") == "true"] == ["ms_fast"]
    assert {s["id"]: s["description"] for s in stores} == {
        "ms_fast": "ms_fast (multistore_file)", "ms_cheap": "ms_cheap (multistore_file)",
        "ms_ceph": "ms_ceph (multistore_rbd)", "ms_swift": "ms_swift (multistore_swift)",
        "ms_sheep": "ms_sheep (multistore_sheepdog)", "gs_file": "gs_file (file)"}
    assert not any("read-only" in s for s in stores)
    status, _, body = ms_client.request("GET", "/v2/info/stores/detail")
    assert status == 500, body


@pytest.mark.parametrize("store", ["ms_cheap", "ms_ceph", "ms_swift", "ms_sheep"])
def test_upload_to_a_chosen_store_then_download_whole_and_ranged(
        ms_client: Any, ms_backends: Any, image_data: bytes, store: str) -> None:
    image = ms_client.create_image(name=f"upload-{store}")["id"]
    ms_client.upload(image, image_data, store=store)
    check_image(ms_client, ms_backends, image, image_data, {store})

    # Every multistore driver reads ranges (READ_RANDOM): glance_store's rbd
    # and swift drivers answer 400. Ranges across rbd objects (4 MiB) and
    # swift segments (1 MB).
    size = len(image_data)
    for header, start, end in [("bytes=0-0", 0, 1),
                               ("bytes=100-4194403", 100, 4194404),
                               ("bytes=1023999-2048000", 1023999, 2048001),
                               (f"bytes={size - 10}-", size - 10, size),
                               ("bytes=-4097", size - 4097, size),
                               (f"bytes=0-{size - 1}", 0, size)]:
        got = ms_client.download(image, byte_range=header, keep=True)
        assert got.status == 206, (header, got.body[:300])
        assert got.body == image_data[start:end], header
        assert got.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
        assert hashlib.sha512(got.body).digest() == \
            hashlib.sha512(image_data[start:end]).digest()
    assert ms_client.download(image, byte_range=f"bytes={size}-{size + 10}").status == 416

    ms_client.delete(image)
    check_gone(ms_backends, image)
    assert ms_client.request("GET", f"/v2/images/{image}")[0] == 404


def test_upload_chunked_to_the_default_store(ms_client: Any, ms_backends: Any,
                                             image_data: bytes) -> None:
    """No size announced (Transfer-Encoding: chunked): Glance passes size 0."""
    image = ms_client.create_image(name="chunked")["id"]
    ms_client.upload(image, (image_data[i:i + MiB] for i in range(0, len(image_data), MiB)))
    check_image(ms_client, ms_backends, image, image_data, {"ms_fast"})
    ms_client.delete(image)
    check_gone(ms_backends, image)


def test_empty_image(ms_client: Any, ms_backends: Any) -> None:
    image = ms_client.create_image(name="empty")["id"]
    ms_client.upload(image, b"", store="ms_cheap")
    check_image(ms_client, ms_backends, image, b"", {"ms_cheap"})
    ms_client.delete(image)
    check_gone(ms_backends, image)


def test_glance_direct_import_to_several_stores(ms_glance: Any, ms_client: Any,
                                                ms_backends: Any, image_data: bytes) -> None:
    """Staged into Glance's own staging store, imported into every store
    (multistore's five and glance_store's) in one task."""
    image = ms_client.create_image(name="direct")["id"]
    ms_client.stage(image, image_data)
    ms_client.import_image(image, "glance-direct", stores=list(ALL))
    ms_client.wait_stores(image, ALL)
    check_image(ms_client, ms_backends, image, image_data, set(ALL))
    assert [t["status"] for t in ms_client.wait_tasks(image)] == ["success"]
    deadline = time.monotonic() + 30     # the staged file goes once the task ends
    while os.listdir(ms_glance.staging_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert os.listdir(ms_glance.staging_dir) == []
    ms_client.delete(image)
    check_gone(ms_backends, image)


@pytest.mark.parametrize("source", ["ms_cheap", "ms_ceph", "ms_swift", "ms_sheep",
                                    "gs_file"])
def test_copy_image_to_all_stores(ms_glance: Any, ms_client: Any, ms_backends: Any,
                                  image_data: bytes, source: str) -> None:
    """copy-image with ``all_stores``: from each kind of multistore's stores
    to every other store (glance_store's among them), and from glance_store's
    to all of multistore's.
    Each copy is read through Glance (``?prefer=<store>`` puts its location
    first); the source's copy is then dropped (``DELETE
    /v2/stores/{store}/{id}``) and the image read from the copies."""
    image = ms_client.create_image(name=f"copy-from-{source}")["id"]
    ms_client.upload(image, image_data, store=source)
    ms_client.copy_image(image, all_stores=True)
    ms_client.wait_stores(image, ALL)
    check_image(ms_client, ms_backends, image, image_data, set(ALL))
    tasks = ms_client.wait_tasks(image)
    assert [t["status"] for t in tasks] == ["success"], tasks
    assert sorted(tasks[0]["input"]["backend"]) == sorted(set(ALL) - {source})
    for store in ALL:
        status, _, body = ms_client.request("GET", f"/v2/images/{image}/file?prefer={store}")
        assert (status, md5(body)) == (200, md5(image_data)), store

    ms_client.delete_from_store(image, source)
    check_image(ms_client, ms_backends, image, image_data, set(ALL) - {source})
    ms_client.delete(image)
    check_gone(ms_backends, image)
