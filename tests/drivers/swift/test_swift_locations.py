"""Swift locations without a server: glance_store's forms, round trips, fuzz."""

from __future__ import annotations

import random
import string

import pytest

from multistore.drivers.swift import (ConfigLocation, LegacyLocation, SwiftLocation,
                                      TenantLocation)

UUID = "0b3b5d47-6d4f-4c6e-9a4c-1f2d3e4f5a6b"


@pytest.mark.parametrize("url, expected", [
    (f"swift+config://ref1/glance/{UUID}",
     ConfigLocation(container="glance", image_id=UUID, reference="ref1")),
    (f"swift+https://tenant%3Auser:key@keystone.example.com/v3/glance/{UUID}",
     LegacyLocation(container="glance", image_id=UUID, scheme="swift+https",
                    user="tenant:user", key="key", auth="keystone.example.com/v3")),
    (f"swift://account:user:pass@auth.example.com/v1.0/glance/{UUID}",
     LegacyLocation(container="glance", image_id=UUID, scheme="swift", user="account:user",
                    key="pass", auth="auth.example.com/v1.0")),
    (f"swift+https://swift.example.com/v1/AUTH_p/glance_{UUID}/{UUID}",
     TenantLocation(container=f"glance_{UUID}", image_id=UUID, scheme="swift+https",
                    account="swift.example.com/v1/AUTH_p")),
])
def test_glance_store_locations_parse(url, expected):
    """What glance_store wrote (UUIDs, unquoted) reads as it is."""
    assert SwiftLocation.parse(url) == expected
    if expected.scheme if isinstance(expected, LegacyLocation) else True:
        assert SwiftLocation.parse(expected.format()) == expected


def test_legacy_key_never_in_repr_or_str():
    loc = SwiftLocation.parse("swift+http://u:s3cr%3Ft@h:8080/auth/v1.0/c/o")
    assert loc.key == "s3cr?t"
    assert "s3cr" not in repr(loc) and "s3cr" not in str(loc)


ALPHABET = string.ascii_letters + string.digits + " %/?#@:;+&=~._-\u00fc\u4e2d\U0001f600\t\n\\"


def _random_id(rng):
    while True:
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 20)))
        if text not in (".", "..") and "/" not in text and not any(
                c in text for c in "\t\n\\"):
            return text


def test_every_id_round_trips_in_every_form():
    rng = random.Random(1)
    for _ in range(2000):
        image_id = _random_id(rng)
        key = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12)))
        for loc in (ConfigLocation(container="glance", image_id=image_id, reference="ref1"),
                    LegacyLocation(container="glance", image_id=image_id, scheme="swift+http",
                                   user="t:u", key=key, auth="h:1/auth/v1.0"),
                    TenantLocation(container="glance_" + image_id, image_id=image_id,
                                   scheme="swift+https", account="h/v1/AUTH_p")):
            url = loc.format()
            assert type(loc).parse(url) == loc, url
            assert SwiftLocation.parse(url) == loc, url


def test_mangled_urls_are_value_errors_or_canonical_locations():
    """Arbitrary edits of valid URLs: a ValueError, or a location that
    formats to a URL naming the same location (never another exception)."""
    rng = random.Random(2)
    seeds = [f"swift+config://ref1/glance/{UUID}",
             f"swift+http://t%3Au:k@h:1/auth/v1.0/glance/{UUID}",
             f"swift+https://h/v1/AUTH_p/glance_{UUID}/{UUID}"]
    pieces = ["%", "%2F", "%2E%2E", "..", "/", "?", "#", "@", ":", "%00", "%0A", "\n",
              "://", "%41", "%zz", "%C3", "\u00fc", ""]
    for _ in range(5000):
        url = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            at = rng.randint(0, len(url))
            cut = rng.randint(0, 3)
            url = url[:at] + rng.choice(pieces) + url[at + cut:]
        try:
            loc = SwiftLocation.parse(url)
        except ValueError:
            continue
        assert SwiftLocation.parse(loc.format()) == loc, url
        assert "/" not in loc.image_id and loc.image_id not in (".", "..")
        assert "/" not in loc.container and loc.container not in (".", "..")
