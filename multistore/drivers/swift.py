"""Images as objects in OpenStack Swift, with python-swiftclient.

Single-tenant (the default): every image goes to the service's own Swift
account, named by a *reference* in the store's ``swift_store_config_file``
(``default_swift_reference``); locations are
``swift+config://<reference>/<container>/<image id>`` and never hold
credentials. Each store reads its own reference file: two swift stores
never see each other's references. Legacy locations with credentials
(``swift+https://tenant%3Auser:key@auth-host/v3/<container>/<id>``) are
still read; their key is never logged, stored or shown in an error.

Multi-tenant (``swift_store_multi_tenant``): an image goes to the account
of the user adding it, with the user's token, into a container of its own
(``<swift_store_container>_<image id>``). The caller passes a request
context with every call; any object (or mapping) with these attributes:

``auth_token``
    the user's Keystone (or tempauth) token: required.
``storage_url``
    the user's Swift account URL (optional, multistore's own attribute);
    otherwise ``swift_store_endpoint`` (``%(tenant_id)s`` is replaced by
    the project id) or the ``object-store`` entry of ``service_catalog``.
``project_id`` / ``tenant``
    the user's project (for ``swift_store_endpoint`` templates).
``service_catalog``
    Keystone's catalog, v3 (``interface``/``url``) or v2 (``publicURL``)
    endpoint style, as glance's ``RequestContext`` carries it.

Large images: above ``swift_store_large_object_size`` (or of unknown size)
an image is cut into ``swift_store_large_object_chunk_size`` segments that
go to ``<container>_segments``, streamed one after the other
(``swift_store_segment_concurrency = 1``, the default) or copied into
buffers and uploaded several at a time (memory per upload about
(concurrency + 2) x segment size), then a Static Large Object manifest
that lists every segment's etag and size (Swift checks them) is written
with ``If-None-Match: *``, so an image is never silently replaced. A failed upload
removes every segment; deleting the image removes its segments (glance's
Dynamic Large Objects are read and deleted too).

Sizes in ``swift_store_large_object_size`` and ``..._chunk_size`` count in
glance_store's "MB" of 1,024,000 bytes, so a given configuration cuts
images exactly as glance_store did.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import functools
import json
import logging
import queue
import secrets
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from oslo_config import cfg

from multistore import errors
from multistore.driver import Capabilities, Driver, ReadStream, Stored, Writer
from multistore.location import redact

LOG = logging.getLogger(__name__)

ONE_MB = 1000 * 1024          # glance_store's "MB" (units.k * units.Ki)
READ_CHUNK = 1024 * 1024
SCHEMES = ("swift+config", "swift+https", "swift+http", "swift")
MAX_SEGMENTS = 1000           # Swift's default max_manifest_segments
IDLE_CONNECTIONS = 8

OPTIONS = [
    cfg.BoolOpt("swift_store_auth_insecure", default=False,
                help="Do not check the TLS certificate of the auth and Swift servers."),
    cfg.StrOpt("swift_store_cacert", help="CA bundle to check TLS certificates with."),
    cfg.StrOpt("swift_store_region", help="Region of the Swift endpoint in the catalog."),
    cfg.StrOpt("swift_store_endpoint",
               help="Swift storage URL to use instead of the catalog's "
                    "(``https://swift:8080/v1/AUTH_xyz``); in multi-tenant mode "
                    "``%(tenant_id)s`` stands for the user's project id."),
    cfg.StrOpt("swift_store_endpoint_type", default="publicURL",
               choices=("publicURL", "adminURL", "internalURL"),
               help="Catalog endpoint type of the Swift endpoint."),
    cfg.StrOpt("swift_store_service_type", default="object-store",
               help="Catalog service type of Swift."),
    cfg.StrOpt("swift_store_container", default="glance",
               help="Container images go to; the prefix of the containers "
                    "in multi-container and multi-tenant modes."),
    cfg.IntOpt("swift_store_large_object_size", default=5 * 1024, min=1,
               help="Images of this many MB (1,024,000 bytes) or more, or of "
                    "unknown size, are stored as segments plus a manifest."),
    cfg.IntOpt("swift_store_large_object_chunk_size", default=200, min=1,
               help="Segment size, in MB of 1,024,000 bytes."),
    cfg.BoolOpt("swift_store_create_container_on_put", default=False,
                help="Create the container when it does not exist."),
    cfg.BoolOpt("swift_store_multi_tenant", default=False,
                help="Store images in the account of the user adding them, "
                     "one container per image, with the user's token."),
    cfg.IntOpt("swift_store_multiple_containers_seed", default=0, min=0, max=32,
               help="Spread images over 16^N containers named "
                    "``<container>_<first N characters of the image id>``."),
    cfg.ListOpt("swift_store_admin_tenants", default=[],
                help="Projects given write access to every multi-tenant image."),
    cfg.BoolOpt("swift_store_ssl_compression", default=True,
                help="Allow TLS compression (kept for compatibility)."),
    cfg.IntOpt("swift_store_retry_get_count", default=0, min=0,
               help="How many times a broken download resumes where it "
                    "stopped before the read fails."),
    cfg.IntOpt("swift_store_expire_soon_interval", default=60, min=0,
               help="Seconds before a token's expiry at which it is renewed "
                    "(Keystone references)."),
    cfg.BoolOpt("swift_store_use_trusts", default=True,
                help="Kept for compatibility; multistore uses the caller's "
                     "token in multi-tenant mode and creates no trusts."),
    cfg.BoolOpt("swift_buffer_on_upload", default=False,
                help="Kept for compatibility: segments are always held in "
                     "memory so that a failed PUT can be retried."),
    cfg.StrOpt("swift_upload_buffer_dir",
               help="Kept for compatibility (see swift_buffer_on_upload)."),
    cfg.StrOpt("default_swift_reference", default="ref1",
               help="Section of swift_store_config_file holding the account "
                    "new images go to."),
    cfg.StrOpt("swift_store_auth_version", default="3", choices=("1", "2", "3"),
               deprecated_for_removal=True,
               help="Auth version of swift_store_auth_address (1: Swift's "
                    "tempauth/swauth, 2: Keystone v2, 3: Keystone v3)."),
    cfg.StrOpt("swift_store_auth_address", deprecated_for_removal=True,
               help="Auth URL, when no swift_store_config_file is used."),
    cfg.StrOpt("swift_store_user", secret=True, deprecated_for_removal=True,
               help="``project:user``, when no swift_store_config_file is used."),
    cfg.StrOpt("swift_store_key", secret=True, deprecated_for_removal=True,
               help="The user's key, when no swift_store_config_file is used."),
    cfg.StrOpt("swift_store_application_credential_id", secret=True,
               help="Keystone application credential id (instead of user/key)."),
    cfg.StrOpt("swift_store_application_credential_secret", secret=True,
               help="Keystone application credential secret."),
    cfg.StrOpt("swift_store_project_name", deprecated_for_removal=True,
               help="Project name, when no swift_store_config_file is used."),
    cfg.StrOpt("swift_store_project_id", deprecated_for_removal=True,
               help="Project id, when no swift_store_config_file is used."),
    cfg.StrOpt("swift_store_config_file",
               help="File of account references (``[ref1]`` sections with "
                    "auth_address, user, key, auth_version ...); enables "
                    "credential-free ``swift+config://`` locations."),
    # multistore's own
    cfg.IntOpt("swift_store_segment_concurrency", default=1, min=1, max=32,
               help="Segments of one image uploaded at once. 1 streams each "
                    "segment from the caller's data (no segment buffer); more "
                    "copies segments into memory and uploads them in parallel "
                    "(memory per upload up to about (this + 2) x the segment "
                    "size), which pays off only when one stream does not keep "
                    "the Swift cluster busy."),
    cfg.IntOpt("swift_store_timeout", default=60, min=1,
               help="Seconds to wait for the Swift or auth server to answer."),
    cfg.IntOpt("swift_store_retries", default=2, min=0,
               help="Retries of a failed request (connection errors, 5xx) "
                    "with a short backoff; streamed uploads are not retried."),
    cfg.StrOpt("swift_store_acl_style", default="keystone",
               choices=("keystone", "tempauth"),
               help="How set_acls writes container ACLs: ``keystone`` "
                    "(``*:*``, ``<project>:*``, Swift's keystoneauth) or "
                    "``tempauth`` (``.r:*``, ``<account>``)."),
]

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


def read_references(path: str, store_id: str) -> dict[str, Reference]:
    """Parse a glance ``swift_store_config_file`` (quotes around values stripped)."""
    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as exc:
        raise errors.ConfigError(f"cannot read {path}: {exc}", store=store_id,
                                 option="swift_store_config_file") from exc
    refs = {}
    for name in parser.sections():
        values = {k: v.strip().strip("'\"") for k, v in parser.items(name)}
        auth = values.get("auth_address")
        if not auth:
            raise errors.ConfigError(f"{path}: reference [{name}] has no auth_address",
                                     store=store_id, option="swift_store_config_file")
        refs[name] = Reference(
            name, auth, values.get("user"), values.get("key"),
            _auth_version(values.get("auth_version", "3"), store_id),
            {k: values[k] for k in _REF_OPTIONAL if values.get(k)})
    return refs


def _auth_version(value: str, store_id: str) -> str:
    version = str(value).strip().lower().lstrip("v")
    for short in ("1", "2", "3"):
        if version == short or version.startswith(short + "."):
            return short
    raise errors.ConfigError(f"unknown auth_version {value!r}", store=store_id,
                             option="swift_store_config_file")


def context_value(context: Any, *names: str) -> Any:
    """The first of ``names`` set on ``context`` (an object or a mapping)."""
    for name in names:
        value = context.get(name) if isinstance(context, Mapping) else getattr(context, name, None)
        if value:
            return value
    return None


@dataclasses.dataclass(frozen=True)
class _Loc:
    """A parsed location. ``account`` is a reference name (config), a
    Reference built from the URL (legacy) or a storage URL (tenant)."""

    kind: str          # "config" | "legacy" | "tenant"
    account: Any
    container: str
    obj: str


class SwiftDriver(Driver):
    schemes = SCHEMES
    capabilities = Capabilities(read=True, ranged_read=True, write=True, delete=True)
    options = OPTIONS

    # -- configuration -----------------------------------------------------

    def configure(self) -> None:
        c = self.conf
        self.container = c.swift_store_container
        self.multi_tenant = c.swift_store_multi_tenant
        self.seed = c.swift_store_multiple_containers_seed
        self.large_size = c.swift_store_large_object_size * ONE_MB
        self.segment_size = c.swift_store_large_object_chunk_size * ONE_MB
        self.concurrency = c.swift_store_segment_concurrency
        self.create_container = c.swift_store_create_container_on_put
        self.retry_get_count = c.swift_store_retry_get_count
        self.admin_tenants = list(c.swift_store_admin_tenants or [])
        self.acl_style = c.swift_store_acl_style
        self.endpoint = c.swift_store_endpoint
        self.endpoint_type = c.swift_store_endpoint_type
        self.service_type = c.swift_store_service_type
        self.region = c.swift_store_region
        self.connection_args = {
            "timeout": c.swift_store_timeout, "retries": c.swift_store_retries,
            "starting_backoff": 0.5, "max_backoff": 2,
            "cacert": c.swift_store_cacert, "insecure": c.swift_store_auth_insecure,
            "ssl_compression": c.swift_store_ssl_compression,
        }
        self.default_ref = c.default_swift_reference
        if self.multi_tenant and c.swift_store_config_file:
            raise errors.ConfigError("multi-tenant stores use the caller's token: "
                                     "swift_store_config_file cannot be set with "
                                     "swift_store_multi_tenant",
                                     option="swift_store_config_file")
        if c.swift_store_config_file:
            self.refs = read_references(c.swift_store_config_file, self.store_id)
        else:
            self.refs = self._refs_from_options()
        if not self.multi_tenant:
            ref = self.refs.get(self.default_ref)
            if ref is None:
                raise errors.ConfigError(
                    f"reference {self.default_ref!r} is not defined"
                    + (f" in {c.swift_store_config_file}" if c.swift_store_config_file
                       else " (set swift_store_config_file, or swift_store_auth_address,"
                            " swift_store_user and swift_store_key)"),
                    option="default_swift_reference")
            if not (ref.user and ref.key) and "application_credential_id" not in ref.extra:
                raise errors.ConfigError(f"reference {ref.name!r} needs user and key "
                                         "(or an application credential)",
                                         option="swift_store_config_file")
        self._accounts: dict[str, _Account] = {}
        self._lock = threading.Lock()
        self._known_containers: set[tuple[str, str]] = set()
        _hide_secrets_in_swiftclient_logs()

    def _refs_from_options(self) -> dict[str, Reference]:
        c = self.conf
        if not c.swift_store_auth_address:
            return {}
        extra = {}
        if c.swift_store_application_credential_id:
            extra["application_credential_id"] = c.swift_store_application_credential_id
            extra["application_credential_secret"] = (
                c.swift_store_application_credential_secret or "")
        if c.swift_store_project_name:
            extra["project_name"] = c.swift_store_project_name
        if c.swift_store_project_id:
            extra["project_id"] = c.swift_store_project_id
        ref = Reference(self.default_ref, c.swift_store_auth_address, c.swift_store_user,
                        c.swift_store_key, _auth_version(c.swift_store_auth_version,
                                                         self.store_id), extra)
        return {ref.name: ref}

    def close(self) -> None:
        with self._lock:
            accounts, self._accounts = list(self._accounts.values()), {}
        for account in accounts:
            account.close()

    def properties(self) -> dict[str, Any]:
        return {"container": self.container, "multi_tenant": self.multi_tenant,
                "default_reference": None if self.multi_tenant else self.default_ref,
                "references": sorted(self.refs),
                "large_object_size": self.large_size, "segment_size": self.segment_size,
                "segment_concurrency": self.concurrency}

    # -- accounts and connections ---------------------------------------

    def _account_for_ref(self, ref: Reference) -> _Account:
        key = f"ref:{ref.name}" if self.refs.get(ref.name) is ref else \
            f"legacy:{ref.auth_address}:{ref.user}:{id(ref)}"
        with self._lock:
            account = self._accounts.get(key)
            if account is None:
                account = _Account(self, ref)
                if key.startswith("ref:"):
                    self._accounts[key] = account
        return account

    def _account(self, loc: _Loc, context: Any, operation: str) -> _Account:
        if loc.kind == "tenant":
            return _Account(self, None, storage_url=loc.account,
                            token=self._context_token(context, operation))
        if loc.kind == "legacy":
            return self._account_for_ref(loc.account)
        ref = self.refs.get(loc.account)
        if ref is None:
            raise errors.BadLocation(f"reference {loc.account!r} is not defined for "
                                     "this store", store=self.store_id,
                                     operation=operation)
        return self._account_for_ref(ref)

    def _context_token(self, context: Any, operation: str) -> str:
        token = context_value(context, "auth_token", "token") if context else None
        if not token:
            raise errors.WriteDenied("a multi-tenant swift store needs the caller's "
                                     "request context (with auth_token)",
                                     store=self.store_id, operation=operation)
        return str(token)

    def _tenant_storage_url(self, context: Any) -> str:
        url = context_value(context, "storage_url")
        if url:
            return str(url).rstrip("/")
        project = context_value(context, "project_id", "tenant", "project_name") or ""
        if self.endpoint:
            return self.endpoint.replace("%(tenant_id)s", str(project)).rstrip("/")
        catalog = context_value(context, "service_catalog") or []
        url = _url_from_catalog(catalog, self.service_type, self.endpoint_type, self.region)
        if not url:
            raise errors.ConfigError(
                f"no {self.service_type!r} endpoint in the request's service catalog "
                "(set swift_store_endpoint or pass storage_url in the context)",
                store=self.store_id, operation="add", option="swift_store_endpoint")
        return url.rstrip("/")

    # -- locations ---------------------------------------------------------

    def container_for(self, image_id: str) -> str:
        """glance_store's container naming (multi-container seed, multi-tenant)."""
        if self.multi_tenant:
            return f"{self.container}_{image_id}"
        if self.seed:
            lowered = image_id.lower()
            count = self.seed + lowered[:self.seed].count("-")
            return f"{self.container}_{lowered[:count]}"
        return self.container

    def _container_ok(self, container: str, obj: str) -> bool:
        if self.multi_tenant:
            return container == f"{self.container}_{obj}"
        if self.seed:
            return container == self.container_for(obj)
        return container == self.container

    def parse(self, location: str) -> _Loc:
        """Split a location; BadLocation unless it is one of this store's."""
        scheme, sep, rest = location.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in SCHEMES or "://" in rest or "?" in rest or "#" in rest:
            raise self._bad(location)
        if scheme == "swift+config":
            if self.multi_tenant:
                raise self._bad(location)
            parts = rest.split("/")
            if len(parts) != 3 or not all(parts):
                raise self._bad(location)
            ref, container, obj = (urllib.parse.unquote(p) for p in parts)
            if ref not in self.refs or not self._container_ok(container, obj):
                raise self._bad(location)
            return _Loc("config", ref, container, obj)
        at = rest.rfind("@")
        http = "http" if scheme == "swift+http" else "https"
        if at >= 0:
            return self._parse_legacy(location, http, rest[:at], rest[at + 1:])
        if not self.multi_tenant:
            raise self._bad(location)
        path, _, obj = rest.rpartition("/")
        base, _, container = path.rpartition("/")
        if not (base and obj and container) or not self._container_ok(container, obj):
            raise self._bad(location)
        return _Loc("tenant", f"{http}://{base}", container, obj)

    def _parse_legacy(self, location: str, http: str, creds: str, where: str) -> _Loc:
        if self.multi_tenant:
            raise self._bad(location)
        user, sep, key = creds.rpartition(":")
        auth, _, obj = where.rpartition("/")
        auth, _, container = auth.rpartition("/")
        if not (sep and user and key and auth and container and obj):
            raise self._bad(location)
        if not self._container_ok(container, obj):
            raise self._bad(location)
        user = urllib.parse.unquote(user)
        key = urllib.parse.unquote(key)
        auth = auth.rstrip("/")
        # Ours when one of our references names this auth address and user.
        match = next((r for r in self.refs.values()
                      if r.auth_key == auth and r.user == user), None)
        if match is None:
            raise self._bad(location)
        version = match.auth_version
        ref = Reference(match.name, f"{http}://{auth}", user, key, version, match.extra)
        return _Loc("legacy", ref, container, obj)

    def _bad(self, location: str) -> errors.BadLocation:
        return errors.BadLocation(f"not a location of this swift store: {redact(location)!r}",
                                  store=self.store_id)

    def owns(self, location: str) -> bool:
        try:
            self.parse(location)
        except errors.BadLocation:
            return False
        return True

    def image_id(self, location: str) -> str:
        return self.parse(location).obj

    # -- writing -------------------------------------------------------------

    def open_writer(self, image_id: str, size: int | None, context: Any = None) -> Writer:
        container = self.container_for(image_id)
        if self.multi_tenant:
            storage_url = self._tenant_storage_url(context)
            loc = _Loc("tenant", storage_url, container, image_id)
            http, _, base = storage_url.partition("://")
            location = f"swift+{http}://{base}/{container}/{image_id}"
        else:
            loc = _Loc("config", self.default_ref, container, image_id)
            location = f"swift+config://{self.default_ref}/{container}/{image_id}"
        account = self._account(loc, context, "add")
        with account.connection("add") as conn:
            try:
                conn.head_object(container, image_id)
            except _client_exception() as exc:
                if exc.http_status != 404:
                    raise self._error(exc, "add", location) from None
            else:
                raise errors.Duplicate(f"image {image_id!r} already exists in container "
                                       f"{container!r}", store=self.store_id,
                                       operation="add")
            if self.create_container or self.multi_tenant:
                self._ensure_container(conn, account, container, location)
        if size is not None and size < self.large_size:
            return _StreamWriter(self, account, loc, location, size)
        if self.concurrency == 1:
            return _StreamSegmentWriter(self, account, loc, location, size)
        return _SegmentWriter(self, account, loc, location)

    def _ensure_container(self, conn: Any, account: _Account, container: str,
                          location: str, headers: Mapping[str, str] | None = None) -> None:
        key = (account.identity, container)
        if key in self._known_containers and headers is None:
            return
        try:
            conn.put_container(container, headers=dict(headers or {}))
        except _client_exception() as exc:
            raise self._error(exc, "add", location) from None
        with self._lock:
            if len(self._known_containers) > 4096:
                self._known_containers.clear()
            self._known_containers.add(key)

    # -- reading -------------------------------------------------------------

    def open_reader(self, location: str, offset: int, length: int | None,
                    context: Any = None) -> ReadStream:
        loc = self.parse(location)
        account = self._account(loc, context, "get")
        if length == 0:
            self.get_size(location, context)
            return ReadStream(iter(()), 0)
        return _Download(self, account, loc, location, offset, length).open()

    def get_size(self, location: str, context: Any = None) -> int:
        loc = self.parse(location)
        account = self._account(loc, context, "get_size")
        with account.connection("get_size") as conn:
            try:
                headers = conn.head_object(loc.container, loc.obj)
            except _client_exception() as exc:
                raise self._error(exc, "get_size", location) from None
        return int(headers.get("content-length", 0))

    # -- deleting ------------------------------------------------------------

    def delete(self, location: str, context: Any = None) -> None:
        loc = self.parse(location)
        account = self._account(loc, context, "delete")
        with account.connection("delete") as conn:
            try:
                headers = conn.head_object(loc.container, loc.obj,
                                           query_string="multipart-manifest=get")
                if headers.get("x-static-large-object", "").lower() == "true":
                    self._delete_slo(account, conn, loc)
                elif headers.get("x-object-manifest"):
                    self._delete_dlo(account, conn, loc, headers["x-object-manifest"])
                else:
                    conn.delete_object(loc.container, loc.obj)
            except _client_exception() as exc:
                raise self._error(exc, "delete", location) from None
            if loc.kind == "tenant":
                for container in (loc.container, loc.container + "_segments"):
                    with contextlib.suppress(_client_exception()):
                        conn.delete_container(container)

    def _delete_slo(self, account: _Account, conn: Any, loc: _Loc) -> None:
        _, body = conn.get_object(loc.container, loc.obj,
                                  query_string="multipart-manifest=get")
        segments = [s["name"] for s in json.loads(body)]
        # The manifest goes first: once it is gone no reader sees a partial image.
        conn.delete_object(loc.container, loc.obj)
        self._delete_segments(account, segments)

    def _delete_dlo(self, account: _Account, conn: Any, loc: _Loc, manifest: str) -> None:
        container, _, prefix = urllib.parse.unquote(manifest).partition("/")
        listing = conn.get_container(container, prefix=prefix, full_listing=True)[1]
        conn.delete_object(loc.container, loc.obj)
        self._delete_segments(account, [f"/{container}/{o['name']}" for o in listing])

    def _delete_segments(self, account: _Account, paths: Sequence[str]) -> None:
        """Delete ``/container/object`` paths, several at once; missing ones are fine."""
        def delete_one(path: str) -> None:
            container, _, obj = path.lstrip("/").partition("/")
            with account.connection("delete") as conn:
                try:
                    conn.delete_object(urllib.parse.unquote(container),
                                       urllib.parse.unquote(obj))
                except _client_exception() as exc:
                    if exc.http_status != 404:
                        raise
        if not paths:
            return
        with ThreadPoolExecutor(min(self.concurrency + 1, len(paths))) as pool:
            for future in [pool.submit(delete_one, p) for p in paths]:
                future.result()

    # -- access control (multi-tenant) -------------------------------------

    def set_acls(self, location: str, public: bool = False,
                 read_tenants: Sequence[str] = (), write_tenants: Sequence[str] = (),
                 context: Any = None) -> None:
        """Who may read and write the image's container(s) (multi-tenant only)."""
        loc = self.parse(location)
        if loc.kind != "tenant":
            raise errors.NotSupported("images of a single-tenant swift store all live "
                                      "in the service's account: no per-image ACLs",
                                      store=self.store_id, operation="set_acls")
        writers = list(dict.fromkeys([*write_tenants, *self.admin_tenants]))
        if self.acl_style == "tempauth":
            read = ".r:*,.rlistings" if public else ",".join(read_tenants)
            write = ",".join(writers)
        else:
            read = "*:*" if public else ",".join(f"{t}:*" for t in read_tenants)
            write = ",".join(f"{t}:*" for t in writers)
        headers = {"X-Container-Read": read, "X-Container-Write": write}
        account = self._account(loc, context, "set_acls")
        with account.connection("set_acls") as conn:
            try:
                conn.post_container(loc.container, headers)
                with contextlib.suppress(_client_exception()):
                    conn.post_container(loc.container + "_segments", headers)
            except _client_exception() as exc:
                raise self._error(exc, "set_acls", location) from None

    # -- errors --------------------------------------------------------------

    def _error(self, exc: Any, operation: str, location: str) -> errors.MultistoreError:
        status = getattr(exc, "http_status", None)
        where = redact(location)
        reason = getattr(exc, "http_reason", "") or ""
        if status == 404:
            return errors.NotFound(f"no image at {where}", store=self.store_id,
                                   operation=operation)
        if status in (409, 412):
            return errors.Duplicate(f"an image already exists at {where}",
                                    store=self.store_id, operation=operation)
        if status in (401, 403):
            return errors.WriteDenied(f"swift refused access to {where} ({status} {reason})",
                                      store=self.store_id, operation=operation)
        if status in (413, 507):
            return errors.StorageFull(f"swift has no room for {where} ({status} {reason})",
                                      store=self.store_id, operation=operation)
        if status is None or status >= 500:
            return errors.BackendUnavailable(
                f"swift did not answer for {where}: {_describe(exc)}",
                store=self.store_id, operation=operation)
        return errors.MultistoreError(f"swift answered {status} {reason} for {where}",
                                      store=self.store_id, operation=operation)


