"""What an http store may fetch (http_allowed_* / http_disallowed_*), on
loopback: nginx and a redirecting server on 127.0.0.1 (or 127.0.0.2), refused
targets on other loopback addresses, where a listening port records any
connection. A refused URL, first or redirect target, is refused before the
store connects to it."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from multistore import errors

MiB = 1024 * 1024


def read(stores: Any, location: str, **kwargs: Any) -> bytes:
    with stores.get(location, **kwargs) as reader:
        return reader.read_all()


@pytest.fixture
def image(nginx: Any) -> tuple[str, bytes]:
    name, data = f"img-{uuid.uuid4()}", uuid.uuid4().bytes * 5000
    nginx.put(name, data)
    return name, data


def refused_everywhere(stores: Any, url: str, match: str, tmp_path: Path) -> None:
    """get, get_size and a copy into the file store ``local`` all refuse
    ``url`` with BadLocation; the copy leaves no file, whole or partial."""
    for call in (lambda: read(stores, url), lambda: stores.get_size(url),
                 lambda: stores.copy(url, to=["local"])):
        with pytest.raises(errors.BadLocation, match=match) as info:
            call()
        assert info.value.store == "web"
    assert not [p for p in (tmp_path / "local").rglob("*") if not p.is_dir()]


def test_defaults_filter_nothing_but_the_scheme(make_http_stores: Any) -> None:
    with make_http_stores() as stores:
        filters = stores.info(detail=True)[0]["properties"]["filters"]
        assert filters == {"http_allowed_schemes": ["http", "https"]}


@pytest.mark.parametrize("options, url, match", [
    ({"http_allowed_hosts": "127.0.0.1"}, "http://127.0.0.2:{port}/x",
     "127.0.0.2 is not in http_allowed_hosts"),
    ({"http_allowed_hosts": "127.0.0.1/32, ::1"}, "http://127.0.0.2:{port}/x",
     "127.0.0.2 is not in http_allowed_hosts"),
    ({"http_allowed_hosts": "localhost"}, "http://127.0.0.2:{port}/x",
     "127.0.0.2 is not in http_allowed_hosts"),
    ({"http_disallowed_hosts": "127.0.0.2"}, "http://127.0.0.2:{port}/x",
     "127.0.0.2 is in http_disallowed_hosts"),
    # Other spellings of the same address: IPv4-mapped, decimal, hex.
    ({"http_disallowed_hosts": "127.0.0.0/30"}, "http://[::ffff:127.0.0.2]:{port}/x",
     "is in http_disallowed_hosts"),
    ({"http_disallowed_hosts": "127.0.0.0/30"}, "http://2130706434:{port}/x",
     "2130706434 resolves to 127.0.0.2, which is in http_disallowed_hosts"),
    ({"http_disallowed_hosts": "127.0.0.2"}, "http://0x7f.2:{port}/x",
     "resolves to 127.0.0.2, which is in http_disallowed_hosts"),
    ({"http_disallowed_hosts": "evil.example, 127.0.0.2"}, "http://EVIL.example.:{port}/x",
     "evil.example is in http_disallowed_hosts"),
    ({"http_allowed_ports": "18080, 443"}, "http://127.0.0.2:{port}/x",
     "its port is not in http_allowed_ports"),
    ({"http_disallowed_ports": "{port}"}, "http://127.0.0.2:{port}/x",
     "its port is in http_disallowed_ports"),
    ({"http_allowed_schemes": "https"}, "http://127.0.0.2:{port}/x",
     "the scheme http is not in http_allowed_schemes"),
    ({"http_allowed_schemes": "", "http_disallowed_schemes": "http"},
     "http://127.0.0.2:{port}/x", "the scheme http is in http_disallowed_schemes"),
])
def test_refused_location_is_never_connected_to(make_http_stores: Any, listener: Any,
                                                tmp_path: Path, options: dict[str, str],
                                                url: str, match: str) -> None:
    port = listener("127.0.0.2")
    options = {k: v.format(port=port.port) for k, v in options.items()}
    with make_http_stores(with_file=True, **options) as stores:
        refused_everywhere(stores, url.format(port=port.port), match, tmp_path)
    assert port.accepted == []


def test_a_name_resolving_to_a_refused_address_is_refused(make_http_stores: Any,
                                                          listener: Any,
                                                          tmp_path: Path) -> None:
    port = listener("127.0.0.1")
    url = f"http://localhost:{port.port}/x"
    with make_http_stores(with_file=True, http_disallowed_hosts="127.0.0.0/8") as stores:
        refused_everywhere(stores, url, "localhost resolves to 127.0.0.1, which is in "
                                        "http_disallowed_hosts", tmp_path)
    assert port.accepted == []


def test_allowed_hosts_admit_what_they_list(make_http_stores: Any, nginx: Any,
                                            image: tuple[str, bytes]) -> None:
    name, data = image
    by_address = nginx.url(f"images/{name}")
    by_name = nginx.url(f"images/{name}", host="localhost")
    with make_http_stores(http_allowed_hosts="127.0.0.1") as stores:
        assert read(stores, by_address) == data
        assert stores.get_size(by_address) == len(data)
    with make_http_stores(http_allowed_hosts="127.0.0.0/8") as stores:
        assert read(stores, by_address, offset=5, length=5) == data[5:10]
    with make_http_stores(http_allowed_hosts="LOCALHOST.") as stores:
        assert read(stores, by_name) == data
        with pytest.raises(errors.BadLocation, match="not in http_allowed_hosts"):
            read(stores, by_address)
    with make_http_stores(http_allowed_ports="18080", http_disallowed_hosts="10.0.0.0/8",
                          http_allowed_schemes="http") as stores:
        assert read(stores, by_address) == data


def test_the_allowed_list_wins_as_in_glance(make_http_stores: Any, nginx: Any,
                                            image: tuple[str, bytes], caplog: Any) -> None:
    name, data = image
    with caplog.at_level(logging.WARNING, logger="multistore"):
        stores = make_http_stores(http_allowed_hosts="127.0.0.1",
                                  http_disallowed_hosts="127.0.0.1")
    assert "http_allowed_hosts is set, so http_disallowed_hosts is ignored" in caplog.text
    with stores:
        assert read(stores, nginx.url(f"images/{name}")) == data


def test_redirect_to_a_refused_host_is_refused_before_connecting(
        make_http_stores: Any, redirector: Any, listener: Any, tmp_path: Path) -> None:
    port = listener("127.0.0.2")
    server = redirector(f"http://127.0.0.2:{port.port}")
    url = server.url("images/x")
    # Unfiltered, the redirect is followed: the listener records it (and
    # closes the connection), so an empty record below means something.
    with make_http_stores() as stores, pytest.raises(errors.BackendUnavailable):
        read(stores, url)
    assert len(port.accepted) == 1
    for hosts in ("127.0.0.1", "127.0.0.1/32"):
        with make_http_stores(with_file=True, http_allowed_hosts=hosts) as stores:
            refused_everywhere(stores, url, f"redirected to http://127.0.0.2:{port.port}"
                                            "/images/x, which is refused: 127.0.0.2 is not "
                                            "in http_allowed_hosts", tmp_path)
    assert len(port.accepted) == 1
    assert len(server.requests) == 1 + 2 * 3


def test_redirect_to_a_name_resolving_to_a_refused_address(
        make_http_stores: Any, redirector: Any, listener: Any, tmp_path: Path) -> None:
    port = listener("127.0.0.1")
    server = redirector(f"http://localhost:{port.port}", host="127.0.0.2")
    with make_http_stores(with_file=True, http_disallowed_hosts="127.0.0.1/32") as stores:
        refused_everywhere(stores, server.url("img"), "localhost resolves to 127.0.0.1, "
                                                      "which is in http_disallowed_hosts",
                           tmp_path)
    assert port.accepted == []
    assert len(server.requests) == 3


def test_nginx_redirects_are_filtered(make_http_stores: Any, nginx: Any,
                                      image: tuple[str, bytes]) -> None:
    name, data = image
    to_https = nginx.url(f"to-https/{name}")
    ca = str(nginx.ca_file)
    for options, match in (({"http_allowed_schemes": "http"}, "the scheme https is not"),
                           ({"http_allowed_ports": "18080"}, "its port is not in"),
                           ({"http_disallowed_ports": "18081"}, "its port is in")):
        with make_http_stores(https_ca_certificates_file=ca, **options) as stores, \
                pytest.raises(errors.BadLocation, match=match) as info:
            read(stores, to_https)
        assert f"redirected to https://127.0.0.1:18081/images/{name}" in str(info.value)
    with make_http_stores(https_ca_certificates_file=ca,
                          http_allowed_ports="18080, 18081") as stores:
        assert read(stores, to_https) == data
    with make_http_stores(http_disallowed_hosts="localhost") as stores, \
            pytest.raises(errors.BadLocation, match="localhost is in http_disallowed_hosts"):
        read(stores, nginx.url(f"to-localhost/{name}", auth=True))
    # Only the last read reached the HTTPS port.
    https = [line for line in nginx.access_log() if name in line
             and line.startswith(f"{nginx.https_port} ")]
    assert len(https) == 1, https


def test_every_connection_of_the_store_is_checked(make_http_stores: Any,
                                                  listener: Any) -> None:
    """Addresses are checked where the connection is made, on the address
    connected to: a host whose DNS answer changes after the URL was checked
    is refused all the same."""
    port = listener("127.0.0.2")
    with make_http_stores(http_disallowed_hosts="127.0.0.2") as stores:
        session = stores["web"].driver.session()
        for url in (f"http://127.0.0.2:{port.port}/x", f"http://2130706434:{port.port}/"):
            with pytest.raises(errors.BadLocation,
                               match=r"127\.0\.0\.2(, which)? is in http_disallowed_hosts"):
                session.get(url, timeout=2)
    assert port.accepted == []


def test_proxied_urls_are_checked_before_they_reach_the_proxy(
        make_http_stores: Any, nginx: Any, listener: Any, image: tuple[str, bytes]) -> None:
    name, data = image
    port = listener("127.0.0.2")
    with make_http_stores(http_proxy_information={"http": nginx.proxy_url},
                          http_disallowed_hosts="127.0.0.2, 2130706434") as stores:
        assert read(stores, nginx.url(f"images/{name}")) == data
        for host in ("127.0.0.2", "2130706434"):
            with pytest.raises(errors.BadLocation, match="in http_disallowed_hosts"):
                read(stores, f"http://{host}:{port.port}/{name}")
    relayed = [line for line in nginx.access_log("proxy.log") if name in line]
    assert len(relayed) == 1 and f"/images/{name}" in relayed[0]
    assert port.accepted == []


@pytest.mark.parametrize("option, value", [
    ("http_allowed_hosts", "not a host/name"), ("http_disallowed_hosts", "10.0.0.0/33"),
    ("http_allowed_schemes", "ftp"), ("http_disallowed_schemes", "gopher"),
    ("http_allowed_ports", "70000"), ("http_disallowed_ports", "http")])
def test_bad_filters_are_config_errors(make_http_stores: Any, option: str, value: str) -> None:
    with pytest.raises(errors.ConfigError) as info:
        make_http_stores(**{option: value, **({"http_allowed_schemes": ""}
                                              if option == "http_disallowed_schemes" else {})})
    assert info.value.option == option and info.value.store == "web"
