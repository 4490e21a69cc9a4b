"""The rbd driver probed as a hostile user would, and what killed writers leave.

Locations that name a snapshot the image lacks, a half-written image, an
encoded NUL or ``@``, another cluster or pool; two writers of one id; a
writer killed with SIGKILL mid-add, then the sweep. Against the real Ceph
of the test harness (``ceph_a``).
"""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from test_rbd import new_id, pool_io, read

from multistore import errors
from multistore.drivers.rbd import RbdLocation
from multistore.testing import properties, random_bytes

MiB = 1024 * 1024


@pytest.fixture
def stores(ceph_a, make_rbd_stores):
    with make_rbd_stores({"ceph": (ceph_a, {})}) as s:
        yield s


@dataclasses.dataclass(frozen=True)
class Victim:
    image_id: str
    data: bytes
    location: str


@pytest.fixture
def victim(stores) -> Iterator[Victim]:
    """An image the test's hostile calls must leave whole (checked at the end)."""
    image_id, data = new_id(), random_bytes(MiB, seed=20)
    added = Victim(image_id, data, stores.add(image_id, data, len(data)).location)
    yield added
    assert read(stores, added.location) == data
    stores.delete(added.location)


def refused(stores, location: str, error: type[errors.MultistoreError]) -> None:
    """get_size, get and delete of ``location`` all raise ``error``."""
    for call in (stores.get_size, lambda loc: read(stores, loc), stores.delete):
        with pytest.raises(error):
            call(location)


def partials_of(cluster, image_id: str) -> list[str]:
    return [name for name in cluster.images() if image_id in name and name != image_id]


# -- locations that name something else ------------------------------------------

def test_delete_naming_a_snapshot_the_image_lacks_is_not_found(stores, ceph_a, victim):
    """Issue 16, item 1: such a delete used to move the image to the trash."""
    import rbd
    bsnap = f"rbd://{ceph_a.fsid}/images/{victim.image_id}/bsnap"
    with pytest.raises(errors.NotFound) as info:
        stores.delete(bsnap)
    assert info.value.store == "ceph" and info.value.operation == "delete"
    refused(stores, bsnap, errors.NotFound)
    with pool_io(ceph_a) as ioctx, rbd.Image(ioctx, victim.image_id, read_only=True) as img:
        assert [s["name"] for s in img.list_snaps()] == ["snap"]
        assert img.is_protected_snap("snap")


def test_delete_naming_another_snapshot_removes_only_that_snapshot(stores, ceph_a):
    """A location of an operator's snapshot names that snapshot, not the image."""
    data = random_bytes(MiB, seed=22)
    image_id = new_id()
    result = stores.add(image_id, data, len(data))
    ceph_a.rbd("snap", "create", f"{image_id}@backup")
    backup = f"rbd://{ceph_a.fsid}/images/{image_id}/backup"
    assert read(stores, backup) == data
    stores.delete(backup)
    refused(stores, backup, errors.NotFound)
    assert read(stores, result.location) == data
    stores.delete(result.location)
    assert image_id not in ceph_a.images()


def test_locations_that_would_alias_another_image_are_refused(stores, ceph_a, victim):
    """An encoded NUL would be cut by librbd (naming the image before it);
    ``@`` is part of a name, never a snapshot separator."""
    fsid, image_id = ceph_a.fsid, victim.image_id
    for location in (f"rbd://{fsid}/images/{image_id}%00junk/snap", f"rbd://{image_id}%00x",
                     f"rbd://{fsid}/images/{image_id}/snap%00junk",
                     f"rbd://{fsid}/images/{image_id}%0A/snap"):
        refused(stores, location, errors.BadLocation)
    for location in (f"rbd://{fsid}/images/{image_id}%40snap/snap", f"rbd://{image_id}%40snap",
                     f"rbd://{fsid}/images/{image_id}/snap%40x"):
        refused(stores, location, errors.NotFound)


