"""pytest fixtures for projects that use multistore.

Loaded automatically (a ``pytest11`` entry point) once multistore is
installed::

    def test_upload(multistore_stores):
        result = multistore_stores.add("img", b"data", 4)
        assert result.metadata == {"store": "local"}

``multistore_stores`` has file stores ``local`` (the default) and
``backup`` in a temporary directory, a memory store ``memory``, and the
reserved ``os_glance_staging_store``. Override ``multistore_sections`` in
a project's ``conftest.py`` for another layout.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from oslo_config import cfg

import multistore
from multistore.testing import local_layout, make_conf

RESERVED = {"os_glance_staging_store": "file"}


@pytest.fixture
def multistore_sections(tmp_path: Any) -> dict[str, dict[str, Any]]:
    """The configuration sections; override to change the layout."""
    return local_layout(tmp_path / "stores")


@pytest.fixture
def multistore_conf(multistore_sections: dict[str, dict[str, Any]],
                    tmp_path: Any) -> cfg.ConfigOpts:
    """A parsed ConfigOpts for ``multistore_sections``."""
    return make_conf(multistore_sections, tmp_path)


@pytest.fixture
def multistore_stores(multistore_conf: cfg.ConfigOpts) -> Iterator[multistore.StoreSet]:
    """A loaded StoreSet, closed after the test."""
    with multistore.load(multistore_conf, reserved=RESERVED) as stores:
        yield stores
