"""One cinder store's way to the Cinder API: its own session, its own identity.

Every store builds its own keystoneauth session (TLS settings, timeout) and
cinderclient, so two cinder stores with different credentials, endpoints
and certificates live side by side in one process (glance_store keeps one
session per process). The identity is, as in glance_store:

- the store's service credentials (``cinder_store_auth_address``, user,
  password or application credential, project): every volume lives in that
  project, the endpoint comes from Keystone's catalog;
- with ``cinder_store_auth_type = noauth`` (multistore's), the token
  ``<user>:<project>`` of Cinder's noauth middleware and the endpoint
  ``cinder_endpoint_template``;
- otherwise the request context's token and project, the endpoint from
  ``cinder_endpoint_template`` or the context's service catalog.

Calls go through :meth:`CinderApi.call`: a call that could not connect is
retried (``cinder_http_retries``, idempotent calls only); a call that gets no
answer within ``cinder_api_timeout`` is not (the server is stuck, and a
create must never be sent twice). :func:`translate` maps cinderclient's and
keystoneauth's exceptions to the library's, never with a secret.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from multistore import errors
from multistore.config import StoreConf
from multistore.context import Context, context_value
from multistore.location import redact
from multistore.retry import RetryPolicy

LOG = logging.getLogger(__name__)
T = TypeVar("T")
MICROVERSION = "3.54"        # attachments with a mode (3.54), online extend (3.42)
TRANSITIONAL = ("creating", "extending", "attaching", "detaching", "reserved",
                "downloading", "deleting", "maintenance")


class CinderApi:
    """The Cinder API as one store reaches it (thread-safe)."""

    def __init__(self, conf: StoreConf) -> None:
        self.conf = conf
        self.timeout = float(conf.cinder_api_timeout)
        self.transition_timeout = float(conf.cinder_state_transition_timeout)
        self.retries = int(conf.cinder_http_retries)
        parts = (conf.cinder_catalog_info or "").split(":")
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise errors.ConfigError(
                f"{conf.cinder_catalog_info!r} is not <service_type>:<service_name>:"
                "<interface>", option="cinder_catalog_info")
        self.service_type: str = parts[0]
        self.service_name: str = parts[1]
        self.interface: str = parts[2]
        self.mode = self._mode()
        ca = conf.cinder_ca_certificates_file
        if ca and not conf.cinder_api_insecure and not os.access(ca, os.R_OK):
            raise errors.ConfigError(f"cannot read {ca}", option="cinder_ca_certificates_file")
        self.verify: bool | str = False if conf.cinder_api_insecure else (ca or True)
        self._lock = threading.Lock()
        self._away_since = 0.0
        self._session: Any = None
        self._clients: dict[str, Any] = {}
        self.policy = RetryPolicy(attempts=self.retries, first_backoff=0.5, max_backoff=4.0,
                                  retryable=_could_not_connect)

    def _mode(self) -> str:
        c = self.conf
        if c.cinder_store_auth_type == "noauth":
            if c.cinder_store_user_name and c.cinder_store_project_name:
                if not c.cinder_endpoint_template:
                    raise errors.ConfigError("noauth needs the endpoint: set "
                                             "cinder_endpoint_template",
                                             option="cinder_endpoint_template")
                return "noauth"
            return "user"
        app = c.cinder_store_application_credential_id and \
            c.cinder_store_application_credential_secret
        if c.cinder_store_auth_address and (app or all(
                (c.cinder_store_user_name, c.cinder_store_password,
                 c.cinder_store_project_name))):
            return "keystone"
        given = [n for n in ("cinder_store_auth_address", "cinder_store_user_name",
                             "cinder_store_password", "cinder_store_project_name",
                             "cinder_store_application_credential_id")
                 if getattr(c, n)]
        if given:
            LOG.warning("store %s: service credentials incomplete (only %s set): volumes "
                        "are created with the request context's identity",
                        c.store_id, ", ".join(given))
        return "user"

    def describe(self) -> dict[str, Any]:
        """How the store reaches Cinder (for the store listing; no secret)."""
        c = self.conf
        out: dict[str, Any] = {"auth": {"keystone": "service credentials (Keystone)",
                                        "noauth": "service identity (Cinder noauth)",
                                        "user": "the request context's identity"}[self.mode],
                               "microversion": MICROVERSION}
        if self.mode == "keystone":
            out["auth_address"] = redact(c.cinder_store_auth_address)
            out["project"] = c.cinder_store_project_name
        elif self.mode == "noauth":
            out["endpoint"] = redact(self._template({"tenant": c.cinder_store_project_name}))
            out["project"] = c.cinder_store_project_name
        elif c.cinder_endpoint_template:
            out["endpoint_template"] = redact(c.cinder_endpoint_template)
        else:
            out["catalog_info"] = c.cinder_catalog_info
        return out

    def where(self) -> str:
        """Which Cinder, and which project, this store's volumes are in."""
        c = self.conf
        if self.mode == "keystone":
            return (f"{redact(c.cinder_store_auth_address)} project "
                    f"{c.cinder_store_project_name}@{c.cinder_store_project_domain_name}")
        if self.mode == "noauth":
            return redact(self._template({"tenant": c.cinder_store_project_name}))
        if c.cinder_endpoint_template:
            return f"{redact(c.cinder_endpoint_template)} (the request's project)"
        return (f"catalog {c.cinder_catalog_info} region {c.cinder_os_region_name or '*'} "
                "(the request's project)")

    def close(self) -> None:
        """Close the session's pooled connections (a later call opens new ones)."""
        with self._lock:
            session, self._session = self._session, None
            self._clients.clear()
        if session is not None:
            session.session.close()

    # -- sessions and clients --------------------------------------------------

    def session(self) -> Any:
        with self._lock:
            if self._session is None:
                from keystoneauth1 import session as ks_session
                self._session = ks_session.Session(auth=self._service_auth(),
                                                   verify=self.verify, timeout=self.timeout)
            return self._session

    def _service_auth(self) -> Any:
        if self.mode != "keystone":
            return None
        from keystoneauth1 import identity
        c = self.conf
        if c.cinder_store_application_credential_id and \
                c.cinder_store_application_credential_secret:
            return identity.V3ApplicationCredential(
                auth_url=c.cinder_store_auth_address,
                application_credential_id=c.cinder_store_application_credential_id,
                application_credential_secret=c.cinder_store_application_credential_secret)
        return identity.V3Password(
            auth_url=c.cinder_store_auth_address, username=c.cinder_store_user_name,
            password=c.cinder_store_password, user_domain_name=c.cinder_store_user_domain_name,
            project_name=c.cinder_store_project_name,
            project_domain_name=c.cinder_store_project_domain_name)

    def client(self, context: Context = None, version: str = MICROVERSION) -> Any:
        """cinderclient v3 acting as the store (service identity) or as the
        request's user."""
        if self.mode in ("keystone", "noauth"):
            with self._lock:
                cached = self._clients.get(version)
            if cached is None:
                auth = None
                if self.mode == "noauth":
                    c = self.conf
                    auth = self._token_auth(
                        self._template({"tenant": c.cinder_store_project_name}),
                        f"{c.cinder_store_user_name}:{c.cinder_store_project_name}")
                cached = self._make_client(auth, version)
                with self._lock:
                    self._clients.setdefault(version, cached)
            return cached
        return self._make_client(self._user_auth(context), version)

    def _make_client(self, auth: Any, version: str) -> Any:
        from cinderclient import api_versions  # type: ignore[import-untyped]
        from cinderclient.v3 import client as v3  # type: ignore[import-untyped]
        return v3.Client(session=self.session(), auth=auth,
                         api_version=api_versions.APIVersion(version),
                         region_name=self.conf.cinder_os_region_name,
                         retries=self.retries, service_type=self.service_type,
                         service_name=self.service_name or None,
                         endpoint_type=self.interface)

    @staticmethod
    def _token_auth(endpoint: str, token: str) -> Any:
        from keystoneauth1 import token_endpoint
        return token_endpoint.Token(endpoint=endpoint, token=token)

    def _template(self, values: dict[str, Any]) -> str:
        template = self.conf.cinder_endpoint_template
        try:
            return str(template % _TemplateValues(values))
        except (TypeError, ValueError) as exc:
            raise errors.ConfigError(f"{template!r}: {exc}",
                                     option="cinder_endpoint_template") from None

    def _user_auth(self, context: Context) -> Any:
        project = context_value(context, "project_id", "tenant")
        user = context_value(context, "user_id", "user")
        if context is None or not project:
            raise errors.WriteDenied(
                "this store acts as the requesting user (no service credentials are "
                "configured: cinder_store_auth_address, cinder_store_user_name, "
                "cinder_store_password, cinder_store_project_name) and the call came "
                "without a request context naming a project")
        token = context_value(context, "auth_token") or f"{user}:{project}"
        if self.conf.cinder_endpoint_template:
            values = dict(context.to_dict()) if hasattr(context, "to_dict") else {}
            values.update(tenant=project, project_id=project, user=user, user_id=user)
            return self._token_auth(self._template(values), token)
        return self._token_auth(self._catalog_url(context), token)

    def _catalog_url(self, context: Context) -> str:
        from keystoneauth1 import exceptions as ks_exc
        from keystoneauth1.access import service_catalog
        catalog = context_value(context, "service_catalog")
        if not catalog:
            raise errors.WriteDenied("the request context carries no service catalog, and "
                                     "cinder_endpoint_template is not set")
        v3 = any("interface" in ep for entry in catalog
                 for ep in (entry.get("endpoints") or []))
        cls = service_catalog.ServiceCatalogV3 if v3 else service_catalog.ServiceCatalogV2
        try:
            return str(cls(catalog).url_for(
                service_type=self.service_type, service_name=self.service_name or None,
                interface=self.interface, region_name=self.conf.cinder_os_region_name))
        except ks_exc.EndpointNotFound:
            raise errors.BackendUnavailable(
                f"no {self.conf.cinder_catalog_info!r} endpoint in the request's service "
                "catalog") from None

    def project(self, context: Context) -> str | None:
        """The project volumes are created in."""
        if self.mode in ("keystone", "noauth"):
            return str(self.conf.cinder_store_project_name)
        return context_value(context, "project_id", "tenant")

    # -- calls ---------------------------------------------------------------------

    def call(self, fn: Callable[[], T], what: str, *, idempotent: bool = True) -> T:
        """``fn()``; again after a failure to connect, if ``idempotent``."""
        from keystoneauth1 import exceptions as ks_exc
        try:
            result = fn() if not idempotent else self.policy.call(fn, what=what)
        except (ks_exc.ConnectTimeout, ks_exc.ConnectFailure):
            self._away_since = self._away_since or time.monotonic()
            raise
        self._away_since = 0.0
        return result

    def away(self) -> bool:
        """Whether the last call found Cinder down or silent (and none has
        answered since): a cleanup would only wait for more timeouts."""
        return bool(self._away_since)

    def wait(self, client: Any, volume_id: str, expected: str,
             transitional: Iterable[str] = TRANSITIONAL) -> Any:
        """Poll until the volume leaves its transitional states; it must then
        be ``expected`` (``cinder_state_transition_timeout``)."""
        transitional = tuple(transitional)
        deadline = time.monotonic() + self.transition_timeout
        delay = 0.05
        while True:
            volume = self.call(lambda: client.volumes.get(volume_id), "volume status")
            if volume.status not in transitional:
                if volume.status != expected:
                    raise errors.MultistoreError(
                        f"volume {volume_id} is {volume.status!r}, expected {expected!r}"
                        f"{self._user_message(client, volume_id)}")
                return volume
            if time.monotonic() >= deadline:
                raise errors.BackendUnavailable(
                    f"volume {volume_id} still {volume.status!r} after "
                    f"{self.transition_timeout:.0f} s (cinder_state_transition_timeout)")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)

    def settle(self, client: Any, volume_id: str) -> Any:
        """The volume once it is in no transitional state (whatever that state)."""
        deadline = time.monotonic() + self.transition_timeout
        delay = 0.05
        while True:
            volume = self.call(lambda: client.volumes.get(volume_id), "volume status")
            if volume.status not in TRANSITIONAL or volume.status == "deleting" \
                    or time.monotonic() >= deadline:
                return volume
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def wait_gone(self, client: Any, volume_id: str) -> None:
        from cinderclient import exceptions as cinder_exc  # type: ignore[import-untyped]
        try:
            self.wait(client, volume_id, "(gone)")
        except cinder_exc.NotFound:
            return

    def _user_message(self, client: Any, volume_id: str) -> str:
        """Cinder's own explanation of a failed operation, if it kept one."""
        try:
            found = client.messages.list(search_opts={"resource_uuid": volume_id})
        except Exception:   # noqa: BLE001 - only a better message is at stake
            return ""
        texts = [getattr(m, "user_message", "") for m in found]
        return f": {texts[-1]}" if texts and texts[-1] else ""


