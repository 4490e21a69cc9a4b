"""Failures through Glance 33 with multistore's drivers (issue 13): each leaves
nothing in the backend and the image in a state Glance can go on from.

- a client that goes away mid-upload: the image is ``queued`` again and takes
  a whole upload;
- data of another size than announced: 400, ``queued``;
- a copy whose data differs from the image's recorded checksum: refused
  before the store keeps it (Glance alone would leave that copy behind);
- a store that cannot take images: 503 at once, ``queued``; a store whose
  server is down or frozen (a private Ceph and Sheepdog, a Swift proxy of
  its own): 503
  within the store's timeout, for uploads and downloads, and the next
  upload once it is back.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

harness = sys.modules["multistore_glance_harness"]     # loaded by conftest.py
backends_mod = sys.modules["multistore_glance_backends"]
MiB = harness.MiB
md5 = backends_mod.md5
MULTISTORE = ("ms_fast", "ms_cheap", "ms_ceph", "ms_swift", "ms_sheep")


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


# -- stores whose server goes away -------------------------------------------

#: The private Glance of these tests, its Ceph (mon, then 8 OSD ports) and
#: the Swift proxy of its own (on the session Swift's servers).
DOWN_PORT = 17325
DOWN_CEPH_PORTS = (17340, 17341)
DOWN_CEPH_OSD_PORTS = (17342, 17349)
DOWN_PROXY_PORT = 17356
DOWN_SHEEPDOG_PORT = 17366
#: Each store's own timeout (rados_connect_timeout, swift_store_timeout), s.
TIMEOUT = 5


@pytest.fixture(scope="module")
def down(tmp_path_factory: pytest.TempPathFactory, glance_multistore: Path,
         glance_swift: Any) -> Iterator[Any]:
    """A private Glance with ``rbd`` (multistore's, on a private Ceph that the
    tests freeze), ``swift`` (multistore's, through a Swift proxy of its own
    that the tests kill and freeze) and ``sheepdog`` (multistore's, on a
    private cluster that the tests freeze); all with 5 s timeouts."""
    conftest = sys.modules["multistore_glance_conftest"]
    directory = tmp_path_factory.mktemp("down")
    ceph = sys.modules["multistore_ceph_harness_glance"].CephCluster(
        directory / "ceph", *DOWN_CEPH_PORTS, bind_ports=DOWN_CEPH_OSD_PORTS,
        memstore_bytes=512 * MiB)
    sheep = sys.modules["multistore_sheepdog_harness_glance"].SheepdogCluster(
        directory / "sheepdog", DOWN_SHEEPDOG_PORT)
    proxy = glance_swift.start_fault_proxy(DOWN_PROXY_PORT)
    server = None
    try:
        ceph.start()
        sheep.start()
        kind, options = conftest.rbd_store(ceph)
        stores = {"rbd": (f"multistore_{kind}", {**options, "rados_connect_timeout": TIMEOUT}),
                  "swift": conftest.swift_store(glance_swift, directory / "refs", proxy,
                                                swift_store_timeout=TIMEOUT),
                  "sheepdog": ("multistore_sheepdog", {
                      "sheepdog_store_port": DOWN_SHEEPDOG_PORT,
                      "sheepdog_store_timeout": TIMEOUT})}
        server = harness.GlanceServer(directory / "glance", DOWN_PORT, stores,
                                      python_path=[glance_multistore])
        server.start()
        server.ceph = ceph
        server.sheepdog = sheep
        server.swift_backend = glance_swift
        server.backends = backends_mod.Backends(
            server, ceph=ceph, swift=lambda: conftest.swift_connection(glance_swift),
            sheepdog=sheep)
        yield server
    finally:
        if server is not None:
            server.stop()
        ceph.stop()
        sheep.stop()
        glance_swift.kill("proxy-faults")


def outage(down: Any, store: str, how: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """(start, end) of one outage of a store's server."""
    if store == "rbd":
        return down.ceph.freeze, down.ceph.thaw
    if store == "sheepdog":
        return down.sheepdog.freeze, down.sheepdog.thaw
    swift = down.swift_backend
    if how == "killed":
        return (lambda: swift.kill("proxy-faults")), (lambda: swift.restart("proxy-faults"))
    return (lambda: swift.freeze("proxy-faults")), (lambda: swift.thaw("proxy-faults"))


@pytest.mark.parametrize("store, how", [("rbd", "frozen"), ("swift", "killed"),
                                        ("swift", "frozen"), ("sheepdog", "frozen")])
def test_a_store_whose_server_is_down_answers_503_within_its_timeout(
        down: Any, image_data: bytes, store: str, how: str) -> None:
    """While the store's server is down (a Ceph or a sheep whose daemons are
    stopped with SIGSTOP, a Swift proxy killed or stopped), an upload to it and a
    download of an image it holds are answered 503 within a few of the
    store's timeouts, not left hanging; nothing is left behind; once the
    server is back, the image that failed takes its upload."""
    client = down.client(timeout=120)
    kept = client.create_image(name=f"kept-{store}")["id"]
    client.upload(kept, image_data, store=store)
    image = client.create_image(name=f"down-{store}")["id"]
    start, end = outage(down, store, how)
    start()
    try:
        began = time.monotonic()
        # Glance may answer before it reads the body: a body that fits in
        # the socket's buffers, sent whole.
        status, _, body = client.request(
            "PUT", f"/v2/images/{image}/file", body=image_data[:64 * 1024],
            headers={"Content-Type": "application/octet-stream", "X-Image-Meta-Store": store})
        upload_seconds = time.monotonic() - began
        assert status == 503, body
        assert f"[store '{store}', ".encode() in body
        assert client.get_image(image)["status"] == "queued"
        began = time.monotonic()
        got = client.download(kept)
        download_seconds = time.monotonic() - began
        assert got.status == 503, got
    finally:
        end()
    assert upload_seconds < 4 * TIMEOUT + 10, upload_seconds
    assert download_seconds < 4 * TIMEOUT + 10, download_seconds
    assert down.backends.leftovers(store, {kept}) == []
    assert client.download(kept).md5 == md5(image_data)
    client.upload(image, image_data, store=store)
    assert down.backends.read(store, image) == image_data
    for done in (kept, image):
        client.delete(done)
    assert down.backends.leftovers(store) == []
