"""The fault suite on rbd: two stores on the two test clusters (copies go
between them), 1 MiB objects so that kills land while objects are written.

Only :class:`FaultSuite` (writers killed with SIGKILL, the mixed load):
a full backend needs a manager daemon the harness does not run (pool quotas
and full ratios are computed from its statistics; without them an OSD
discards writes rather than refusing them), and a killed memstore OSD loses
its data, so the server suites wait for a harness with a persistent OSD.
The cluster frozen mid-add is ``test_rbd.py``'s
``test_cluster_going_away_mid_upload``.

A killed writer's image is provably abandoned only once its watch has
expired on the OSDs (``osd_client_watch_timeout``, 10 s on the test
clusters): the suite's sweep comes after the last kill's watch is gone.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from test_rbd import pool_io

from multistore.drivers.rbd import PARTIAL_PREFIX
from multistore.testing.faults import FaultSuite


def killed_partials(cluster) -> list[str]:
    return [n for n in cluster.images() if n.startswith(PARTIAL_PREFIX) and "\\killed-" in n]


def watched(cluster, names: list[str]) -> list[str]:
    import rbd
    with pool_io(cluster) as ioctx:
        out = []
        for name in names:
            with contextlib.suppress(rbd.ImageNotFound), \
                    rbd.Image(ioctx, name, read_only=True) as image:
                if list(image.watchers_list()):
                    out.append(name)
        return out


class TestRbdFaults(FaultSuite):
    @pytest.fixture
    def fault_config(self, ceph_a, ceph_b, write_rbd_config):
        small = {"rbd_store_chunk_size": 1}
        return write_rbd_config({"ceph": (ceph_a, small), "other": (ceph_b, small)})

    def test_sigkill_at_random_points_of_an_add(self, fault_config, make_stores, ceph_a):
        self.cluster, self.killed = ceph_a, 0
        super().test_sigkill_at_random_points_of_an_add(fault_config, make_stores)
        assert killed_partials(ceph_a) == []

    def _kill_an_add(self, *args: Any) -> None:   # type: ignore[override]
        FaultSuite._kill_an_add(*args)
        self.killed += 1
        if self.killed == self.kills:
            # A dead writer's watch outlives it for osd_client_watch_timeout
            # (10 s on the test cluster): until it expires, the image is not
            # provably abandoned and the suite's sweep would rightly leave it.
            deadline = time.monotonic() + 40
            while left := watched(self.cluster, killed_partials(self.cluster)):
                assert time.monotonic() < deadline, left
                time.sleep(0.5)
