"""Images that live on a web server: a read-only store.

Locations are the images' own ``http://`` and ``https://`` URLs, optionally
with ``user:password@`` for basic authentication. The store reads them
whole or in part (HTTP ``Range``), learns their size with ``HEAD``, and
takes no new images and deletes nothing (the core refuses both, and lists
the store as read-only). Copying an http location into a writable store
(``stores.copy(url, to=[...])``) is how an image is imported from the web.

Differences from glance_store's http store, on purpose:

- certificates are verified by default (``https_insecure`` defaults to
  false); turning verification off is explicit;
- ranged reads;
- redirects 301, 302, 303, 307 and 308 are followed, up to
  ``http_max_redirects``, and only to http or https URLs; credentials are
  sent on to the same scheme, host and port only (or to https on the same
  host);
- a connection that drops during a read is resumed from the byte already
  delivered (``Range`` plus ``If-Range``, so a changed image is noticed),
  up to ``http_read_retries`` attempts in a row that deliver nothing;
- a server that sends no ``Content-Length`` is read as a stream of unknown
  size; ``get_size`` then asks for the first byte (``Range: bytes=0-0``) to
  learn the total, and raises NotSupported if the server does not say it,
  rather than report a wrong size (glance_store reported 0);
- connections and reads time out (``http_connect_timeout``,
  ``http_read_timeout``): a dead server is an error, never a hang;
- user and password in a URL are sent as basic authentication and never
  appear in logs or error messages.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Generator, Iterator
from http import HTTPStatus
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
import requests.adapters
import urllib3.exceptions
from oslo_config import cfg

from multistore import errors
from multistore.driver import Capabilities, Driver, ReadStream
from multistore.location import redact, scheme_of

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
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)

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
]

#: A read stopped before its end (connection closed or reset, timeout,
#: broken chunked encoding, TLS error): resumable.
_DROPPED = (urllib3.exceptions.HTTPError, http.client.HTTPException,
            requests.exceptions.RequestException, OSError)


class _Dropped(Exception):
    """The body ended before the announced length."""


class HttpDriver(Driver):
    schemes = ("http", "https")
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
        self.timeout = (c.http_connect_timeout, c.http_read_timeout)
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
                "read_timeout": self.timeout[1]}

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

    # -- locations ---------------------------------------------------------

    def owns(self, location: str) -> bool:
        """Any http or https URL: this store is the home of external URLs."""
        try:
            _split(location)
        except errors.BadLocation:
            return False
        return True

    def image_id(self, location: str) -> str:
        """The URL's last path segment (``cirros.img`` for ``.../cirros.img?x=1``)."""
        path = urllib.parse.urlsplit(location).path
        return urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])

    # -- requests ----------------------------------------------------------

    def _request(self, method: str, location: str, operation: str,
                 headers: dict[str, str] | None = None,
                 accept: frozenset[int] = frozenset()) -> _Answer:
        """Send ``method``, following redirects; a 2xx (or ``accept``) answer.

        404 and 410 raise NotFound; other statuses raise an error naming
        the status; the body of the answer is not read yet.
        """
        try:
            url, auth = _split(location)
        except errors.BadLocation as exc:
            exc.store, exc.operation = self.store_id, operation
            raise
        visited = [url]
        while True:
            response = self._send(method, url, auth, headers, operation)
            status = response.status_code
            if status not in REDIRECTS:
                break
            target = response.headers.get("Location")
            _finish(response)
            url, auth = self._redirect(location, url, auth, target, status, visited,
                                       operation)
        if status in (404, 410):
            _finish(response)
            raise errors.NotFound(f"no image at {redact(location)} (the server answered "
                                  f"{_status(response)})", store=self.store_id,
                                  operation=operation)
        if not 200 <= status < 300 and status not in accept:
            _finish(response)
            where = redact(location) if len(visited) == 1 else \
                f"{redact(location)} (redirected to {redact(url)})"
            cls = errors.BackendUnavailable if status >= 500 else errors.BadLocation
            raise cls(f"the server answered {_status(response)} for {where}",
                      store=self.store_id, operation=operation)
        return _Answer(response, url, auth)

    def _send(self, method: str, url: str, auth: tuple[str, str] | None,
              headers: dict[str, str] | None, operation: str) -> requests.Response:
        try:
            return self.session().request(
                method, url, headers=headers, auth=auth, stream=True,
                allow_redirects=False, timeout=self.timeout, verify=self.verify,
                proxies=self.proxies)
        except requests.exceptions.SSLError as exc:
            advice = ("set https_ca_certificates_file to the CA that issued the "
                      "server's certificate" if self.verify is True else "")
            raise errors.BackendUnavailable(
                f"TLS with {_origin(url)} failed: {_reason(exc)}"
                + (f" ({advice})" if advice else ""),
                store=self.store_id, operation=operation) from exc
        except requests.exceptions.Timeout as exc:
            raise errors.BackendUnavailable(
                f"{_origin(url)} did not answer in time ({_reason(exc)})",
                store=self.store_id, operation=operation) from exc
        except requests.exceptions.ConnectionError as exc:
            raise errors.BackendUnavailable(
                f"cannot reach {_origin(url)}: {_reason(exc)}",
                store=self.store_id, operation=operation) from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader,
                ValueError, UnicodeError) as exc:
            raise errors.BadLocation(f"cannot request {redact(url)}: {_reason(exc)}",
                                     store=self.store_id, operation=operation) from exc
        except requests.exceptions.RequestException as exc:
            raise errors.BackendUnavailable(
                f"request to {_origin(url)} failed: {_reason(exc)}",
                store=self.store_id, operation=operation) from exc

    def _redirect(self, location: str, url: str, auth: tuple[str, str] | None,
                  target: str | None, status: int, visited: list[str],
                  operation: str) -> tuple[str, tuple[str, str] | None]:
        def refuse(why: str) -> errors.BadLocation:
            return errors.BadLocation(f"{redact(location)}: {why}", store=self.store_id,
                                      operation=operation)

        if not target:
            raise refuse(f"the server answered {status} without a Location")
        try:
            resolved = urllib.parse.urljoin(url, target.strip())
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
            new_url, new_auth = _split(resolved)
        except errors.BadLocation:
            raise refuse(f"the server redirected to an invalid URL "
                         f"{redact(resolved)!r}") from None
        if new_url in visited:
            raise refuse(f"redirect loop at {redact(new_url)}")
        visited.append(new_url)
        if new_auth is None and auth is not None and _keeps_credentials(url, new_url):
            new_auth = auth
        LOG.debug("store %s: %s redirected (%d) to %s", self.store_id,
                  redact(url), status, redact(resolved))
        return new_url, new_auth

    # -- reading -----------------------------------------------------------

    def open_reader(self, location: str, offset: int, length: int | None,
                    context: Any = None) -> ReadStream:
        if length == 0:
            # Nothing to read, but a missing image is still NotFound.
            self._probe_size(location, "get")
            return ReadStream(iter(()), 0)
        ranged = bool(offset) or length is not None
        cap = None   # most bytes to deliver, when the server sends more
        end = None if length is None else offset + length   # exclusive
        headers = {"Range": _range(offset, end)} if ranged else None
        answer = self._request("GET", location, "get", headers,
                               accept=frozenset({416}) if ranged else frozenset())
        response = answer.response
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
                        f"{response.headers.get('Content-Range')!r} for "
                        f"{redact(location)}", store=self.store_id, operation="get")
                start, stop, total = parsed
                if start != offset:
                    raise errors.BackendUnavailable(
                        f"asked for bytes from {offset}, the server sent them from "
                        f"{start}", store=self.store_id, operation="get")
                # A server may answer with less than asked (some cap the size
                # of a range): the rest is asked for as the body ends.
                if total is None:
                    size = stop + 1 - start
                else:
                    size = (total if end is None else min(end, total)) - start
            elif ranged and offset:
                raise errors.RangeNotSupported(
                    f"the server ignored the Range header for {redact(location)} "
                    "(it answered 200): it cannot serve part of the image",
                    store=self.store_id, operation="get")
            elif ranged:
                # 200 to bytes=0-n: the whole image comes; deliver the part.
                cap = length
                size = None if size is None else min(size, cap)   # type: ignore[type-var]
        except BaseException:
            response.close()
            raise
        body = _Body(self, location, answer, offset, end, size, cap)
        return ReadStream(body, size, body.close)

    def get_size(self, location: str, context: Any = None) -> int:
        size = self._probe_size(location, "get_size")
        if size is None:
            raise errors.NotSupported(
                f"the server does not say the size of {redact(location)} (no "
                "Content-Length, no Range support); the image can still be read",
                store=self.store_id, operation="get_size")
        return size

    def _probe_size(self, location: str, operation: str) -> int | None:
        """The size from HEAD, else from a one-byte GET; None if the server
        does not say it. Errors (NotFound ...) as for a read."""
        answer = self._request("HEAD", location, operation, accept=_HEAD_REFUSED)
        _finish(answer.response)
        size = _length(answer.response) if answer.response.status_code < 300 else None
        if size is not None:
            return size
        # No Content-Length: ask for the first byte, the answer says the total.
        answer = self._request("GET", location, operation, {"Range": "bytes=0-0"},
                               accept=frozenset({416}))
        response = answer.response
        _finish(response)
        if response.status_code == 206:
            size = (_content_range(response) or (0, 0, None))[2]
        elif response.status_code == 416:
            match = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
            size = int(match[1]) if match else None
        else:
            size = _length(response)
        return size


