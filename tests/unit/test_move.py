"""Moving images out of a store: copy, verify by reading back, journal, delete."""

import json
import signal
import subprocess
import sys

import pytest

import multistore
from multistore import errors
from multistore.drivers.memory import MemoryBackend, MemoryDriver
from multistore.testing import image_files, local_layout, make_conf, random_bytes

IMAGES = {f"img-{i}": random_bytes(300_000 + i, seed=i) for i in range(4)}


class CorruptingMemoryDriver(MemoryDriver):
    """A memory store whose backend flips a byte of image ``bad`` (bit rot)."""

    def open_reader(self, location, offset, length, context=None):
        stream = super().open_reader(location, offset, length, context)
        if location.image_id != "bad":
            return stream
        chunks = list(stream)
        chunks[0] = b"\xff" + chunks[0][1:]
        return multistore.ReadStream(chunks, stream.size)


def layout(tmp_path, **old):
    sections = local_layout(tmp_path, file_stores=("old", "new"), memory_stores=("ram",))
    sections["old"].update(old)
    return sections


@pytest.fixture
def stores(tmp_path):
    with multistore.load(make_conf(layout(tmp_path), tmp_path),
                         drivers={"memory": MemoryDriver.sharing(MemoryBackend())}) as s:
        yield s


def seed(stores, store="old"):
    return [{"image_id": i, "url": stores.add(i, d, len(d), store=store).location,
             "metadata": {"store": store}} for i, d in IMAGES.items()]


def test_move_copies_verifies_and_deletes_only_when_asked(stores, tmp_path):
    records = seed(stores)
    results = list(stores.move(records, ["new", "ram"]))
    assert [(r.image_id, r.verified, r.source_deleted, r.error) for r in results] == [
        (i, True, False, None) for i in IMAGES]
    for result in results:
        for store in ("new", "ram"):
            assert stores.get(result.targets[store]).read_all() == IMAGES[result.image_id]
        assert stores.get(result.source).read_all() == IMAGES[result.image_id]
    line = results[0].as_json()
    assert line["old"] == records[0]["url"]
    assert line["new"] == [{"url": results[0].targets[s], "metadata": {"store": s}}
                           for s in ("new", "ram")]
    journal = str(tmp_path / "journal")
    deleted = list(stores.move(records, ["new", "ram"], delete_source=True, journal=journal))
    # The copies exist but no journal says so: found, verified, not copied again.
    assert [(r.copied, r.verified, r.source_deleted) for r in deleted] == [
        (["new", "ram"], True, True)] * len(IMAGES)
    assert stores["ram"].driver.properties()["images"] == len(IMAGES)
    for r in deleted:
        with pytest.raises(errors.NotFound):
            stores.get_size(r.source)


def test_a_copy_already_committed_is_verified_not_copied_again(stores, tmp_path):
    records = seed(stores)
    stores.copy(records[0]["url"], ["new"])           # as a run killed before its journal
    results = list(stores.move(records[:1], ["new"], journal=str(tmp_path / "j")))
    assert results[0].verified and results[0].error is None
    assert results[0].copied == ["new"]


def test_an_interrupted_move_resumes_without_copying_twice(tmp_path):
    journal = tmp_path / "journal.jsonl"
    child = f"""
import os, signal
import multistore
from multistore.testing import local_layout, make_conf, random_bytes
sections = local_layout({str(tmp_path)!r}, file_stores=("old", "new"), memory_stores=())
stores = multistore.load(make_conf(sections, {str(tmp_path / 'child')!r}))
images = {{f"img-{{i}}": random_bytes(300_000 + i, seed=i) for i in range(4)}}
records = [{{"image_id": i, "url": stores.add(i, d, len(d), store="old").location}}
           for i, d in images.items()]
with open({str(tmp_path / 'records.json')!r}, "w") as f:
    import json; json.dump(records, f)
def progress(image_id):
    if image_id == "img-2":
        os.kill(os.getpid(), signal.SIGKILL)     # mid-move, after two images
    return multistore.Callback()
for result in stores.move(records, ["new"], journal={str(journal)!r}, progress=progress):
    pass
"""
    done = subprocess.run([sys.executable, "-c", child], timeout=120)
    assert done.returncode == -signal.SIGKILL
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [(e["event"], e["image_id"]) for e in lines] == [
        ("verified", "img-0"), ("verified", "img-1")]
    records = json.loads((tmp_path / "records.json").read_text())
    sections = local_layout(tmp_path, file_stores=("old", "new"), memory_stores=())
    with multistore.load(make_conf(sections, tmp_path / "again")) as stores:
        results = {r.image_id: r for r in stores.move(records, ["new"], journal=str(journal),
                                                       delete_source=True)}
        assert {i: r.copied for i, r in results.items()} == {
            "img-0": [], "img-1": [], "img-2": ["new"], "img-3": ["new"]}
        assert all(r.verified and r.source_deleted for r in results.values())
        for image_id, r in results.items():
            assert stores.get(r.targets["new"]).read_all() == IMAGES[image_id]
        assert stores.sweep(grace=0) == []     # the killed copy left nothing held