def test_locations_of_another_cluster_or_pool_are_refused(stores, ceph_a, victim):
    for location in (f"rbd://{uuid.uuid4()}/images/{victim.image_id}/snap",
                     f"rbd://{ceph_a.fsid}/other/{victim.image_id}/snap",
                     f"rbd://{ceph_a.fsid.upper()}/images/{victim.image_id}/snap"):
        refused(stores, location, errors.BadLocation)


def test_a_ceph_conf_without_fsid_still_refuses_other_clusters(ceph_a, make_rbd_stores,
                                                               tmp_path, victim):
    """Before connecting, a store whose ceph.conf names no fsid cannot tell
    its cluster's locations from another's: once connected it must."""
    conf = re.sub(r"(?m)^fsid = .*\n", "", Path(ceph_a.conf_path).read_text())
    (tmp_path / "nofsid.conf").write_text(conf)
    foreign = f"rbd://{uuid.uuid4()}/images/{victim.image_id}/snap"
    for call in (lambda s: read(s, foreign), lambda s: s.get_size(foreign),
                 lambda s: s.delete(foreign)):
        with make_rbd_stores({"ceph": (ceph_a, {"rbd_store_ceph_conf":
                                                tmp_path / "nofsid.conf"})}) as blind:
            assert blind["ceph"].driver.fsid is None        # nothing connected yet
            with pytest.raises(errors.BadLocation):
                call(blind)
            assert read(blind, victim.location) == victim.data


def test_legacy_locations_of_odd_ids_name_exactly_their_image(stores, ceph_a):
    prefix = new_id()[:8]
    ids = [prefix + odd for odd in ("%41", "A", "a b", "a@b", "a?b", "a#b", "%25", "a%2Fb")]
    added = {image_id: stores.add(image_id, image_id.encode(), len(image_id)).location
             for image_id in ids}
    for image_id, location in added.items():
        legacy = RbdLocation(None, None, image_id, None).format()
        assert RbdLocation.parse(legacy).image_id == image_id
        assert read(stores, legacy) == image_id.encode()
        stores.delete(location)


def test_locations_round_trip():
    """parse(format(x)) == x for every id the core accepts, in both forms."""
    part = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1)
    properties.check_location_type(RbdLocation, fsid=part, pool=part, snapshot=part)
    properties.check_location_type(RbdLocation, fsid=st.none(), pool=st.none(),
                                   snapshot=st.none())


def test_arbitrary_strings_name_one_image_or_none(stores, victim):
    """Arbitrary strings and near misses of real locations, through the store
    set and the real Ceph: BadLocation, NotFound, or exactly one image."""
    properties.check_arbitrary_locations(
        stores, examples=[victim.location, f"rbd://{victim.image_id}"], max_examples=200)


# -- partial images -----------------------------------------------------------------

def test_a_half_written_image_is_not_visible(stores, ceph_a):
    """Issue 16, item 2: the legacy location used to read a half-written image."""
    driver = stores["ceph"].driver
    image_id = new_id()
    data = random_bytes(2 * MiB, seed=26)
    writer = driver.open_writer(image_id, len(data))
    try:
        writer.write(memoryview(bytearray(data[:MiB])))
        for location in (f"rbd://{image_id}", f"rbd://{ceph_a.fsid}/images/{image_id}/snap"):
            refused(stores, location, errors.NotFound)
        # The partial image's own name can be put in no location, nor taken as an id.
        partial, = partials_of(ceph_a, image_id)
        quoted = urllib.parse.quote(partial, safe="")
        for location in (f"rbd://{quoted}", f"rbd://{ceph_a.fsid}/images/{quoted}/snap"):
            refused(stores, location, errors.BadLocation)
        with pytest.raises(errors.BadLocation):
            stores.add(partial, b"x", 1)
        writer.write(memoryview(bytearray(data[MiB:])))
        location = writer.commit().location.format()
    except BaseException:
        writer.abort()
        raise
    assert read(stores, location) == data
    assert read(stores, f"rbd://{image_id}") == data
    assert partials_of(ceph_a, image_id) == []
    stores.delete(location)


