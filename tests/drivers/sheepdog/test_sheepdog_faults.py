"""The fault suite (multistore.testing.faults) on a private cluster per test.

The cluster's objects live on a 256 MiB tmpfs, so that ``fill_backend`` can
fill it; a file store beside it takes part in the mixed load's copies and is
the server suites' copy target. The store's timeout (2.5 s) is shorter than
the suite's outage (3 s), so a frozen read must resume, and its one resume
after a timeout waits until 5.5 s, well after the thaw
(:meth:`SheepdogDriver.read_retries`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sheepdog_stores import sheepdog_options

import multistore
from multistore.testing import render_ini
from multistore.testing.faults import FaultSuite, FullBackendFaults, ServerFaults

MiB = 1 << 20


class TestSheepdogFaults(FaultSuite, FullBackendFaults, ServerFaults):
    server_timeout = 30.0
    resumes_reads = True
    #: A get keeps up to 16 reads of 4 MiB in flight (2 per connection, 8
    #: connections): 64 MiB can be answered and sitting in socket buffers when
    #: the server is struck, so more than that must be left after the strike
    #: (the suite strikes in the first half) for the read to need the server.
    #: At 96 MiB a loaded machine sometimes read the rest without resuming.
    fault_image_size = 160 * MiB

    @pytest.fixture
    def cluster(self, make_sheepdog_cluster: Callable[..., Any]) -> Any:
        return make_sheepdog_cluster(size_limit=256 * MiB)

    @pytest.fixture
    def fault_config(self, cluster: Any, tmp_path: Path) -> Path:
        path = tmp_path / "faults.conf"
        path.write_text(render_ini({
            "DEFAULT": {"enabled_backends": {"sd": "sheepdog", "files": "file"}},
            "glance_store": {"default_backend": "sd"},
            "sd": sheepdog_options(cluster, sheepdog_store_timeout=2.5),
            "files": {"filesystem_store_datadir": str(tmp_path / "files")},
        }))
        return path

    @pytest.fixture
    def fill_backend(self, cluster: Any) -> Callable[[multistore.StoreSet, str],
                                                     Callable[[], None]]:
        def fill(stores: multistore.StoreSet, store_id: str) -> Callable[[], None]:
            cluster.fill()
            return cluster.unfill
        return fill

    @pytest.fixture
    def kill_server(self, cluster: Any) -> Callable[[], None]:
        return cluster.kill

    @pytest.fixture
    def restart_server(self, cluster: Any) -> Callable[[], None]:
        return lambda: cluster.restart()

    @pytest.fixture
    def freeze_server(self, cluster: Any) -> Callable[[], None]:
        return cluster.freeze

    @pytest.fixture
    def thaw_server(self, cluster: Any) -> Callable[[], None]:
        return lambda: cluster.thaw()
