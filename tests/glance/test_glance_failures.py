"""Failures through Glance 33 with multistore's drivers (issue 13): each leaves
nothing in the backend and the image in a state Glance can go on from.

- a client that goes away mid-upload: the image is ``queued`` again and takes
  a whole upload;
- data of another size than announced: 400, ``queued``;
- a copy whose data differs from the image's recorded checksum: refused
  before the store keeps it (Glance alone would leave that copy behind);
- a store that cannot take images: 503 at once, ``queued``.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

import pytest

harness = sys.modules["multistore_glance_harness"]     # loaded by conftest.py
backends_mod = sys.modules["multistore_glance_backends"]
MiB = harness.MiB
md5 = backends_mod.md5
MULTISTORE = ("ms_fast", "ms_cheap")


def assert_clean(backends: Any, keep: dict[str, set[str]] | None = None) -> None:
    """Nothing in any store's backend but the images of ``keep`` (store -> ids)."""
    keep = keep or {}
    for store in backends.glance.stores:
        assert backends.leftovers(store, keep.get(store, set())) == [], store


def upload_again(client: Any, backends: Any, image: str, data: bytes, store: str) -> None:
    """The image takes a whole upload to the store, then is deleted."""
    client.upload(image, data, store=store)
    record = client.get_image(image)
    assert (record["status"], record["checksum"]) == ("active", md5(data))
    assert backends.read(store, image) == data
    client.delete(image)
    assert_clean(backends)


@pytest.mark.parametrize("store", MULTISTORE)
def test_client_gone_mid_upload_leaves_nothing_and_a_queued_image(
        ms_glance: Any, ms_client: Any, ms_backends: Any, image_data: bytes,
        store: str) -> None:
    """The client announces the whole size, sends 3 MiB and closes: Glance's
    DisconnectionError comes out of the data multistore reads, the writer is
    aborted (its partial file removed) and Glance sets the image back to
    ``queued``."""
    image = ms_client.create_image(name=f"gone-{store}")["id"]
    ms_client.upload_and_disconnect(image, image_data[:3 * MiB], len(image_data), store=store)
    back = ms_client.wait_image(image, lambda i: i["status"] != "saving", 60,
                                "the end of the upload")
    assert back["status"] == "queued"
    assert harness.image_stores(back) == set()
    assert_clean(ms_backends)
    assert "DisconnectionError" in ms_glance.log_text()
    upload_again(ms_client, ms_backends, image, image_data, store)


@pytest.mark.parametrize("delta", [1, -1], ids=["data-shorter", "data-longer"])
def test_data_of_another_size_than_announced_is_refused(
        ms_client: Any, ms_backends: Any, image_data: bytes, delta: int) -> None:
    """``X-Openstack-Image-Size`` announces the size Glance passes to the store;
    multistore's core counts the bytes: 400 with its message, nothing kept."""
    image = ms_client.create_image(name="size")["id"]
    announced = len(image_data) + delta
    status, _, body = ms_client.request(
        "PUT", f"/v2/images/{image}/file", body=image_data,
        headers={"Content-Type": "application/octet-stream", "X-Image-Meta-Store": "ms_cheap",
                 "X-Openstack-Image-Size": str(announced)})
    assert status == 400, body
    expected = (f"the data ended after {len(image_data)} bytes, {announced} were announced"
                if delta > 0 else f"the data is longer than the {announced} bytes announced")
    assert f"[store 'ms_cheap', add] {expected}".encode() in body
    assert ms_client.get_image(image)["status"] == "queued"
    assert_clean(ms_backends)
    upload_again(ms_client, ms_backends, image, image_data, "ms_cheap")


@pytest.mark.parametrize("source", ["gs_file", "ms_fast"])
def test_a_copy_whose_data_differs_from_the_record_is_refused_and_leaves_nothing(
        ms_glance: Any, ms_client: Any, ms_backends: Any, image_data: bytes,
        source: str) -> None:
    """The source copy is changed on disk behind Glance's back (same size, one
    byte flipped), then copied with copy-image: the adapter hands the core the
    md5 Glance recorded, the core finds the data's differs before committing,
    and the target keeps nothing; the task fails, the image stays active in
    its source store. (Glance compares checksums only after the store kept
    the data and leaves that copy behind: with glance_store's drivers the
    target would keep an orphan.)"""
    image = ms_client.create_image(name=f"differs-{source}")["id"]
    ms_client.upload(image, image_data, store=source)
    path = ms_glance.store_dir(source) / image
    changed = bytearray(path.read_bytes())
    changed[4 * MiB + 1] ^= 0xFF
    path.write_bytes(bytes(changed))

    ms_client.copy_image(image, stores=["ms_cheap"])
    tasks = ms_client.wait_tasks(image)
    assert [t["status"] for t in tasks] == ["failure"], tasks
    record = ms_client.wait_image(image, lambda i: not i.get("os_glance_importing_to_stores"),
                                  60, "the end of the import")
    assert (record["status"], harness.image_stores(record)) == ("active", {source})
    assert record.get("os_glance_failed_import") == "ms_cheap"
    assert [loc["metadata"]["store"] for loc in ms_client.locations(image)] == [source]
    assert_clean(ms_backends, {source: {image}})
    log = ms_glance.log_text()
    assert f"[store 'ms_cheap', add] the data's md5 is {md5(bytes(changed))}, " \
           f"{md5(image_data)} was expected" in log
    ms_client.delete(image)
    assert_clean(ms_backends)


def test_a_store_whose_directory_is_gone_answers_503_at_once(
        ms_glance: Any, ms_client: Any, ms_backends: Any, image_data: bytes) -> None:
    """The data directory of a file store disappears (an unmounted volume):
    the upload is answered 503 at once (Glance answered 410 and left the
    image 'saving' for good when the adapter raised NotFound), the image is
    ``queued``, and once the directory is back the same image is uploaded."""
    directory = ms_glance.store_dir("ms_cheap")
    shutil.rmtree(directory)
    try:
        image = ms_client.create_image(name="no-directory")["id"]
        began = time.monotonic()
        # Glance answers before reading the body: send a small one whole.
        status, _, body = ms_client.request(
            "PUT", f"/v2/images/{image}/file", body=image_data[:64 * 1024],
            headers={"Content-Type": "application/octet-stream",
                     "X-Image-Meta-Store": "ms_cheap"})
        assert time.monotonic() - began < 10
        assert status == 503, body
        assert b"[store 'ms_cheap', add]" in body
        assert ms_client.get_image(image)["status"] == "queued"
    finally:
        directory.mkdir()
    upload_again(ms_client, ms_backends, image, image_data, "ms_cheap")
