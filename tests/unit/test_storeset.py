"""The StoreSet API across stores: copy, location binding, errors, secrets."""

import dataclasses
import hashlib
import logging

import pytest

import multistore
from multistore import errors
from multistore.location import Location, split_url
from multistore.testing import image_files, local_layout, make_conf, random_bytes

RESERVED = {"os_glance_staging_store": "file"}
DATA = random_bytes(9 * 1024 * 1024 + 3, seed=5)


@pytest.fixture
def stores(tmp_path):
    sections = local_layout(tmp_path, file_stores=("local", "backup", "archive"),
                            memory_stores=("memory", "tiny"))
    sections["tiny"] = {"memory_store_capacity": 1024 * 1024}
    with multistore.load(make_conf(sections, tmp_path), reserved=RESERVED) as s:
        yield s


def test_copy_reads_once_and_writes_every_target(stores, monkeypatch):
    src = stores.add("img", DATA, len(DATA))
    opened = []
    driver = stores["local"].driver
    original = driver.open_reader
    monkeypatch.setattr(driver, "open_reader",
                        lambda *a, **k: opened.append(a) or original(*a, **k))
    results = stores.copy(src.location, to=["backup", "memory"])
    assert len(opened) == 1
    assert [r.store for r in results] == ["backup", "memory"]
    for r in results:
        assert r.checksum == hashlib.md5(DATA).hexdigest() == src.checksum
        assert r.metadata == {"store": r.store}
        with stores.get(r.location) as reader:
            assert reader.read_all() == DATA


def test_copy_to_all_skips_source_reserved_and_read_only(tmp_path):
    sections = local_layout(tmp_path, file_stores=("a", "b", "ro"), memory_stores=())
    sections["ro"]["read_only"] = True
    stores = multistore.load(make_conf(sections, tmp_path), reserved=RESERVED)
    src = stores.add("img", b"abc", 3, store="a")
    assert [r.store for r in stores.copy(src.location, to="all")] == ["b"]


def test_copy_failing_on_one_target_leaves_no_copy_anywhere(stores, tmp_path):
    src = stores.add("img", DATA, len(DATA))
    with pytest.raises(errors.StorageFull) as info:
        stores.copy(src.location, to=["backup", "tiny", "archive"])
    assert info.value.store == "tiny"
    for store_id in ("backup", "archive"):
        assert image_files(tmp_path / store_id) == []
    assert stores["tiny"].driver.properties()["used"] == 0
    # The source is untouched and the copy can be retried.
    assert stores.copy(src.location, to=["backup"])[0].size == len(DATA)


def test_copy_with_the_wrong_expected_checksum_keeps_nothing(stores, tmp_path):
    src = stores.add("img", DATA, len(DATA))
    with pytest.raises(errors.ChecksumMismatch):
        stores.copy(src.location, to=["backup"], checksum="0" * 32)
    assert image_files(tmp_path / "backup") == []


def test_copy_onto_an_existing_image_is_a_duplicate(stores):
    src = stores.add("img", DATA, len(DATA))
    stores.add("img", b"other", 5, store="backup")
    with pytest.raises(errors.Duplicate):
        stores.copy(src.location, to=["archive", "backup"])
    with pytest.raises(errors.Duplicate):
        stores.copy(src.location, to=["local"])


def test_location_binding(stores):
    r = stores.add("img", b"x", 1, store="memory")
    assert stores.store_for(r.location).id == "memory"
    with pytest.raises(errors.BadLocation, match="does not belong"):
        stores.get(r.location, store="local")
    with pytest.raises(errors.BadLocation, match="no store with this id"):
        stores.get(r.location, store="nope")
    with pytest.raises(errors.BadLocation, match="no configured store"):
        stores.get("memory://elsewhere/img")


def test_invalid_range(stores):
    r = stores.add("img", b"abc", 3)
    with pytest.raises(errors.BadLocation, match="invalid range"):
        stores.get(r.location, offset=-1)


def test_driver_errors_carry_store_and_operation(stores):
    with pytest.raises(errors.NotFound) as info:
        stores.delete("memory://memory/none")
    assert (info.value.store, info.value.operation) == ("memory", "delete")
    assert str(info.value).startswith("[store 'memory', delete]")


def test_glance_store_names_still_catch(stores):
    import multistore.errors as e
    with pytest.raises(e.StoreAddDisabled):
        raise errors.AddNotSupported("x")
    with pytest.raises(e.GlanceStoreException):
        stores.get_size("memory://memory/none")
    assert e.Invalid is errors.DataMismatch and issubclass(errors.SizeMismatch, e.Invalid)


def test_results_as_glance_tuple(stores):
    r = stores.add("img", b"abc", 3)
    assert r.as_glance_tuple() == (r.location, 3, hashlib.md5(b"abc").hexdigest(),
                                   hashlib.sha512(b"abc").hexdigest(), {"store": "local"})


def test_add_logs_without_secrets(stores, caplog, multistore_secrets):
    caplog.set_level(logging.DEBUG, logger="multistore")
    r = stores.add("img", b"abc", 3)
    stores.delete(r.location)
    assert "img" in caplog.text
    multistore_secrets.register("hunter2")
    secret_url = "http://user:hunter2@example/x"
    for call in (lambda: stores.get(secret_url), lambda: stores.delete(secret_url),
                 lambda: stores.copy(secret_url, to="all"),
                 lambda: stores.get(secret_url, store="local")):
        with pytest.raises(errors.BadLocation) as info:
            call()
        multistore_secrets.check(info.value)     # text, repr, causes
    assert "hunter2" not in caplog.text


@dataclasses.dataclass(frozen=True)
class FlakyLocation(Location):
    image_id: str

    @classmethod
    def parse(cls, url):
        return cls(split_url(url, ("flaky",)).path.rsplit("/", 1)[-1])

    def format(self):
        return f"flaky://x/{self.image_id}"


class FlakyDriver(multistore.Driver):
    """Reads fail half way, as a backend that dies mid-download."""

    schemes = ("flaky",)
    location_type = FlakyLocation
    capabilities = multistore.Capabilities(read=True)

    def open_reader(self, location, offset, length, context=None):
        def chunks():
            yield b"first"
            raise ConnectionResetError("peer went away")
        return multistore.ReadStream(chunks(), 10)

    def get_size(self, location, context=None):
        return 10


def test_backend_dying_mid_read_is_backend_unavailable_naming_the_store(tmp_path):
    conf = make_conf({"DEFAULT": {"enabled_backends": {"web": "flaky", "m": "memory"}},
                      "glance_store": {"default_backend": "m"}}, tmp_path)
    stores = multistore.load(conf, drivers={"flaky": FlakyDriver})
    assert stores.info()[0]["read-only"] is True
    with pytest.raises(errors.BackendUnavailable) as info, stores.get("flaky://x/img") as r:
        r.read_all()
    assert (info.value.store, info.value.operation) == ("web", "get")
    with pytest.raises(errors.BackendUnavailable):
        stores.copy("flaky://x/img", to=["m"])
    assert stores["m"].driver.properties()["images"] == 0
    with pytest.raises(errors.DeleteNotSupported):
        stores.delete("flaky://x/img")


def test_set_acls_is_not_supported_without_access_control(stores):
    r = stores.add("img", b"abc", 3)
    with pytest.raises(errors.NotSupported) as info:
        stores.set_acls(r.location, public=True)
    assert (info.value.store, info.value.operation) == ("local", "set_acls")
