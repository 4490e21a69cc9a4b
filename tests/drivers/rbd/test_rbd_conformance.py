"""The conformance suite on the rbd driver, against a real Ceph cluster."""

import pytest

from multistore.testing.conformance import ConformanceSuite


class TestRbdConformance(ConformanceSuite):
    options: dict = {}

    @pytest.fixture
    def make_stores(self, ceph_a, make_rbd_stores):
        def make(**overrides):
            return make_rbd_stores({"ceph": (ceph_a, {**self.options, **overrides})})
        return make


class TestRbdConformanceThin(TestRbdConformance):
    """Thin provisioning changes which objects are written, not what is read."""

    options = {"rbd_thin_provisioning": True, "rbd_store_chunk_size": 1}
