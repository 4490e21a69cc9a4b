"""The conformance suite on both cinder stores of the real deployment.

``netapp`` grows volumes of unknown size detached (glance_store's default);
``powerstore`` grows them attached (``cinder_do_extend_attached``). Every
test runs in a project of its own, and ends with Cinder's own volume list of
that project empty (the ``cinder_project`` fixture).
"""

from collections.abc import Callable
from typing import Any

import pytest

from multistore.testing.conformance import ConformanceSuite

MiB = 1024 * 1024


class TestNetappConformance(ConformanceSuite):
    store = "netapp"
    options: dict[str, Any] = {}
    # Every add is a volume create, an attachment and a detach (about a
    # second each on this machine): the suite's sizes stay, a bit smaller.
    large_image_size = 32 * MiB

    @pytest.fixture
    def make_stores(self, make_cinder_stores: Callable[..., Any]) -> Callable[..., Any]:
        def make(**overrides: Any) -> Any:
            return make_cinder_stores({self.store: {**self.options, **overrides}})
        return make


class TestPowerstoreConformance(TestNetappConformance):
    store = "powerstore"
    options = {"cinder_do_extend_attached": True}