# -- accounts ----------------------------------------------------------------

class _Account:
    """How to reach one Swift account: a reference's credentials, or a storage
    URL with a caller's token. Hands out swiftclient Connections, one thread
    at a time each; idle ones are kept for reuse (their token too)."""

    def __init__(self, driver: SwiftDriver, ref: Reference | None, *,
                 storage_url: str | None = None, token: str | None = None) -> None:
        self.driver = driver
        self.ref = ref
        self.storage_url = storage_url
        self.token = token
        self.identity = storage_url or (f"{ref.auth_address}#{ref.user}" if ref else "")
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._session: Any = None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @contextlib.contextmanager
    def connection(self, operation: str) -> Iterator[Any]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._new(operation)
        ok = False
        try:
            yield conn
            ok = True
        except errors.MultistoreError:
            raise
        except _client_exception():
            ok = True   # an HTTP answer: the connection is fine
            raise
        except Exception as exc:
            raise errors.BackendUnavailable(
                f"swift could not be reached: {_describe(exc)}",
                store=self.driver.store_id, operation=operation) from exc
        finally:
            self.release(conn, ok)

    def release(self, conn: Any, reusable: bool) -> None:
        if reusable:
            with self._lock:
                if len(self._idle) < IDLE_CONNECTIONS:
                    self._idle.append(conn)
                    return
        conn.close()

    def take(self, operation: str) -> Any:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        return conn if conn is not None else self._new(operation)

    def _new(self, operation: str) -> Any:
        d = self.driver
        args: dict[str, Any] = dict(d.connection_args)
        os_options: dict[str, Any] = {}
        if self.ref is None:
            args.update(preauthurl=self.storage_url, preauthtoken=self.token)
        else:
            if d.endpoint:
                os_options["object_storage_url"] = d.endpoint
            if self.ref.auth_version == "1":
                args.update(authurl=self.ref.auth_address, user=self.ref.user,
                            key=self.ref.key, auth_version="1")
            else:
                os_options.update(service_type=d.service_type,
                                  endpoint_type=d.endpoint_type.replace("URL", ""),
                                  region_name=d.region)
                args["session"] = self._keystone_session(operation)
        return _connection_class()(os_options=os_options, **args)

    def _keystone_session(self, operation: str) -> Any:
        with self._lock:
            if self._session is None:
                self._session = _keystone_session(self.driver, self.ref)  # type: ignore[arg-type]
            return self._session


