"""The conformance suite on the vmware driver against vcsim (TLS verified with the test CA)."""

from __future__ import annotations

from typing import Any

import pytest

from multistore.testing.conformance import ConformanceSuite


class TestVmwareConformance(ConformanceSuite):
    @pytest.fixture
    def make_stores(self, make_vmware_stores: Any, vcsim: Any) -> Any:
        def make(**overrides: Any) -> Any:
            return make_vmware_stores(vcsim, **overrides)
        return make
