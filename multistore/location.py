"""Locations: the typed value behind every image URL, and a form safe to print.

Each driver declares its location type, a frozen dataclass derived from
:class:`Location` that knows how to :meth:`~Location.parse` a URL and how to
:meth:`~Location.format` one. Parsing is syntax only: it never contacts a
server and never reads the store's options; whether a well-formed location
belongs to one particular store is the driver's
:meth:`~multistore.driver.Driver.holds`. The core parses every URL once, in
one place, and hands drivers the typed value.

The promise a location type keeps (the conformance suite and property tests
check it)::

    type(loc).parse(loc.format()) == loc          # for every location it formats
    type(loc).parse(url)                          # any other string: ValueError

so an image id, however odd, names exactly one image: ids go through
:func:`quote` on the way into a URL and :func:`unquote` on the way back.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
import urllib.parse
from typing import Any, ClassVar, TypeVar

L = TypeVar("L", bound="Location")

#: Characters an image id keeps unquoted in a URL path segment: RFC 3986's
#: unreserved set. Everything else, ``%`` included, is percent-encoded, so
#: ``quote(id)`` never decodes to another id.
_SAFE = "-._~"

#: Longest image id, in bytes of UTF-8 (a file name's limit on most filesystems).
MAX_ID_BYTES = 255
_DISALLOWED_ID_CHARS = frozenset("/\\")

#: Query parameters that carry secrets in signed URLs (S3/Swift temp URLs, tokens).
_SECRET_PARAM = re.compile(
    r"(?i)([?&;][^=&#;]*(?:sig|signature|token|secret|password|passwd|key|credential)"
    r"[^=&#;]*=)[^&#;]*")


class Location:
    """Base of every driver's location type.

    Subclasses are ``@dataclasses.dataclass(frozen=True)`` classes that
    implement :meth:`parse` and :meth:`format` and have an ``image_id``
    (a field, or a property together with an override of
    :meth:`with_image_id`). Raise ``ValueError`` (or
    :class:`~multistore.errors.BadLocation`) from :meth:`parse` for anything
    malformed; the core turns it into ``BadLocation`` naming the store.
    """

    #: The image id this location was written for.
    image_id: str

    #: False (the rule): :meth:`parse` refuses a location whose image id is
    #: not one the core accepts (:func:`image_id_problem`), so every
    #: location names exactly one image. True for location types whose URLs
    #: multistore does not write and must take as they come (the http
    #: store's web URLs): ``image_id`` is then only what the URL suggests
    #: (its last path segment, decoded), which may be no valid id at all
    #: (empty for ``http://host/``, ``a/b`` for ``.../a%2Fb``); a copy of
    #: such a location needs an explicit image id.
    image_id_is_hint: ClassVar[bool] = False

    @classmethod
    def parse(cls: type[L], url: str) -> L:
        """The location ``url`` stands for; ``ValueError`` if malformed."""
        raise NotImplementedError

    def format(self) -> str:
        """The URL, exactly as it is stored in an image service's database."""
        raise NotImplementedError

    def with_image_id(self: L, image_id: str) -> L:
        """The same location for another image id (the conformance suite
        uses it to name an image that does not exist)."""
        return dataclasses.replace(self, image_id=image_id)  # type: ignore[type-var]

    def __str__(self) -> str:
        return redact(self.format())


def quote(segment: str) -> str:
    """One path segment, percent-encoded so that :func:`unquote` gives it back."""
    return urllib.parse.quote(segment, safe=_SAFE)


def unquote(segment: str) -> str:
    """The inverse of :func:`quote`; strict: a stray ``%`` or an encoded
    character that is not valid UTF-8 is a ``ValueError``, never guessed."""
    if re.search(r"%(?![0-9A-Fa-f]{2})", segment):
        raise ValueError(f"stray '%' in {segment!r}")
    try:
        return urllib.parse.unquote(segment, errors="strict")
    except UnicodeDecodeError as exc:
        raise ValueError(f"percent-encoded bytes that are not UTF-8 in {segment!r}") from exc


def image_id_problem(image_id: object) -> str | None:
    """Why ``image_id`` is not an id the core accepts, or ``None`` if it is.

    An id is 1 to :data:`MAX_ID_BYTES` bytes of UTF-8 text, without ``/``,
    ``\\``, control characters or lone surrogates, and not ``.`` or ``..``.
    The core refuses other ids before any driver sees them; location types
    refuse them in :meth:`Location.parse` too, so that a location never
    names something an add could not have made (the file store keeps its
    partial files in a directory whose name holds a ``\\``).
    """
    if not isinstance(image_id, str):
        return f"it is a {type(image_id).__name__}, not a string"
    if not image_id or image_id in (".", ".."):
        return "empty, '.' or '..'"
    if _DISALLOWED_ID_CHARS & set(image_id):
        return "it holds '/' or '\\'"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in image_id):
        return "it holds control characters or lone surrogates"
    if len(image_id.encode("utf-8")) > MAX_ID_BYTES:
        return f"longer than {MAX_ID_BYTES} bytes"
    return None


def split_url(url: Any, schemes: tuple[str, ...]) -> urllib.parse.SplitResult:
    """``urlsplit`` that refuses what it would silently change.

    ``urlsplit`` drops tab, CR and LF and keeps going; a location holding
    them, or a scheme not in ``schemes``, is a ``ValueError`` here.
    """
    if not isinstance(url, str):
        raise ValueError(f"a location is a string, not {type(url).__name__}")
    if any(c in url for c in "\t\r\n\0"):
        raise ValueError("control characters in the location")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in schemes:
        raise ValueError(f"the scheme is not one of {', '.join(schemes)}")
    return parts


def scheme_of(location: str) -> str:
    """``rbd`` for ``rbd://...``; empty when the string has no scheme."""
    if not isinstance(location, str):
        return ""
    scheme, sep, _ = location.partition("://")
    return scheme.lower() if sep else ""


def redact(location: object) -> str:
    """The location with any password masked, for messages and logs.

    Everything between the first ``:`` of the user information and the last
    ``@`` of the authority is replaced, so a key holding ``/``, ``?``, ``#``
    or ``@`` (as legacy swift URLs write them, unescaped) is masked too; so
    are the values of query parameters of signed URLs (``X-Amz-Signature``,
    ``temp_url_sig``, ``token`` ...).
    """
    text = location if isinstance(location, str) else str(location)
    text = _SECRET_PARAM.sub(r"\1***", text)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    # The usual case: the last '@' before the path. A password may hold
    # '/', '?' or '#' unescaped (legacy swift URLs): then the '@' comes
    # after one of those and the last '@' anywhere is taken (masking too
    # much rather than too little).
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    if at < 0:
        at = rest.rfind("@")
        if at < 0 or ":" not in rest[:end]:
            return text
    user, colon, _ = rest[:at].partition(":")
    if "/" in user:
        return text
    return f"{scheme}://{user}{':***' if colon else ''}@{rest[at + 1:]}"


__all__ = ["Location", "quote", "unquote", "split_url", "scheme_of", "redact",
           "image_id_problem", "MAX_ID_BYTES"]
