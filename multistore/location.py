"""Small helpers for location URLs: the scheme, and a form safe to print."""

from __future__ import annotations

import re

#: Query parameters that carry secrets in signed URLs (S3/Swift temp URLs, tokens).
_SECRET_PARAM = re.compile(
    r"(?i)([?&][^=&#]*(?:sig|signature|token|secret|password|passwd|key|credential)"
    r"[^=&#]*=)[^&#]*")


def scheme_of(location: str) -> str:
    """``rbd`` for ``rbd://...``; empty when the string has no scheme."""
    scheme, sep, _ = location.partition("://")
    return scheme.lower() if sep else ""


def redact(location: str) -> str:
    """The location with any password masked, for messages and logs.

    Everything between the first ``:`` of the user information and the
    last ``@`` before the query is replaced, so a key holding ``/`` or
    ``@`` (as legacy swift URLs write them, unescaped) is masked too; so are
    the values of query parameters of signed URLs (``X-Amz-Signature``,
    ``temp_url_sig``, ``token`` ...).
    """
    location = _SECRET_PARAM.sub(r"\1***", location)
    scheme, sep, rest = location.partition("://")
    if not sep:
        return location
    end = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    if at < 0:
        return location
    user, colon, _ = rest[:at].partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{rest[at + 1:]}"
