"""The fault suite on rbd, on the fault cluster (``ceph_faults``: a
bluestore OSD, which keeps its data when killed), with a store on ``ceph_a``
beside it for the copies (between two clusters: streamed), 1 MiB objects so
that kills land while objects are written.

- :class:`FaultSuite`: writers killed with SIGKILL, the mixed load.
- :class:`FullBackendFaults`: Ceph's full ratio set below what the OSD holds
  (``ceph osd set-full-ratio`` and its nearfull/backfillfull companions); the
  OSD reports itself full and the mon flags the pool ``full``. No ceph-mgr
  is needed for that (pool quotas would need one: they are computed from its
  statistics). librados pauses a write to a full pool until it has room,
  which would end as a timeout; the driver sets FULL_TRY on its pool context
  so that Ceph refuses it at once (ENOSPC: StorageFull).
- :class:`ServerFaults`: the cluster's mon and OSD killed (SIGKILL) and
  restarted on their data, or frozen (SIGSTOP) and thawed (SIGCONT), mid-add,
  mid-get and mid-copy. The store's timeout is 5 s (``rados_connect_timeout``:
  connect, mon and OSD operations); the driver does not resume reads.

A killed writer's image is provably abandoned only once its watch has
expired on the OSDs (``osd_client_watch_timeout``, 10 s on the test
clusters): the suite's sweep comes after the last kill's watch is gone.

What one run did (2 shared cores, other test runs beside; ``pytest -s``
prints these lines):

- 16 writers killed (3 before any data, 10 mid-data, 3 after the last
  byte): 15 images absent, 1 whole, never partial; the sweep removed 12
  partial images, none left after it.
- full backend: 2 adds (size known and unknown) and 1 copy from the other
  cluster refused with StorageFull naming the store, nothing left; the
  same add succeeded once the ratio was back.
- cluster killed (mon and OSD, SIGKILL): 4 gets and 4 copies mid-stream,
  half left down, half restarted 3 s later: each a BackendUnavailable
  within 5.0-5.1 s (a copy's target empty), get_size and get while down
  the same, and the same store reading again once back; 1 add: error in
  15 s, nothing visible, the id free again.
- cluster frozen (SIGSTOP): 2 gets left frozen: BackendUnavailable in
  5.0 s; 2 gets thawed after 3 s: completed with the right bytes; 1 add:
  error in 15 s, nothing visible.
- mixed load: 16 threads for 8 s, 330 operations (73 adds, 67 gets, 85
  ranged gets, 39 sizes, 53 deletes, 13 copies; 15 more copies found
  another thread's), every read right.

Start times: the fault cluster (bluestore) 4.4-6.6 s, the memstore ones
1.3-5 s; a restart after a kill 2.8-3.5 s; the full flag reaches the pool
1.5-5.5 s after the ratio is set. The module takes 3.7 min, 3 of them the
server tests.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from test_rbd import pool_io

from multistore.drivers.rbd import PARTIAL_PREFIX
from multistore.testing.faults import FaultSuite, FullBackendFaults, ServerFaults



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


class TestRbdFaults(FaultSuite, FullBackendFaults, ServerFaults):
    #: The store's timeout is 5 s: an add meets it twice (its writes in
    #: flight, then the check whether the partial image can be removed).
    server_timeout = 30.0

    @pytest.fixture
    def fault_config(self, ceph_faults, ceph_a, write_rbd_config):
        small = {"rbd_store_chunk_size": 1, "rados_connect_timeout": 5}
        return write_rbd_config({"ceph": (ceph_faults, small), "other": (ceph_a, small)})

    @pytest.fixture
    def fill_backend(self, ceph_faults):
        def fill(stores, store_id):
            ceph_faults.set_full(True)
            return lambda: ceph_faults.set_full(False)
        return fill

    @pytest.fixture
    def kill_server(self, ceph_faults):
        return ceph_faults.kill

    @pytest.fixture
    def restart_server(self, ceph_faults):
        return ceph_faults.restart

    @pytest.fixture
    def freeze_server(self, ceph_faults):
        return ceph_faults.freeze

    @pytest.fixture
    def thaw_server(self, ceph_faults):
        return ceph_faults.thaw

    def test_sigkill_at_random_points_of_an_add(self, fault_config, make_stores, ceph_faults):
        self.cluster, self.killed = ceph_faults, 0
        super().test_sigkill_at_random_points_of_an_add(fault_config, make_stores)
        assert killed_partials(ceph_faults) == []

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
