"""The Glance harness proven with glance_store's own drivers, through Glance's
REST API only: stores listing, upload to a chosen store, whole and ranged
downloads, glance-direct import to two stores, copy-image to all stores,
delete, a client that goes away mid-upload, a restart with changed stores on
the same database, and a Glance that cannot start."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any

import pytest

harness = sys.modules["multistore_glance_harness"]     # loaded by conftest.py
MiB = harness.MiB


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def in_backend(glance: Any, cluster: Any, store: str, image_id: str) -> bool:
    """Whether ``store``'s backend holds the image's bytes (looked at directly,
    not through Glance)."""
    kind, _ = glance.stores[store]
    if kind == "file":
        path = glance.store_dir(store) / image_id
        return path.exists()
    if kind == "rbd":
        return image_id in cluster.images()
    raise AssertionError(f"no backend check for {kind}")


def expected_url(glance: Any, cluster: Any, store: str, image_id: str) -> str:
    kind, _ = glance.stores[store]
    if kind == "file":
        return f"file://{glance.store_dir(store)}/{image_id}"
    return f"rbd://{cluster.fsid}/{cluster.pool}/{image_id}/snap"


def check_image(client: Any, glance: Any, cluster: Any, image_id: str, data: bytes,
                stores: set[str]) -> None:
    """Active in exactly ``stores``, the checksums of ``data``, one location per
    store in glance_store's URL format, the bytes in each backend, and a whole
    download that matches."""
    image = client.get_image(image_id)
    assert image["status"] == "active"
    assert harness.image_stores(image) == stores
    assert image["size"] == len(data)
    assert image["checksum"] == md5(data)
    assert image["os_hash_algo"] == "sha512"
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    locations = {loc["metadata"]["store"]: loc["url"] for loc in client.locations(image_id)}
    assert locations == {s: expected_url(glance, cluster, s, image_id) for s in stores}
    for store in stores:
        assert in_backend(glance, cluster, store, image_id), store
    got = client.download(image_id)
    assert (got.status, got.size, got.md5) == (200, len(data), md5(data))


def test_multistore_is_on_glances_path(glance: Any, glance_multistore: Any) -> None:
    """The build the server runs with: this checkout's package and its entry
    points, given to gunicorn as PYTHONPATH (gunicorn's process titles hide
    the workers' environment from /proc)."""
    assert glance.python_path == [str(glance_multistore)]
    assert (glance_multistore / "multistore" / "__init__.py").exists()
    entry_points = next(glance_multistore.glob("multistore-*.dist-info/entry_points.txt"))
    assert "[multistore.drivers]" in entry_points.read_text()


def test_stores_listing(client: Any) -> None:
    stores = client.stores()
    assert [s["id"] for s in stores] == ["fast", "cheap", "ceph"]
    assert [s["id"] for s in stores if s.get("default") == "true"] == ["fast"]
    assert {s["id"]: s["description"] for s in stores}["ceph"] == "ceph (rbd)"
    detail = {s["id"]: s for s in client.stores(detail=True)}
    assert {k: v["type"] for k, v in detail.items()} == {
        "fast": "file", "cheap": "file", "ceph": "rbd"}
    assert detail["ceph"]["properties"]["pool"] == "images"
    assert detail["cheap"]["properties"]["data_dir"].endswith("/stores/cheap")
    methods = client.import_info()["import-methods"]["value"]
    assert sorted(methods) == ["copy-image", "glance-direct", "web-download"]


@pytest.mark.parametrize("store", ["cheap", "ceph"])
def test_upload_to_a_chosen_store_then_download_whole_and_ranged(
        client: Any, glance: Any, glance_ceph: Any, image_data: bytes, store: str) -> None:
    image = client.create_image(name=f"upload-{store}")
    assert image["status"] == "queued"
    client.upload(image["id"], image_data, store=store)
    check_image(client, glance, glance_ceph, image["id"], image_data, {store})
    # The default store and the other file store got nothing.
    for other in {"fast", "cheap", "ceph"} - {store}:
        assert not in_backend(glance, glance_ceph, other, image["id"])

    size = len(image_data)
    # glance_store's rbd driver lacks READ_RANDOM (rbd.py: _CAPABILITIES =
    # RW_ACCESS): Glance answers a ranged GET on it with 400 (the store raises
    # StoreRandomGetNotSupported); its file driver serves ranges.
    ranges = glance.stores[store][0] == "file"
    for header, start, end in [("bytes=0-0", 0, 1),
                               ("bytes=100-4194403", 100, 4194404),   # across rbd chunks
                               (f"bytes={size - 10}-", size - 10, size),
                               ("bytes=-4097", size - 4097, size)]:
        got = client.download(image["id"], byte_range=header, keep=True)
        if not ranges:
            assert got.status == 400, header
            assert b"randomly" in got.body, got.body
            continue
        assert got.status == 206, header
        assert got.body == image_data[start:end], header
        assert got.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
    beyond = client.download(image["id"], byte_range=f"bytes={size}-{size + 10}")
    assert beyond.status == 416

    client.delete(image["id"])
    assert not in_backend(glance, glance_ceph, store, image["id"])
    assert client.request("GET", f"/v2/images/{image['id']}")[0] == 404


def test_upload_chunked_to_the_default_store(client: Any, glance: Any, glance_ceph: Any,
                                             image_data: bytes) -> None:
    image = client.create_image(name="chunked")
    pieces = (image_data[i:i + MiB] for i in range(0, len(image_data), MiB))
    client.upload(image["id"], pieces)       # no size: Transfer-Encoding chunked
    check_image(client, glance, glance_ceph, image["id"], image_data, {"fast"})
    client.delete(image["id"])
    assert not in_backend(glance, glance_ceph, "fast", image["id"])


def test_glance_direct_import_to_two_stores(client: Any, glance: Any, glance_ceph: Any,
                                            image_data: bytes) -> None:
    image = client.create_image(name="direct")
    client.stage(image["id"], image_data)
    assert client.get_image(image["id"])["status"] == "uploading"
    assert os.listdir(glance.staging_dir) == [image["id"]]
    client.import_image(image["id"], "glance-direct", stores=["cheap", "ceph"])
    client.wait_stores(image["id"], ["cheap", "ceph"])
    check_image(client, glance, glance_ceph, image["id"], image_data, {"cheap", "ceph"})
    tasks = client.wait_tasks(image["id"])
    assert [t["status"] for t in tasks] == ["success"], tasks
    assert not in_backend(glance, glance_ceph, "fast", image["id"])
    deadline = time.monotonic() + 30     # the staged file goes once the task ends
    while os.listdir(glance.staging_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert os.listdir(glance.staging_dir) == []
    client.delete(image["id"])
    for store in ("cheap", "ceph"):
        assert not in_backend(glance, glance_ceph, store, image["id"])


def test_copy_image_to_all_stores_then_delete_everywhere(
        client: Any, glance: Any, glance_ceph: Any, image_data: bytes) -> None:
    image = client.create_image(name="copy")
    client.upload(image["id"], image_data, store="fast")
    client.copy_image(image["id"], all_stores=True)
    client.wait_stores(image["id"], ["fast", "cheap", "ceph"])
    check_image(client, glance, glance_ceph, image["id"], image_data,
                {"fast", "cheap", "ceph"})
    tasks = client.wait_tasks(image["id"])
    assert [t["status"] for t in tasks] == ["success"], tasks
    assert tasks[0]["input"]["backend"] == ["cheap", "ceph"]   # fast has it already
    # Every copy is readable: each store's own location, read through Glance
    # after the others are gone, is covered by the delete below; here the
    # read goes to the first location by weight.
    client.delete(image["id"])
    for store in ("fast", "cheap", "ceph"):
        assert not in_backend(glance, glance_ceph, store, image["id"]), store
    assert os.listdir(glance.staging_dir) == []


@pytest.mark.parametrize("store", ["cheap", "ceph"])
def test_client_gone_mid_upload_leaves_nothing_and_a_queued_image(
        client: Any, glance: Any, glance_ceph: Any, image_data: bytes, store: str) -> None:
    """The client declares the whole size, sends 3 MiB, closes: Glance sets
    the image back to ``queued`` (retryable), the driver removes its partial
    data, and the same image then takes a whole upload."""
    image = client.create_image(name=f"gone-{store}")
    client.upload_and_disconnect(image["id"], image_data[:3 * MiB], len(image_data),
                                 store=store)
    back = client.wait_image(image["id"], lambda i: i["status"] != "saving", 60,
                             "the end of the upload")
    assert back["status"] == "queued"
    assert harness.image_stores(back) == set()
    assert not in_backend(glance, glance_ceph, store, image["id"])
    assert "DisconnectionError" in glance.log_text()
    client.upload(image["id"], image_data, store=store)
    check_image(client, glance, glance_ceph, image["id"], image_data, {store})
    client.delete(image["id"])
    assert not in_backend(glance, glance_ceph, store, image["id"])


def test_client_gone_mid_stage_leaves_nothing_staged(client: Any, glance: Any,
                                                     image_data: bytes) -> None:
    image = client.create_image(name="gone-stage")
    client.upload_and_disconnect(image["id"], image_data[:3 * MiB], len(image_data),
                                 path="stage")
    back = client.wait_image(image["id"], lambda i: i["status"] != "uploading", 60,
                             "the end of the stage")
    assert back["status"] == "queued"
    assert os.listdir(glance.staging_dir) == []
    client.stage(image["id"], image_data)
    client.import_image(image["id"], "glance-direct", stores=["cheap"])
    client.wait_stores(image["id"], ["cheap"])
    client.delete(image["id"])


def test_restart_with_changed_stores_keeps_the_database_and_the_data(
        client: Any, glance: Any, glance_ceph: Any, glance_stores: dict[str, Any],
        image_data: bytes) -> None:
    """What the switch of a store's driver needs: stop, change the stores,
    start on the same database; images written before are read after."""
    image = client.create_image(name="restart")
    client.upload(image["id"], image_data, store="cheap")
    extra = {**glance_stores, "extra": ("file", {})}
    try:
        glance.restart(stores=extra)
        assert [s["id"] for s in client.stores()] == ["fast", "cheap", "ceph", "extra"]
        check_image(client, glance, glance_ceph, image["id"], image_data, {"cheap"})
        client.copy_image(image["id"], stores=["extra"])
        client.wait_stores(image["id"], ["cheap", "extra"])
        check_image(client, glance, glance_ceph, image["id"], image_data, {"cheap", "extra"})
        # A location in a store that is no longer configured makes Glance
        # answer 500 to the image's DELETE (glance_store's
        # SCHEME_TO_CLS_BACKEND_MAP has no entry for it): drop that copy first.
        client.delete_from_store(image["id"], "extra")
        assert not (glance.store_dir("extra") / image["id"]).exists()
    finally:
        glance.restart(stores=glance_stores)
    check_image(client, glance, glance_ceph, image["id"], image_data, {"cheap"})
    client.delete(image["id"])
    assert not in_backend(glance, glance_ceph, "cheap", image["id"])


def test_a_glance_that_cannot_start_raises_with_its_log(tmp_path: Any) -> None:
    """The default store's type loads no driver: Glance refuses to start, and
    the harness says so at once (no hang, no skip)."""
    server = harness.GlanceServer(tmp_path / "broken", 17301,
                                  {"only": ("no-such-driver", {})})
    began = time.monotonic()
    with pytest.raises(harness.GlanceError) as err:
        server.start(timeout=60)
    assert time.monotonic() - began < 60
    assert "only" in str(err.value) or "no-such-driver" in str(err.value)
    assert not server.running()
