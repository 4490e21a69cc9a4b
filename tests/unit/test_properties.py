"""Property-based tests (hypothesis) of image ids and of the file and memory
location types, through multistore.testing.properties (what rbd, swift and
http apply too)."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import multistore
from multistore import errors
from multistore.drivers.file import FileLocation
from multistore.drivers.memory import MemoryLocation
from multistore.location import image_id_problem
from multistore.testing import local_layout, make_conf, properties

_SEGMENT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="/\0"),
                   min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
DIRECTORIES = st.lists(_SEGMENT, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("props")
    sections = local_layout(root, file_stores=("local", "backup"), memory_stores=("memory",))
    with multistore.load(make_conf(sections, root),
                         reserved={"os_glance_staging_store": "file"}) as s:
        yield s


def test_file_locations_round_trip():
    properties.check_location_type(FileLocation, directory=DIRECTORIES)


def test_memory_locations_round_trip():
    properties.check_location_type(MemoryLocation, store=st.text(min_size=1, max_size=20)
                                   .filter(lambda s: "\0" not in s))


@settings(max_examples=150)
@given(image_id=properties.image_ids())
def test_every_accepted_id_names_exactly_its_image_in_every_store(stores, image_id):
    """For every id the core accepts: the location each store gives it parses
    back to it, belongs to that store alone, and reads as absent."""
    for store_id in ("local", "backup", "memory", "os_glance_staging_store"):
        store = stores[store_id]
        store.check_image_id(image_id)
        url = store.driver.location_for(image_id).format()
        assert store.locate(url).image_id == image_id
        assert stores.store_for(url).id == store_id
        with pytest.raises(errors.NotFound):
            stores.get_size(url)


@settings(max_examples=60)
@given(image_id=properties.image_ids(), data=st.binary(max_size=64))
def test_every_accepted_id_is_stored_read_and_deleted(stores, image_id, data):
    for store_id in ("local", "memory"):
        result = stores.add(image_id, data, len(data), store=store_id)
        assert stores[store_id].locate(result.location).image_id == image_id
        with stores.get(result.location) as reader:
            assert reader.read_all() == data
        stores.delete(result.location)


@settings(max_examples=300)
@given(st.text())
def test_ids_are_accepted_exactly_when_they_round_trip_or_refused_clearly(stores, text):
    problem = image_id_problem(text)
    try:
        stores["local"].check_image_id(text)
    except errors.BadLocation as exc:
        assert problem is not None and problem in str(exc)
    else:
        assert problem is None
        for location_type, args in ((FileLocation, ("/d",)), (MemoryLocation, ("m",))):
            loc = location_type(*args, text)
            assert location_type.parse(loc.format()) == loc


def test_arbitrary_strings_are_bad_locations_or_one_image_of_one_store(stores):
    existing = [stores.add(f"exists-{n}", b"x", 1, store=s).location
                for n, s in enumerate(("local", "backup", "memory"))]
    properties.check_arbitrary_locations(stores, examples=existing, max_examples=500)
    for url in existing:
        stores.delete(url)


@pytest.mark.parametrize("url", [
    "file:///", "file://", "file:", "file:////x", "file:///a//b", "file:///a/./b",
    "file:///a/%2E%2E/b", "file:///a/b%00", "file:///a/%5C", "file:///a/b%2Fc",
    "file://host/a/b", "FILE:///a/b", "memory://", "memory:///x", "memory://m/",
    "memory://m/a/b", "memory://m/%5C", "memory://m/%", "memory://m/%C3", "memory://m/%09",
    "memory://m/a?b", "memory://m/a#b", "filesystem:///x/y", "\udcff", "file:///\udcff/x",
])
def test_edge_strings(stores, url):
    properties.check_location_string(stores, url)


def test_the_partial_directory_is_unreachable_by_any_location(stores, tmp_path):
    from multistore.drivers.file import PARTIAL_DIR
    datadir = stores["local"].driver.datadirs[0][0]
    assert image_id_problem(PARTIAL_DIR) is not None
    assert os.path.isdir(os.path.join(datadir, PARTIAL_DIR))
    for url in (f"file://{datadir}/{PARTIAL_DIR}", f"file://{datadir}/.multistore%5Cpartial",
                f"file://{datadir}/.multistore%5Cpartial/x.part"):
        with pytest.raises(errors.BadLocation):
            stores.get(url)
