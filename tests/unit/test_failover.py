"""Reading the best copy of an image, and failing over to the next one."""

import hashlib
import logging

import pytest

import multistore
from multistore import errors
from multistore.drivers.memory import MemoryDriver
from multistore.testing import local_layout, make_conf, random_bytes

DATA = random_bytes(3 * 1024 * 1024 + 17, seed=3)


class DyingMemoryDriver(MemoryDriver):
    """A memory store whose reads break after ``die_after`` bytes (a server
    that goes away mid-stream), or fail at once with ``die_after = 0``."""

    die_after: int | None = None
    opened: list = []

    def open_reader(self, location, offset, length, context=None):
        type(self).opened.append((self.store_id, offset, length))
        inner = super().open_reader(location, offset, length, context)
        limit = self.die_after
        if limit is None:
            return inner
        if limit == 0:
            raise errors.BackendUnavailable("the server is down")

        def chunks():
            sent = 0
            for chunk in inner:
                if sent + len(chunk) > limit:
                    yield chunk[:limit - sent]
                    raise ConnectionResetError("connection reset by peer")
                sent += len(chunk)
                yield chunk
        return multistore.ReadStream(chunks(), inner.size)


@pytest.fixture
def stores(tmp_path):
    layout = local_layout(tmp_path, file_stores=("local", "backup"), memory_stores=("fragile",))
    layout["fragile"]["weight"] = 10       # the preferred copy
    layout["backup"]["weight"] = 5
    DyingMemoryDriver.die_after = None
    DyingMemoryDriver.opened = []
    conf = make_conf(layout, tmp_path)
    with multistore.load(conf, drivers={"memory": DyingMemoryDriver}) as s:
        yield s


@pytest.fixture
def copies(stores):
    first = stores.add("img", DATA, len(DATA), store="fragile")
    others = stores.copy(first.location, to=["local", "backup"])
    # Glance's order, deliberately not the weight order.
    return [{"url": r.location, "metadata": dict(r.metadata)} for r in [*others, first]]


def test_the_heaviest_copy_is_read(stores, copies):
    with stores.open_best(copies) as reader:
        assert reader.read_all() == DATA
    assert reader.stores == ["fragile"] and reader.switches == []


def test_a_copy_dying_mid_stream_is_continued_from_the_next(stores, copies, caplog):
    DyingMemoryDriver.die_after = 1024 * 1024 + 5
    caplog.set_level(logging.WARNING, logger="multistore")
    with stores.open_best(copies, checksum=hashlib.md5(DATA).hexdigest()) as reader:
        assert reader.size == len(DATA)
        assert reader.read_all() == DATA
    assert reader.stores == ["fragile", "backup"]          # backup outweighs local
    assert [(s.from_store, s.to_store, s.position) for s in reader.switches] == [
        ("fragile", "backup", 1024 * 1024 + 5)]
    assert "reading from store fragile failed at byte 1048581" in caplog.text


def test_a_copy_down_before_the_first_byte_is_skipped(stores, copies):
    DyingMemoryDriver.die_after = 0
    with stores.open_best(copies) as reader:
        assert reader.read_all() == DATA
    assert reader.stores == ["backup"]


def test_a_ranged_read_fails_over_inside_its_range(stores, copies):
    DyingMemoryDriver.die_after = 1000
    with stores.open_best(copies, offset=500_000, length=2_000_000) as reader:
        assert reader.size == 2_000_000
        assert reader.read_all() == DATA[500_000:2_500_000]
    assert reader.switches[0].position == 501_000


def test_a_copy_of_another_size_is_not_spliced_in(stores, copies, tmp_path):
    DyingMemoryDriver.die_after = 1000
    backup = next(c for c in copies if c["metadata"]["store"] == "backup")
    path = backup["url"][len("file://"):]
    with open(path, "ab") as f:
        f.write(b"extra")
    with stores.open_best(copies) as reader:
        assert reader.read_all() == DATA
    assert reader.stores == ["fragile", "local"]
    assert [(s.from_store, s.to_store) for s in reader.switches] == [
        ("fragile", "backup"), ("backup", "local")]
    assert "the first one had" in reader.switches[1].reason


def test_disagreeing_copies_fail_the_checksum(stores, copies):
    DyingMemoryDriver.die_after = 1000
    backup = next(c for c in copies if c["metadata"]["store"] == "backup")
    with open(backup["url"][len("file://"):], "r+b") as f:
        f.seek(2_000_000)
        f.write(b"\0corrupt")
    with pytest.raises(errors.ChecksumMismatch) as info, \
            stores.open_best(copies, checksum=hashlib.md5(DATA).hexdigest()) as reader:
        reader.read_all()
    assert info.value.stores == ("fragile", "backup")


def test_every_copy_failing_names_them_all(stores, copies):
    DyingMemoryDriver.die_after = 0
    for c in copies:
        if c["metadata"]["store"] != "fragile":
            stores.delete(c["url"])
    with pytest.raises(errors.BackendUnavailable) as info:
        stores.open_best(copies)
    assert set(info.value.stores) == {"fragile", "local", "backup"}
    assert "the server is down" in str(info.value)


def test_locations_of_no_store_are_refused(stores):
    with pytest.raises(errors.BadLocation):
        stores.open_best([{"url": "nosuch://x/y"}, "file:///not/a/store/img"])