class _Answer:
    """A response, the URL it came from (after redirects) and its credentials."""

    __slots__ = ("response", "url", "auth")

    def __init__(self, response: requests.Response, url: str,
                 auth: tuple[str, str] | None) -> None:
        self.response = response
        self.url = url
        self.auth = auth


class _Body:
    """The bytes of one read; resumes with ``Range`` when the connection drops."""

    def __init__(self, driver: HttpDriver, location: str, answer: _Answer,
                 offset: int, end: int | None, size: int | None,
                 cap: int | None = None) -> None:
        self.driver = driver
        self.location = location
        self.response: requests.Response | None = answer.response
        self.url = answer.url
        self.auth = answer.auth
        self.offset = offset        # the next byte to deliver
        self.end = end              # exclusive, None: to the end of the image
        self.left = size            # bytes still expected, None if unknown
        self.cap = size if cap is None else cap   # most bytes still to deliver
        # The answer holds more than the read wants (200 to bytes=0-n): stop
        # at the cap. Otherwise read to the answer's end, which hands the
        # connection back to the pool.
        self.truncating = cap is not None
        headers = answer.response.headers
        etag = headers.get("ETag", "")
        # If-Range needs a strong validator: a changed image then comes back
        # whole (200), never spliced.
        self.validator = etag if etag and not etag.startswith("W/") else \
            headers.get("Last-Modified")
        self.total = self._total(answer.response)
        self._chunks = self._read()

    @staticmethod
    def _total(response: requests.Response) -> int | None:
        if response.status_code == 206:
            return (_content_range(response) or (0, 0, None))[2]
        return _length(response)

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()
        self._drop_response()

    def _drop_response(self) -> None:
        response, self.response = self.response, None
        if response is not None:
            response.close()

    def _read(self) -> Generator[bytes, None, None]:
        failures = 0
        try:
            while True:
                try:
                    if self.response is None:
                        self.response = self._resume()
                    answered = 0
                    for chunk in self.response.raw.stream(READ_CHUNK_SIZE,
                                                          decode_content=False):
                        if self.cap is not None and len(chunk) > self.cap:
                            chunk = chunk[:self.cap]   # 200 to a bytes=0-n request
                        if not chunk:
                            continue
                        failures = 0
                        answered += len(chunk)
                        self.offset += len(chunk)
                        if self.left is not None:
                            self.left -= len(chunk)
                        if self.cap is not None:
                            self.cap -= len(chunk)
                        yield chunk
                        if self.cap == 0 and self.truncating:
                            return
                    if self.left and answered and self.response.status_code == 206:
                        # A whole answer, shorter than asked: ask for the rest.
                        self._drop_response()
                        continue
                    if self.left:
                        raise _Dropped(f"the body ended {self.left} bytes early")
                    return
                except (_Dropped, *_DROPPED) as exc:
                    self._drop_response()
                    failures += 1
                    if failures > self.driver.read_retries:
                        raise errors.BackendUnavailable(
                            f"reading {redact(self.location)} failed at byte "
                            f"{self.offset}: {_reason(exc)} (gave up after "
                            f"{failures - 1} attempts to resume, http_read_retries)",
                            store=self.driver.store_id, operation="get") from exc
                    LOG.warning("store %s: reading %s broke at byte %d (%s); "
                                "resuming, attempt %d of %d", self.driver.store_id,
                                redact(self.location), self.offset, _reason(exc),
                                failures, self.driver.read_retries)
                    time.sleep(min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (failures - 1)))
        finally:
            self._drop_response()

    def _resume(self) -> requests.Response:
        """The rest of the image, from ``self.offset``.

        Raises _Dropped for what another attempt may cure (no connection, a
        5xx answer), BackendUnavailable for what it cannot.
        """
        driver = self.driver
        headers = {"Range": _range(self.offset, self.end)}
        if self.validator:
            headers["If-Range"] = self.validator
        try:
            response = driver._send("GET", self.url, self.auth, headers, "get")
        except errors.BackendUnavailable as exc:
            raise _Dropped(exc.message) from exc
        status = response.status_code
        if status == 206:
            parsed = _content_range(response)
            if parsed and parsed[0] == self.offset and (
                    self.total is None or parsed[2] in (None, self.total)):
                return response
            why = (f"it sent Content-Range "
                   f"{response.headers.get('Content-Range')!r} for bytes from "
                   f"{self.offset} of {'?' if self.total is None else self.total}")
        elif status == 200:
            why = "it answered 200: it cannot serve ranges or the image changed"
        elif status in (404, 410):
            why = f"the image is gone ({_status(response)})"
        elif status >= 500:
            _finish(response)
            raise _Dropped(f"the server answered {_status(response)}")
        else:
            why = f"it answered {_status(response)}"
        _finish(response)
        raise errors.BackendUnavailable(
            f"reading {redact(self.location)} broke at byte {self.offset} and the "
            f"server cannot resume it: {why}", store=driver.store_id, operation="get")