def _keystone_session(driver: SwiftDriver, ref: Reference) -> Any:
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
    args = driver.connection_args
    verify: Any = not args["insecure"]
    if verify and args["cacert"]:
        verify = args["cacert"]
    session = ksa_session.Session(auth=plugin, verify=verify, timeout=args["timeout"])
    # Renew tokens this many seconds before they expire.
    plugin.MIN_TOKEN_LIFE_SECONDS = driver.conf.swift_store_expire_soon_interval
    return session


# -- writers -------------------------------------------------------------------

class _WriterBase(Writer):
    def __init__(self, driver: SwiftDriver, account: _Account, loc: _Loc,
                 location: str) -> None:
        self.driver = driver
        self.account = account
        self.loc = loc
        self.location = location
        self.object_written = False

    def _put(self, conn: Any, contents: Any, length: int | None,
             query: str | None = None) -> str:
        etag = self._put_raw(conn, self.loc.container, self.loc.obj, contents, length,
                             True, query)
        self.object_written = True
        return etag

    def _put_raw(self, conn: Any, container: str, obj: str, contents: Any,
                 length: int | None, if_none_match: bool, query: str | None = None) -> str:
        """PUT, with ``If-None-Match: *`` for the image itself (never replaced)."""
        headers = {"If-None-Match": "*"} if if_none_match else {}
        try:
            etag = conn.put_object(container, obj, contents, content_length=length,
                                   query_string=query, headers=headers,
                                   chunk_size=READ_CHUNK if hasattr(contents, "read") else None)
        except _client_exception() as exc:
            if exc.http_status == 404:
                raise errors.WriteDenied(
                    f"container {container!r} does not exist (create it, or set "
                    "swift_store_create_container_on_put)", store=self.driver.store_id,
                    operation="add") from None
            raise self.driver._error(exc, "add", self.location) from None
        return str(etag)

    def _remove_object(self) -> None:
        if not self.object_written:
            return
        with self.account.connection("add") as conn:
            try:
                conn.delete_object(self.loc.container, self.loc.obj,
                                   query_string="multipart-manifest=delete")
            except _client_exception() as exc:
                if exc.http_status != 404:
                    raise
        self.object_written = False


