"""Images that live on a web server: a read-only store.

Locations are the images' own ``http://`` and ``https://`` URLs, optionally
with ``user:password@`` for basic authentication (:class:`HttpLocation`).
The store reads them whole or in part (HTTP ``Range``), learns their size
with ``HEAD``, and takes no new images and deletes nothing (the core refuses
both, and lists the store as read-only). Copying an http location into a
writable store (``stores.copy(url, to=[...])``) is how an image is imported
from the web; the copy reads through this driver, so the same rules apply.

Differences from glance_store's http store, on purpose:

- certificates are verified by default (``https_insecure`` defaults to
  false); turning verification off is explicit;
- ranged reads;
- redirects 301, 302, 303, 307 and 308 are followed, up to
  ``http_max_redirects``, and only to http or https URLs; credentials are
  sent on to the same scheme, host and port only (or to https on the same
  host);
- what the store may fetch is filtered, as Glance filters web-download
  (``http_allowed_schemes`` ... ``http_disallowed_ports``), for the first
  URL and every redirect target, host names resolved: a name that resolves
  to a refused address is refused, and connections are made only to the
  addresses checked, before a byte is sent;
- a connection that drops during a read is resumed from the byte already
  delivered (``Range`` plus ``If-Range``, so a changed image is noticed),
  up to ``http_read_retries`` attempts in a row that deliver nothing
  (:class:`multistore.retry.ResumingRead`);
- a server that sends no ``Content-Length`` is read as a stream of unknown
  size; ``get_size`` then asks for the first byte (``Range: bytes=0-0``) to
  learn the total, and raises NotSupported if the server does not say it,
  rather than report a wrong size (glance_store reported 0);
- connections and reads time out (``http_connect_timeout``,
  ``http_read_timeout``): a dead server is an error, never a hang;
- user and password in a URL are sent as basic authentication and never
  appear in logs, error messages or reprs.
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import logging
import os
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.cookiejar import DefaultCookiePolicy
from typing import Any, ClassVar

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.util.connection
from oslo_config import cfg, types

from multistore import errors
from multistore.context import Context
from multistore.driver import Capabilities, Driver, ReadStream
from multistore.location import Location, quote, redact, split_url, unquote
from multistore.retry import ResumingRead, RetryPolicy

LOG = logging.getLogger(__name__)
MiB = 1024 * 1024

#: Size of the chunks the body is read in (glance_store reads 4 MiB).
READ_CHUNK_SIZE = 4 * MiB
REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Answers to HEAD after which get_size asks with GET instead: HEAD not
#: allowed, or refused (URLs signed for GET only, as S3's presigned URLs).
_HEAD_REFUSED = frozenset({403, 405, 501})
#: Bodies up to this size are read (and dropped) rather than closed, so
#: that the connection can be reused.
_DRAIN_LIMIT = 64 * 1024
#: Pause before the n-th attempt in a row to resume a read: 0.25 s, 0.5 s,
#: 1 s ... at most MAX_BACKOFF.
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 5.0
_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)
#: A host name as this driver accepts it (IP literals are checked apart).
_HOST_NAME = re.compile(r"[^\s/\\?#@%:\[\]]+")
_PORT = types.Integer(min=1, max=65535)

OPTIONS = [
    cfg.StrOpt("https_ca_certificates_file",
               help="File (or OpenSSL hashed directory) of CA certificates "
                    "that https servers' certificates are checked against, "
                    "instead of the system's. When set, ``https_insecure`` "
                    "is ignored."),
    cfg.BoolOpt("https_insecure", default=False,
                help="Do not verify https servers' certificates. Unlike "
                     "glance_store (where this defaulted to true), "
                     "certificates are verified unless this is set."),
    cfg.DictOpt("http_proxy_information", default={},
                help="Proxies, as ``scheme:proxy URL`` pairs, the scheme "
                     "being ``http``, ``https`` or ``all``: "
                     "``http:http://proxy:3128, https:http://proxy:3128``. "
                     "Without it, the ``http_proxy``/``https_proxy``/"
                     "``no_proxy`` environment variables apply."),
    cfg.IntOpt("http_max_redirects", default=5, min=0,
               help="How many redirects (301, 302, 303, 307, 308) one request "
                    "may follow. Redirects to schemes other than http and "
                    "https are never followed."),
    cfg.IntOpt("http_read_retries", default=3, min=0,
               help="When the connection drops during a read, how many "
                    "attempts in a row to resume it (from the byte already "
                    "delivered) may fail before the read fails."),
    cfg.FloatOpt("http_connect_timeout", default=10.0, min=0.001,
                 help="Seconds to wait for a connection to the server."),
    cfg.FloatOpt("http_read_timeout", default=60.0, min=0.001,
                 help="Seconds to wait for the server's answer, and for each "
                      "block of data while reading."),
    cfg.ListOpt("http_allowed_schemes", default=["http", "https"],
                help="Schemes the store may fetch (the location and every "
                     "redirect target): ``http``, ``https``. When not empty, "
                     "``http_disallowed_schemes`` is ignored (as Glance's "
                     "``allowed_schemes``)."),
    cfg.ListOpt("http_disallowed_schemes", default=[],
                help="Schemes the store refuses; used only when "
                     "``http_allowed_schemes`` is empty."),
    cfg.ListOpt("http_allowed_hosts", default=[],
                help="Hosts the store may fetch from: host names, IP "
                     "addresses and networks in CIDR form (``10.1.0.0/16``). "
                     "A host name not listed is allowed only if every address "
                     "it resolves to is in a listed network. Empty: any host. "
                     "When not empty, ``http_disallowed_hosts`` is ignored."),
    cfg.ListOpt("http_disallowed_hosts", default=[],
                help="Hosts the store refuses: host names, IP addresses and "
                     "networks in CIDR form (``169.254.0.0/16, 127.0.0.0/8``); "
                     "a host name that resolves to an address in a listed "
                     "network is refused. Used only when "
                     "``http_allowed_hosts`` is empty."),
    cfg.ListOpt("http_allowed_ports", item_type=_PORT, default=[],
                help="Ports the store may fetch from (a URL without a port "
                     "uses 80 or 443). Empty: any port (Glance's "
                     "``allowed_ports`` defaults to 80 and 443). When not "
                     "empty, ``http_disallowed_ports`` is ignored."),
    cfg.ListOpt("http_disallowed_ports", item_type=_PORT, default=[],
                help="Ports the store refuses; used only when "
                     "``http_allowed_ports`` is empty."),
]

#: A read stopped before its end (connection closed or reset, timeout,
#: broken chunked encoding, TLS error): resumable.
_DROPPED = (urllib3.exceptions.HTTPError, http.client.HTTPException,
            requests.exceptions.RequestException, OSError)


class ReadInterrupted(ConnectionError):
    """A read broke in a way another attempt may cure (the connection, a 5xx
    answer): retryable for :class:`~multistore.retry.ResumingRead`."""


# -- locations ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HttpLocation(Location):
    """An image's own URL, ``http(s)://[user[:password]@]host[:port]/path[?query]``.

    Path and query are kept as written, escapes and all, so the request
    names exactly the object the URL names; user and password are kept
    decoded (and sent as basic authentication). The fragment, never sent,
    is dropped. The image id is the last path segment, decoded: only a
    hint (:attr:`~multistore.location.Location.image_id_is_hint`), since
    any web URL is a location, ``http://host/`` (empty) and
    ``http://host/a%2Fb`` (``a/b``) included; a copy of a URL whose hint is
    no valid image id needs an explicit one.
    """

    image_id_is_hint: ClassVar[bool] = True

    scheme: str
    host: str
    port: int | None
    path: str
    query: str = ""
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> HttpLocation:
        # Messages never quote the URL's pieces: a password written with an
        # unescaped '#', '?' or '/' lands in them.
        parts = split_url(url, _SCHEMES)
        if re.search(r"[\x00-\x20\x7f]", url):
            raise ValueError("spaces or control characters in the URL")
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("the port is not a number from 1 to 65535")
        host = parts.hostname
        if not host or not (_HOST_NAME.fullmatch(host) or _address(host)):
            raise ValueError("no host name or IP address")
        if "@" in parts.fragment or ("@" in parts.query and not parts.path):
            raise ValueError("an '@' after '?' or '#': write '#', '?' and '@' in a "
                             "password as %23, %3F and %40")
        try:
            for piece in (parts.path, parts.query):
                unquote(piece)
        except ValueError:
            raise ValueError("a '%' not followed by two hex digits, or escapes "
                             "that are not UTF-8") from None
        userinfo, at, _ = parts.netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        return cls(parts.scheme.lower(), host, port, parts.path or "/", parts.query,
                   urllib.parse.unquote(user) if at else None,
                   urllib.parse.unquote(password) if colon else None)

    def format(self) -> str:
        userinfo = ""
        if self.user is not None:
            secret = "" if self.password is None else ":" + quote(self.password)
            userinfo = f"{quote(self.user)}{secret}@"
        return f"{self.scheme}://{userinfo}{self.url.partition('://')[2]}"

    @property
    def url(self) -> str:
        """What is requested: the URL without credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port is None else f":{self.port}"
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{host}{port}{self.path}{query}"

    @property
    def auth(self) -> tuple[str, str] | None:
        return None if self.user is None else (self.user, self.password or "")

    @property
    def origin(self) -> tuple[str, str, int]:
        port = _DEFAULT_PORTS[self.scheme] if self.port is None else self.port
        return self.scheme, self.host.lower(), port

    @property
    def image_id(self) -> str:  # type: ignore[override]
        """The last path segment, decoded (``cirros.img`` for
        ``.../cirros.img?x=1``, ``dir`` for ``.../dir/``); possibly no valid
        image id (empty for ``http://host/``)."""
        return unquote(self.path.rstrip("/").rpartition("/")[2])

    def with_image_id(self, image_id: str) -> HttpLocation:
        """The same URL with its last path segment naming ``image_id``."""
        stem = self.path.rstrip("/")
        head = stem.rpartition("/")[0]
        return dataclasses.replace(self, path=f"{head}/{quote(image_id)}"
                                              f"{self.path[len(stem):]}")


