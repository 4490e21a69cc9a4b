"""The http driver against a real nginx: options, redirects, errors, servers
without Content-Length, resumed reads, credentials, copies."""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import re
import time
import tracemalloc
import urllib.parse
import uuid
from typing import Any

import pytest

import multistore
from multistore import errors
from multistore.drivers.http import HttpDriver, HttpLocation, _keeps_credentials
from multistore.testing import Generated, make_conf, random_bytes

MiB = 1024 * 1024


def new_id() -> str:
    return f"img-{uuid.uuid4()}"


def read(stores: multistore.StoreSet, location: str, **kwargs: Any) -> bytes:
    with stores.get(location, **kwargs) as reader:
        return reader.read_all()


@pytest.fixture
def image() -> bytes:
    return random_bytes(3 * MiB + 17, seed=11)


@pytest.fixture
def image_id(nginx: Any, image: bytes) -> str:
    name = new_id()
    nginx.put(name, image)
    return name


@pytest.fixture
def stores(make_http_stores: Any) -> Any:
    with make_http_stores() as stores:
        yield stores


def log_lines(nginx: Any, image_id: str, name: str = "access.log",
              count: int = 0) -> list[str]:
    """The log lines naming ``image_id``, once there are ``count`` of them
    (nginx logs a request when it has finished with it)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [line for line in nginx.access_log(name) if image_id in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


# -- the store ---------------------------------------------------------------

def test_listed_read_only_with_safe_properties(make_http_stores: Any, nginx: Any) -> None:
    proxy = "http://proxyuser:proxypass@127.0.0.1:3128"
    with make_http_stores(http_proxy_information={"https": proxy}) as stores:
        entry = stores.info(detail=True)[0]
        assert entry["id"] == "web" and entry["read-only"] is True
        assert entry["type"] == "http"
        props = entry["properties"]
        assert props["verify_certificates"] is True
        assert props["max_redirects"] == 5 and props["read_retries"] == 3
        assert "proxypass" not in repr(entry)
        assert "proxypass" not in repr(stores["web"].driver)


def test_every_http_url_belongs_to_the_store(stores: Any) -> None:
    for url in ("http://example.org/a.img", "https://u:p@example.org:8443/x/y?z=1",
                "HTTP://EXAMPLE.ORG/a"):
        assert stores.store_for(url).id == "web"
    for url in ("ftp://example.org/a", "file:///etc/passwd", "http:///nohost",
                "http://example.org:notaport/a", "http://exa mple.org/a"):
        with pytest.raises(errors.BadLocation):
            stores.store_for(url)
    driver = stores["web"].driver
    assert driver.image_id("https://h/images/cirros%200.6.img?sig=1") == "cirros 0.6.img"


def test_locations_round_trip_and_malformed_ones_are_refused(stores: Any) -> None:
    web = stores["web"]
    for url in ("http://h", "https://H.example:8443/a/b/?x=1&y=%2F", "http://[::1]:8080/i",
                "http://u@h/x", "http://u:@h/x", "http://:p@h/x", "http://u%3Ax:p%40ss%23%3F@h/",
                "http://h/dir/", "http://h/a%20b;c=d/%C3%BC?sig=a%2Bb", "http://h/x?",
                "HTTP://h:80/x#fragment", "http://h/v1/@latest/img?mail=a@b"):
        location = web.locate(url)
        assert type(location).parse(location.format()) == location, url
        assert web.locate(location.format()) == location
        again = location.with_image_id("%41 a?b#c")
        assert again.image_id == "%41 a?b#c" and web.locate(again.format()) == again
    assert web.locate("http://h/dir/").image_id == "dir"
    assert web.locate("http://u:p@h/x") != web.locate("http://u:q@h/x")
    assert "p%40ss" not in repr(web.locate("http://u:p%40ss@h/x"))
    for url in ("http://h/a b", "http://h/a%zz", "http://h/%FF", "http://h:0/x",
                "http://u:12#34@h/x", "http://u:12?34@h/x", "http://h/x#a@b",
                "http://a\\b/x", "http://h%41/x", "http://[evil]/x", "http://h/\x7f"):
        with pytest.raises(errors.BadLocation):
            web.locate(url)


def test_add_and_delete_are_refused(stores: Any, nginx: Any, image_id: str) -> None:
    with pytest.raises(errors.AddNotSupported, match="read-only http store"):
        stores.add(new_id(), b"x", 1)
    with pytest.raises(errors.DeleteNotSupported):
        stores.delete(nginx.url(f"images/{image_id}"))
    assert (nginx.docroot / image_id).exists()


# -- reads -----------------------------------------------------------------

def test_ranged_reads_use_http_range(stores: Any, nginx: Any, image_id: str,
                                     image: bytes) -> None:
    url = nginx.url(f"images/{image_id}")
    assert read(stores, url, offset=MiB, length=10) == image[MiB:MiB + 10]
    assert read(stores, url, offset=len(image) - 3) == image[-3:]
    with stores.get(url, offset=0, length=1) as reader:
        assert reader.size == 1 and reader.read_all() == image[:1]
    lines = log_lines(nginx, image_id, count=3)
    assert f'206 range="bytes={MiB}-{MiB + 9}" if_range="-" sent=10' in lines[0]
    assert f'206 range="bytes={len(image) - 3}-"' in lines[1]


def test_reads_past_the_end_are_empty(stores: Any, nginx: Any, image_id: str,
                                      image: bytes) -> None:
    url = nginx.url(f"images/{image_id}")
    for offset, length in ((len(image), None), (len(image) + 10, 5), (10, 0)):
        with stores.get(url, offset=offset, length=length) as reader:
            assert reader.read_all() == b""
            assert reader.size == 0
    with pytest.raises(errors.NotFound):
        read(stores, nginx.url(f"images/{new_id()}"), offset=0, length=0)


def test_concurrent_reads_share_one_store(stores: Any, nginx: Any, image_id: str,
                                          image: bytes) -> None:
    url = nginx.url(f"images/{image_id}")
    parts = [(i * 100_003, 250_000) for i in range(24)]

    def part(offset: int, length: int) -> bytes:
        return read(stores, url, offset=offset, length=length)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda p: part(*p), parts))
    assert got == [image[o:o + n] for o, n in parts]


# -- https and certificates --------------------------------------------------

def test_certificates_are_verified_by_default(make_http_stores: Any, nginx: Any,
                                              image_id: str) -> None:
    url = nginx.url(f"images/{image_id}", https=True)
    with make_http_stores() as stores:
        with pytest.raises(errors.BackendUnavailable) as info:
            read(stores, url)
        assert info.value.store == "web"
        assert "certificate verify failed" in str(info.value)
        assert "https_ca_certificates_file" in str(info.value)
        with pytest.raises(errors.BackendUnavailable):
            stores.get_size(url)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_insecure_is_explicit(make_http_stores: Any, nginx: Any, image_id: str,
                              image: bytes) -> None:
    url = nginx.url(f"images/{image_id}", https=True)
    with make_http_stores(https_insecure=True) as stores:
        assert read(stores, url) == image
        assert stores.info(detail=True)[0]["properties"]["verify_certificates"] is False


def test_ca_file_wins_over_insecure(make_http_stores: Any, nginx: Any, image_id: str,
                                    image: bytes, caplog: Any, tmp_path: Any) -> None:
    url = nginx.url(f"images/{image_id}", https=True)
    with caplog.at_level(logging.WARNING, logger="multistore"):
        stores = make_http_stores(https_ca_certificates_file=str(nginx.ca_file),
                                  https_insecure=True)
    assert "https_insecure is ignored" in caplog.text
    with stores:
        assert read(stores, url) == image
    # A CA that did not issue the server's certificate: refused.
    other = tmp_path / "other-ca.pem"
    other.write_text(open("/etc/ssl/certs/ca-certificates.crt").read()
                     if os.path.exists("/etc/ssl/certs/ca-certificates.crt")
                     else _self_signed_pem(tmp_path))
    with make_http_stores(https_ca_certificates_file=str(other), https_insecure=True) \
            as stores, pytest.raises(errors.BackendUnavailable,
                                     match="certificate verify failed"):
        read(stores, url)


def _self_signed_pem(tmp_path: Any) -> str:
    import subprocess
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                    str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem"),
                    "-subj", "/CN=other", "-days", "1"], check=True, capture_output=True)
    return (tmp_path / "c.pem").read_text()


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_bad_ca_file_is_a_config_error(make_http_stores: Any, tmp_path: Any,
                                       content: str | None) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(errors.ConfigError) as info:
        make_http_stores(https_ca_certificates_file=str(path))
    assert info.value.option == "https_ca_certificates_file"
    assert info.value.store == "web"


# -- proxies -----------------------------------------------------------------

def test_reads_through_the_configured_proxy(make_http_stores: Any, nginx: Any,
                                            image_id: str, image: bytes) -> None:
    with make_http_stores(http_proxy_information={"http": nginx.proxy_url}) as stores:
        url = nginx.url(f"images/{image_id}")
        assert read(stores, url) == image
        assert stores.get_size(url) == len(image)
        assert read(stores, url, offset=5, length=5) == image[5:10]
    relayed = log_lines(nginx, image_id, "proxy.log", count=3)
    assert len(relayed) == 3
    assert f'"GET http://127.0.0.1:{nginx.http_port}/images/{image_id} HTTP/1.1" 200' \
        in relayed[0]


@pytest.mark.parametrize("value", [{"gopher": "http://p:1"}, {"http": "http://"},
                                   {"http": "http://p:notaport"}])
def test_bad_proxy_is_a_config_error(make_http_stores: Any, value: Any) -> None:
    with pytest.raises(errors.ConfigError) as info:
        make_http_stores(http_proxy_information=value)
    assert info.value.option == "http_proxy_information"


# -- redirects ---------------------------------------------------------------

def test_redirect_chain_of_every_kind(stores: Any, nginx: Any, image_id: str,
                                      image: bytes) -> None:
    url = nginx.url(f"hop/301/{image_id}")
    assert read(stores, url) == image
    assert stores.get_size(url) == len(image)
    assert read(stores, url, offset=7, length=3) == image[7:10]
    statuses = [line.split('" ')[1].split()[0]
                for line in log_lines(nginx, image_id, count=18)]
    assert statuses == ["301", "302", "303", "307", "308", "200"] * 2 + \
        ["301", "302", "303", "307", "308", "206"]


def test_redirect_limit(make_http_stores: Any, nginx: Any, image_id: str,
                        image: bytes) -> None:
    six = nginx.url(f"hop/extra/{image_id}")
    with make_http_stores() as stores:
        with pytest.raises(errors.BadLocation, match=r"more than 5 redirects") as info:
            read(stores, six)
        assert info.value.store == "web" and info.value.operation == "get"
        with pytest.raises(errors.BadLocation, match=r"more than 5 redirects"):
            stores.get_size(six)
    with make_http_stores(http_max_redirects=6) as stores:
        assert read(stores, six) == image
    with make_http_stores(http_max_redirects=0) as stores:
        assert read(stores, nginx.url(f"images/{image_id}")) == image
        with pytest.raises(errors.BadLocation, match=r"more than 0 redirects"):
            read(stores, nginx.url(f"hop/308/{image_id}"))


def test_redirect_loop(stores: Any, nginx: Any) -> None:
    with pytest.raises(errors.BadLocation, match="redirect loop"):
        read(stores, nginx.url("loop/a"))


@pytest.mark.parametrize("path, target", [("to-ftp", "ftp://"), ("to-file", "file://")])
def test_redirects_to_other_schemes_are_refused(stores: Any, nginx: Any, path: str,
                                                target: str) -> None:
    with pytest.raises(errors.BadLocation, match="only http and https") as info:
        read(stores, nginx.url(path))
    assert target in str(info.value)


def test_redirect_from_http_to_https(make_http_stores: Any, nginx: Any, image_id: str,
                                     image: bytes) -> None:
    url = nginx.url(f"to-https/{image_id}")
    with make_http_stores(https_ca_certificates_file=str(nginx.ca_file)) as stores:
        assert read(stores, url) == image
    # Verified by default: the test CA is unknown.
    with make_http_stores() as stores, pytest.raises(errors.BackendUnavailable,
                                                     match="certificate verify failed"):
        read(stores, url)


# -- statuses ----------------------------------------------------------------

@pytest.mark.parametrize("status, error", [
    (403, errors.BadLocation), (500, errors.BackendUnavailable),
    (502, errors.BackendUnavailable), (503, errors.BackendUnavailable)])
def test_error_statuses_name_the_status_and_store(stores: Any, nginx: Any, status: int,
                                                  error: type) -> None:
    url = nginx.url(f"status/{status}")
    for call in (lambda: read(stores, url), lambda: stores.get_size(url)):
        with pytest.raises(error) as info:
            call()
        assert f"answered {status}" in str(info.value)
        assert "store 'web'" in str(info.value)


@pytest.mark.parametrize("path", ["images/{missing}", "status/410", "hop/301/{missing}"])
def test_missing_is_not_found(stores: Any, nginx: Any, path: str) -> None:
    url = nginx.url(path.format(missing=new_id()))
    with pytest.raises(errors.NotFound) as info:
        read(stores, url)
    assert info.value.store == "web" and info.value.operation == "get"
    with pytest.raises(errors.NotFound):
        stores.get_size(url)


def test_dead_server_fails_fast(stores: Any) -> None:
    started = time.monotonic()
    with pytest.raises(errors.BackendUnavailable, match="cannot reach") as info:
        read(stores, "http://127.0.0.1:18099/images/x")
    assert "Connection refused" in str(info.value)
    assert "HTTPConnection" not in str(info.value), str(info.value)
    with pytest.raises(errors.BackendUnavailable):
        stores.get_size("http://127.0.0.1:18099/images/x")
    assert time.monotonic() - started < 5


def test_silent_server_times_out(make_http_stores: Any, silent_server: str) -> None:
    with make_http_stores(http_read_timeout=0.5, http_connect_timeout=0.5) as stores:
        started = time.monotonic()
        with pytest.raises(errors.BackendUnavailable, match="did not answer in time"):
            read(stores, silent_server)
        assert time.monotonic() - started < 5


# -- no Content-Length ---------------------------------------------------------

def test_no_content_length_streams_with_unknown_size(stores: Any, nginx: Any,
                                                     image_id: str, image: bytes) -> None:
    url = nginx.url(f"nolength/{image_id}")
    with stores.get(url) as reader:
        assert reader.size is None
        assert reader.read_all() == image
    # The server ignores Range there: a read from offset 0 is cut to length,
    # a read from elsewhere is refused rather than downloaded in full.
    with stores.get(url, offset=0, length=1000) as reader:
        assert reader.read_all() == image[:1000]
    with pytest.raises(errors.RangeNotSupported, match="ignored the Range header"):
        stores.get(url, offset=1, length=10)
    with pytest.raises(errors.NotSupported, match="does not say the size"):
        stores.get_size(url)


def test_chunked_with_ranges(stores: Any, nginx: Any, image_id: str,
                             image: bytes) -> None:
    """No Content-Length, but Range support: the size comes from Content-Range."""
    url = nginx.url(f"chunked/{image_id}")
    with stores.get(url) as reader:
        assert reader.size is None
        assert reader.read_all() == image
    assert stores.get_size(url) == len(image)
    with stores.get(url, offset=MiB, length=100) as reader:
        assert reader.size == 100
        assert reader.read_all() == image[MiB:MiB + 100]
    assert read(stores, url, offset=len(image) - 10) == image[-10:]
    lines = [line for line in log_lines(nginx, image_id, count=10) if "/chunked/" in line]
    assert '"HEAD /chunked/' in lines[1]
    assert '"GET /chunked/' in lines[2] and 'range="bytes=0-0"' in lines[2]


def test_head_refused(stores: Any, nginx: Any, image_id: str, image: bytes) -> None:
    """URLs signed for GET only refuse HEAD: the size comes from a 1-byte GET."""
    url = nginx.url(f"nohead/{image_id}")
    assert stores.get_size(url) == len(image)
    assert read(stores, url, offset=9, length=0) == b""
    lines = log_lines(nginx, image_id, count=3)
    assert '"HEAD /nohead/' in lines[0] and "403" in lines[0]
    assert 'range="bytes=0-0"' in lines[1] and "206" in lines[1]


# -- resumed reads -------------------------------------------------------------

def test_dropped_connection_resumes(make_http_stores: Any, breaking_proxy: Any,
                                    nginx: Any, image_id: str, image: bytes) -> None:
    proxy = breaking_proxy([("cut", MiB + 5000)])
    with make_http_stores() as stores, stores.get(proxy.url(f"images/{image_id}")) as reader:
        assert reader.size == len(image)
        assert reader.read_all() == image
    assert proxy.broken == [0] and proxy.connections == 2
    lines = log_lines(nginx, image_id, count=2)
    resumed = re.search(r'206 range="bytes=(\d+)-" if_range="(.+?)"', lines[-1])
    assert resumed, lines
    assert MiB < int(resumed[1]) < MiB + 5000
    assert resumed[2].startswith("\\x22")   # nginx logs '"' so: an ETag was sent


def test_dropped_chunked_read_resumes_with_last_modified(
        make_http_stores: Any, breaking_proxy: Any, nginx: Any, image_id: str,
        image: bytes) -> None:
    # The ETag is weak there: If-Range carries the Last-Modified date.
    proxy = breaking_proxy([("cut", 2 * MiB)])
    with make_http_stores() as stores, stores.get(proxy.url(f"chunked/{image_id}")) as reader:
        assert reader.size is None
        assert reader.read_all() == image
    lines = [line for line in log_lines(nginx, image_id, count=4)
             if line.startswith(f"{nginx.http_port} \"GET /chunked/")]
    assert re.search(r'206 range="bytes=\d+-" if_range="\w{3}, \d\d \w{3} \d{4} ',
                     lines[-1]), lines


@pytest.mark.parametrize("how", ["reset", "stall"])
def test_reset_or_stalled_connection_resumes(make_http_stores: Any, breaking_proxy: Any,
                                             image_id: str, image: bytes, how: str) -> None:
    proxy = breaking_proxy([(how, 2 * MiB)])
    with make_http_stores(http_read_timeout=0.5) as stores:
        assert read(stores, proxy.url(f"images/{image_id}")) == image
    assert proxy.broken == [0]


def test_ranged_read_resumes_within_its_range(make_http_stores: Any, breaking_proxy: Any,
                                              nginx: Any, image_id: str,
                                              image: bytes) -> None:
    proxy = breaking_proxy([("cut", 1500)])
    offset, length = 1000, 2 * MiB
    with make_http_stores() as stores, stores.get(proxy.url(f"images/{image_id}"),
                                                  offset=offset, length=length) as reader:
        assert reader.size == length
        assert reader.read_all() == image[offset:offset + length]
    last = log_lines(nginx, image_id, count=2)[-1]
    assert re.search(rf'206 range="bytes=\d+-{offset + length - 1}"', last)


def test_retries_count_attempts_in_a_row(make_http_stores: Any, breaking_proxy: Any,
                                         image_id: str, image: bytes) -> None:
    # Every connection breaks after some data: each attempt makes progress,
    # so one retry at a time is enough.
    proxy = breaking_proxy([("cut", 700_000)] * 4)
    with make_http_stores(http_read_retries=1) as stores:
        assert read(stores, proxy.url(f"images/{image_id}")) == image
    assert proxy.broken == [0, 1, 2, 3]


def test_gives_up_after_retries(make_http_stores: Any, breaking_proxy: Any,
                                image_id: str) -> None:
    proxy = breaking_proxy([("cut", MiB)] + [("close", 0)] * 10)
    with make_http_stores() as stores:
        started = time.monotonic()
        with pytest.raises(errors.BackendUnavailable,
                           match=r"gave up after 3 attempts to resume") as info:
            read(stores, proxy.url(f"images/{image_id}"))
        assert info.value.store == "web" and info.value.operation == "get"
        assert time.monotonic() - started < 10
    assert proxy.connections == 4


def test_no_retries(make_http_stores: Any, breaking_proxy: Any, image_id: str) -> None:
    proxy = breaking_proxy([("cut", MiB)])
    with make_http_stores(http_read_retries=0) as stores, \
            pytest.raises(errors.BackendUnavailable, match="failed at byte"):
        read(stores, proxy.url(f"images/{image_id}"))
    assert proxy.connections == 1


def test_image_changed_during_read_is_not_spliced(make_http_stores: Any,
                                                  breaking_proxy: Any, nginx: Any,
                                                  image_id: str, image: bytes) -> None:
    def replace(index: int) -> None:
        nginx.put(image_id, image[::-1] + b"changed")

    proxy = breaking_proxy([("cut", MiB)], on_break=replace)
    with make_http_stores() as stores, \
            pytest.raises(errors.BackendUnavailable, match="image changed"):
        read(stores, proxy.url(f"images/{image_id}"))


def test_no_range_support_cannot_resume(make_http_stores: Any, breaking_proxy: Any,
                                        image_id: str) -> None:
    proxy = breaking_proxy([("cut", MiB)])
    with make_http_stores() as stores, \
            pytest.raises(errors.BackendUnavailable, match="cannot resume it"):
        read(stores, proxy.url(f"nolength/{image_id}"))


# -- odd object names ----------------------------------------------------------

#: Names that are easy to get wrong in URLs (the conformance suite's odd ids,
#: for a store that cannot add): each location names exactly one object.
ODD_NAMES = ("%41", "A", "a b", "a?b", "a#b", "%25", "a%2Fb", "a+b", "\u00fc")


@pytest.mark.parametrize("path, https, auth", [("images", False, False),
                                               ("private", True, True)])
def test_odd_object_names_read_back_exactly_their_object(
        make_http_stores: Any, nginx: Any, path: str, https: bool, auth: bool) -> None:
    prefix = new_id()
    served = {f"{prefix}-{name}": f"object {index} {name!r}".encode() * (index + 1)
              for index, name in enumerate(ODD_NAMES)}
    for name, data in served.items():
        nginx.put(name, data)
    with make_http_stores(with_file=True,
                          https_ca_certificates_file=str(nginx.ca_file)) as stores:
        web = stores["web"]
        base = web.locate(nginx.url(f"{path}/{prefix}", https=https, auth=auth))
        urls = {}
        for name, data in served.items():
            location = base.with_image_id(name)
            url = location.format()
            assert location.image_id == name
            assert web.locate(url) == location and web.driver.image_id(url) == name
            assert read(stores, url) == data, name
            assert stores.get_size(url) == len(data)
            assert read(stores, url, offset=3, length=4) == data[3:7]
            urls[name] = url
        assert len(set(urls.values())) == len(served)
        # A copy names the image after the object, and reads the right one.
        for name in (f"{prefix}-%41", f"{prefix}-a?b", f"{prefix}-a#b"):
            [copied] = stores.copy(urls[name], to=["local"])
            assert stores["local"].locate(copied.location).image_id == name
            assert read(stores, copied.location) == served[name]


# -- credentials ---------------------------------------------------------------

def test_basic_auth_from_the_url(stores: Any, nginx: Any, image_id: str,
                                 image: bytes) -> None:
    url = nginx.url(f"private/{image_id}", auth=True)
    assert read(stores, url) == image
    assert stores.get_size(url) == len(image)
    assert read(stores, url, offset=3, length=4) == image[3:7]
    with pytest.raises(errors.BadLocation, match="401"):
        read(stores, nginx.url(f"private/{image_id}"))


def test_credentials_never_in_logs_or_errors(make_http_stores: Any, nginx: Any,
                                             image_id: str, caplog: Any,
                                             breaking_proxy: Any) -> None:
    secret = "Very-S3cret-Pass"
    caplog.set_level(logging.DEBUG)
    messages = []
    proxy = breaking_proxy([("cut", MiB)] + [("close", 0)] * 10)
    locations = [
        nginx.url(f"private/{image_id}", auth=f"{nginx.user}:{secret}"),     # 401
        nginx.url(f"to-ftp?{image_id}", auth=f"{nginx.user}:{secret}"),     # refused
        nginx.url(f"hop/extra/{image_id}", auth=f"{nginx.user}:{secret}"),  # too many
        f"http://{nginx.user}:{secret}@127.0.0.1:18099/images/{image_id}",  # dead
        proxy.url(f"images/{image_id}").replace("://", f"://u:{secret}@"),   # gives up
    ]
    with make_http_stores(http_max_redirects=3) as stores:
        for location in locations:
            for call in (lambda url=location: read(stores, url),
                         lambda url=location: stores.get_size(url)):
                with pytest.raises(errors.MultistoreError) as info:
                    call()
                messages.append(str(info.value))
                cause = info.value.__cause__
                while cause is not None:
                    messages.append(repr(cause))
                    cause = cause.__cause__ or cause.__context__
    assert len(messages) >= 10
    for text in [*messages, caplog.text]:
        assert secret not in text
    assert any("401" in m for m in messages)


def errors_seen(call: Any) -> list[str]:
    """The text and repr of the error ``call()`` raises, and of every cause."""
    with pytest.raises(errors.MultistoreError) as info:
        call()
    seen: list[str] = []
    error: BaseException | None = info.value
    while error is not None and len(seen) < 40:
        seen += [str(error), repr(error)]
        error = error.__cause__ or error.__context__
    return seen


@pytest.mark.parametrize("password", ["Pfx1#Sfx2?Tail3", "4242?Mid5#End6", "#Lead7?"])
def test_passwords_with_hash_or_question_mark_never_show(make_http_stores: Any, nginx: Any,
                                                         image_id: str, caplog: Any,
                                                         password: str) -> None:
    """Written raw (malformed: BadLocation) or escaped (a wrong password: 401;
    too many redirects; a dead server), the password is in no message, no
    cause, no DEBUG log line and no repr."""
    caplog.set_level(logging.DEBUG)
    escaped = urllib.parse.quote(password, safe="")
    user = nginx.user
    locations = [nginx.url(f"private/{image_id}", auth=f"{user}:{password}"),
                 nginx.url(f"private/{image_id}", auth=f"{user}:{escaped}"),
                 nginx.url(f"hop/extra/{image_id}", auth=f"{user}:{escaped}"),
                 f"http://{user}:{escaped}@127.0.0.1:18099/images/{image_id}"]
    seen: list[str] = []
    with make_http_stores(with_file=True, http_max_redirects=3) as stores:
        for url in locations:
            for call in (lambda url=url: read(stores, url),
                         lambda url=url: stores.get_size(url),
                         lambda url=url: stores.copy(url, to=["local"])):
                seen += errors_seen(call)
            try:
                parsed = stores["web"].locate(url)
            except errors.BadLocation as exc:
                seen += [str(exc), repr(exc)]
                assert url is locations[0]
            else:
                assert parsed.password == password
                seen += [repr(parsed), str(parsed), repr(stores)]
        seen += [repr(stores.store_for(locations[1])), repr(stores["web"].driver)]
        seen += [str(stores.info(detail=True))]
    pieces = [p for p in re.split(r"[#?]", password) if p]
    assert len(seen) > 40
    for text in [*seen, caplog.text, *(r.getMessage() for r in caplog.records)]:
        for secret in (password, escaped, *pieces):
            assert secret not in text, text


def test_the_real_password_never_shows(make_http_stores: Any, nginx: Any, image_id: str,
                                       image: bytes, caplog: Any) -> None:
    """nginx's password holds '#', '@', '/' and '%': a read, a size, a copy
    and a ranged read through a redirect log nothing of it at DEBUG."""
    caplog.set_level(logging.DEBUG)
    url = nginx.url(f"to-private/{image_id}", auth=True)
    with make_http_stores(with_file=True) as stores:
        assert read(stores, url) == image
        assert stores.get_size(url) == len(image)
        assert read(stores, url, offset=1, length=2) == image[1:3]
        [copied] = stores.copy(url, to=["local"])
        parsed = stores["web"].locate(url)
        texts = [repr(parsed), str(parsed), repr(copied),
                 caplog.text, *(r.getMessage() for r in caplog.records)]
    assert "redirected" in caplog.text   # DEBUG was on
    for text in texts:
        for secret in (nginx.password, urllib.parse.quote(nginx.password, safe="")):
            assert secret not in text, text


def test_credentials_stay_on_their_origin(stores: Any, nginx: Any, image_id: str,
                                          image: bytes) -> None:
    # Same origin: kept. Another host name: dropped, so the server asks (401).
    assert read(stores, nginx.url(f"to-private/{image_id}", auth=True)) == image
    with pytest.raises(errors.BadLocation, match="401") as info:
        read(stores, nginx.url(f"to-localhost/{image_id}", auth=True))
    assert "redirected to http://localhost" in str(info.value)


def test_origin_rules() -> None:
    loc = HttpLocation.parse
    assert _keeps_credentials(loc("http://a/x"), loc("http://a:80/y"))
    assert _keeps_credentials(loc("http://a/x"), loc("https://a/y"))
    assert not _keeps_credentials(loc("https://a/x"), loc("http://a/y"))
    assert not _keeps_credentials(loc("http://a/x"), loc("http://a:8080/y"))
    assert not _keeps_credentials(loc("http://a/x"), loc("http://b/x"))
    parsed = loc("https://us%40er:p%3Aw%2F@Host:8443/p/a%20b?q=1#frag")
    # Host names are case-insensitive: the request goes to the lowercase form.
    assert parsed.url == "https://host:8443/p/a%20b?q=1"
    assert parsed.auth == ("us@er", "p:w/")
    assert (loc("http://h").url, loc("http://h").auth) == ("http://h/", None)


# -- copies: importing from the web -------------------------------------------

@pytest.mark.parametrize("path, https, auth", [
    ("images/{id}", False, False), ("private/{id}", True, True),
    ("nolength/{id}", False, False), ("chunked/{id}", False, False),
    ("hop/301/{id}", False, False)])
def test_copy_into_a_writable_store(make_http_stores: Any, nginx: Any, image_id: str,
                                    image: bytes, path: str, https: bool,
                                    auth: bool) -> None:
    url = nginx.url(path.format(id=image_id), https=https, auth=auth)
    with make_http_stores(with_file=True,
                          https_ca_certificates_file=str(nginx.ca_file)) as stores:
        [result] = stores.copy(url, to=["local"], checksum=hashlib.md5(image).hexdigest())
        assert result.store == "local" and result.size == len(image)
        assert result.location.endswith(f"/{image_id}")
        assert result.multihash == hashlib.sha512(image).hexdigest()
        assert read(stores, result.location) == image
        assert stores.copy(url, to="all", image_id="again")[0].store == "local"


def test_copy_resumes_a_dropped_download(make_http_stores: Any, breaking_proxy: Any,
                                         image_id: str, image: bytes) -> None:
    proxy = breaking_proxy([("cut", MiB), ("reset", 2 * MiB)])
    with make_http_stores(with_file=True) as stores:
        [result] = stores.copy(proxy.url(f"images/{image_id}"), to=["local"])
        assert result.checksum == hashlib.md5(image).hexdigest()
    assert proxy.broken == [0, 1]


def test_copy_of_a_missing_image_leaves_nothing(make_http_stores: Any, nginx: Any,
                                                tmp_path: Any) -> None:
    with make_http_stores(with_file=True) as stores, pytest.raises(errors.NotFound):
        stores.copy(nginx.url(f"images/{new_id()}"), to=["local"])
    # No file at all: neither an image nor a partial one (directories the
    # file store keeps for itself do not count).
    assert not [p for p in (tmp_path / "local").rglob("*") if not p.is_dir()]


def test_driver_repr_and_options(make_http_stores: Any) -> None:
    with make_http_stores() as stores:
        driver = stores["web"].driver
        assert isinstance(driver, HttpDriver)
        assert repr(driver) == "<HttpDriver store='web'>"
        assert driver.timeout == (10.0, 60.0)
        assert driver.capabilities.read_only and driver.capabilities.ranged_read
        assert driver.schemes == ("http", "https")


def test_large_copy_in_bounded_memory(make_http_stores: Any, nginx: Any) -> None:
    size = 96 * MiB
    name = new_id()
    with open(nginx.docroot / name, "wb") as f:
        for block in Generated(size, seed=5):
            f.write(block)
    md5, _ = Generated(size, seed=5).digests()
    with make_http_stores(with_file=True) as stores:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            [result] = stores.copy(nginx.url(f"images/{name}"), to=["local"])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert result.checksum == md5 and result.size == size
    assert peak < 48 * MiB, peak
    os.unlink(nginx.docroot / name)


@pytest.mark.parametrize("prefix", ["capped", "always206"])
def test_ranges_answered_in_pieces(stores: Any, capped_server: Any, image: bytes,
                                   prefix: str, caplog: Any) -> None:
    """A server that sends at most 1 MiB per 206: the rest is asked for, at once."""
    capped_server.images["img"] = image
    url = f"http://127.0.0.1:{capped_server.server_port}/{prefix}/img"
    with stores.get(url) as reader:
        assert reader.size == len(image)
        assert reader.read_all() == image
    with stores.get(url, offset=100, length=2 * MiB + 5) as reader:
        assert reader.size == 2 * MiB + 5
        assert reader.read_all() == image[100:2 * MiB + 105]
    assert read(stores, url, offset=len(image) - 7) == image[-7:]
    ranges = [line for line in capped_server.requests if "GET" in line]
    assert len(ranges) == (1 if prefix == "capped" else 4) + 3 + 1
    assert "resuming" not in caplog.text   # not taken for a broken connection


def test_glance_store_configurations(nginx: Any, image_id: str, image: bytes,
                                     tmp_path: Any) -> None:
    """The legacy single-store form (options in [glance_store]) and options
    shared by every http store in [backend_defaults]."""
    url = nginx.url(f"images/{image_id}", https=True)
    legacy = make_conf({"glance_store": {
        "stores": "file, http", "default_store": "file",
        "filesystem_store_datadir": str(tmp_path / "legacy"),
        "https_ca_certificates_file": str(nginx.ca_file)}}, tmp_path)
    with multistore.load(legacy) as stores:
        assert stores.store_for(url).id == "http"
        assert read(stores, url) == image
        [copied] = stores.copy(url, to=["file"])
        assert read(stores, copied.location) == image
    (tmp_path / "multi").mkdir()
    shared = make_conf({
        "DEFAULT": {"enabled_backends": {"web": "http", "mirror": "http"}},
        "glance_store": {"default_backend": "web"},
        "backend_defaults": {"https_ca_certificates_file": str(nginx.ca_file),
                             "http_max_redirects": 1},
        "mirror": {"https_insecure": True, "http_max_redirects": 7}}, tmp_path / "multi")
    with multistore.load(shared) as stores:
        # Two http stores both hold every URL: the caller names one.
        with pytest.raises(errors.BadLocation, match="name the store"):
            stores.get(url)
        assert read(stores, url, store="web") == image
        assert stores["web"].driver.max_redirects == 1
        assert stores["mirror"].driver.max_redirects == 7
        assert stores["mirror"].driver.verify == str(nginx.ca_file)


def test_connections_are_reused(make_http_stores: Any, nginx: Any, image_id: str,
                                image: bytes) -> None:
    """HEAD, small ranged reads, whole reads, redirects and 404s leave the
    connection in the pool: one TLS handshake serves them all."""
    url = nginx.url(f"images/{image_id}", https=True)
    with make_http_stores(https_ca_certificates_file=str(nginx.ca_file)) as stores:
        for _ in range(3):
            assert stores.get_size(url) == len(image)
            assert read(stores, url, offset=10, length=100) == image[10:110]
            with pytest.raises(errors.NotFound):
                stores.get_size(nginx.url(f"images/{image_id}-missing", https=True))
        assert read(stores, url) == image
        assert read(stores, nginx.url(f"hop/301/{image_id}", https=True)) == image
    lines = log_lines(nginx, image_id, count=16)
    assert len({line.rsplit("conn=", 1)[1] for line in lines}) == 1, lines
