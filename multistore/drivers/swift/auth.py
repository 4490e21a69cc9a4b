"""Swift accounts: the references file, Keystone sessions, pooled connections.

An :class:`Account` is how to reach one Swift account: a reference's
credentials (single-tenant), or a storage URL and a caller's token
(multi-tenant). It hands out swiftclient connections, one thread at a time
each, and keeps idle ones (and their token) for reuse. Connections never
retry on their own: retries are :class:`multistore.retry.RetryPolicy`'s
(:meth:`Account.call`), and resumed reads :class:`~multistore.retry.ResumingRead`'s.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import functools
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from multistore import errors
from multistore.location import redact
from multistore.retry import RetryPolicy

T = TypeVar("T")
#: Bytes per socket send of request bodies (urllib3's default is 16 KiB:
#: one GIL round trip per 16 KiB, which with the core's hashing threads
#: running costs a quarter of the throughput).
SEND_BLOCK = 1024 * 1024
IDLE_CONNECTIONS = 8

#: Reference keys besides auth_address/user/key.
_REF_OPTIONAL = ("user_domain_id", "user_domain_name", "project_domain_id",
                 "project_domain_name", "project_name", "project_id",
                 "application_credential_id", "application_credential_secret")


@dataclasses.dataclass(frozen=True)
class Reference:
    """One account of the references file. ``repr`` shows no secret."""

    name: str
    auth_address: str
    user: str | None = dataclasses.field(default=None, repr=False)
    key: str | None = dataclasses.field(default=None, repr=False)
    auth_version: str = "3"
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def auth_key(self) -> str:
        """The auth address without scheme or trailing slash, to compare."""
        return self.auth_address.partition("://")[2].rstrip("/")


def read_references(path: str) -> dict[str, Reference]:
    """Parse a glance ``swift_store_config_file`` (quotes around values stripped)."""
    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as exc:
        raise errors.ConfigError(f"cannot read {path}: {exc}",
                                 option="swift_store_config_file") from exc
    refs = {}
    for name in parser.sections():
        values = {k: v.strip().strip("'\"") for k, v in parser.items(name)}
        auth = values.get("auth_address")
        if not auth:
            raise errors.ConfigError(f"{path}: reference [{name}] has no auth_address",
                                     option="swift_store_config_file")
        refs[name] = Reference(
            name, auth, values.get("user"), values.get("key"),
            auth_version(values.get("auth_version", "3"), "swift_store_config_file"),
            {k: values[k] for k in _REF_OPTIONAL if values.get(k)})
    return refs


def auth_version(value: str, option: str) -> str:
    version = str(value).strip().lower().lstrip("v")
    for short in ("1", "2", "3"):
        if version == short or version.startswith(short + "."):
            return short
    raise errors.ConfigError(f"unknown auth_version {value!r}", option=option)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every connection of a store shares (from its options)."""

    timeout: int
    cacert: str | None
    insecure: bool
    ssl_compression: bool
    endpoint: str | None
    endpoint_type: str
    service_type: str
    region: str | None
    expire_soon: int
    policy: RetryPolicy


