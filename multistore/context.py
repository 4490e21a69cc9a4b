"""The request context: who is asking, for drivers that act as the user.

Most stores act with the service's own credentials and ignore the context.
A few act on the user's behalf (swift's multi-tenant mode writes into the
user's account with the user's token; cinder can create volumes in the
user's project). The caller passes the context it already has with every
call: Glance's ``RequestContext`` (oslo.context) fits as it is, and so does
any object or mapping with these names. Every field is optional; a driver
that needs one it does not find raises a clear error naming it.

``auth_token``
    the user's Keystone (or tempauth) token.
``user_id`` / ``project_id``
    the user and the project (tenant) the token is scoped to;
    ``tenant`` is accepted for ``project_id``.
``roles``
    the user's role names.
``service_catalog``
    Keystone's catalog (v3 ``interface``/``url`` or v2 ``publicURL`` style
    endpoints), as Glance's ``RequestContext`` carries it.
``region_name``
    the region to pick from the catalog.
``storage_url``
    multistore's own: the user's Swift account URL, when known.

Drivers read fields through :func:`context_value`, never by attribute, so
that mappings and objects both work and a missing field is simply ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class RequestContext(Protocol):
    """What drivers may read of a request context (all optional)."""

    auth_token: str | None
    user_id: str | None
    project_id: str | None
    roles: Sequence[str]
    service_catalog: Sequence[Mapping[str, Any]] | None
    region_name: str | None


#: What a caller may pass as a context: a RequestContext, any object with
#: some of its attributes, a mapping, or None.
Context = RequestContext | Mapping[str, Any] | Any | None


def context_value(context: Context, *names: str) -> Any:
    """The first of ``names`` set (and not empty) on ``context``."""
    if context is None:
        return None
    for name in names:
        value = (context.get(name) if isinstance(context, Mapping)
                 else getattr(context, name, None))
        if value:
            return value
    return None


__all__ = ["RequestContext", "Context", "context_value"]