class _Pipe:
    """A file-like that swiftclient reads a streamed PUT body from."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.pending = memoryview(b"")
        self.pos = 0

    def read(self, size: int = -1) -> bytes:
        while not self.pending:
            item = self.queue.get()
            if item is None:
                self.queue.put(None)
                return b""
            if isinstance(item, BaseException):
                self.queue.put(item)
                raise item
            self.pending = memoryview(item)
        n = len(self.pending) if size is None or size < 0 else size
        out = self.pending[:n]          # a view: sent as it is, not copied
        self.pending = self.pending[len(out):]
        self.pos += len(out)
        return out  # type: ignore[return-value]

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos != self.pos:
            raise OSError("a streamed upload cannot be rewound")
        return self.pos


class _StreamedPut:
    """One PUT whose body is streamed from the caller's writes, in a thread.

    ``length`` None sends the body chunked (Swift takes that for objects of
    unknown size). The body cannot be replayed: no retries.
    """

    def __init__(self, writer: _WriterBase, container: str, obj: str,
                 length: int | None, if_none_match: bool) -> None:
        self.writer = writer
        self.pipe = _Pipe()
        self.length = length
        self.sent = 0
        self.result: Future[str] = Future()
        self.conn: Any = writer.account.take("add")
        self.conn.retries = 0
        self.thread = threading.Thread(
            target=self._run, args=(container, obj, if_none_match), daemon=True,
            name=f"swift-put-{obj}")
        self.thread.start()

    def _run(self, container: str, obj: str, if_none_match: bool) -> None:
        try:
            self.result.set_result(self.writer._put_raw(
                self.conn, container, obj, self.pipe, self.length, if_none_match))
        except BaseException as exc:  # noqa: BLE001 - handed to the core's thread
            self.result.set_exception(exc)

    def send(self, item: Any) -> None:
        while True:
            if self.result.done():
                self.result.result()       # raises the PUT's error
                raise errors.MultistoreError("swift ended the upload early",
                                             store=self.writer.driver.store_id,
                                             operation="add")
            try:
                self.pipe.queue.put(item, timeout=0.2)
            except queue.Full:
                continue
            if item is not None:
                self.sent += len(item)
            return

    def finish(self) -> str:
        """End the body; wait for Swift's answer; the etag."""
        self.send(None)
        return self.wait()

    def wait(self) -> str:
        try:
            etag = self.result.result()
        except errors.MultistoreError:
            self.close(False)
            raise
        except Exception as exc:
            self.close(False)
            raise errors.BackendUnavailable(
                f"uploading to swift failed: {_describe(exc)}",
                store=self.writer.driver.store_id, operation="add") from exc
        self.close(True)
        return etag

    def close(self, reusable: bool) -> None:
        if self.conn is None:
            return
        if not self.result.done():
            with contextlib.suppress(queue.Full):
                self.pipe.queue.put_nowait(_Aborted("upload aborted"))
            self.conn.close()          # breaks a PUT waiting on the network
        self.thread.join(timeout=self.writer.driver.connection_args["timeout"])
        self.pipe = _Pipe()            # drop any bytes still held
        conn, self.conn = self.conn, None
        if reusable:
            conn.retries = self.writer.driver.connection_args["retries"]
            self.writer.account.release(conn, True)
        else:
            conn.close()

    def landed(self) -> bool:
        return self.result.done() and self.result.exception() is None


