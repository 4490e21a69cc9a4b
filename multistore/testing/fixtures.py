"""pytest fixtures for projects that use multistore.

Loaded automatically (a ``pytest11`` entry point) once multistore is
installed::

    def test_upload(multistore_stores):
        result = multistore_stores.add("img", b"data", 4)
        assert result.metadata == {"store": "local"}

``multistore_secrets`` is the secrets guard (:mod:`multistore.testing.secrets`):
every log record of the test is captured at DEBUG, and the test fails if a
secret of any configuration loaded meanwhile (or one the test registers)
shows in one. Make it autouse in a ``conftest.py`` to guard every test.

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
from multistore import config
from multistore.testing import local_layout, make_conf
from multistore.testing.secrets import SecretsGuard

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
    """A loaded StoreSet, closed after the test. The reserved staging store
    is loaded when the sections have a group for it (the default layout
    does): a layout without one never touches ``/var/lib/glance``."""
    with multistore.load(multistore_conf,
                         reserved=config.declared(multistore_conf, RESERVED)) as stores:
        yield stores


@pytest.fixture
def multistore_secrets() -> Iterator[SecretsGuard]:
    """The secrets guard, capturing logs for the whole test; fails the test
    (at teardown) if a secret showed in a log record."""
    with SecretsGuard() as guard:
        yield guard
    guard.verify()
