"""The swift driver: configuration, locations, and the calls the core makes.

See the package docstring for what a store does; writing is in
:mod:`.writing`, reading in :mod:`.reading`, accounts in :mod:`.auth`,
locations in :mod:`.locations`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from multistore import errors
from multistore.context import Context, context_value
from multistore.driver import Capabilities, Driver, Leftover, ReadStream, Stored, Writer
from multistore.drivers.swift import auth, copying
from multistore.drivers.swift.auth import Account, Reference, client_exception
from multistore.drivers.swift.locations import (SCHEMES, ConfigLocation, LegacyLocation,
                                                SwiftLocation, TenantLocation)
from multistore.drivers.swift.options import ONE_MB, OPTIONS
from multistore.drivers.swift.reading import SwiftRead
from multistore.drivers.swift.writing import (Plan, SwiftWriter, delete_objects,
                                              split_segment)
from multistore.location import Location, redact
from multistore.retry import RetryPolicy

LOG = logging.getLogger(__name__)
SEGMENTS = "_segments"
#: Swift's limit on container names, in bytes.
MAX_CONTAINER_NAME = 256


class SwiftDriver(Driver[SwiftLocation]):
    schemes = SCHEMES
    location_type = SwiftLocation
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
        self.resumes = c.swift_store_retry_get_count
        self.admin_tenants = list(c.swift_store_admin_tenants or [])
        self.acl_style = c.swift_store_acl_style
        self.timeout = c.swift_store_timeout
        self.settings = auth.Settings(
            timeout=c.swift_store_timeout, cacert=c.swift_store_cacert,
            insecure=c.swift_store_auth_insecure,
            ssl_compression=c.swift_store_ssl_compression,
            endpoint=c.swift_store_endpoint, endpoint_type=c.swift_store_endpoint_type,
            service_type=c.swift_store_service_type, region=c.swift_store_region,
            expire_soon=c.swift_store_expire_soon_interval,
            policy=RetryPolicy(attempts=c.swift_store_retries, first_backoff=0.5,
                               max_backoff=2.0, retryable=auth.retryable))
        self.default_ref = c.default_swift_reference
        if self.multi_tenant and c.swift_store_config_file:
            raise errors.ConfigError("multi-tenant stores use the caller's token: "
                                     "swift_store_config_file cannot be set with "
                                     "swift_store_multi_tenant",
                                     option="swift_store_config_file")
        if c.swift_store_config_file:
            self.refs = auth.read_references(c.swift_store_config_file)
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
        self._accounts: dict[str, Account] = {}
        self._lock = threading.Lock()
        auth.hide_secrets_in_swiftclient_logs()

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
        version = auth.auth_version(c.swift_store_auth_version, "swift_store_auth_version")
        ref = Reference(self.default_ref, c.swift_store_auth_address, c.swift_store_user,
                        c.swift_store_key, version, extra)
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

    def claims(self) -> list[str]:
        """The containers this store writes: two stores writing the same ones
        of one account would each hold the other's locations."""
        if self.multi_tenant:
            return [f"swift containers {self.container}_<image id> in users' accounts"]
        ref = self.refs[self.default_ref]
        names = f"{self.container}_<first {self.seed} characters of the id>" \
            if self.seed else self.container
        who = ref.user or "application credential " + hashlib.sha256(
            ref.extra.get("application_credential_id", "").encode()).hexdigest()[:12]
        return [f"swift container {names} of {who} at {redact(ref.auth_address)}"]

    # -- accounts ------------------------------------------------------------

    def account_for(self, location: SwiftLocation, context: Context = None) -> Account:
        """Where ``location`` lives, with the credentials to reach it."""
        if isinstance(location, TenantLocation):
            token = self._context_token(context)
            # The user's token goes only to the Swift the store (or the
            # request's catalog) names, never to a host a location names.
            expected = urllib.parse.urlsplit(self._tenant_storage_url(context))
            named = urllib.parse.urlsplit(location.storage_url)
            if (named.scheme, named.netloc.lower()) != (expected.scheme.lower(),
                                                        expected.netloc.lower()):
                raise errors.BadLocation(f"{location} is not on this store's Swift "
                                         f"endpoint ({expected.scheme}://{expected.netloc})")
            return Account(self.settings, None, storage_url=location.storage_url,
                           token=token)
        if isinstance(location, LegacyLocation):
            match = self._legacy_reference(location)
            assert match is not None        # holds() checked it
            return Account(self.settings, Reference(
                match.name, location.auth_address, location.user, location.key,
                match.auth_version, match.extra))
        assert isinstance(location, ConfigLocation)
        ref = self.refs[location.reference]
        with self._lock:
            account = self._accounts.get(ref.name)
            if account is None:
                account = self._accounts[ref.name] = Account(self.settings, ref)
        return account

    def _service_account(self) -> Account:
        """The account of the default reference (single-tenant)."""
        return self.account_for(ConfigLocation(container=self.container, image_id="-",
                                               reference=self.default_ref))

    def _legacy_reference(self, location: LegacyLocation) -> Reference | None:
        """Ours when one of our references names this auth address and user."""
        return next((r for r in self.refs.values()
                     if r.auth_key == location.auth.rstrip("/") and r.user == location.user),
                    None)

    @staticmethod
    def _context_token(context: Context) -> str:
        token = context_value(context, "auth_token", "token")
        if not token:
            raise errors.WriteDenied("a multi-tenant swift store needs the caller's "
                                     "request context (with auth_token)")
        return str(token)

    def _tenant_storage_url(self, context: Context) -> str:
        url = context_value(context, "storage_url")
        if url:
            return str(url).rstrip("/")
        project = context_value(context, "project_id", "tenant", "project_name") or ""
        s = self.settings
        if s.endpoint:
            return s.endpoint.replace("%(tenant_id)s", str(project)).rstrip("/")
        catalog = context_value(context, "service_catalog") or []
        url = auth.url_from_catalog(catalog, s.service_type, s.endpoint_type, s.region)
        if not url:
            raise errors.ConfigError(
                f"no {s.service_type!r} endpoint in the request's service catalog "
                "(set swift_store_endpoint or pass storage_url in the context)",
                option="swift_store_endpoint", operation=None)
        return url.rstrip("/")

    # -- locations -------------------------------------------------------------

    def container_for(self, image_id: str) -> str:
        """glance_store's container naming (multi-container seed, multi-tenant)."""
        if self.multi_tenant:
            return f"{self.container}_{image_id}"
        if self.seed:
            lowered = image_id.lower()
            count = self.seed + lowered[:self.seed].count("-")
            return f"{self.container}_{lowered[:count]}"
        return self.container

    def holds(self, location: SwiftLocation) -> bool:
        if location.container != self.container_for(location.image_id):
            return False
        if isinstance(location, TenantLocation):
            return self.multi_tenant
        if self.multi_tenant:
            return False
        if isinstance(location, ConfigLocation):
            return location.reference in self.refs
        return isinstance(location, LegacyLocation) and \
            self._legacy_reference(location) is not None

    def location_for(self, image_id: str, context: Context = None) -> SwiftLocation:
        container = self.container_for(image_id)
        if self.multi_tenant:
            return TenantLocation.for_storage_url(self._tenant_storage_url(context),
                                                  container, image_id)
        return ConfigLocation(container=container, image_id=image_id,
                              reference=self.default_ref)

    # -- writing -----------------------------------------------------------------

    def open_writer(self, image_id: str, size: int | None, context: Context = None) -> Writer:
        location, account = self._new_image(image_id, context)
        plan = Plan(location, location.container + SEGMENTS, self.segment_size,
                    self.large_size, self.concurrency, self.timeout)
        return SwiftWriter(account, plan, size)

    def _new_image(self, image_id: str, context: Context) -> tuple[SwiftLocation, Account]:
        """Where a new image goes and its account; Duplicate if it exists."""
        location = self.location_for(image_id, context)
        if len((location.container + SEGMENTS).encode()) > MAX_CONTAINER_NAME:
            raise errors.BadLocation(
                f"image id {image_id!r} is too long for container names: "
                f"'{location.container}{SEGMENTS}' exceeds Swift's {MAX_CONTAINER_NAME} bytes")
        account = self.account_for(location, context)
        try:
            account.call(lambda conn: conn.head_object(location.container, image_id))
        except client_exception() as exc:
            if exc.http_status != 404:
                raise
        else:
            raise errors.Duplicate(f"image {image_id!r} already exists in container "
                                   f"{location.container!r}")
        if self.create_container or self.multi_tenant:
            account.ensure_container(location.container)
        return location, account

    # -- copies inside the cluster -----------------------------------------------

    def copy_within(self, source: Driver[Any], location: Location, image_id: str,
                    context: Context = None) -> Stored | None:
        """Another swift store's image on the same Swift endpoint (this
        account, or another one these credentials can read): each piece
        copied by Swift into this store's segments, then a manifest of its
        own (see :mod:`.copying`). ``None`` for another endpoint, an
        account these credentials cannot read, or a manifest shape this
        driver does not copy. The result carries what Swift vouches for:
        the md5 of every piece, compared by Swift with the source's."""
        if not isinstance(source, SwiftDriver) or not isinstance(location, SwiftLocation):
            return None
        target_location = self.location_for(image_id, context)
        src = copying.side(source.account_for(location, context), location)
        dst = copying.side(self.account_for(target_location, context), target_location)
        why = copying.refusal(src, dst)
        if why is not None:
            LOG.info("store %s: %s: streamed, not copied inside Swift", self.store_id, why)
            return None
        copy = copying.SwiftCopy(self.store_id, src, dst, target_location.container + SEGMENTS,
                                 self.timeout)
        pieces = copy.pieces()
        if pieces is None or not copy.readable(pieces):
            return None
        target_location, account = self._new_image(image_id, context)
        copy.target = dataclasses.replace(dst, account=account, location=target_location)
        return copy.run(pieces)

    # -- reading -------------------------------------------------------------------

    def open_reader(self, location: SwiftLocation, offset: int, length: int | None,
                    context: Context = None) -> ReadStream:
        account = self.account_for(location, context)
        return SwiftRead(account, location, offset, length, self.resumes).open()

    def get_size(self, location: SwiftLocation, context: Context = None) -> int:
        headers = self.account_for(location, context).call(
            lambda conn: conn.head_object(location.container, location.image_id))
        return int(headers.get("content-length", 0))

    # -- deleting --------------------------------------------------------------------

    def delete(self, location: SwiftLocation, context: Context = None) -> None:
        account = self.account_for(location, context)
        container, obj = location.container, location.image_id
        headers = account.call(lambda conn: conn.head_object(
            container, obj, query_string="multipart-manifest=get"))
        segments: list[tuple[str, str]] = []
        if headers.get("x-static-large-object", "").lower() == "true":
            _, body = account.call(lambda conn: conn.get_object(
                container, obj, query_string="multipart-manifest=get"))
            segments = self._own_segments(location, json.loads(body))
        elif headers.get("x-object-manifest"):
            # glance's DLOs: <container>/<object>- (Swift unquotes the header).
            seg_container, _, prefix = urllib.parse.unquote(
                headers["x-object-manifest"]).partition("/")
            if (seg_container, prefix) == (container, obj + "-"):
                listing = account.call(lambda conn: conn.get_container(
                    seg_container, prefix=prefix, full_listing=True))[1]
                segments = [(seg_container, o["name"]) for o in listing]
            else:
                LOG.warning("store %s: %s is a DLO of %s/%s*, not of its own segments; "
                            "they are not deleted", self.store_id, location,
                            seg_container, prefix)
        # The manifest goes first: once it is gone no reader sees a partial image.
        account.call(lambda conn: conn.delete_object(container, obj))
        delete_objects(account, segments, self.concurrency + 1)
        if isinstance(location, TenantLocation):
            for name in (container, container + SEGMENTS):
                with contextlib.suppress(client_exception()), account.connection() as conn:
                    conn.delete_container(name)

    def _own_segments(self, location: SwiftLocation,
                      manifest: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """The manifest's segments that are this image's: in its segments
        container, under its name. Others (a manifest written by hand that
        lists another image's segments) are left alone."""
        own = []
        for entry in manifest:
            # Names are stored unquoted: never unquote them again.
            seg_container, _, name = str(entry.get("name", "")).lstrip("/").partition("/")
            if seg_container == location.container + SEGMENTS and \
                    name.startswith(location.image_id + "/"):
                own.append((seg_container, name))
            else:
                LOG.warning("store %s: %s lists segment %s/%s of another object; "
                            "it is not deleted", self.store_id, location, seg_container, name)
        return own

    # -- what killed writers left -------------------------------------------

    def find_leftovers(self, grace: float, context: Context = None) -> list[Leftover]:
        """Segments of uploads that died: every segment of one upload
        (``<image>/<upload id>/``) older than ``grace`` and no manifest of
        the image that lists them. A live upload adds a segment every
        segment-size bytes, so its newest segment is recent; if a sweep
        still races a writer stalled longer than ``grace``, Swift refuses
        that writer's manifest (a segment is missing) and the add fails:
        never a broken image. Multi-tenant stores write into their users'
        accounts, which the store cannot list: nothing is found there."""
        if self.multi_tenant:
            return []
        account = self._service_account()
        names = [c["name"] for c in account.call(lambda conn: conn.get_account(
            prefix=self.container, full_listing=True))[1]]
        found = []
        now = time.time()
        for seg_container in names:
            container = seg_container[:-len(SEGMENTS)]
            if not seg_container.endswith(SEGMENTS):
                continue
            for (obj, upload), (size, newest, count) in self._uploads(
                    account, seg_container).items():
                age = now - newest
                # Only this store's: the image's container is the one it names.
                if container != self.container_for(obj) or age <= grace or \
                        self._manifest_uses(account, container, obj, upload):
                    continue
                found.append(Leftover(f"{seg_container}/{obj}/{upload}/ ({count} segments)",
                                      size, age, (container, obj, upload, newest)))
        return found

    def remove_leftover(self, leftover: Leftover, context: Context = None) -> None:
        container, obj, upload, found_newest = leftover.handle
        account = self._service_account()
        seg_container = container + SEGMENTS
        uploads = self._uploads(account, seg_container, f"{obj}/{upload}/")
        if (obj, upload) not in uploads:
            raise errors.NotFound(f"leftover {leftover.name} is gone")
        _, newest, _ = uploads[(obj, upload)]
        if newest > found_newest or self._manifest_uses(account, container, obj, upload):
            raise errors.InUse(f"leftover {leftover.name} is being written again")
        listing = account.call(lambda conn: conn.get_container(
            seg_container, prefix=f"{obj}/{upload}/", full_listing=True))[1]
        delete_objects(account, [(seg_container, o["name"]) for o in listing],
                       self.concurrency + 1)

    @staticmethod
    def _uploads(account: Account, seg_container: str,
                 prefix: str | None = None) -> dict[tuple[str, str], tuple[int, float, int]]:
        """(object, upload id) -> (bytes, newest segment's time, segments)."""
        try:
            listing = account.call(lambda conn: conn.get_container(
                seg_container, prefix=prefix, full_listing=True))[1]
        except client_exception() as exc:
            if exc.http_status == 404:
                return {}
            raise
        uploads: dict[tuple[str, str], tuple[int, float, int]] = {}
        for entry in listing:
            key = split_segment(entry["name"])
            if key is None:
                continue
            stamp = datetime.datetime.fromisoformat(entry["last_modified"]).replace(
                tzinfo=datetime.UTC).timestamp()
            size, newest, count = uploads.get(key, (0, 0.0, 0))
            uploads[key] = (size + int(entry["bytes"]), max(newest, stamp), count + 1)
        return uploads

    @staticmethod
    def _manifest_uses(account: Account, container: str, obj: str, upload: str) -> bool:
        """Whether the image's manifest lists segments of this upload."""
        try:
            headers = account.call(lambda conn: conn.head_object(
                container, obj, query_string="multipart-manifest=get"))
            if headers.get("x-static-large-object", "").lower() != "true":
                return False
            _, body = account.call(lambda conn: conn.get_object(
                container, obj, query_string="multipart-manifest=get"))
        except client_exception() as exc:
            if exc.http_status == 404:
                return False
            raise
        used = f"/{container}{SEGMENTS}/{obj}/{upload}/"
        return any(str(e.get("name", "")).startswith(used) for e in json.loads(body))

    # -- access control (multi-tenant) ---------------------------------------

    def set_acls(self, location: SwiftLocation, public: bool = False,
                 read_tenants: Sequence[str] = (), write_tenants: Sequence[str] = (),
                 context: Context = None) -> None:
        """Who may read and write the image's container(s) (multi-tenant only)."""
        if not isinstance(location, TenantLocation):
            raise errors.NotSupported("images of a single-tenant swift store all live "
                                      "in the service's account: no per-image ACLs")
        writers = list(dict.fromkeys([*write_tenants, *self.admin_tenants]))
        for tenant in (*read_tenants, *writers):
            # An entry is one project: ',' would add entries, ':' a user,
            # a leading '.' a referrer rule ('x,.r:*' makes the image public).
            if not isinstance(tenant, str) or not tenant or tenant.startswith(".") or any(
                    c in ",:*" or c.isspace() or not c.isprintable() for c in tenant):
                raise errors.WriteDenied(f"{tenant!r} is not a project id: refusing to "
                                         "write it into a container ACL")
        if self.acl_style == "tempauth":
            read = ".r:*,.rlistings" if public else ",".join(read_tenants)
            write = ",".join(writers)
        else:
            read = "*:*" if public else ",".join(f"{t}:*" for t in read_tenants)
            write = ",".join(f"{t}:*" for t in writers)
        headers = {"X-Container-Read": read, "X-Container-Write": write}
        account = self.account_for(location, context)
        account.call(lambda conn: conn.post_container(location.container, headers))
        with contextlib.suppress(client_exception()):
            account.call(lambda conn: conn.post_container(location.container + SEGMENTS,
                                                          headers))

    # -- errors ----------------------------------------------------------------

    def translate_error(self, exc: Exception) -> errors.MultistoreError | None:
        """swiftclient's and keystoneauth's exceptions, by their status field."""
        status = getattr(exc, "http_status", None)
        if isinstance(exc, client_exception()):
            where = urllib.parse.unquote(getattr(exc, "http_path", "") or "") or "swift"
            reason = getattr(exc, "http_reason", "") or ""
            if status == 404:
                return errors.NotFound(f"swift has no {where}")
            if status in (409, 412):
                return errors.Duplicate(f"an image already exists at {where}")
            if status in (401, 403):
                return errors.WriteDenied(f"swift refused access to {where} "
                                          f"({status} {reason})")
            if status in (413, 507):
                return errors.StorageFull(f"swift has no room for {where} "
                                          f"({status} {reason})")
            if status is None or status >= 500:
                return errors.BackendUnavailable(f"swift did not answer for {where}: "
                                                 f"{describe(exc)}")
            return errors.MultistoreError(f"swift answered {status} {reason} for {where}")
        module = type(exc).__module__.split(".")[0]
        if module == "keystoneauth1" and status in (401, 403):
            return errors.WriteDenied(f"the auth server refused the credentials "
                                      f"({status})")
        if module in ("requests", "urllib3", "keystoneauth1", "ssl", "socket") or \
                isinstance(exc, (OSError, TimeoutError)):
            return errors.BackendUnavailable(f"swift could not be reached: {describe(exc)}")
        return None


def describe(exc: BaseException) -> str:
    """An exception's text without URLs' user information."""
    text = str(exc) or type(exc).__name__
    return " ".join(redact(word) if "://" in word else word for word in text.split(" "))


__all__ = ["SwiftDriver"]