class _StreamWriter(_WriterBase):
    """Below the large-object size: one PUT, streamed while the core writes."""

    def __init__(self, driver: SwiftDriver, account: _Account, loc: _Loc,
                 location: str, size: int) -> None:
        super().__init__(driver, account, loc, location)
        self.put: _StreamedPut | None = _StreamedPut(self, loc.container, loc.obj, size, True)

    def write(self, data: memoryview) -> None:
        assert self.put is not None
        self.put.send(bytes(data))

    def commit(self) -> Stored:
        assert self.put is not None
        self.put.finish()
        self.object_written = True
        self.put = None
        return Stored(self.location)

    def abort(self) -> None:
        if self.put is not None:
            self.put.close(False)
            if self.put.landed():
                self.object_written = True
            self.put = None
        self._remove_object()


class _StreamSegmentWriter(_WriterBase):
    """Large or unknown size, ``swift_store_segment_concurrency = 1``: each
    segment is streamed to Swift as the core writes (no segment buffer, no
    retry), the next one starting while the previous one is acknowledged;
    then an SLO manifest. Memory: the core's buffers and two chunks."""

    def __init__(self, driver: SwiftDriver, account: _Account, loc: _Loc,
                 location: str, size: int | None) -> None:
        super().__init__(driver, account, loc, location)
        self.seg_container = loc.container + "_segments"
        self.prefix = f"{loc.obj}/{secrets.token_hex(4)}/"
        self.left = size
        self.current: _StreamedPut | None = None
        self.previous: _StreamedPut | None = None
        self.segments: list[tuple[str, _StreamedPut]] = []
        self.done: list[tuple[str, str, int]] = []
        self.container_ready = False

    def _start(self) -> _StreamedPut:
        if len(self.segments) >= MAX_SEGMENTS:
            raise errors.StorageFull(
                f"the image needs more than {MAX_SEGMENTS} segments: raise "
                "swift_store_large_object_chunk_size", store=self.driver.store_id,
                operation="add")
        if not self.container_ready:
            with self.account.connection("add") as conn:
                self.driver._ensure_container(conn, self.account, self.seg_container,
                                              self.location)
            self.container_ready = True
        size = self.driver.segment_size
        length = None if self.left is None else min(size, self.left)
        name = f"{self.prefix}{len(self.segments):08d}"
        put = _StreamedPut(self, self.seg_container, name, length, False)
        self.segments.append((name, put))
        # The previous segment is acknowledged (Swift syncs it) while this
        # one already receives data.
        self._settle_previous()
        return put

    def _settle_previous(self) -> None:
        if self.previous is not None:
            name = self.segments[len(self.done)][0]
            self.done.append((name, self.previous.wait(), self.previous.sent))
            self.previous = None

    def write(self, data: memoryview) -> None:
        view = data.cast("B") if data.format != "B" else data
        while view:
            if self.current is None:
                self.current = self._start()
            room = self.driver.segment_size - self.current.sent
            piece = bytes(view[:room])
            view = view[len(piece):]
            self.current.send(piece)
            if self.left is not None:
                self.left -= len(piece)
            if self.current.sent >= self.driver.segment_size:
                self.current.send(None)      # end of this segment's body
                self.previous, self.current = self.current, None

    def commit(self) -> Stored:
        if self.current is not None:
            self.current.send(None)
            self._settle_previous()
            self.previous, self.current = self.current, None
        self._settle_previous()
        if not self.done:
            with self.account.connection("add") as conn:
                self._put(conn, b"", 0)
            return Stored(self.location)
        manifest = [{"path": f"/{self.seg_container}/{name}", "etag": etag,
                     "size_bytes": size} for name, etag, size in self.done]
        with self.account.connection("add") as conn:
            self._put(conn, json.dumps(manifest).encode(), None,
                      query="multipart-manifest=put")
        return Stored(self.location)

    def abort(self) -> None:
        for _, put in self.segments:
            put.close(False)
        self._remove_object()
        names = [f"/{self.seg_container}/{name}" for name, _ in self.segments]
        self.driver._delete_segments(self.account, names)
        self.segments.clear()


