"""Switching a Glance store between glance_store's driver and multistore's, both
ways, on a running database (issue 13): what an operator does by changing one
word in ``enabled_backends`` and restarting Glance.

A private Glance on 17322 with two stores of one backend kind, ``a`` and
``b``, one of each driver. Images are written, the drivers of both stores
swapped (``a`` becomes multistore's, ``b`` glance_store's), and every image
written before is read (whole and ranged), copied between the two kinds and
deleted by the other driver; then swapped back, and the same again. The
backends are looked at directly: the bytes of each image, at the URL
glance_store writes, and nothing else left.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from multistore.testing import image_files

harness = sys.modules["multistore_glance_harness"]     # loaded by conftest.py
backends_mod = sys.modules["multistore_glance_backends"]
PORT = 17322
MiB = harness.MiB
md5 = backends_mod.md5


def drivers(kind: str, multistore_in: str) -> dict[str, str]:
    """Store id -> type: ``multistore_in`` is multistore's, the other glance_store's."""
    return {s: f"multistore_{kind}" if s == multistore_in else kind for s in ("a", "b")}


class Switch:
    """The private Glance, its data and the images written so far
    (id -> (store, data))."""

    def __init__(self, server: Any, backends: Any, options: dict[str, dict[str, Any]],
                 size: Callable[[int], int]) -> None:
        self.server = server
        self.client = server.client()
        self.backends = backends
        self.options = options
        self.size = size
        self.images: dict[str, tuple[str, bytes]] = {}

    def stores(self, types: dict[str, str]) -> dict[str, tuple[str, dict[str, Any]]]:
        return {s: (t, self.options[s]) for s, t in types.items()}

    def write(self, store: str, seed: int) -> str:
        data = b"".join(harness.iter_bytes(self.size(seed), seed=seed))
        image = self.client.create_image(name=f"switch-{seed}")["id"]
        self.client.upload(image, data, store=store)
        self.images[image] = (store, data)
        self.check(image)
        assert (f"image {image} to store {store}: " in self.server.log_text()) == \
            self.multistore(store)
        return image

    def multistore(self, store: str) -> bool:
        """Whether the store runs multistore's driver now."""
        return self.server.stores[store][0].startswith("multistore_")

    def check(self, image: str, stores: set[str] | None = None) -> None:
        """The image through Glance (record, whole and ranged reads) and in
        the backends (bytes at glance_store's URL, nothing else)."""
        home, data = self.images[image]
        stores = stores or {home}
        record = self.client.get_image(image)
        assert (record["status"], record["checksum"], record["os_hash_value"]) == \
            ("active", md5(data), hashlib.sha512(data).hexdigest())
        assert harness.image_stores(record) == stores
        assert sorted(loc["url"] for loc in self.client.locations(image)) == \
            sorted(self.backends.expected_url(s, image) for s in stores)
        for store in stores:
            assert self.backends.read(store, image) == data, store
            status, _, body = self.client.request(
                "GET", f"/v2/images/{image}/file?prefer={store}")
            assert (status, md5(body)) == (200, md5(data)), store
        got = self.client.download(image, byte_range="bytes=4194300-4194499", keep=True)
        kinds = {self.server.stores[s][0] for s in stores}
        if got.status == 400:
            # glance_store's rbd and swift drivers have no ranged reads: only
            # when the first location Glance tries is one of their stores.
            assert kinds & {"rbd", "swift"}, got.body
        else:
            assert (got.status, got.body) == (206, data[4194300:4194500])

    def copy(self, image: str, to: str) -> None:
        home, _ = self.images[image]
        self.client.copy_image(image, stores=[to])
        self.client.wait_stores(image, [home, to])
        self.check(image, {home, to})
        # Drop the source's copy: the image lives on in the copy.
        self.client.delete_from_store(image, home)
        self.images[image] = (to, self.images[image][1])
        self.check(image)

    def delete(self, image: str) -> None:
        store, _ = self.images[image]
        url = self.backends.expected_url(store, image)
        self.client.delete(image)
        del self.images[image]
        assert not self.backends.holds(store, image)
        # multistore's core logs its deletes at INFO, glance_store's drivers
        # do not: the log tells which driver deleted it.
        assert (f"deleted {url} from store {store}" in self.server.log_text()) == \
            self.multistore(store)

    def leftovers(self) -> dict[str, list[str]]:
        held: dict[str, set[str]] = {"a": set(), "b": set()}
        for image, (store, _) in self.images.items():
            held[store].add(image)
        return {s: self.backends.leftovers(s, held[s]) for s in ("a", "b")}


