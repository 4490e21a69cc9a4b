"""The conformance suite on the memory driver."""

import pytest

import multistore
from multistore.drivers.memory import MemoryBackend, MemoryDriver
from multistore.testing import make_conf
from multistore.testing.conformance import ConformanceSuite


class TestMemoryConformance(ConformanceSuite):
    large_image_size = 48 * 1024 * 1024

    @pytest.fixture
    def make_stores(self, tmp_path):
        backend = MemoryBackend()

        def make(**overrides):
            conf = make_conf({
                "DEFAULT": {"enabled_backends": {"ram": "memory"}},
                "glance_store": {"default_backend": "ram"},
                "ram": {"store_description": "memory", **overrides},
            }, tmp_path)
            return multistore.load(conf, drivers={"memory": MemoryDriver.sharing(backend)})
        return make
