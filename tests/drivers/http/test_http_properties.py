"""Property tests (multistore.testing.properties) of the http store's
locations, and copies of web URLs whose last path segment is no image id.

Any well-formed http(s) URL is a location of the http store, so its image
id, the last path segment decoded, is only a hint
(``HttpLocation.image_id_is_hint``): ``http://host/`` gives an empty one,
``.../a%2Fb`` gives ``a/b``. Everything else the kit checks holds: the
location parses back to itself, belongs to exactly one store, and
arbitrary strings are BadLocation or such a location, never another
exception. A copy of a URL whose hint is no valid id needs an explicit
id, and says so before it sends a request.
"""

from __future__ import annotations

import hashlib
import json
import string
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import multistore
from multistore import errors
from multistore.drivers.http import HttpLocation
from multistore.testing import make_conf, properties, random_bytes, render_ini
from multistore.testing.faults import EXE

_UNRESERVED = string.ascii_letters + string.digits + "-._~"
_SUB_DELIMS = "!$&'()*+,;="
#: Characters written as they are in a path (and ":" "@"), plus a few
#: non-ASCII ones, which the URL keeps as written.
_PATH_CHARS = _UNRESERVED + _SUB_DELIMS + ":@" + "\u00e9\u00a0\u2028\U0001f600"
_ESCAPES = st.sampled_from(["%41", "%2F", "%2f", "%25", "%3F", "%23", "%20", "%C3%A9", "%00",
                            "%5C", "%2E", "%2e%2E", "%E2%80%A8"])
_TEXT = st.characters(exclude_categories=("Cs",))

_SEGMENTS = st.lists(st.one_of(st.text(st.sampled_from(_PATH_CHARS), max_size=6), _ESCAPES,
                               st.text(_TEXT, min_size=1, max_size=3)
                               .map(lambda t: urllib.parse.quote(t, safe=""))),
                     max_size=4).map("".join)
PATHS = st.lists(_SEGMENTS, max_size=5).map(lambda segments: "/" + "/".join(segments))
QUERIES = st.one_of(st.just(""), st.lists(st.one_of(
    st.text(st.sampled_from(_PATH_CHARS + "/?"), min_size=1, max_size=8), _ESCAPES),
    min_size=1, max_size=4).map("".join))
HOSTS = st.one_of(
    st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,10}"
                  r"[a-z0-9])?){0,3}\Z"),
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str),
    st.text(st.sampled_from(string.ascii_lowercase + string.digits + "-._~" + _SUB_DELIMS),
            min_size=1, max_size=12))
CREDENTIALS = st.one_of(st.just((None, None)),
                        st.tuples(st.text(_TEXT, max_size=8),
                                  st.one_of(st.none(), st.text(_TEXT, max_size=12))))


@st.composite
def http_locations(draw: Any) -> HttpLocation:
    """Locations as parse gives them: host lowercase, a path, a password
    only with a user."""
    user, password = draw(CREDENTIALS)
    return HttpLocation(draw(st.sampled_from(["http", "https"])), draw(HOSTS),
                        draw(st.one_of(st.none(), st.integers(1, 65535))), draw(PATHS),
                        draw(QUERIES), user, password)


def test_locations_round_trip() -> None:
    """parse(format(x)) == x for every location, and with_image_id(id) names
    ``id`` for every id the core accepts."""
    properties.check_location_type(HttpLocation, locations=http_locations(), max_examples=600)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: Any) -> Iterator[multistore.StoreSet]:
    root = tmp_path_factory.mktemp("http-props")
    conf = make_conf({"DEFAULT": {"enabled_backends": {"web": "http", "local": "file",
                                                       "ram": "memory"}},
                      "glance_store": {"default_backend": "local"},
                      "local": {"filesystem_store_datadir": str(root / "local")}}, root)
    with multistore.load(conf) as loaded:
        yield loaded


EXAMPLES = ["http://h/", "http://h/a%2Fb", "https://u:p%40ss@h:8443/x/y?sig=1#frag",
            "http://[::1]:8080/i", "HTTP://H/X", "http://h/dir/", "http://h/%2E%2E",
            "http://u@h/a%5Cb?x=%2F"]


def test_arbitrary_strings_are_bad_locations_or_one_location_of_one_store(
        stores: multistore.StoreSet) -> None:
    """Arbitrary strings and near misses of web URLs (and of the file and
    memory stores' locations), without reading them: nothing is fetched
    from hosts the strings name."""
    properties.check_arbitrary_locations(stores, examples=EXAMPLES, max_examples=800,
                                         read=False)


@pytest.mark.parametrize("url, hint", [
    ("http://h/", ""), ("http://h", ""), ("http://h/a%2Fb", "a/b"), ("http://h/a%5Cb", "a\\b"),
    ("http://h/%2E%2E", ".."), ("http://h/.", "."), ("http://h/a%00b", "a\x00b"),
    ("http://h/a%09", "a\t"), ("http://h/" + "x" * 256, "x" * 256), ("http://h//", ""),
    ("http://h/?x=1", ""), ("http://h/ok%20id/", "ok id")])