class _TemplateValues(dict):  # type: ignore[type-arg]
    """Values for ``cinder_endpoint_template``: a missing key is an error naming it."""

    def __missing__(self, key: str) -> Any:
        raise ValueError(f"%({key})s is not known (use %(tenant)s or %(project_id)s)")


def _could_not_connect(exc: BaseException) -> bool:
    """The request never reached Cinder: safe to send again."""
    from keystoneauth1 import exceptions as ks_exc
    return isinstance(exc, ks_exc.ConnectFailure) and not isinstance(exc, ks_exc.ConnectTimeout)


def translate(exc: BaseException, timeout: float) -> errors.MultistoreError | None:
    """The library's error for cinderclient's, keystoneauth's, os-brick's or
    librbd's; ``None`` for anything else."""
    from cinderclient import exceptions as cinder_exc  # type: ignore[import-untyped]
    from keystoneauth1 import exceptions as ks_exc
    text = redact(str(exc))
    if isinstance(exc, cinder_exc.NotFound):
        return errors.NotFound(f"Cinder: {text}")
    if isinstance(exc, cinder_exc.OverLimit):
        return errors.StorageFull(f"Cinder refused (quota): {text}")
    if isinstance(exc, (cinder_exc.Unauthorized, ks_exc.Unauthorized)):
        return errors.WriteDenied(f"Cinder or Keystone refused the store's credentials: {text}")
    if isinstance(exc, (cinder_exc.Forbidden, ks_exc.Forbidden)):
        return errors.WriteDenied(f"Cinder refused the operation (forbidden): {text}")
    if isinstance(exc, ks_exc.SSLError):
        return errors.BackendUnavailable(
            f"TLS to Cinder failed: {text} (see cinder_ca_certificates_file and "
            "cinder_api_insecure)")
    if isinstance(exc, ks_exc.ConnectTimeout):
        return errors.BackendUnavailable(f"Cinder did not answer within {timeout:.0f} s "
                                         f"(cinder_api_timeout): {text}")
    if isinstance(exc, (ks_exc.ConnectionError, ks_exc.EndpointNotFound,
                        ks_exc.DiscoveryFailure)):
        return errors.BackendUnavailable(f"cannot reach Cinder: {text}")
    if isinstance(exc, cinder_exc.ClientException):
        if getattr(exc, "code", 0) in (500, 502, 503, 504):
            return errors.BackendUnavailable(f"Cinder failed: {text}")
        return errors.MultistoreError(f"Cinder: {text}")
    if isinstance(exc, ks_exc.ClientException):
        return errors.MultistoreError(f"keystoneauth: {text}")
    if type(exc).__module__.startswith("os_brick"):
        cause = exc.__cause__ or exc.__context__
        why = f" ({type(cause).__name__}: {redact(str(cause))})" if cause else ""
        return errors.MultistoreError(f"os-brick could not reach the volume: {text}{why}")
    return _rbd_error(exc)


def _rbd_error(exc: BaseException) -> errors.MultistoreError | None:
    try:
        import rbd  # type: ignore[import-not-found]
    except ImportError:     # pragma: no cover - the rbd connector needs it anyway
        return None
    if not isinstance(exc, rbd.Error):
        return None
    text = redact(str(exc))
    if isinstance(exc, (rbd.NoSpace, rbd.DiskQuotaExceeded)):
        return errors.StorageFull(f"Ceph: {text}")
    if isinstance(exc, (rbd.PermissionError, rbd.ReadOnlyImage)):
        return errors.WriteDenied(f"Ceph: {text}")
    if isinstance(exc, rbd.Timeout):
        return errors.BackendUnavailable(f"Ceph did not answer: {text}")
    return errors.MultistoreError(f"Ceph: {text}")


__all__ = ["CinderApi", "translate", "MICROVERSION"]