# -- helpers ---------------------------------------------------------------

def _split(location: str) -> tuple[str, tuple[str, str] | None]:
    """The URL to request (no user information, no fragment) and the credentials."""
    if not isinstance(location, str) or any(c in location for c in "\0\r\n\t "):
        raise errors.BadLocation(f"not an http location: {redact(str(location))!r}")
    if not _is_url(location) or scheme_of(location) not in ("http", "https"):
        raise errors.BadLocation(f"not an http location: {redact(location)!r}")
    parts = urllib.parse.urlsplit(location)
    auth = None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        auth = (urllib.parse.unquote(user), urllib.parse.unquote(password))
    url = urllib.parse.urlunsplit((parts.scheme.lower(), netloc, parts.path or "/",
                                   parts.query, ""))
    return url, auth


def _is_url(value: str) -> bool:
    """Whether ``value`` parses as a URL with a host (and a valid port)."""
    try:
        parts = urllib.parse.urlsplit(value)
        return bool(parts.hostname) and (parts.port is None or parts.port >= 0)
    except ValueError:
        return False


def _origin_key(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _keeps_credentials(old: str, new: str) -> bool:
    """Credentials go on to the same origin, or from http to https on one host."""
    a, b = _origin_key(old), _origin_key(new)
    if a == b:
        return True
    return (a[1] == b[1] and a[0] == "http" and b[0] == "https"
            and a[2] == 80 and b[2] == 443)


def _origin(url: str) -> str:
    """``scheme://host:port``, for messages."""
    scheme, host, port = _origin_key(url)
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


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
    # urllib3 puts "HTTPConnectionPool(...): Max retries ... url: /path" or
    # "<connection object at 0x...>: " before the cause.
    text = re.sub(r"^<[^>]*>:\s*", "", text)
    text = re.sub(r"\w+ConnectionPool\(host='[^']*', port=\d+\):\s*", "", text)
    return text or type(current).__name__


__all__ = ["HttpDriver", "OPTIONS"]