def test_edge_urls(stores: multistore.StoreSet, url: str, hint: str) -> None:
    properties.check_location_string(stores, url, read=False)
    assert stores["web"].locate(url).image_id == hint


# -- near misses of a real URL, read from nginx ----------------------------------

IMAGE = "props-image"


@pytest.fixture(scope="module")
def served(nginx_server: Any) -> Iterator[bytes]:
    data = random_bytes(70_000, seed=3)
    nginx_server.put(IMAGE, data)
    yield data
    (nginx_server.docroot / IMAGE).unlink()


@pytest.fixture(scope="module")
def local_web(nginx_server: Any, tmp_path_factory: Any) -> Iterator[multistore.StoreSet]:
    """An http store that may fetch from the session nginx's HTTP port only."""
    root = tmp_path_factory.mktemp("http-props-read")
    conf = make_conf({"DEFAULT": {"enabled_backends": {"web": "http"}},
                      "glance_store": {"default_backend": "web"},
                      "web": {"http_allowed_hosts": "127.0.0.1",
                              "http_allowed_ports": nginx_server.http_port}}, root)
    with multistore.load(conf) as loaded:
        yield loaded


@settings(max_examples=200)
@given(path=properties.near_misses([f"/images/{IMAGE}", f"/images/{IMAGE}?x=1",
                                    f"/private/{IMAGE}", f"/chunked/{IMAGE}"]))
def test_near_misses_of_a_real_url_read_or_fail_cleanly(local_web: multistore.StoreSet,
                                                        nginx_server: Any, served: bytes,
                                                        path: str) -> None:
    """The path and query of a real image's URL, edited: read from nginx,
    each is BadLocation, NotFound or a read that completes (the host and
    port stay 127.0.0.1 and nginx's: the edits start after them)."""
    origin = f"http://127.0.0.1:{nginx_server.http_port}"
    url = f"{origin}/{path.lstrip('/')}"
    properties.check_location_string(local_web, url, read=True)
    if url == f"{origin}/images/{IMAGE}":
        with local_web.get(url) as reader:
            assert reader.read_all() == served


# -- copies of URLs whose last segment is no image id ------------------------------

#: (path written in the URL, where nginx finds the file, the URL's hint)
UNNAMED = [("", "www/index.html", ""), ("images/sub%2Fimg", "www/images/sub/img", "sub/img"),
           ("images/a%5Cb", "www/images/a\\b", "a\\b")]


@pytest.fixture
def unnamed(nginx: Any) -> Iterator[list[tuple[str, str, bytes]]]:
    """Images nginx serves at URLs whose last segment is no image id:
    (url, hint, bytes)."""
    found = []
    for n, (path, file, hint) in enumerate(UNNAMED):
        data = random_bytes(100_000 + n, seed=n)
        target = nginx.root / file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        found.append((nginx.url(path), hint, data))
    yield found
    for _, file, _ in UNNAMED:
        (nginx.root / file).unlink()
    (nginx.root / "www/images/sub").rmdir()


def test_a_copy_of_a_url_without_a_valid_id_needs_one(make_http_stores: Any, nginx: Any,
                                                      unnamed: Any, tmp_path: Path) -> None:
    with make_http_stores(with_file=True) as stores:
        for url, hint, data in unnamed:
            assert stores["web"].locate(url).image_id == hint
            requests = len(nginx.access_log())
            with pytest.raises(errors.BadLocation) as info:
                stores.copy(url, to=["local"])
            message = str(info.value)
            assert (info.value.store, info.value.operation) == ("web", "copy")
            assert f"({hint!r}: " in message and "image id" in message, message
            assert len(nginx.access_log()) == requests, "a request was sent"
            moved = list(stores.move([url], to=["local"]))
            assert moved[0].error and "gives no valid image id" in moved[0].error
            [result] = stores.copy(url, to=["local"], image_id=f"imported-{len(hint)}")
            assert result.checksum == hashlib.md5(data).hexdigest()
            with stores.get(result.location) as reader:
                assert reader.read_all() == data
            stores.delete(result.location)
        # The command line: the same refusal, and --id.
        config = tmp_path / "cli.conf"
        config.write_text(render_ini({
            "DEFAULT": {"enabled_backends": {"web": "http", "local": "file"}},
            "glance_store": {"default_backend": "local"},
            "local": {"filesystem_store_datadir": tmp_path / "local"}}))
        url, _, data = unnamed[1]
        command = [EXE, "--config-file", str(config), "--json", "copy", url, "--to", "local",
                   "--no-progress"]
        refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and "--id" in refused.stderr, refused.stderr
        done = subprocess.run([*command, "--id", "from-cli"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        [copied] = json.loads(done.stdout)
        assert copied["checksum"] == hashlib.md5(data).hexdigest()
        assert copied["location"].endswith("/from-cli")