def _keeps_credentials(old: HttpLocation, new: HttpLocation) -> bool:
    """Credentials go on to the same origin, or from http to https on one host."""
    a, b = old.origin, new.origin
    return a == b or (a[1] == b[1] and (a[0], a[2], b[0], b[2]) == ("http", 80, "https", 443))


# -- what the store may fetch ------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Rule:
    """One pair of ``http_allowed_<kind>``/``http_disallowed_<kind>`` lists,
    with Glance's precedence: a non-empty allowed list wins."""

    option: str
    allow: bool
    values: frozenset[Any]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def admits(self, value: Any) -> bool:
        return (value in self.values) == self.allow

    def admits_address(self, address: str) -> bool:
        ip = _address(address)
        return any(ip in net for net in self.networks) == self.allow

    def refused(self, what: str) -> str:
        return f"{what} is {'not ' if self.allow else ''}in {self.option}"


class _Filter:
    """The store's http_allowed_*/http_disallowed_* options, applied to each
    URL before it is requested and to each address before it is connected to."""

    def __init__(self, conf: Any, store_id: str) -> None:
        self.schemes = self._rule(conf, store_id, "schemes")
        self.ports = self._rule(conf, store_id, "ports")
        self.hosts = self._rule(conf, store_id, "hosts")
        if self.schemes and set(self.schemes.values) - set(_SCHEMES):
            raise errors.ConfigError("the http store fetches only http and https",
                                     option=self.schemes.option)

    @staticmethod
    def _rule(conf: Any, store_id: str, kind: str) -> _Rule | None:
        allowed, disallowed = (getattr(conf, f"http_{w}_{kind}") or []
                               for w in ("allowed", "disallowed"))
        if allowed and disallowed:
            LOG.warning("store %s: http_allowed_%s is set, so http_disallowed_%s is "
                        "ignored", store_id, kind, kind)
        if not (allowed or disallowed):
            return None
        option = f"http_{'allowed' if allowed else 'disallowed'}_{kind}"
        if kind != "hosts":
            return _Rule(option, bool(allowed), frozenset(
                v.strip().lower() if isinstance(v, str) else v for v in allowed or disallowed))
        names, networks = set(), []
        for entry in allowed or disallowed:
            text = entry.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                if not _HOST_NAME.fullmatch(text):
                    raise errors.ConfigError(f"{entry!r} is not a host name, an IP address "
                                             "or a network", option=option) from None
                names.add(text)
        return _Rule(option, bool(allowed), frozenset(names), tuple(networks))

    def properties(self) -> dict[str, list[str]]:
        return {r.option: sorted(map(str, [*r.values, *r.networks]))
                for r in (self.schemes, self.ports, self.hosts) if r}

    def refusal(self, location: HttpLocation) -> str | None:
        """Why ``location`` may not be fetched; None if it may."""
        if self.schemes and not self.schemes.admits(location.scheme):
            return self.schemes.refused(f"the scheme {location.scheme}")
        if self.ports and not self.ports.admits(location.origin[2]):
            return self.ports.refused("its port")
        if self.hosts:
            try:
                self.addresses(location.host, location.origin[2], resolve=False)
            except errors.BadLocation as exc:
                return exc.message
        return None

    def addresses(self, host: str, port: int, resolve: bool = True) -> list[str]:
        """The addresses ``host`` may be reached at; BadLocation if the host
        or any address it resolves to is refused. Without ``resolve``, names
        are resolved only when a network rule needs it."""
        rule = self.hosts
        name = host.lower().rstrip(".")
        named = rule is not None and name in rule.values
        if rule is None or (named and rule.allow):
            return _resolve(name, port) if resolve else []
        if named or (rule.allow and not rule.networks):
            raise errors.BadLocation(rule.refused(name))
        if not rule.networks:
            return _resolve(name, port) if resolve else []
        addresses = [name] if _address(name) else _resolve(name, port)
        for address in addresses:
            if not rule.admits_address(address):
                raise errors.BadLocation(rule.refused(
                    address if address == name else f"{name} resolves to {address}, which"))
        return addresses


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``text`` is (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


def _resolve(name: str, port: int) -> list[str]:
    try:
        found = socket.getaddrinfo(name, port, urllib3.util.connection.allowed_gai_family(),
                                   socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise errors.BackendUnavailable(f"cannot resolve {name} to check it against the "
                                        f"store's host filter: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in found))


class _CheckedConnection(urllib3.connection.HTTPConnection):
    """A connection made only to addresses the store's filter allows: the
    host is resolved once, and the addresses checked are the ones connected
    to, so a DNS answer that changes in between cannot slip through."""

    addresses: ClassVar[Callable[[str, int], list[str]]]

    def _new_conn(self) -> socket.socket:
        name = self._dns_host
        failure: Exception | None = None
        for address in type(self).addresses(name, self.port):
            self._dns_host = address
            try:
                return super()._new_conn()
            except (urllib3.exceptions.NewConnectionError,
                    urllib3.exceptions.ConnectTimeoutError) as exc:
                failure = exc       # try the host's next address
            finally:
                self._dns_host = name
        assert failure is not None   # getaddrinfo gives one address at least
        raise failure


def _checked_pools(addresses: Callable[[str, int], list[str]]) -> dict[str, type]:
    """urllib3 pool classes whose connections go through ``addresses``."""
    pools = {}
    for scheme, pool in (("http", urllib3.connectionpool.HTTPConnectionPool),
                         ("https", urllib3.connectionpool.HTTPSConnectionPool)):
        bases = (_CheckedConnection, pool.ConnectionCls)
        connection = type(f"Checked{pool.ConnectionCls.__name__}", bases,
                          {"addresses": staticmethod(addresses)})
        pools[scheme] = type(f"Checked{pool.__name__}", (pool,), {"ConnectionCls": connection})
    return pools


# -- the driver ----------------------------------------------------------------

class HttpDriver(Driver[HttpLocation]):
    """Every well-formed http(s) URL is this store's (:meth:`holds` keeps the
    base class's answer): it is the home of external URLs. Whether the
    store may *fetch* it is the filter's business, at request time."""

    schemes = _SCHEMES
    location_type = HttpLocation
    capabilities = Capabilities(read=True, ranged_read=True, write=False, delete=False)
    options = OPTIONS

    # -- configuration ---------------------------------------------------

    def configure(self) -> None:
        c = self.conf
        cafile = c.https_ca_certificates_file
        if cafile:
            self._check_ca(cafile)
            if c.https_insecure:
                LOG.warning("store %s: https_ca_certificates_file is set, so "
                            "https_insecure is ignored: certificates are verified",
                            self.store_id)
            self.verify: bool | str = cafile
        else:
            self.verify = not c.https_insecure
            if c.https_insecure:
                LOG.warning("store %s: https_insecure is set: https servers' "
                            "certificates are not verified", self.store_id)
        self.proxies = self._check_proxies(c.http_proxy_information or {})
        self.max_redirects = c.http_max_redirects
        self.read_retries = c.http_read_retries
        self.retry = RetryPolicy(attempts=c.http_read_retries, first_backoff=FIRST_BACKOFF,
                                 max_backoff=MAX_BACKOFF)
        self.timeout = (c.http_connect_timeout, c.http_read_timeout)
        self.filter = _Filter(c, self.store_id)
        self._session: requests.Session | None = None
        self._lock = threading.Lock()

    def _check_ca(self, cafile: str) -> None:
        option = "https_ca_certificates_file"
        if not os.path.exists(cafile):
            raise errors.ConfigError(f"{cafile} does not exist", option=option)
        try:
            if os.path.isdir(cafile):
                ssl.create_default_context(capath=cafile)
            else:
                ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise errors.ConfigError(f"{cafile} holds no usable CA certificates: {exc}",
                                     option=option) from exc

    def _check_proxies(self, proxies: dict[str, str]) -> dict[str, str]:
        checked = {}
        for key, value in proxies.items():
            key, value = key.strip(), (value or "").strip()
            if "://" not in value:
                value = "http://" + value
            if key not in ("http", "https", "all"):
                raise errors.ConfigError(
                    f"{key!r} is not http, https or all: the key says which "
                    "URLs go through the proxy", option="http_proxy_information")
            if not _is_url(value):
                raise errors.ConfigError(f"the proxy for {key!r} is not a URL: "
                                         f"{redact(value)!r}",
                                         option="http_proxy_information")
            checked[key] = value
        return checked

    def properties(self) -> dict[str, Any]:
        return {"verify_certificates": self.verify is not False,
                "ca_certificates_file": self.verify if isinstance(self.verify, str) else None,
                "proxies": {k: redact(v) for k, v in self.proxies.items()},
                "max_redirects": self.max_redirects,
                "read_retries": self.read_retries,
                "connect_timeout": self.timeout[0],
                "read_timeout": self.timeout[1],
                "filters": self.filter.properties()}

    def session(self) -> requests.Session:
        """The store's connection pool, created on first use."""
        with self._lock:
            if self._session is None:
                session = requests.Session()
                # Images are public or basic-auth protected: keep no cookies,
                # so that nothing one read receives leaks into another.
                session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
                adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=32,
                                                        max_retries=0)
                if self.filter.hosts:
                    # Direct connections only: a proxy resolves names itself,
                    # and the URL was checked before it was sent.
                    adapter.poolmanager.pool_classes_by_scheme = _checked_pools(
                        self.filter.addresses)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                session.headers["User-Agent"] = "multistore"
                # The stored bytes, not a compressed rendition of them.
                session.headers["Accept-Encoding"] = "identity"
                self._session = session
            return self._session

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def translate_error(self, exc: Exception) -> errors.MultistoreError | None:
        """requests' exceptions (and what it lets through), in the library's words."""
        if not isinstance(exc, (requests.RequestException, ValueError, UnicodeError)):
            return None
        request = getattr(exc, "request", None)
        where = redact(request.url) if request is not None else "the server"
        reason = _reason(exc)
        if isinstance(exc, requests.exceptions.SSLError):
            advice = (" (set https_ca_certificates_file to the CA that issued the "
                      "server's certificate)" if self.verify is True else "")
            return errors.BackendUnavailable(f"TLS with {where} failed: {reason}{advice}")
        if isinstance(exc, requests.exceptions.Timeout):
            return errors.BackendUnavailable(f"{where} did not answer in time ({reason})")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return errors.BackendUnavailable(f"cannot reach {where}: {reason}")
        if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader,
                            ValueError, UnicodeError)):
            return errors.BadLocation(f"cannot request {where}: {reason}")
        return errors.BackendUnavailable(f"request to {where} failed: {reason}")

    # -- requests ----------------------------------------------------------

    def _request(self, method: str, location: HttpLocation,
                 headers: dict[str, str] | None = None,
                 accept: frozenset[int] = frozenset()) -> tuple[requests.Response, HttpLocation]:
        """Send ``method``, following redirects; a 2xx (or ``accept``) answer
        and the location it came from.

        Every URL is checked against the store's filter before it is sent.
        404 and 410 raise NotFound; other statuses raise an error naming
        the status; the body of the answer is not read yet.
        """
        why = self.filter.refusal(location)
        if why:
            raise errors.BadLocation(f"{location} is refused: {why}")
        current, visited = location, [location.url]
        while True:
            response = self._send(method, current, headers)
            status = response.status_code
            if status not in REDIRECTS:
                break
            target = response.headers.get("Location")
            _finish(response)
            current = self._redirect(location, current, target, status, visited)
        if status in (404, 410):
            _finish(response)
            raise errors.NotFound(f"no image at {location} (the server answered "
                                  f"{_status(response)})")
        if not 200 <= status < 300 and status not in accept:
            _finish(response)
            where = location if current is location else f"{location} (redirected to {current})"
            cls = errors.BackendUnavailable if status >= 500 else errors.BadLocation
            raise cls(f"the server answered {_status(response)} for {where}")
        return response, current

    def _send(self, method: str, location: HttpLocation,
              headers: dict[str, str] | None = None) -> requests.Response:
        return self.session().request(
            method, location.url, headers=headers, auth=location.auth, stream=True,
            allow_redirects=False, timeout=self.timeout, verify=self.verify,
            proxies=self.proxies)

    def _redirect(self, location: HttpLocation, current: HttpLocation, target: str | None,
                  status: int, visited: list[str]) -> HttpLocation:
        def refuse(why: str) -> errors.BadLocation:
            return errors.BadLocation(f"{location}: {why}")

        if not target:
            raise refuse(f"the server answered {status} without a Location")
        try:
            resolved = urllib.parse.urljoin(current.url, target.strip())
        except ValueError:
            raise refuse(f"the server redirected to an invalid URL "
                         f"{redact(target)!r}") from None
        if urllib.parse.urlsplit(resolved).scheme.lower() not in self.schemes:
            raise refuse(f"the server redirected to {redact(resolved)!r}: only http "
                         "and https redirects are followed")
        if len(visited) > self.max_redirects:
            raise refuse(f"more than {self.max_redirects} redirects "
                         f"(http_max_redirects), the last to {redact(resolved)}")
        try:
            new = HttpLocation.parse(resolved)
        except ValueError:
            raise refuse(f"the server redirected to an invalid URL "
                         f"{redact(resolved)!r}") from None
        if new.url in visited:
            raise refuse(f"redirect loop at {new}")
        visited.append(new.url)
        if new.user is None and current.user is not None and _keeps_credentials(current, new):
            new = dataclasses.replace(new, user=current.user, password=current.password)
        why = self.filter.refusal(new)
        if why:
            raise refuse(f"the server redirected to {new}, which is refused: {why}")
        LOG.debug("store %s: %s redirected (%d) to %s", self.store_id, current, status, new)
        return new

    # -- reading -----------------------------------------------------------

    def open_reader(self, location: HttpLocation, offset: int, length: int | None,
                    context: Context = None) -> ReadStream:
        if length == 0:
            # Nothing to read, but a missing image is still NotFound.
            self._probe_size(location)
            return ReadStream(iter(()), 0)
        ranged = bool(offset) or length is not None
        end = None if length is None else offset + length   # exclusive
        response, source = self._request("GET", location,
                                         {"Range": _range(offset, end)} if ranged else None,
                                         accept=frozenset({416}) if ranged else frozenset())
        clip = None   # where to cut an answer that holds more than asked
        try:
            status = response.status_code
            if status == 416:
                # The range starts at or past the end: nothing to read, as
                # for the other drivers.
                _finish(response)
                return ReadStream(iter(()), 0)
            size = _length(response)
            if status == 206:
                parsed = _content_range(response)
                if parsed is None:
                    raise errors.BackendUnavailable(
                        "the server answered 206 with an invalid Content-Range "
                        f"{response.headers.get('Content-Range')!r} for {location}")
                start, stop, total = parsed
                if start != offset:
                    raise errors.BackendUnavailable(
                        f"asked for bytes from {offset}, the server sent them from {start}")
                # A server may answer with less than asked (some cap the size
                # of a range): the rest is asked for as the body ends.
                if total is None:
                    size = stop + 1 - start
                else:
                    size = (total if end is None else min(end, total)) - start
            elif ranged and offset:
                raise errors.RangeNotSupported(
                    f"the server ignored the Range header for {location} (it "
                    "answered 200): it cannot serve part of the image")
            elif ranged:
                # 200 to bytes=0-n: the whole image comes; deliver the part.
                clip = end
                size = None if size is None else min(size, length)   # type: ignore[type-var]
        except BaseException:
            response.close()
            raise
        body = _Body(self, source, response, offset, end, size, clip, str(location))
        read = ResumingRead(body.open_at, offset, size, self.retry, what=str(location))
        return ReadStream(read, size, body.close)

    def get_size(self, location: HttpLocation, context: Context = None) -> int:
        size = self._probe_size(location)
        if size is None:
            raise errors.NotSupported(
                f"the server does not say the size of {location} (no Content-Length, "
                "no Range support); the image can still be read")
        return size

    def _probe_size(self, location: HttpLocation) -> int | None:
        """The size from HEAD, else from a one-byte GET; None if the server
        does not say it. Errors (NotFound ...) as for a read."""
        response, _ = self._request("HEAD", location, accept=_HEAD_REFUSED)
        _finish(response)
        size = _length(response) if response.status_code < 300 else None
        if size is not None:
            return size
        # No Content-Length: ask for the first byte, the answer says the total.
        response, _ = self._request("GET", location, {"Range": "bytes=0-0"},
                                    accept=frozenset({416}))
        _finish(response)
        if response.status_code == 206:
            return (_content_range(response) or (0, 0, None))[2]
        if response.status_code == 416:
            match = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
            return int(match[1]) if match else None
        return _length(response)