class Account:
    """One Swift account and a pool of connections to it."""

    def __init__(self, settings: Settings, ref: Reference | None, *,
                 storage_url: str | None = None, token: str | None = None) -> None:
        self.settings = settings
        self.ref = ref
        self.storage_url = storage_url
        self.token = token
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._session: Any = None
        self._containers: set[str] = set()

    def __repr__(self) -> str:
        return f"<Account {self.ref.name if self.ref else redact(self.storage_url)!r}>"

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def take(self) -> Any:
        """A connection for this thread alone; give it back with :meth:`release`."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        return conn if conn is not None else self._new()

    def release(self, conn: Any, reusable: bool) -> None:
        if reusable:
            with self._lock:
                if len(self._idle) < IDLE_CONNECTIONS:
                    self._idle.append(conn)
                    return
        conn.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection for the block; dropped if the block failed other
        than with an HTTP answer (the connection may be broken)."""
        conn = self.take()
        ok = False
        try:
            yield conn
            ok = True
        except client_exception():
            ok = True
            raise
        finally:
            self.release(conn, ok)

    def call(self, request: Callable[[Any], T], what: str = "swift request") -> T:
        """``request(connection)``, retried on a fresh connection after
        connection trouble or a 5xx, as the store's policy says."""
        def attempt() -> T:
            with self.connection() as conn:
                return request(conn)
        return self.settings.policy.call(attempt, what=what)

    def call_patiently(self, request: Callable[[Any], T], seconds: float,
                       what: str = "swift request") -> T:
        """:meth:`call` on a connection that waits ``seconds`` for the answer
        (a server-side copy answers only once it is done)."""
        def attempt() -> T:
            with self.connection() as conn:
                conn.close()                    # the next request opens with this timeout
                conn.timeout = seconds
                try:
                    return request(conn)
                finally:
                    conn.close()
                    conn.timeout = self.settings.timeout
        return self.settings.policy.call(attempt, what=what)

    def endpoint(self) -> str:
        """This account's storage URL (authenticating first if needed)."""
        if self.storage_url:
            return self.storage_url

        def attempt() -> str:
            with self.connection() as conn:
                if not conn.url or not conn.token:
                    conn.get_auth()
                return str(conn.url)
        return self.settings.policy.call(attempt, what="authenticating")

    def head_elsewhere(self, account: str, container: str, obj: str) -> dict[str, str]:
        """HEAD ``container/obj`` (manifests as they are) of another
        ``account`` on this account's endpoint, with this account's credentials."""
        from swiftclient import client  # type: ignore[import-untyped]

        def attempt() -> dict[str, str]:
            with self.connection() as conn:
                if not conn.url or not conn.token:
                    conn.get_auth()
                base = str(conn.url).rstrip("/").rpartition("/")[0]
                url = f"{base}/{urllib.parse.quote(account, safe='')}"
                parsed, http = conn.http_connection(url)
                try:
                    return client.head_object(  # type: ignore[no-any-return]
                        url, conn.token, container, obj, http_conn=(parsed, http),
                        query_string="multipart-manifest=get")
                finally:
                    http.close()
        return self.settings.policy.call(attempt, what="looking at another account")

    def ensure_container(self, container: str) -> None:
        """Create ``container`` unless this process already did."""
        if container in self._containers:
            return
        self.call(lambda conn: conn.put_container(container), "creating a container")
        with self._lock:
            if len(self._containers) > 4096:
                self._containers.clear()
            self._containers.add(container)

    def _new(self) -> Any:
        s = self.settings
        args: dict[str, Any] = {"timeout": s.timeout, "retries": 0, "cacert": s.cacert,
                                "insecure": s.insecure, "ssl_compression": s.ssl_compression}
        os_options: dict[str, Any] = {}
        if self.ref is None:
            args.update(preauthurl=self.storage_url, preauthtoken=self.token)
        else:
            if s.endpoint:
                os_options["object_storage_url"] = s.endpoint
            if self.ref.auth_version == "1":
                args.update(authurl=self.ref.auth_address, user=self.ref.user,
                            key=self.ref.key, auth_version="1")
            else:
                os_options.update(service_type=s.service_type,
                                  endpoint_type=s.endpoint_type.replace("URL", ""),
                                  region_name=s.region)
                with self._lock:
                    if self._session is None:
                        self._session = keystone_session(s, self.ref)
                args["session"] = self._session
        return connection_class()(os_options=os_options, **args)


