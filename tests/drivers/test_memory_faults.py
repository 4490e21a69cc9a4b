"""The fault suite on the memory store. A child process's memory store is its
own, so a killed child leaves nothing here (the suite checks it); the
capacity option plays the full backend; a file store and a second memory
store take part in the mixed load."""

import pytest

from multistore.testing import render_ini
from multistore.testing.faults import FaultSuite, FullBackendFaults


class TestMemoryFaults(FaultSuite, FullBackendFaults):
    capacity = 96 * 1024 * 1024

    @pytest.fixture
    def fault_config(self, tmp_path):
        path = tmp_path / "faults.conf"
        path.write_text(render_ini({
            "DEFAULT": {"enabled_backends": {"ram": "memory", "ram2": "memory",
                                             "disk": "file"}},
            "glance_store": {"default_backend": "ram", "stream_chunk_size": 65536},
            "ram": {"memory_store_capacity": self.capacity},
            "disk": {"filesystem_store_datadir": tmp_path / "disk"},
        }))
        return path

    @pytest.fixture
    def fill_backend(self):
        def fill(stores, store_id):
            used = stores[store_id].driver.properties()["used"]
            filler = stores.add("filler", b"\0" * (self.capacity - used
                                                   - self.full_image_size // 2),
                                store=store_id)
            return lambda: stores.delete(filler.location)
        return fill
