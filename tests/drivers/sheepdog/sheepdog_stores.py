"""Store sets on the test clusters (a module of its own: ``from conftest import`` would find
another directory's conftest when several test directories run together)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def sheepdog_options(cluster: Any, **overrides: Any) -> dict[str, Any]:
    """A store group's options for ``cluster`` (a short timeout: tests must not wait)."""
    return {"sheepdog_store_address": cluster.address, "sheepdog_store_port": cluster.port,
            "sheepdog_store_timeout": 10, **overrides}


def sheepdog_stores(directory: Path, stores: dict[str, tuple[Any, dict[str, Any]]],
                    default: str | None = None,
                    extra: dict[str, dict[str, Any]] | None = None, **core: Any) -> Any:
    """A StoreSet of sheepdog stores ``{id: (cluster, {options})}``, the first the
    default, plus ``extra`` stores ``{id: {"type": ..., options}}``; ``core`` are
    ``[glance_store]`` options."""
    import multistore
    from multistore.testing import make_conf

    enabled = {sid: "sheepdog" for sid in stores}
    sections: dict[str, Any] = {}
    for sid, options in (extra or {}).items():
        options = dict(options)
        enabled[sid] = options.pop("type")
        sections[sid] = options
    for sid, (cluster, options) in stores.items():
        sections[sid] = sheepdog_options(cluster, **options)
    sections = {"DEFAULT": {"enabled_backends": enabled},
                "glance_store": {"default_backend": default or next(iter(stores)), **core},
                **sections}
    return multistore.load(make_conf(sections, directory))
