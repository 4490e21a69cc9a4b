"""Test kit for projects that use multistore, and for driver authors.

- :func:`make_conf` builds a parsed ``ConfigOpts`` from a dict of sections.
- :func:`local_layout` is the usual test layout: file stores in a
  temporary directory plus a memory store.
- :mod:`multistore.testing.fixtures` is a pytest plugin (loaded
  automatically once multistore is installed) with ready fixtures:
  ``multistore_conf`` and ``multistore_stores``.
- :mod:`multistore.testing.conformance` is the behaviour suite every
  driver passes; a driver package runs it in a few lines.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_config import cfg

from multistore.config import register_opts
from multistore.sample import Generated, random_bytes

Sections = Mapping[str, Mapping[str, Any]]


def render_ini(sections: Sections) -> str:
    """An oslo.config file for ``sections``.

    Values: ``str``/``int``/``bool`` as written; a ``dict`` as ``k:v, k:v``
    (``enabled_backends``); a ``list`` as the key repeated once per item
    (multi-valued options such as ``filesystem_store_datadirs``). Write a
    list option (``stores``) as one comma-separated string.
    """
    lines: list[str] = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        for key, value in options.items():
            if isinstance(value, Mapping):
                lines.append(f"{key} = " + ", ".join(f"{k}:{v}" for k, v in value.items()))
            elif isinstance(value, (list, tuple)):
                lines += [f"{key} = {item}" for item in value]
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            else:
                lines.append(f"{key} = {value}")
        lines.append("")
    return "\n".join(lines)


def make_conf(sections: Sections, directory: str | os.PathLike[str] | None = None,
              ) -> cfg.ConfigOpts:
    """A fresh ``ConfigOpts`` parsed from ``sections`` written as a file.

    The file goes to ``directory`` (a new temporary directory if ``None``);
    going through a real file keeps the test as close as possible to an
    operator's ``glance-api.conf``.
    """
    directory = os.fspath(directory) if directory is not None else tempfile.mkdtemp(
        prefix="multistore-conf-")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "multistore.conf")
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_ini(sections))
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf(["--config-file", path], project="multistore", default_config_files=[])
    return conf


def local_layout(root: str | os.PathLike[str], file_stores: Sequence[str] = ("local", "backup"),
                 memory_stores: Sequence[str] = ("memory",), default: str | None = None,
                 **core: Any) -> dict[str, dict[str, Any]]:
    """Sections for file stores under ``root`` plus memory stores."""
    root = os.fspath(root)
    enabled = {s: "file" for s in file_stores} | {s: "memory" for s in memory_stores}
    sections: dict[str, dict[str, Any]] = {
        "DEFAULT": {"enabled_backends": enabled},
        "glance_store": {"default_backend": default or next(iter(enabled)), **core},
    }
    for store_id in file_stores:
        sections[store_id] = {"filesystem_store_datadir": os.path.join(root, store_id),
                              "store_description": f"{store_id} files under {root}"}
    for store_id in memory_stores:
        sections[store_id] = {"store_description": "in-memory store"}
    sections["os_glance_staging_store"] = {
        "filesystem_store_datadir": os.path.join(root, "os_glance_staging_store")}
    return sections


def image_files(directory: str | os.PathLike[str]) -> list[str]:
    """The image files in a file store's directory, sorted, after checking that
    no partial file is left (in its ``.multistore\\partial`` subdirectory)."""
    from multistore.drivers.file import PARTIAL_DIR

    directory = os.fspath(directory)
    partial = os.path.join(directory, PARTIAL_DIR)
    left = sorted(os.listdir(partial)) if os.path.isdir(partial) else []
    assert not left, f"partial files left in {partial}: {left}"
    return sorted(n for n in os.listdir(directory) if n != PARTIAL_DIR)


__all__ = ["make_conf", "render_ini", "local_layout", "random_bytes", "Generated",
           "image_files"]