def test_of_two_adds_of_one_id_the_later_commit_is_a_duplicate(stores, ceph_a):
    """The id is taken at commit by a rename, which never replaces an image."""
    driver = stores["ceph"].driver
    image_id = new_id()
    slow = driver.open_writer(image_id, MiB)
    slow.write(memoryview(bytearray(random_bytes(MiB, seed=27))))
    data = random_bytes(MiB, seed=28)
    result = stores.add(image_id, data, len(data))
    with pytest.raises(errors.Duplicate, match="appeared"), stores["ceph"].context("add"):
        slow.commit()
    slow.abort()
    assert read(stores, result.location) == data
    assert partials_of(ceph_a, image_id) == []
    stores.delete(result.location)


#: Child process: load the store set of ``conf``, add ``image_id`` and die
#: by SIGKILL mid-write (after 3 MiB) or in commit, the snapshot protected
#: but the image not yet renamed to its id.
_KILLED_WRITER = """
import os, signal, sys, types
import multistore, rbd
from oslo_config import cfg
conf_path, image_id, when = sys.argv[1:]
conf = cfg.ConfigOpts()
multistore.register_opts(conf)
conf(["--config-file", conf_path], default_config_files=[])
stores = multistore.load(conf)

def die(*args):
    os.kill(os.getpid(), signal.SIGKILL)

class Rbd(rbd.RBD):
    rename = die

driver = stores["ceph"].driver
driver.rbd = types.ModuleType("rbd")
driver.rbd.__dict__.update(vars(rbd), RBD=Rbd)

size = 100 if when == "mid-write" else 3

def source():
    for i in range(size):
        if i == 3:
            die()
        yield b"d" * (1024 * 1024)

stores.add(image_id, source(), size * 1024 * 1024)
"""


def test_sweep_removes_killed_writers_partial_images_never_a_live_ones(stores, ceph_a,
                                                                        write_rbd_config):
    """Issue 14 for rbd: writers killed with SIGKILL mid-add (mid-write, and
    in commit after the snapshot) leave partial images, never an image under
    the id; the sweep removes them once their watch has expired, and never
    the image of a writer that is alive, however old."""
    import rbd
    driver = stores["ceph"].driver
    live_id, dead = new_id(), {"mid-write": new_id(), "in-commit": new_id()}
    live = driver.open_writer(live_id, None)
    try:
        live.write(memoryview(bytearray(random_bytes(MiB, seed=29))))
        config = write_rbd_config({"ceph": (ceph_a, {})})
        for when, image_id in dead.items():
            child = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(config),
                                    image_id, when],
                                   capture_output=True, timeout=120)
            assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
            partial, = partials_of(ceph_a, image_id)
            assert image_id not in ceph_a.images()
            with pool_io(ceph_a) as ioctx, rbd.Image(ioctx, partial, read_only=True) as img:
                snaps = [snap["name"] for snap in img.list_snaps()]
                assert snaps == (["snap"] if when == "in-commit" else [])
                assert not snaps or img.is_protected_snap("snap")
            refused(stores, f"rbd://{image_id}", errors.NotFound)

        def swept(grace: float, remove: bool) -> dict[str, Any]:
            found = stores.sweep(grace=grace, remove=remove)
            assert not [s for s in found if live_id in s.name]   # never the live writer's
            return {when: s for s in found for when, image_id in dead.items()
                    if image_id in s.name}

        assert swept(3600, remove=True) == {}           # too young
        # A dead writer's watch outlives it for osd_client_watch_timeout
        # (10 s on the test cluster): until then its image is left alone.
        deadline = time.monotonic() + 40
        while len(swept(0, remove=False)) < len(dead):
            assert time.monotonic() < deadline
            time.sleep(1)
        leftovers = swept(0, remove=True)
        assert {when: (s.store, s.removed) for when, s in leftovers.items()} == {
            "mid-write": ("ceph", True), "in-commit": ("ceph", True)}
        for image_id in dead.values():
            assert partials_of(ceph_a, image_id) == []
        assert len(partials_of(ceph_a, live_id)) == 1
        live.write(memoryview(bytearray(random_bytes(MiB, seed=30))))
        location = live.commit().location.format()
    except BaseException:
        live.abort()
        raise
    assert stores.get_size(location) == 2 * MiB
    stores.delete(location)
