"""Swift locations, in the three forms glance_store writes.

``swift+config://<reference>/<container>/<object>``
    single-tenant, credentials in the store's reference file (what
    multistore writes for a single-tenant store).
``swift+http[s]://<user>:<key>@<auth address>/<container>/<object>``
    single-tenant, legacy: the credentials in the URL (user and key
    percent-encoded, as glance_store's ``quote`` left them: ``:`` as
    ``%3A``, ``/`` possibly raw). Read and deleted, never written.
``swift+http[s]://<storage URL>/<container>/<object>``
    multi-tenant: the user's account; the token comes with the request.

Container and object are percent-encoded (:func:`multistore.location.quote`),
so an object name never decodes to another one; a UUID is unchanged, so
glance_store's locations read as they are. A name that decodes to ``.``,
``..``, or holds ``/`` or a control character is refused: the HTTP layer
would remove dot segments and send the request to another container or
account.
"""

from __future__ import annotations

import dataclasses
import unicodedata
import urllib.parse
from typing import ClassVar

from multistore.location import Location, image_id_problem, quote, split_url, unquote

SCHEMES = ("swift+config", "swift+https", "swift+http", "swift")
#: Schemes of URLs that name the server directly (legacy and multi-tenant).
HTTP_SCHEMES = ("swift+https", "swift+http", "swift")


def _name(raw: str, what: str) -> str:
    """A container or object name from its quoted form; ValueError if it is
    one that would not name exactly that object in that container (or, for
    the object, not an id the core accepts)."""
    name = unquote(raw)
    if name in ("", ".", "..") or "/" in name:
        raise ValueError(f"the {what} name is empty, '.' or '..', or holds '/'")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise ValueError(f"the {what} name holds control characters")
    problem = image_id_problem(name) if what == "object" else None
    if problem:
        raise ValueError(f"the object name is not an image id: {problem}")
    return name


def _credential(raw: str) -> str:
    return urllib.parse.quote(raw, safe="")


@dataclasses.dataclass(frozen=True)
class SwiftLocation(Location):
    """Any swift location: :meth:`parse` returns one of the three subclasses."""

    container: str
    image_id: str

    @classmethod
    def parse(cls, url: str) -> SwiftLocation:
        parts = split_url(url, SCHEMES)
        scheme = parts.scheme.lower()
        rest = url.partition("://")[2]
        if "://" in rest or "?" in rest or "#" in rest:
            raise ValueError("a swift location has no query, fragment or second scheme")
        if scheme == "swift+config":
            return ConfigLocation.from_path(rest)
        head, _, tail = rest.rpartition("@")
        if head:
            return LegacyLocation.from_parts(scheme, head, tail)
        return TenantLocation.from_parts(scheme, rest)

    def format(self) -> str:
        raise NotImplementedError("a location is one of the subclasses")

    @property
    def object_path(self) -> str:
        """``container/object`` as sent to Swift (for messages)."""
        return f"{self.container}/{self.image_id}"

    @staticmethod
    def _split(path: str) -> tuple[str, str, str]:
        """``base/container/object`` -> (base, container, object), names unquoted."""
        base, _, obj = path.rpartition("/")
        base, _, container = base.rpartition("/")
        if not base:
            raise ValueError("expected <address>/<container>/<object>")
        return base, _name(container, "container"), _name(obj, "object")

    def _tail(self) -> str:
        return f"{quote(self.container)}/{quote(self.image_id)}"


@dataclasses.dataclass(frozen=True)
class ConfigLocation(SwiftLocation):
    """``swift+config://<reference>/<container>/<object>``."""

    reference: str

    @classmethod
    def from_path(cls, path: str) -> ConfigLocation:
        parts = path.split("/")
        if len(parts) != 3 or not parts[0]:
            raise ValueError("expected swift+config://<reference>/<container>/<object>")
        return cls(container=_name(parts[1], "container"),
                   image_id=_name(parts[2], "object"), reference=unquote(parts[0]))

    def format(self) -> str:
        return f"swift+config://{quote(self.reference)}/{self._tail()}"


@dataclasses.dataclass(frozen=True)
class LegacyLocation(SwiftLocation):
    """``swift+https://<user>:<key>@<auth address>/<container>/<object>``.
    The key is never shown: not in ``repr``, and ``str`` masks it."""

    scheme: str
    user: str
    key: str = dataclasses.field(repr=False)
    #: The auth address without its scheme (``keystone:5000/v3``).
    auth: str

    http: ClassVar[dict[str, str]] = {"swift+http": "http", "swift+https": "https",
                                      "swift": "https"}

    @classmethod
    def from_parts(cls, scheme: str, credentials: str, where: str) -> LegacyLocation:
        user, sep, key = credentials.rpartition(":")
        if not (sep and user and key) or "/" in user:
            raise ValueError("expected <user>:<key>@ credentials")
        auth, container, obj = cls._split(where)
        auth = auth.rstrip("/")
        if not auth or auth.startswith("/"):
            raise ValueError("no auth address")
        return cls(container=container, image_id=obj, scheme=scheme,
                   user=unquote(user), key=unquote(key), auth=auth)

    def format(self) -> str:
        return (f"{self.scheme}://{_credential(self.user)}:{_credential(self.key)}"
                f"@{self.auth}/{self._tail()}")

    @property
    def auth_address(self) -> str:
        return f"{self.http[self.scheme]}://{self.auth}"


@dataclasses.dataclass(frozen=True)
class TenantLocation(SwiftLocation):
    """``swift+https://<storage URL without scheme>/<container>/<object>``."""

    scheme: str
    #: The user's storage URL without its scheme (``swift:8080/v1/AUTH_p``).
    account: str

    @classmethod
    def from_parts(cls, scheme: str, path: str) -> TenantLocation:
        account, container, obj = cls._split(path)
        if account.startswith("/") or account.endswith("/"):
            raise ValueError("empty segments in the storage URL")
        return cls(container=container, image_id=obj, scheme=scheme, account=account)

    @classmethod
    def for_storage_url(cls, storage_url: str, container: str,
                        image_id: str) -> TenantLocation:
        http, _, account = storage_url.rstrip("/").partition("://")
        return cls(container=container, image_id=image_id, scheme=f"swift+{http.lower()}",
                   account=account)

    def format(self) -> str:
        return f"{self.scheme}://{self.account}/{self._tail()}"

    @property
    def storage_url(self) -> str:
        http = "http" if self.scheme == "swift+http" else "https"
        return f"{http}://{self.account}"


__all__ = ["SCHEMES", "SwiftLocation", "ConfigLocation", "LegacyLocation", "TenantLocation"]