def test_a_copy_failing_verification_keeps_the_source_and_names_the_image(tmp_path):
    conf = make_conf(layout(tmp_path), tmp_path)
    with multistore.load(conf, drivers={"memory": CorruptingMemoryDriver}) as stores:
        data = IMAGES["img-0"]
        url = stores.add("bad", data, len(data), store="old").location
        [result] = stores.move([url], ["ram"], delete_source=True)
        assert not result.verified and not result.source_deleted
        assert "image bad" in result.error and "source is kept" in result.error
        assert stores.get(url).read_all() == data


def test_moving_out_of_a_read_only_store_keeps_the_source(tmp_path):
    with multistore.load(make_conf(layout(tmp_path), tmp_path / "rw")) as stores:
        records = seed(stores)[:1]
    with multistore.load(make_conf(layout(tmp_path, read_only=True), tmp_path / "ro")) as ro:
        [result] = ro.move(records, ["new"], delete_source=True)
        assert result.verified and not result.source_deleted
        assert "read-only" in result.error
        assert ro.get(records[0]["url"]).read_all() == IMAGES["img-0"]


def test_dry_run_writes_nothing(stores):
    records = seed(stores)
    results = list(stores.move(records, ["new"], dry_run=True, delete_source=True))
    assert all(r.dry_run and r.copied == ["new"] and not r.targets for r in results)
    assert image_files(stores["new"].driver.datadirs[0][0]) == []
    assert list(stores.move(records, ["new"]))[0].copied == ["new"]


def test_parallel_moves_and_bad_records(stores):
    records = seed(stores) + [{"url": "nosuch://x/y"}]
    results = list(stores.move(records, ["new", "ram"], parallel=3))
    assert sorted(r.image_id for r in results if r.verified) == sorted(IMAGES)
    [bad] = [r for r in results if r.error]
    assert "no configured store" in bad.error


def test_only_the_targets_missing_the_image_are_copied(stores):
    records = seed(stores)[:1]
    stores.copy(records[0]["url"], ["new"])
    [result] = stores.move(records, ["new", "ram"])
    assert result.verified and result.copied == ["new", "ram"]
    assert stores["ram"].driver.properties()["images"] == 1


class MiscopyingMemoryDriver(MemoryDriver):
    """Copies made inside the backend come out with one byte flipped (a
    backend's copy gone wrong); streamed copies are fine."""

    def copy_within(self, source, location, image_id, context=None):
        if not isinstance(source, MemoryDriver) or source.lock is not self.lock:
            return None
        data = bytearray(source._image(location))
        data[-1] ^= 0xFF
        with self.lock:
            self.images[image_id] = bytes(data)
        return multistore.Stored(self.location_for(image_id))


def test_an_offloaded_copy_is_verified_against_the_source_not_itself(tmp_path):
    # No checksum in the record: only the source's own bytes can say the
    # offloaded copy is wrong.
    sections = local_layout(tmp_path, file_stores=(), memory_stores=("src", "dst"))
    driver = MiscopyingMemoryDriver.sharing(MemoryBackend())
    with multistore.load(make_conf(sections, tmp_path), drivers={"memory": driver}) as stores:
        data = IMAGES["img-1"]
        url = stores.add("img-1", data, len(data), store="src").location
        [result] = stores.move([url], ["dst"], delete_source=True, offload=True)
        assert not result.verified and not result.source_deleted
        assert "image img-1" in result.error and "md5" in result.error
        assert stores.get(url).read_all() == data
        with pytest.raises(errors.NotFound):      # the bad copy is gone
            stores.get_size("memory://dst/img-1")


class CountingMemoryDriver(MemoryDriver):
    """Counts whole-image reads per store."""

    reads: dict = {}

    def open_reader(self, location, offset, length, context=None):
        self.reads[self.store_id] = self.reads.get(self.store_id, 0) + 1
        return super().open_reader(location, offset, length, context)


def test_an_offloaded_move_reads_the_source_and_each_copy_once(tmp_path):
    sections = local_layout(tmp_path, file_stores=("disk",), memory_stores=("src", "a", "b"))
    driver = type("Counting", (CountingMemoryDriver,), {"reads": {}})
    with multistore.load(make_conf(sections, tmp_path),
                         drivers={"memory": driver.sharing(MemoryBackend())}) as stores:
        data = IMAGES["img-2"]
        url = stores.add("img-2", data, len(data), store="src").location
        [result] = stores.move([url], ["a", "b", "disk"], delete_source=True, offload=True)
        assert result.verified and result.source_deleted, result.error
        # a and b were copied inside the backend and read back once each
        # (by the copy); disk was streamed from one more read of the source,
        # then read back by the move.
        assert driver.reads == {"src": 2, "a": 1, "b": 1}
        for store in ("a", "b", "disk"):
            assert stores.get(result.targets[store]).read_all() == data
