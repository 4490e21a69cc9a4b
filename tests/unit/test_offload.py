"""Copies made inside the backend (copy offload): file stores on one filesystem,
memory stores of one backend; streamed when the backend cannot."""

import contextlib
import hashlib
import logging
import os
import subprocess

import pytest

import multistore
from multistore import errors
from multistore.drivers.memory import MemoryBackend, MemoryDriver
from multistore.testing import image_files, local_layout, make_conf, random_bytes

DATA = random_bytes(5 * 1024 * 1024 + 3, seed=11)


@contextlib.contextmanager
def tmpfs(path, size="64m"):
    """A small tmpfs: another filesystem beside the disk (needs root, as CI runs)."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def load(tmp_path, **dirs):
    sections = local_layout(tmp_path, file_stores=("a", "b", "c"), memory_stores=())
    for store, path in dirs.items():
        sections[store]["filesystem_store_datadir"] = str(path)
    return multistore.load(make_conf(sections, tmp_path))


def test_file_copy_on_one_filesystem_is_done_by_the_kernel(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="multistore")
    with load(tmp_path) as stores:
        added = stores.add("img", DATA, len(DATA), store="a")
        offloaded = stores.copy(added.location, ["b"], offload=True)
        streamed = stores.copy(added.location, ["c"])
    assert "done inside the backend" in caplog.text
    assert [(r.size, r.checksum, r.multihash) for r in (*offloaded, *streamed)] == [
        (added.size, added.checksum, added.multihash)] * 2
    assert offloaded[0].metadata == {"store": "b"}
    with open(offloaded[0].location[len("file://"):], "rb") as f:
        assert hashlib.md5(f.read()).hexdigest() == added.checksum


def test_file_copy_to_another_filesystem_is_streamed(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="multistore")
    with tmpfs(tmp_path / "mnt") as other, load(tmp_path, c=other) as stores:
        added = stores.add("img", DATA, len(DATA), store="a")
        both = stores.copy(added.location, ["b", "c"], offload=True)
        assert [r.store for r in both] == ["b", "c"]
        assert all(r.checksum == added.checksum for r in both)
        assert caplog.text.count("done inside the backend") == 1     # b only
        assert image_files(other) == ["img"]


def test_an_offloaded_copy_is_all_or_nothing(tmp_path):
    with load(tmp_path) as stores:
        added = stores.add("img", DATA, len(DATA), store="a")
        stores.add("img", b"other", 5, store="c")                  # c refuses: Duplicate
        with pytest.raises(errors.Duplicate):
            stores.copy(added.location, ["b", "c"], offload=True)
        assert not os.path.exists(tmp_path / "b" / "img")
        assert stores.sweep(grace=0) == []


class RottingMemoryDriver(MemoryDriver):
    """Reads of store 'copy' come back with one byte flipped."""

    def open_reader(self, location, offset, length, context=None):
        stream = super().open_reader(location, offset, length, context)
        if self.store_id != "copy":
            return stream
        chunks = list(stream)
        chunks[-1] = chunks[-1][:-1] + b"?"
        return multistore.ReadStream(chunks, stream.size)


def test_an_offloaded_copy_that_reads_back_wrong_is_removed(tmp_path):
    backend = MemoryBackend()
    sections = local_layout(tmp_path, file_stores=(), memory_stores=("orig", "copy"))
    conf = make_conf(sections, tmp_path)
    with multistore.load(conf, drivers={"memory": RottingMemoryDriver.sharing(backend)}) as s:
        added = s.add("img", DATA, len(DATA), store="orig")
        with pytest.raises(errors.ChecksumMismatch) as info:
            s.copy(added.location, ["copy"], checksum=added.checksum, offload=True)
        assert info.value.stores == ("copy",)
        assert backend.stores["copy"] == {}
        assert s.copy(added.location, ["copy"], checksum=None)


def test_backend_verification_reads_back_what_the_backend_does_not_vouch_for(tmp_path):
    """File copies carry no backend evidence: verify="backend" reads them
    back, so a wrong multihash from the caller is not taken as the copy's."""
    with load(tmp_path) as stores:
        added = stores.add("img", DATA, len(DATA), store="a")
        copied, = stores.copy(added.location, ["b"], offload=True, verify="backend",
                              checksum=added.checksum, multihash="0" * 128)
    assert (copied.checksum, copied.multihash) == (added.checksum, added.multihash)


class VouchingMemoryDriver(MemoryDriver):
    """A memory store whose copies claim what ``claim`` says (the core's side
    of verify="backend"; the real evidence is Swift's, in tests/drivers/swift)."""

    claim = {}

    def copy_within(self, source, location, image_id, context=None):
        stored = super().copy_within(source, location, image_id, context)
        if stored is None:
            return None
        size = len(source._image(location))
        vouched = multistore.Vouched(**{"size": size, "md5": None, "pieces": 2,
                                        **self.claim})
        return multistore.Stored(stored.location, stored.metadata, vouched)


@pytest.mark.parametrize("claim, accepted", [
    ({}, True),                                          # piece by piece: the record stands
    ({"md5": hashlib.md5(DATA).hexdigest(), "pieces": 1}, True),
    ({"md5": hashlib.md5(b"other").hexdigest(), "pieces": 1}, False),
    ({"size": len(DATA) - 1}, False),
])
def test_what_the_backend_vouches_for_is_checked(tmp_path, claim, accepted):
    backend = MemoryBackend()
    sections = local_layout(tmp_path, file_stores=(), memory_stores=("orig", "copy"))
    driver = type("Claiming", (VouchingMemoryDriver,), {"claim": claim})
    with multistore.load(make_conf(sections, tmp_path),
                         drivers={"memory": driver.sharing(backend)}) as s:
        added = s.add("img", DATA, len(DATA), store="orig")
        recorded = "f" * 128          # the caller's record, returned as it is when accepted
        if accepted:
            copied, = s.copy(added.location, ["copy"], offload=True, verify="backend",
                             checksum=added.checksum, multihash=recorded)
            assert (copied.size, copied.checksum, copied.multihash) == \
                (len(DATA), added.checksum, recorded)
        else:
            with pytest.raises(errors.ChecksumMismatch) as info:
                s.copy(added.location, ["copy"], offload=True, verify="backend",
                       checksum=added.checksum, multihash=recorded)
            assert "image img" in str(info.value) and info.value.stores == ("copy",)
            assert backend.stores["copy"] == {}
