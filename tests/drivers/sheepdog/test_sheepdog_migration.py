"""The way out of Sheepdog: images glance_store left in a cluster, moved to other stores.

glance_store removed its sheepdog driver in 2019; clouds still holding images
in Sheepdog need to read them and move them out. Here a set of images written
the way glance_store wrote them (``dog vdi create`` at the size, ``dog vdi
write`` per 64 MiB chunk; locations in both the current and the legacy form),
plus one multistore wrote, is moved from the sheepdog store into a file store
and a memory store, every copy verified, and the sources deleted only then.

(An rbd target is not used: the rbd driver on this branch's main does not yet
load under the second edition of the driver contract.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sheepdog_stores import sheepdog_stores

import multistore
from multistore.testing import random_bytes

MiB = 1 << 20


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


def _hashes(stores: multistore.StoreSet, url: str) -> tuple[int, str, str]:
    md5, sha512, size = hashlib.md5(), hashlib.sha512(), 0
    with stores.get(url) as reader:
        for chunk in reader:
            md5.update(chunk)
            sha512.update(chunk)
            size += len(chunk)
    return size, md5.hexdigest(), sha512.hexdigest()


def test_images_move_out_of_sheepdog_verified(sheepdog_a: Any, tmp_path: Path) -> None:
    c = sheepdog_a
    prefix = random_bytes(4, seed=30).hex()
    images = {f"{prefix}-empty": b"", f"{prefix}-one": b"x",
              f"{prefix}-small": _image(9 * MiB + 7, 31),
              f"{prefix}-large": _image(70 * MiB + 3, 32)}
    records = []
    for n, (image_id, data) in enumerate(images.items()):
        _glance_store_add(c, image_id, data)
        url = f"sheepdog://{image_id}" if n % 2 else f"sheepdog://127.0.0.1:{c.port}:{image_id}"
        records.append({"image_id": image_id, "url": url, "metadata": {"store": "sheep"},
                        "checksum": hashlib.md5(data).hexdigest()})
    extra = {"files": {"type": "file", "filesystem_store_datadir": str(tmp_path / "files")},
             "mem": {"type": "memory"}}
    with sheepdog_stores(tmp_path, {"sheep": (c, {})}, extra=extra) as stores:
        odd = f"{prefix} written: by multistore%"
        images[odd] = _image(13 * MiB, 33)
        added = stores.add(odd, images[odd], len(images[odd]), store="sheep")
        records.append({"image_id": odd, "url": added.location,
                        "metadata": {"store": "sheep"}, "checksum": added.checksum})

        # A copy first (the source stays), then the move.
        copied = stores.copy(records[-1]["url"], to=["files", "mem"],
                             checksum=added.checksum)
        assert {r.store for r in copied} == {"files", "mem"}
        for r in copied:
            assert (r.size, r.checksum, r.multihash) == (
                added.size, added.checksum, added.multihash)
            stores.delete(r.location)

        results = list(stores.move(records, to=["files", "mem"], delete_source=True,
                                   journal=str(tmp_path / "journal")))
        assert [r.error for r in results] == [None] * len(records)
        assert all(r.verified and r.source_deleted for r in results)
        for result in results:
            data = images[result.image_id]
            expected = (len(data), hashlib.md5(data).hexdigest(),
                        hashlib.sha512(data).hexdigest())
            assert set(result.targets) == {"files", "mem"}
            for url in result.targets.values():
                assert _hashes(stores, url) == expected, (result.image_id, url)
        assert not set(images) & set(c.vdis())