class _Body:
    """The bytes of one read, opened at a byte position for
    :class:`~multistore.retry.ResumingRead`: the first answer, then ``Range``
    requests from the first byte missing (with ``If-Range``, so a changed
    image is noticed rather than spliced)."""

    def __init__(self, driver: HttpDriver, source: HttpLocation, response: requests.Response,
                 offset: int, end: int | None, size: int | None, clip: int | None,
                 what: str) -> None:
        self.driver = driver
        self.source = source        # where the answer came from, after redirects
        self.first: requests.Response | None = response
        self.end = end              # exclusive end of the range asked, None: the image's
        self.stop = None if size is None else offset + size   # where the read ends
        self.clip = clip            # cut there: the answer holds more than asked
        self.what = what
        headers = response.headers
        etag = headers.get("ETag", "")
        # If-Range needs a strong validator: a changed image then comes back
        # whole (200), never spliced.
        self.validator = etag if etag and not etag.startswith("W/") else \
            headers.get("Last-Modified")
        self.total = ((_content_range(response) or (0, 0, None))[2]
                      if response.status_code == 206 else _length(response))

    def close(self) -> None:
        first, self.first = self.first, None
        if first is not None:
            first.close()

    def open_at(self, position: int) -> Iterator[bytes]:
        response, self.first = self.first, None
        return self._chunks(response or self._resume(position), position)

    def _chunks(self, response: requests.Response, position: int) -> Iterator[bytes]:
        try:
            while True:
                answered = 0
                try:
                    for chunk in response.raw.stream(READ_CHUNK_SIZE, decode_content=False):
                        if self.clip is not None and position + len(chunk) >= self.clip:
                            yield chunk[:self.clip - position]
                            return
                        answered += len(chunk)
                        position += len(chunk)
                        yield chunk
                except _DROPPED as exc:
                    raise ReadInterrupted(_reason(exc)) from exc
                if not (answered and response.status_code == 206 and self.stop is not None
                        and position < self.stop):
                    return
                # A whole answer, shorter than asked: ask for the rest.
                response.close()
                response = self._resume(position)
        finally:
            response.close()

    def _resume(self, position: int) -> requests.Response:
        """The rest of the image, from ``position``.

        Raises ReadInterrupted for what another attempt may cure (no
        connection, a 5xx answer), BackendUnavailable for what it cannot.
        """
        headers = {"Range": _range(position, self.end)}
        if self.validator:
            headers["If-Range"] = self.validator
        try:
            response = self.driver._send("GET", self.source, headers)
        except requests.RequestException as exc:
            translated = self.driver.translate_error(exc)
            raise ReadInterrupted(translated.message if translated else _reason(exc)) from exc
        status = response.status_code
        if status == 206:
            parsed = _content_range(response)
            if parsed and parsed[0] == position and (
                    self.total is None or parsed[2] in (None, self.total)):
                return response
            why = (f"it sent Content-Range {response.headers.get('Content-Range')!r} for "
                   f"bytes from {position} of {'?' if self.total is None else self.total}")
        elif status == 200:
            why = "it answered 200: it cannot serve ranges or the image changed"
        elif status in (404, 410):
            why = f"the image is gone ({_status(response)})"
        elif status >= 500:
            _finish(response)
            raise ReadInterrupted(f"the server answered {_status(response)}")
        else:
            why = f"it answered {_status(response)}"
        _finish(response)
        raise errors.BackendUnavailable(f"reading {self.what} broke at byte {position} and "
                                        f"the server cannot resume it: {why}")