def keystone_session(settings: Settings, ref: Reference) -> Any:
    """A keystoneauth1 session for a v2/v3 reference (tokens renewed by it)."""
    from keystoneauth1 import session as ksa_session
    from keystoneauth1.identity import v2, v3

    extra = dict(ref.extra)
    user = ref.user or ""
    project = extra.get("project_name")
    if ":" in user:
        project, user = user.split(":", 1)
    plugin: Any
    if ref.auth_version == "2":
        plugin = v2.Password(ref.auth_address, username=user, password=ref.key or "",
                             tenant_name=project, tenant_id=extra.get("project_id"))
    elif "application_credential_id" in extra:
        plugin = v3.ApplicationCredential(
            ref.auth_address,
            application_credential_id=extra["application_credential_id"],
            application_credential_secret=extra.get("application_credential_secret", ""))
    else:
        plugin = v3.Password(
            ref.auth_address, username=user, password=ref.key or "",
            project_name=project if not extra.get("project_id") else None,
            project_id=extra.get("project_id"),
            user_domain_id=extra.get("user_domain_id",
                                     None if "user_domain_name" in extra else "default"),
            user_domain_name=extra.get("user_domain_name"),
            project_domain_id=extra.get("project_domain_id",
                                        None if "project_domain_name" in extra else "default"),
            project_domain_name=extra.get("project_domain_name"))
    plugin.reauthenticate = True
    # Renew tokens this many seconds before they expire.
    plugin.MIN_TOKEN_LIFE_SECONDS = settings.expire_soon
    verify: Any = not settings.insecure
    if verify and settings.cacert:
        verify = settings.cacert
    return ksa_session.Session(auth=plugin, verify=verify, timeout=settings.timeout)


@functools.cache
def connection_class() -> Any:
    """swiftclient's Connection, sending request bodies in 1 MiB blocks."""
    import requests.adapters
    import swiftclient  # type: ignore[import-untyped]

    class BigBlockAdapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["blocksize"] = SEND_BLOCK
            super().init_poolmanager(*args, **kwargs)

    class Connection(swiftclient.Connection):  # type: ignore[misc]
        def http_connection(self, url: str | None = None) -> Any:
            parsed, conn = super().http_connection(url)
            adapter = BigBlockAdapter()
            conn.request_session.mount("http://", adapter)
            conn.request_session.mount("https://", adapter)
            return parsed, conn

    return Connection


def client_exception() -> Any:
    """swiftclient's ClientException (imported late: swiftclient is an extra)."""
    from swiftclient.exceptions import ClientException  # type: ignore[import-untyped]
    return ClientException


def retryable(exc: BaseException) -> bool:
    """Worth another attempt: the connection broke, or Swift answered 5xx
    (never a certificate refused, never a 4xx)."""
    import requests
    import urllib3

    from multistore.retry import connection_trouble

    if connection_trouble(exc) or isinstance(exc, (
            requests.exceptions.ConnectionError, requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError)):
        return not isinstance(exc, requests.exceptions.SSLError)
    status = getattr(exc, "http_status", None)
    return isinstance(exc, client_exception()) and status is not None and status >= 500


def url_from_catalog(catalog: Any, service_type: str, endpoint_type: str,
                     region: str | None) -> str | None:
    """The endpoint of ``service_type`` in a v3 or v2 style service catalog."""
    interface = endpoint_type.replace("URL", "")
    for service in catalog or []:
        if service.get("type") != service_type:
            continue
        for endpoint in service.get("endpoints", []):
            where = endpoint.get("region_id") or endpoint.get("region")
            if region and where != region:
                continue
            if "interface" in endpoint:
                if endpoint["interface"] == interface:
                    return str(endpoint["url"])
            elif endpoint.get(endpoint_type):
                return str(endpoint[endpoint_type])
    return None


def hide_secrets_in_swiftclient_logs() -> None:
    """swiftclient's debug log shows the first 16 characters of tokens and
    keys by default: show none."""
    from swiftclient import client  # type: ignore[import-untyped]

    settings: Callable[..., Any] | dict[str, Any] = client.logger_settings
    if isinstance(settings, dict):
        settings["redact_sensitive_headers"] = True
        settings["reveal_sensitive_prefix"] = 0


__all__ = ["Account", "Reference", "Settings", "read_references", "auth_version",
           "client_exception", "url_from_catalog"]
