"""The file driver's own promises: directories, permissions, traversal, full disks."""

import json
import os
import stat
import subprocess

import pytest

import multistore
from multistore import errors
from multistore.drivers.file import PARTIAL_DIR
from multistore.testing import image_files, local_layout, make_conf, random_bytes


def load(tmp_path, **options):
    conf = make_conf({
        "DEFAULT": {"enabled_backends": {"disk": "file"}},
        "glance_store": {"default_backend": "disk"},
        "disk": options or {"filesystem_store_datadir": tmp_path / "images"},
    }, tmp_path)
    return multistore.load(conf)


@pytest.mark.parametrize("location", [
    "file:///etc/passwd",
    "file://{root}/images/../secret",
    "file://{root}/images/sub/x",
    "file://{root}/images/",
    "file://{root}/images/%2e%2e/secret",
    "file://{root}/images/x?query",
])
def test_locations_outside_the_directories_are_refused(tmp_path, location):
    (tmp_path / "secret").write_bytes(b"do not read")
    stores = load(tmp_path)
    with pytest.raises(errors.BadLocation):
        stores.get(location.format(root=tmp_path), store="disk")
    with pytest.raises(errors.BadLocation):
        stores.delete(location.format(root=tmp_path))
    assert (tmp_path / "secret").exists()


def test_symlinked_directory_resolves(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    stores = load(tmp_path, filesystem_store_datadir=tmp_path / "link")
    result = stores.add("img", b"abc", 3)
    assert result.location == f"file://{tmp_path}/real/img"
    assert stores.get_size(f"file://{tmp_path}/link/img") == 3


def test_datadirs_priority_then_free_space(tmp_path):
    stores = load(tmp_path, filesystem_store_datadirs=[
        f"{tmp_path}/low:100", f"{tmp_path}/high:200"])
    result = stores.add("img", b"abc", 3)
    assert result.location == f"file://{tmp_path}/high/img"
    # An image id in any directory is a duplicate.
    (tmp_path / "low" / "other").write_bytes(b"x")
    with pytest.raises(errors.Duplicate):
        stores.add("other", b"abc", 3)
    # Images in every directory are readable.
    assert stores.get_size(f"file://{tmp_path}/low/other") == 1
    info = stores.info(detail=True)[0]["properties"]
    assert info["datadirs"] == [f"{tmp_path}/high:200", f"{tmp_path}/low:100"]


def test_datadirs_conflicting_priorities_are_refused(tmp_path):
    with pytest.raises(errors.ConfigError, match="priorities"):
        load(tmp_path, filesystem_store_datadirs=[f"{tmp_path}/a:1", f"{tmp_path}/a:2"])


def test_no_directory_has_room(tmp_path):
    stores = load(tmp_path, filesystem_store_datadirs=[f"{tmp_path}/a:1", f"{tmp_path}/b:1"])
    with pytest.raises(errors.StorageFull, match="no directory has room"):
        stores.add("img", b"", 2 ** 62)


def test_file_permissions(tmp_path):
    stores = load(tmp_path, filesystem_store_datadir=tmp_path / "images",
                  filesystem_store_file_perm=640)
    stores.add("img", b"abc", 3)
    assert stat.S_IMODE(os.stat(tmp_path / "images" / "img").st_mode) == 0o640
    assert os.stat(tmp_path / "images").st_mode & stat.S_IXGRP


def test_metadata_file(tmp_path):
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps([{"id": "nfs-1", "mountpoint": str(tmp_path)}]))
    stores = load(tmp_path, filesystem_store_datadir=tmp_path / "images",
                  filesystem_store_metadata_file=meta)
    result = stores.add("img", b"abc", 3)
    assert result.metadata == {"id": "nfs-1", "mountpoint": str(tmp_path), "store": "disk"}
    meta.write_text(json.dumps({"id": 1}))
    with pytest.raises(errors.ConfigError, match="filesystem_store_metadata_file"):
        load(tmp_path, filesystem_store_datadir=tmp_path / "images",
             filesystem_store_metadata_file=meta)