# -- helpers ---------------------------------------------------------------

def _is_url(value: str) -> bool:
    """Whether ``value`` parses as a URL with a host (and a valid port)."""
    try:
        parts = urllib.parse.urlsplit(value)
        return bool(parts.hostname) and (parts.port is None or parts.port >= 0)
    except ValueError:
        return False


def _range(offset: int, end: int | None) -> str:
    return f"bytes={offset}-{'' if end is None else end - 1}"


def _finish(response: requests.Response) -> None:
    """Close an answer whose body is not wanted; a short body is read first,
    so that the connection goes back to the pool (a new TLS handshake for
    every HEAD or redirect costs more than reading a few bytes)."""
    length = _length(response)
    try:
        if response.request.method == "HEAD" or (
                length is not None and length <= _DRAIN_LIMIT):
            response.raw.read(decode_content=False)
    except _DROPPED:
        pass   # the connection is closed below instead of reused
    finally:
        response.close()


def _content_range(response: requests.Response) -> tuple[int, int, int | None] | None:
    """``(first, last, total)`` of a 206 answer (total None for ``*``); None if invalid."""
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if not match or int(match[2]) < int(match[1]):
        return None
    return int(match[1]), int(match[2]), None if match[3] == "*" else int(match[3])


def _length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None or response.headers.get("Transfer-Encoding"):
        return None
    try:
        length = int(value.strip())
    except ValueError:
        return None
    return length if length >= 0 else None


