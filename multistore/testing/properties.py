"""Property-based checks of locations and image ids, for every driver.

Built on hypothesis (``pip install multistore[test]``). A driver's tests
apply them in a few lines::

    from hypothesis import strategies as st
    from multistore.testing import properties

    def test_my_locations_round_trip():
        properties.check_location_type(MyLocation, bucket=st.text(min_size=1))

    def test_arbitrary_strings(my_stores):
        properties.check_arbitrary_locations(my_stores)

:func:`check_location_type` builds locations from a strategy per field
(``image_id`` defaults to :func:`image_ids`, every id the core accepts) and
checks ``parse(format(x)) == x``. :func:`check_arbitrary_locations` feeds
arbitrary strings, and near misses of the stores' own locations, to
:meth:`multistore.store.Store.locate`, :meth:`multistore.StoreSet.store_for`
and :meth:`multistore.StoreSet.get`: each is ``BadLocation`` (``NotFound``
for a get of a well-formed location with no image), or a location of
exactly one image (a valid id) of exactly one store; never another
exception. A location type whose image id is only a hint
(:attr:`multistore.location.Location.image_id_is_hint`: the http store's
web URLs, any of which is a location) may give an id that is not valid
(``http://host/``, ``http://host/a%2Fb``); everything else holds for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from multistore import errors
from multistore.location import Location, image_id_problem
from multistore.storeset import StoreSet

#: Characters that have a meaning in URLs, paths or percent-encoding.
AWKWARD = ["%", "%41", "%2F", "%2f", "%25", "%%", "%zz", "#", "?", "&", ";", "=", "@", ":",
           "+", " ", ".", "..", "~", "-", "_", "'", '"', "<", ">", "|", "*", "[", "]", "\u00e9",
           "\u00a0", "\u2028", "\u200b", "\ufeff", "\U0001f600", "\u0130", "\u212a"]

_ID_CHARS = st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/\\")


def image_ids() -> st.SearchStrategy[str]:
    """Every image id the core accepts (:func:`multistore.location.image_id_problem`),
    weighted toward awkward ones: URL syntax, percent signs, non-ASCII, and
    lengths up to the 255-byte limit."""
    pieces = st.one_of(st.sampled_from(AWKWARD), st.text(_ID_CHARS, max_size=4))
    return st.one_of(
        st.text(_ID_CHARS, min_size=1, max_size=40),
        st.lists(pieces, min_size=1, max_size=16).map("".join),
        st.integers(200, 255).flatmap(
            lambda n: st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e,
                                            exclude_characters="/\\"),
                              min_size=n, max_size=n)),
    ).filter(lambda image_id: image_id_problem(image_id) is None)


def check_location_type(location_type: type[Location], *, max_examples: int = 300,
                        locations: st.SearchStrategy[Location] | None = None,
                        **fields: st.SearchStrategy[Any]) -> None:
    """``parse(format(x)) == x`` for locations built from ``fields`` (one
    strategy per constructor argument; ``image_id`` defaults to
    :func:`image_ids`), and formatting is stable.

    A type whose ``image_id`` is not a constructor argument (a property, as
    the http store's last path segment) is built from the other fields, or
    taken whole from ``locations`` (for fields that depend on each other),
    and half of the examples then name an id from the ``image_id`` strategy
    with :meth:`~multistore.location.Location.with_image_id`, which must
    give that id back.
    """
    if "image_id" in {f.name for f in dataclasses.fields(location_type)}:   # type: ignore[arg-type]
        fields.setdefault("image_id", image_ids())
        ids: st.SearchStrategy[str | None] = st.none()
    else:
        ids = st.one_of(st.none(), fields.pop("image_id", image_ids()))
    built = locations if locations is not None else st.builds(location_type, **fields)

    def renamed(pair: tuple[Location, str | None]) -> Location:
        location, image_id = pair
        if image_id is None:
            return location
        named = location.with_image_id(image_id)
        assert named.image_id == image_id, (location, image_id, named)
        return named

    @settings(max_examples=max_examples)
    @given(st.tuples(built, ids).map(renamed))
    def round_trip(location: Location) -> None:
        url = location.format()
        parsed = location_type.parse(url)
        assert parsed == location, (url, parsed, location)
        assert parsed.format() == url
        assert parsed.image_id == location.image_id

    round_trip()


def near_misses(urls: Sequence[str]) -> st.SearchStrategy[str]:
    """Strings a few edits away from ``urls``: awkward characters inserted,
    characters deleted or replaced, pieces doubled."""
    def edit(url: str, edits: list[tuple[int, int, str]]) -> str:
        for kind, where, text in edits:
            at = where % (len(url) + 1)
            if kind == 0:
                url = url[:at] + text + url[at:]
            elif kind == 1:
                url = url[:at] + url[at + 1:]
            elif kind == 2:
                url = url[:at] + text + url[at + 1:]
            else:
                url = url[:at] + url[at:] + url[at:]
        return url

    one_edit = st.tuples(st.integers(0, 3), st.integers(0, 10_000),
                         st.one_of(st.sampled_from(AWKWARD + ["/", "\\", "\t", "\n", "\0",
                                                              "//", "/..", "/."]),
                                   st.text(max_size=3)))
    return st.builds(edit, st.sampled_from(list(urls)), st.lists(one_edit, max_size=4))


def location_strings(stores: StoreSet, examples: Sequence[str] = ()) -> st.SearchStrategy[str]:
    """Arbitrary text, and near misses of every store's locations."""
    urls = list(examples)
    for store in stores:
        with contextlib.suppress(NotImplementedError, errors.MultistoreError):
            urls.append(store.driver.location_for("image-id").format())
    strategies = [st.text(), st.text(alphabet=st.sampled_from(list(":/%?#@.a1\\"))).map(
        lambda s: s)]
    if urls:
        strategies.append(near_misses(urls))
    return st.one_of(*strategies)


def check_arbitrary_locations(stores: StoreSet, *, examples: Sequence[str] = (),
                              max_examples: int = 300, read: bool = True) -> None:
    """Arbitrary strings never break location handling (see the module
    docstring). ``examples`` are locations of images that exist, whose near
    misses are tried too; with ``read``, :meth:`StoreSet.get` is tried on
    every string (keep it false for stores that are slow to answer)."""
    @settings(max_examples=max_examples)
    @given(location_strings(stores, examples))
    def arbitrary(url: str) -> None:
        check_location_string(stores, url, read=read)

    arbitrary()


def check_location_string(stores: StoreSet, url: str, read: bool = True) -> None:
    """One string: BadLocation, or exactly one store and a canonical location."""
    holders = []
    for store in stores:
        try:
            location = store.locate(url)
        except errors.BadLocation:
            continue
        holders.append(store.id)
        if type(location).image_id_is_hint:
            # Any web URL is a location; its id only what the URL suggests.
            assert isinstance(location.image_id, str), (url, location)
        else:
            assert image_id_problem(location.image_id) is None, (url, location)
        again = store.locate(location.format())
        assert again == location, (url, location.format(), again)
    try:
        found = stores.store_for(url)
    except errors.BadLocation:
        assert len(holders) != 1, (url, holders)
    else:
        assert holders == [found.id], (url, holders, found.id)
        assert stores.store_for(found.locate(url).format()).id == found.id
    if read:
        try:
            with stores.get(url) as reader:
                for _ in reader:
                    pass
        except (errors.BadLocation, errors.NotFound):
            pass


__all__ = ["AWKWARD", "image_ids", "check_location_type", "near_misses", "location_strings",
           "check_arbitrary_locations", "check_location_string"]