def test_thin_provisioning_leaves_holes(tmp_path):
    stores = load(tmp_path, filesystem_store_datadir=tmp_path / "images",
                  filesystem_thin_provisioning=True)
    mib = 1024 * 1024
    data = random_bytes(mib) + bytes(16 * mib) + random_bytes(mib, seed=2) + bytes(8 * mib)
    result = stores.add("img", data, len(data))
    path = tmp_path / "images" / "img"
    assert path.stat().st_size == len(data)
    assert path.stat().st_blocks * 512 < 8 * mib
    with stores.get(result.location) as reader:
        assert reader.read_all() == data


def test_full_disk_is_storage_full_and_leaves_nothing(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        stores = load(tmp_path, filesystem_store_datadir=mount)
        data = random_bytes(6 * 1024 * 1024)
        with pytest.raises(errors.StorageFull) as info:
            stores.add("big", data, len(data))
        assert info.value.store == "disk" and info.value.operation == "add"
        assert image_files(mount) == []
        stores.add("small", b"fits", 4)
        assert image_files(mount) == ["small"]
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_unwritable_directory_is_a_config_error(tmp_path):
    with pytest.raises(errors.ConfigError, match="store 'disk'.*cannot create"):
        load(tmp_path, filesystem_store_datadir="/proc/forbidden")


def test_image_appearing_during_the_write_is_not_overwritten(tmp_path):
    stores = load(tmp_path)
    images = tmp_path / "images"

    def data():
        yield b"new data"
        (images / "img").write_bytes(b"written by someone else")

    with pytest.raises(errors.Duplicate, match="appeared"):
        stores.add("img", data(), None)
    assert (images / "img").read_bytes() == b"written by someone else"
    assert image_files(images) == ["img"]


def resident_bytes(path):
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                          capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def test_durable_add_leaves_little_of_the_image_in_the_page_cache(tmp_path):
    from multistore.drivers import file

    stores = load(tmp_path)
    size = 96 * 1024 * 1024
    data = random_bytes(size)
    result = stores.add("big", data, size)
    resident = resident_bytes(tmp_path / "images" / "big")
    assert resident <= file.DROP_BEHIND + 2 * file.WRITEBACK_EVERY, resident
    with stores.get(result.location) as reader:
        assert reader.read_all() == data


def test_sweep_removes_only_abandoned_partial_files(tmp_path):
    """A partial file left by a killed writer is reclaimed; one a live writer
    holds is not, however old."""
    import os
    import subprocess
    import sys
    import time

    conf = make_conf(local_layout(tmp_path), tmp_path)
    with multistore.load(conf) as stores:
        datadir = tmp_path / "local" / PARTIAL_DIR
        live = stores["local"].driver.open_writer("live", None)
        live.write(memoryview(b"x" * 10))
        # A writer in another process, killed with SIGKILL mid-add.
        code = ("import multistore, os, signal\n"
                "from multistore.testing import make_conf, local_layout\n"
                f"stores = multistore.load(make_conf(local_layout({str(tmp_path)!r}), "
                f"{str(tmp_path / 'child')!r}))\n"
                "w = stores['local'].driver.open_writer('dead', None)\n"
                "w.write(memoryview(b'y' * 1000))\n"
                "os.kill(os.getpid(), signal.SIGKILL)\n")
        subprocess.run([sys.executable, "-c", code], check=False)
        parts = sorted(p.name for p in datadir.iterdir() if p.name.endswith(".part"))
        assert len(parts) == 2
        old = time.time() - 7200
        for name in parts:
            os.utime(datadir / name, (old, old))
        assert stores.sweep(grace=3600, remove=False)[0].removed is False
        swept = stores.sweep(grace=3600)
        assert [(s.store, s.size, s.removed) for s in swept] == [("local", 1000, True)]
        left = sorted(p.name for p in datadir.iterdir() if p.name.endswith(".part"))
        assert left == [live.temp]
        assert stores.sweep(grace=0) == []          # the live writer's file is held
        live.abort()