def run_switch(tmp_path: Path, glance_multistore: Path, kind: str,
               options: dict[str, dict[str, Any]], ceph: Any = None,
               swift: Any = None,
               size: Callable[[int], int] = lambda seed: 5 * MiB + 1000 * seed) -> None:
    """Images 1 to 6 are ``size(n)`` bytes."""
    server = harness.GlanceServer(tmp_path / "glance", PORT, {},
                                  python_path=[glance_multistore],
                                  file_types=("file", "multistore_file"))
    backends = backends_mod.Backends(server, ceph=ceph, swift=swift)
    switch = Switch(server, backends, options, size)
    server.stores = switch.stores(drivers(kind, "b"))
    try:
        server.start()
        by_glance_store = switch.write("a", 1)
        by_multistore = switch.write("b", 2)
        kept_a = switch.write("a", 3)
        kept_b = switch.write("b", 4)

        # a: glance_store's -> multistore's; b: multistore's -> glance_store's.
        server.restart(stores=switch.stores(drivers(kind, "a")))
        for image in switch.images:
            switch.check(image)
        switch.delete(by_glance_store)          # written by glance_store, deleted by multistore
        switch.delete(by_multistore)            # and the other way round
        assert switch.leftovers() == {"a": [], "b": []}
        switch.copy(kept_a, "b")                # multistore -> glance_store
        switch.copy(kept_b, "a")                # glance_store -> multistore
        new_a = switch.write("a", 5)
        new_b = switch.write("b", 6)
        assert switch.leftovers() == {"a": [], "b": []}

        # And back: every image written or copied meanwhile stays readable.
        server.restart(stores=switch.stores(drivers(kind, "b")))
        for image in switch.images:
            switch.check(image)
        switch.copy(new_a, "b")                 # glance_store -> multistore
        switch.copy(new_b, "a")                 # multistore -> glance_store
        for image in list(switch.images):
            switch.delete(image)
        assert switch.leftovers() == {"a": [], "b": []}
        assert backends.names("a") == backends.names("b") == []
    finally:
        server.stop()


def test_file_store_switched_both_ways(tmp_path: Path, glance_multistore: Path) -> None:
    run_switch(tmp_path, glance_multistore, "file", {"a": {}, "b": {}})


def test_rbd_store_switched_both_ways(tmp_path: Path, glance_multistore: Path) -> None:
    """On a Ceph of its own (17330-17339): ``a`` in pool ``images``, ``b`` in
    ``images2`` (rbd images are named by the image id: one pool holds one
    copy of an image)."""
    conftest = sys.modules["multistore_glance_conftest"]
    cluster = sys.modules["multistore_ceph_harness_glance"].CephCluster(
        tmp_path / "ceph", 17330, 17331, bind_ports=(17332, 17339), memstore_bytes=512 * MiB)
    try:
        cluster.start()
        backends_mod.add_pool(cluster, "images2")
        _, options = conftest.rbd_store(cluster)
        run_switch(tmp_path, glance_multistore, "rbd",
                   {"a": options, "b": {**options, "rbd_store_pool": "images2"}}, ceph=cluster)
    finally:
        cluster.stop()


def test_swift_store_switched_both_ways(tmp_path: Path, glance_multistore: Path,
                                        glance_keystone: tuple[Any, str]) -> None:
    """On the session Swift, through its Keystone proxy as Keystone's ``demo``
    user (glance_store's swift driver speaks Keystone v3 only): ``a`` and
    ``b`` in containers of their own; the 5 MiB images are segmented
    (glance_store's as a DLO, multistore's as an SLO) into 1 MB segments.

    The images are whole numbers of segments: glance_store 5.7's swift driver
    announces a whole segment's length for the last one too (content_length
    = chunk_size), so Swift waits for bytes that never come and the upload
    fails after Swift's client timeout (60 s) when the size is not a multiple
    of the segment size. multistore's driver has no such limit (the ms_swift
    tests upload 5 MiB + 12345 bytes)."""
    conftest = sys.modules["multistore_glance_conftest"]
    keystone, proxy = glance_keystone
    options = {s: conftest.keystone_swift_options(keystone, tmp_path / f"refs-{s}",
                                                  f"switch_{s}") for s in ("a", "b")}

    def connection() -> Any:
        """swiftclient into demo's account through the Keystone proxy (a token
        got from Keystone: swiftclient's own v3 auth needs keystoneclient)."""
        import swiftclient
        return swiftclient.Connection(
            preauthurl=f"{proxy}/v1/AUTH_{keystone.project_ids['demo']}",
            preauthtoken=keystone.token("demo", keystone.USERS["demo"]), retries=0)

    segment = 1000 * 1024            # glance_store's "MB"
    run_switch(tmp_path, glance_multistore, "swift", options, swift=connection,
               size=lambda seed: (5 + seed % 2) * segment)


def test_a_store_renamed_and_switched_to_multistore_takes_its_images_by_url_prefix(
        tmp_path: Path, glance_multistore: Path) -> None:
    """The store ``old`` (glance_store's file driver) is renamed ``new`` and
    switched to multistore's driver on the same directory. Its images' location
    records still name ``old``: Glance gives each to the store whose
    ``url_prefix`` the URL starts with (the adapter's: the data directory
    with its last ``/``), records ``new``, and reads and deletes through it."""
    directory = tmp_path / "images"
    server = harness.GlanceServer(tmp_path / "glance", PORT + 2,
                                  {"old": ("file", {"filesystem_store_datadir": directory}),
                                   "other": ("file", {})},
                                  python_path=[glance_multistore])
    data = b"".join(harness.iter_bytes(MiB + 5, seed=9))
    try:
        server.start()
        client = server.client()
        image = client.create_image(name="renamed")["id"]
        client.upload(image, data, store="old")
        server.restart(stores={"new": ("multistore_file",
                                       {"filesystem_store_datadir": directory}),
                               "other": ("file", {})}, default_backend="new")
        record = client.get_image(image)
        assert harness.image_stores(record) == {"new"}
        assert client.locations(image) == [{"url": f"file://{directory}/{image}",
                                            "metadata": {"store": "new"}}]
        got = client.download(image)
        assert (got.status, got.md5) == (200, md5(data))
        client.delete(image)
        assert f"deleted file://{directory}/{image} from store new" in server.log_text()
        assert image_files(directory) == []
    finally:
        server.stop()
