"""Property tests (hypothesis, multistore.testing.properties) of the swift
location types, and arbitrary strings against a store on the real Swift."""

from __future__ import annotations

import uuid

from hypothesis import strategies as st

from multistore.drivers.swift import ConfigLocation, LegacyLocation, TenantLocation
from multistore.testing import properties

_CHARS = st.characters(exclude_categories=("Cs",))
#: Container names: any text but '/', '.', '..' and control characters.
NAMES = st.text(st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/"),
                min_size=1, max_size=30).filter(lambda name: name not in (".", ".."))


def test_config_locations_round_trip():
    properties.check_location_type(ConfigLocation, container=NAMES,
                                   reference=st.text(_CHARS, min_size=1, max_size=20))


def test_legacy_locations_round_trip():
    properties.check_location_type(
        LegacyLocation, container=NAMES,
        scheme=st.sampled_from(["swift", "swift+http", "swift+https"]),
        user=st.text(_CHARS, min_size=1, max_size=20),
        key=st.text(_CHARS, min_size=1, max_size=20),
        auth=st.sampled_from(["keystone.example.com:5000/v3", "127.0.0.1:16000/auth/v1.0",
                              "h"]))


def test_tenant_locations_round_trip():
    properties.check_location_type(
        TenantLocation, container=NAMES,
        scheme=st.sampled_from(["swift", "swift+http", "swift+https"]),
        account=st.sampled_from(["swift.example.com/v1/AUTH_p", "127.0.0.1:16000/v1/AUTH_t"]))


def test_arbitrary_strings_against_a_store(make_swift_stores):
    """Arbitrary strings and near misses of real locations: BadLocation (or
    NotFound for a get), or exactly one image of exactly one store."""
    with make_swift_stores(swift_store_large_object_size=1) as stores:
        existing = [stores.add(str(uuid.uuid4()) + odd, b"x" * size, size).location
                    for odd, size in (("", 10), ("%41", 10), ("a?b", 2 * 1000 * 1024))]
        properties.check_arbitrary_locations(stores, examples=existing, max_examples=300)
        for url in existing:
            stores.delete(url)
