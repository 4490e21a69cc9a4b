"""Property tests of sheepdog locations (hypothesis), and arbitrary strings
against two sheepdog stores of one store set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sheepdog_stores import sheepdog_stores
from hypothesis import strategies as st

from multistore.drivers.sheepdog import SheepdogLocation
from multistore.testing import properties

HOSTS = st.one_of(st.sampled_from(["127.0.0.1", "localhost", "sheep-1.example.org", "::1",
                                   "fd00::11", "10.0.0.1"]),
                  st.ip_addresses().map(str))


def test_locations_round_trip() -> None:
    properties.check_location_type(SheepdogLocation, address=HOSTS,
                                   port=st.integers(1, 65535))


def test_legacy_locations_round_trip() -> None:
    properties.check_location_type(SheepdogLocation, address=st.none(), port=st.none())


def test_arbitrary_strings(sheepdog_a: Any, sheepdog_b: Any, tmp_path: Path) -> None:
    with sheepdog_stores(tmp_path, {"one": (sheepdog_a, {}), "two": (sheepdog_b, {})}) \
            as stores:
        existing = stores.add("an image", b"data", 4)
        try:
            properties.check_arbitrary_locations(stores, examples=[
                existing.location, "sheepdog://an%20image"])
        finally:
            stores.delete(existing.location)
