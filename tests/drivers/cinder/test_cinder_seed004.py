"""Seed 004 (Burrito): two cinder stores of different storage and a third store.

``netapp`` and ``powerstore`` are cinder stores (one volume type each, on
their own Ceph pools), the default is ``netapp``; an image uploaded to the
default lands in ``cinder://netapp/<volume id>``; "copy to all stores" gives
one location per store; every copy reads back; everything is deleted. Once
through the API, once through the ``multistore`` command.

The third store of the seed is an rbd store ``ceph``: multistore's rbd
driver on a pool ``images`` of the deployment's own Ceph, its copies at
``rbd://<fsid>/images/<image id>/snap``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from multistore.drivers.cinder import CinderLocation
from multistore.testing import random_bytes

MiB = 1024 * 1024
THIRD = ("ceph", "rbd")
POOL = "images"


def seed_stores(make_cinder_stores: Callable[..., Any], cinder_deployment: Any) -> Any:
    cinder_deployment.add_pool(POOL)
    return make_cinder_stores(
        {"netapp": {}, "powerstore": {"cinder_do_extend_attached": True}},
        default="netapp", extra_backends={THIRD[0]: THIRD[1]},
        extra_sections={THIRD[0]: {"rbd_store_ceph_conf": cinder_deployment.ceph_conf,
                                   "rbd_store_user": cinder_deployment.rbd_user,
                                   "rbd_store_pool": POOL, "rados_connect_timeout": 10}})


def rbd_location(cinder_deployment: Any, image_id: str) -> str:
    return f"rbd://{cinder_deployment.ceph.fsid}/{POOL}/{image_id}/snap"


def test_seed_004_upload_copy_to_all_read_back_delete(
        make_cinder_stores: Callable[..., Any], cinder_project: tuple[str, Any],
        cinder_deployment: Any) -> None:
    project, client = cinder_project
    stores = seed_stores(make_cinder_stores, cinder_deployment)
    listed = stores.info(detail=True)
    assert [(e["id"], e["type"], e["default"]) for e in listed] == [
        ("netapp", "cinder", True), ("powerstore", "cinder", False),
        (THIRD[0], THIRD[1], False)]
    image_id = str(uuid.uuid4())
    data = random_bytes(9 * MiB + 17, seed=4)
    added = stores.add(image_id, data, len(data))
    assert added.store == "netapp" and added.location.startswith("cinder://netapp/")
    copies = stores.copy(added.location, "all")
    locations = {added.store: added.location, **{c.store: c.location for c in copies}}
    assert set(locations) == {"netapp", "powerstore", THIRD[0]}
    assert locations["powerstore"].startswith("cinder://powerstore/")
    # The copies are named after the image, found in the source volume's metadata.
    assert locations[THIRD[0]] == rbd_location(cinder_deployment, image_id)
    power = client.volumes.get(CinderLocation.parse(locations["powerstore"]).volume_id)
    assert (power.name, power.volume_type) == (f"image-{image_id}", "powerstore")
    assert {c.checksum for c in copies} == {added.checksum}
    for store, location in locations.items():
        with stores.get(location) as reader:
            assert reader.read_all() == data, store
        assert stores.get_size(location) == len(data)
    for location in locations.values():
        stores.delete(location)
    assert cinder_deployment.volumes(project) == []
    assert image_id not in cinder_deployment.ceph.pool_images(POOL)


def test_seed_004_through_the_command_line(
        make_cinder_stores: Callable[..., Any], cinder_project: tuple[str, Any],
        cinder_deployment: Any, tmp_path: Path) -> None:
    project, _ = cinder_project
    stores = seed_stores(make_cinder_stores, cinder_deployment)
    conf_file = stores.conf.config_file[0]
    image = tmp_path / "disk.img"
    image.write_bytes(random_bytes(5 * MiB + 3, seed=9))

    def cli(*args: str) -> Any:
        done = subprocess.run(
            [str(Path(sys.executable).with_name("multistore")), "--config-file", conf_file,
             "--json", *args], capture_output=True, text=True, timeout=600,
            env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout) if done.stdout.strip() else None

    listed = cli("stores")
    assert [e["id"] for e in listed] == ["netapp", "powerstore", THIRD[0]]
    added = cli("add", str(image), "--id", "seed-004-image", "--no-progress")
    assert added["location"].startswith("cinder://netapp/")
    copies = cli("copy", added["location"], "--all-stores", "--no-progress")
    locations = [added["location"], *(c["location"] for c in copies)]
    assert [c["store"] for c in copies] == ["powerstore", THIRD[0]]
    assert copies[1]["location"] == rbd_location(cinder_deployment, "seed-004-image")
    want = hashlib.md5(image.read_bytes()).hexdigest()
    for n, location in enumerate(locations):
        out = tmp_path / f"copy{n}"
        cli("get", location, "-o", str(out))
        assert hashlib.md5(out.read_bytes()).hexdigest() == want, location
    for location in locations:
        cli("delete", location)
    assert cinder_deployment.volumes(project) == []
    assert "seed-004-image" not in cinder_deployment.ceph.pool_images(POOL)
