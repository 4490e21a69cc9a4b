"""The fault suite on the vmware driver: writers killed with SIGKILL (partial
files swept), many threads at once, a full datastore, and vcsim killed or
frozen mid-add and mid-get (a clear error within the timeout, nothing half
visible). Each test class has its own vcsim, killed and frozen freely."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from vmware_stores import vmware_options

from multistore.testing import render_ini
from multistore.testing.faults import FaultSuite, FullBackendFaults, ServerFaults

MiB = 1024 * 1024


def _settle(condition: Any, timeout: float = 20) -> None:
    """vcsim refreshes a datastore's free space by itself, a moment later."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "free space not refreshed in time"
        time.sleep(0.2)


def _config(tmp_path: Path, sim: Any, **options: Any) -> Path:
    path = tmp_path / "faults.conf"
    path.write_text(render_ini({
        "DEFAULT": {"enabled_backends": {"vmw": "vmware", "local": "file"}},
        "glance_store": {"default_backend": "vmw", "stream_chunk_size": 65536},
        "vmw": vmware_options(sim, vmware_timeout=3, **options),
        "local": {"filesystem_store_datadir": str(tmp_path / "local")},
    }))
    return path


class TestVmwareFaults(FaultSuite, ServerFaults):
    kills = 8
    mixed_threads = 8
    server_timeout = 45.0
    fault_image_size = 16 * MiB

    @pytest.fixture
    def sim(self, make_vcsim: Any) -> Any:
        return make_vcsim()

    @pytest.fixture
    def fault_config(self, sim: Any, tmp_path: Path) -> Path:
        return _config(tmp_path, sim)

    @pytest.fixture
    def kill_server(self, sim: Any) -> Any:
        return sim.kill

    @pytest.fixture
    def restart_server(self, sim: Any, tmp_path: Path) -> Any:
        """Start it again with the files it had (vcsim starts with empty
        datastores: they are put back, as a restarted vCenter would have them)."""
        def restart() -> None:
            kept = tmp_path / "kept"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(sim.datastore_path(), kept)
            sim.start()
            shutil.copytree(kept, sim.datastore_path(), dirs_exist_ok=True)
        return restart

    @pytest.fixture
    def freeze_server(self, sim: Any) -> Any:
        return sim.freeze

    @pytest.fixture
    def thaw_server(self, sim: Any) -> Any:
        return sim.thaw


class TestVmwareFullDatastore(FullBackendFaults):
    full_image_size = 8 * MiB

    @pytest.fixture
    def sim(self, make_vcsim: Any) -> Any:
        return make_vcsim(small_datastore_bytes=12 * MiB)

    @pytest.fixture
    def make_stores(self, sim: Any, tmp_path: Path) -> Any:
        from multistore.testing.faults import load_config
        path = _config(tmp_path, sim, vmware_datastores=["DC0:SmallDS"])
        return lambda: load_config(path)

    @pytest.fixture
    def fill_backend(self, sim: Any) -> Any:
        def fill(stores: Any, store_id: str) -> Any:
            url = sim.folder_url("filler", datastore="SmallDS")
            put = requests.put(url, data=b"\0" * (6 * MiB), verify=sim.ca_file, timeout=30)
            assert put.status_code == 200
            driver = stores[store_id].driver
            _settle(lambda: driver._free_space(driver.datastores[0]) < 8 * MiB)

            def release() -> None:
                s = stores[store_id].driver
                ds = s.datastores[0]
                s._file_task("DeleteDatastoreFile_Task", "removing the filler",
                             name="[SmallDS] filler", datacenter=ds.dc_ref)
                _settle(lambda: s._free_space(ds) >= 10 * MiB)
            return release
        return fill