class _Aborted(Exception):
    pass


class _SegmentWriter(_WriterBase):
    """Large or unknown size: segments several at a time, then an SLO manifest."""

    def __init__(self, driver: SwiftDriver, account: _Account, loc: _Loc,
                 location: str) -> None:
        super().__init__(driver, account, loc, location)
        self.seg_container = loc.container + "_segments"
        self.prefix = f"{loc.obj}/{secrets.token_hex(4)}/"
        self.buffer = bytearray(driver.segment_size)
        self.filled = 0
        self.index = 0
        self.segments: dict[int, tuple[str, str, int]] = {}   # index -> name, etag, size
        self.futures: list[Future[None]] = []
        self.slots = threading.BoundedSemaphore(driver.concurrency)
        self.pool: ThreadPoolExecutor | None = None
        self.failed: BaseException | None = None
        self.lock = threading.Lock()

    def write(self, data: memoryview) -> None:
        view = data.cast("B") if data.format != "B" else data
        size = len(self.buffer)
        while view:
            n = min(size - self.filled, len(view))
            self.buffer[self.filled:self.filled + n] = view[:n]
            self.filled += n
            view = view[n:]
            if self.filled == size:
                self._submit()

    def _check(self) -> None:
        if self.failed is not None:
            raise self.failed

    def _submit(self) -> None:
        self._check()
        if self.index >= MAX_SEGMENTS:
            raise errors.StorageFull(
                f"the image needs more than {MAX_SEGMENTS} segments: raise "
                "swift_store_large_object_chunk_size", store=self.driver.store_id,
                operation="add")
        if self.pool is None:
            with self.account.connection("add") as conn:
                self.driver._ensure_container(conn, self.account, self.seg_container,
                                              self.location)
            self.pool = ThreadPoolExecutor(self.driver.concurrency,
                                           thread_name_prefix="swift-segment")
        # Wait for a free upload slot before copying: at most ``concurrency``
        # segment copies exist besides the buffer being filled.
        while not self.slots.acquire(timeout=0.2):
            self._check()
        body = bytes(memoryview(self.buffer)[:self.filled])
        self.filled = 0
        index, self.index = self.index, self.index + 1
        try:
            self.futures.append(self.pool.submit(self._upload, index, body))
        except BaseException:
            self.slots.release()
            raise

    def _upload(self, index: int, body: bytes) -> None:
        name = f"{self.prefix}{index:08d}"
        try:
            if self.failed is not None:
                return
            with self.account.connection("add") as conn:
                try:
                    etag = conn.put_object(self.seg_container, name, body,
                                           content_length=len(body))
                except _client_exception() as exc:
                    raise self.driver._error(exc, "add", self.location) from None
            with self.lock:
                self.segments[index] = (name, str(etag), len(body))
        except BaseException as exc:
            with self.lock:
                if self.failed is None:
                    self.failed = exc
                # The PUT may have landed even if its answer was lost.
                self.segments.setdefault(index, (name, "", len(body)))
            raise
        finally:
            self.slots.release()

    def commit(self) -> Stored:
        if self.index == 0:
            # Everything fits one segment: a plain object, no manifest.
            with self.account.connection("add") as conn:
                self._put(conn, bytes(memoryview(self.buffer)[:self.filled]), self.filled)
            self.buffer = bytearray()
            return Stored(self.location)
        if self.filled:
            self._submit()
        self.buffer = bytearray()
        wait(self.futures)
        self._check()
        manifest = [{"path": f"/{self.seg_container}/{self.segments[i][0]}",
                     "etag": self.segments[i][1], "size_bytes": self.segments[i][2]}
                    for i in range(self.index)]
        with self.account.connection("add") as conn:
            self._put(conn, json.dumps(manifest).encode(), None,
                      query="multipart-manifest=put")
        self._shutdown()
        return Stored(self.location)

    def _shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    def abort(self) -> None:
        self.buffer = bytearray()
        with self.lock:
            if self.failed is None:
                self.failed = _Aborted("upload aborted")
        for future in self.futures:
            future.cancel()
        wait(self.futures)
        self._shutdown()
        self._remove_object()
        names = [f"/{self.seg_container}/{name}" for name, _, _ in self.segments.values()]
        self.driver._delete_segments(self.account, names)
        self.segments.clear()


