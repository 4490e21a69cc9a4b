"""The way out of Sheepdog: images glance_store left in a cluster, moved to other stores.

glance_store removed its sheepdog driver in 2019; clouds still holding images
in Sheepdog need to read them and move them out. Here a set of images written
the way glance_store wrote them (``dog vdi create`` at the size, ``dog vdi
write`` per 64 MiB chunk; locations in both the current and the legacy form),
plus one multistore wrote, is moved from the sheepdog store into a file store
and an rbd store on a real Ceph cluster (``ceph_a``, the session cluster of
the rbd tests, from the tests/ceph_clusters.py plugin), every copy's size,
md5 and multihash verified, and the sources deleted only then. The rbd
copies are also read straight through librbd, at the snapshot glance_store's
locations name, and deleted at the end: ``ceph_a`` is shared.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ceph_clusters import rbd_options
from sheepdog_stores import sheepdog_stores

import multistore
from multistore import errors
from multistore.location import quote
from multistore.testing import random_bytes

MiB = 1 << 20
TARGETS = {"files", "ceph"}


def _image(size: int, seed: int) -> bytes:
    data = bytearray(random_bytes(size, seed=seed))
    if size > 8 * MiB:
        data[4 * MiB:8 * MiB] = bytes(4 * MiB)          # a hole, as VM images have
    return bytes(data)


def _glance_store_add(cluster: Any, image_id: str, data: bytes) -> None:
    cluster.dog("vdi", "create", image_id, str(len(data)))
    for off in range(0, len(data), 64 * MiB):
        piece = data[off:off + 64 * MiB]
        cluster.dog("vdi", "write", image_id, str(off), str(len(piece)), input=piece)


def _expected(data: bytes) -> tuple[int, str, str]:
    return len(data), hashlib.md5(data).hexdigest(), hashlib.sha512(data).hexdigest()


def _hashes(chunks: Iterator[bytes]) -> tuple[int, str, str]:
    md5, sha512, size = hashlib.md5(), hashlib.sha512(), 0
    for chunk in chunks:
        md5.update(chunk)
        sha512.update(chunk)
        size += len(chunk)
    return size, md5.hexdigest(), sha512.hexdigest()


def _read_back(stores: multistore.StoreSet, url: str) -> tuple[int, str, str]:
    with stores.get(url) as reader:
        return _hashes(iter(reader))


def _librbd_read(cluster: Any, image_id: str) -> tuple[int, str, str]:
    """The image's protected snapshot ``snap``, read through librbd, not multistore."""
    import rados
    import rbd
    conn = rados.Rados(conffile=cluster.conf_path, rados_id=cluster.user,
                       conf={"client_mount_timeout": "10", "rados_osd_op_timeout": "10"})
    conn.connect()
    try:
        with conn.open_ioctx(cluster.pool) as ioctx, \
                rbd.Image(ioctx, image_id, snapshot="snap", read_only=True) as image:
            assert image.is_protected_snap("snap"), image_id
            size = image.size()
            return _hashes(image.read(off, min(8 * MiB, size - off))
                           for off in range(0, size, 8 * MiB))
    finally:
        conn.shutdown()


def test_images_move_out_of_sheepdog_verified(sheepdog_a: Any, ceph_a: Any,
                                              tmp_path: Path) -> None:
    c = sheepdog_a
    prefix = random_bytes(4, seed=30).hex()
    odd = f"{prefix} written: by multistore%"
    images = {f"{prefix}-empty": b"", f"{prefix}-one": b"x",
              f"{prefix}-small": _image(9 * MiB + 7, 31),
              f"{prefix}-large": _image(70 * MiB + 3, 32), odd: _image(13 * MiB, 33)}
    assert not set(images) & (set(c.vdis()) | set(ceph_a.images()))
    extra = {"files": {"type": "file", "filesystem_store_datadir": str(tmp_path / "files")},
             "ceph": {"type": "rbd", **rbd_options(ceph_a)}}
    with sheepdog_stores(tmp_path, {"sheep": (c, {})}, extra=extra) as stores:
        try:
            _move_out(stores, c, ceph_a, images, odd, tmp_path / "journal")
        finally:
            # Both clusters are the session's, shared: leave them as found.
            for image_id in images:
                with contextlib.suppress(errors.NotFound):
                    stores.delete("rbd://" + quote(image_id), store="ceph")
                if image_id in c.vdis():
                    c.dog("vdi", "delete", image_id)
    assert not set(images) & (set(c.vdis()) | set(ceph_a.images()))


def _move_out(stores: multistore.StoreSet, c: Any, ceph: Any, images: dict[str, bytes],
              odd: str, journal: Path) -> None:
    """All of ``images`` but ``odd`` written by glance_store's way, ``odd`` by
    multistore; one copied then all moved to TARGETS, every copy checked."""
    records = []
    for n, (image_id, data) in enumerate(images.items()):
        if image_id == odd:
            continue
        _glance_store_add(c, image_id, data)
        url = f"sheepdog://{image_id}" if n % 2 else f"sheepdog://127.0.0.1:{c.port}:{image_id}"
        records.append({"image_id": image_id, "url": url, "metadata": {"store": "sheep"},
                        "checksum": hashlib.md5(data).hexdigest()})
    added = stores.add(odd, images[odd], len(images[odd]), store="sheep")
    assert (added.size, added.checksum, added.multihash) == _expected(images[odd])
    records.append({"image_id": odd, "url": added.location,
                    "metadata": {"store": "sheep"}, "checksum": added.checksum})

    # A copy first (the source stays), then the move.
    copied = stores.copy(added.location, to=sorted(TARGETS), checksum=added.checksum)
    assert {r.store for r in copied} == TARGETS
    for r in copied:
        assert (r.size, r.checksum, r.multihash) == _expected(images[odd]), r.store
        assert _read_back(stores, r.location) == _expected(images[odd]), r.store
        stores.delete(r.location)
    assert _read_back(stores, added.location) == _expected(images[odd])
    assert odd not in ceph.images()

    results = list(stores.move(records, to=sorted(TARGETS), delete_source=True,
                               journal=str(journal)))
    assert [r.error for r in results] == [None] * len(records)
    assert all(r.verified and r.source_deleted for r in results)
    assert sorted(r.image_id for r in results) == sorted(images)
    for result in results:
        expected = _expected(images[result.image_id])
        assert set(result.targets) == TARGETS
        for url in result.targets.values():
            assert _read_back(stores, url) == expected, (result.image_id, url)
        assert result.targets["ceph"].startswith(f"rbd://{ceph.fsid}/")
        assert _librbd_read(ceph, result.image_id) == expected, result.image_id
    assert not set(images) & set(c.vdis())