def _status(response: requests.Response) -> str:
    reason = response.reason
    if not reason:
        try:
            reason = HTTPStatus(response.status_code).phrase
        except ValueError:
            reason = ""
    return f"{response.status_code} {reason}".strip()


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, without any URL."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "reason", None)
        if isinstance(inner, BaseException):
            current = inner
            continue
        if current.args and isinstance(current.args[0], BaseException):
            current = current.args[0]
            continue
        break
    if current is None:
        current = exc
    args = current.args
    if len(args) > 1 and isinstance(args[0], str):
        # urllib3's ProtocolError("Connection aborted.", ConnectionResetError(...))
        inner = str(args[-1])
        text = args[0] if inner in args[0] else f"{args[0].rstrip('.')}: {inner}"
    else:
        text = str(current)
    # urllib3 puts "HTTPConnectionPool(...): Max retries ... url: /path",
    # "HTTPConnection(host=..., port=...): " or "<connection object at
    # 0x...>: " before the cause.
    text = re.sub(r"^<[^>]*>:\s*", "", text)
    text = re.sub(r"\w+Connection(?:Pool)?\(host='[^']*', port=\d+\):\s*", "", text)
    return text or type(current).__name__


__all__ = ["HttpDriver", "HttpLocation", "OPTIONS"]