# -- reading -------------------------------------------------------------------

class _Download:
    """One GET (whole or ranged) that resumes where it broke, up to
    ``swift_store_retry_get_count`` times, and checks it got every byte."""

    def __init__(self, driver: SwiftDriver, account: _Account, loc: _Loc, location: str,
                 offset: int, length: int | None) -> None:
        self.driver = driver
        self.account = account
        self.loc = loc
        self.location = location
        self.offset = offset
        self.length = length
        self.conn: Any = None
        self.etag: str | None = None

    def _get(self, start: int, end: int | None) -> tuple[dict[str, str], Any]:
        headers = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        if self.etag:
            headers["If-Match"] = self.etag
        if self.conn is None:
            self.conn = self.account.take("get")
            # swiftclient would resume a broken body on its own, as many times
            # as it retries requests: resumes are swift_store_retry_get_count's.
            self.conn.retries = 0
        try:
            return self.conn.get_object(self.loc.container, self.loc.obj,  # type: ignore[no-any-return]
                                        resp_chunk_size=READ_CHUNK, headers=headers)
        except _client_exception() as exc:
            raise self.driver._error(exc, "get", self.location) from None
        except Exception as exc:
            self._drop()
            raise errors.BackendUnavailable(f"swift could not be reached: {_describe(exc)}",
                                            store=self.driver.store_id,
                                            operation="get") from exc

    def open(self) -> ReadStream:
        end = None if self.length is None else self.offset + self.length - 1
        try:
            headers, body = self._get(self.offset, end)
        except errors.MultistoreError as exc:
            if getattr(exc.__cause__, "http_status", None) != 416 and "416" not in str(exc):
                self._release(False)
                raise
            # The range starts at or past the end: nothing to read.
            self._release(True)
            self.driver.get_size(self.location)
            return ReadStream(iter(()), 0)
        except BaseException:
            self._release(False)
            raise
        self.etag = headers.get("etag")
        if headers.get("x-static-large-object") or headers.get("x-object-manifest"):
            self.etag = None   # a manifest's etag is not one a ranged GET can match
        size = int(headers.get("content-length", 0))
        return ReadStream(self._chunks(body, size), size, self._close)

    def _chunks(self, body: Any, size: int) -> Iterator[bytes]:
        got = 0
        retries = self.driver.retry_get_count
        while True:
            try:
                for chunk in body:
                    got += len(chunk)
                    yield chunk
                if got >= size:
                    return
                raise errors.SizeMismatch(f"swift sent {got} of {size} bytes",
                                          store=self.driver.store_id, operation="get")
            except GeneratorExit:
                raise
            except Exception as exc:
                if retries <= 0:
                    self._drop()
                    if isinstance(exc, errors.MultistoreError):
                        raise
                    raise errors.BackendUnavailable(
                        f"reading from swift failed after {got} of {size} bytes: "
                        f"{_describe(exc)}", store=self.driver.store_id,
                        operation="get") from exc
                retries -= 1
                LOG.warning("store %s: download of %s broke after %d of %d bytes (%s); "
                            "resuming", self.driver.store_id, redact(self.location), got,
                            size, _describe(exc))
                self._drop()
                _, body = self._get(self.offset + got, self.offset + size - 1)

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _release(self, reusable: bool) -> None:
        if self.conn is not None:
            self.conn.retries = self.driver.connection_args["retries"]
            self.account.release(self.conn, reusable)
            self.conn = None

    def _close(self) -> None:
        self._drop()


# -- helpers -------------------------------------------------------------------

@functools.cache
def _connection_class() -> Any:
    """swiftclient's Connection, sending request bodies in 1 MiB blocks
    (urllib3's default is 16 KiB: one GIL round trip per 16 KiB, which with
    the core's hashing threads running costs a quarter of the throughput)."""
    import requests.adapters
    import swiftclient  # type: ignore[import-untyped]

    class BigBlockAdapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["blocksize"] = READ_CHUNK
            super().init_poolmanager(*args, **kwargs)

    class Connection(swiftclient.Connection):  # type: ignore[misc]
        def http_connection(self, url: str | None = None) -> Any:
            parsed, conn = super().http_connection(url)
            adapter = BigBlockAdapter()
            conn.request_session.mount("http://", adapter)
            conn.request_session.mount("https://", adapter)
            return parsed, conn

    return Connection


def _client_exception() -> Any:
    """swiftclient's ClientException (imported late: swiftclient is an extra)."""
    from swiftclient.exceptions import ClientException  # type: ignore[import-untyped]
    return ClientException


def _describe(exc: BaseException) -> str:
    """An exception's text without URLs' user information."""
    text = str(exc) or type(exc).__name__
    return " ".join(redact(word) if "://" in word else word for word in text.split(" "))


def _url_from_catalog(catalog: Any, service_type: str, endpoint_type: str,
                      region: str | None) -> str | None:
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


def _hide_secrets_in_swiftclient_logs() -> None:
    """swiftclient's debug log shows the first 16 characters of tokens and
    keys by default: show none."""
    from swiftclient import client  # type: ignore[import-untyped]

    settings: Callable[..., Any] | dict[str, Any] = client.logger_settings
    if isinstance(settings, dict):
        settings["redact_sensitive_headers"] = True
        settings["reveal_sensitive_prefix"] = 0


__all__ = ["SwiftDriver", "OPTIONS", "Reference", "read_references", "context_value"]
