"""The fault suites on a cinder store of the real deployment.

``netapp`` is the store under test (in the test's project); a file store
``local`` takes part in the mixed load and is the target of the copies (a
second cinder store would need the very API the faults take down, to be
checked empty). Killed ``multistore add`` children leave volumes the sweep
removes; "the backend full" is a real quota of 0 GiB.

"The server" is everything a cinder store talks to: cinder-api and Ceph
(the bytes go to Ceph through librbd, the API only places and attaches
volumes). Killed: cinder-api gets SIGKILL and Ceph's daemons SIGSTOP (the
test cluster's OSD keeps its data in memory: killed, it would lose every
volume of the session); frozen: both SIGSTOP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cinder_stores import cinder_store_options

from multistore.testing import render_ini
from multistore.testing.faults import FaultSuite, FullBackendFaults, ServerFaults


class TestCinderFaults(FaultSuite, FullBackendFaults, ServerFaults):
    kills = 8
    # every operation is a few Cinder calls (an attachment: about a second):
    # a longer run lets gets, copies and deletes race the adds
    mixed_seconds = 45.0
    server_timeout = 60.0
    fault_image_size = 16 * 1024 * 1024

    @pytest.fixture(autouse=True)
    def private_tmpdir(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The killed ``multistore add`` children's os-brick temporary files
        (a SIGKILL-ed process removes nothing) go to the test's directory."""
        (tmp_path / "children").mkdir()
        monkeypatch.setenv("TMPDIR", str(tmp_path / "children"))

    @pytest.fixture
    def fault_config(self, cinder_deployment: Any, cinder_project: tuple[str, Any],
                     tmp_path: Path) -> Path:
        project, _ = cinder_project
        # 16 threads attaching at once queue in cinder-volume (each attachment
        # runs the ceph CLI there): calls of 10 s happen. A server down costs an
        # add at most a Ceph timeout and an API timeout: 2 x 15 < 60.
        path = tmp_path / "faults.conf"
        path.write_text(render_ini({
            "DEFAULT": {"enabled_backends": {"netapp": "cinder", "local": "file"}},
            "glance_store": {"default_backend": "netapp", "stream_chunk_size": 65536},
            "netapp": cinder_store_options(cinder_deployment, project, "netapp",
                                           cinder_api_timeout=15, cinder_http_retries=1,
                                           cinder_state_transition_timeout=60),
            "local": {"filesystem_store_datadir": str(tmp_path / "local")},
        }))
        return path

    @pytest.fixture
    def fill_backend(self, cinder_deployment: Any, cinder_project: tuple[str, Any],
                     ) -> Callable[..., Callable[[], None]]:
        project, _ = cinder_project

        def fill(stores: Any, store_id: str) -> Callable[[], None]:
            cinder_deployment.set_quota(project, gigabytes=0)
            return lambda: cinder_deployment.set_quota(project, gigabytes=-1)
        return fill

    @pytest.fixture
    def kill_server(self, cinder_deployment: Any) -> Iterator[Callable[[], None]]:
        def kill() -> None:
            cinder_deployment.kill_api()
            cinder_deployment.ceph.freeze()
        yield kill
        self._restore(cinder_deployment)

    @pytest.fixture
    def restart_server(self, cinder_deployment: Any) -> Callable[[], None]:
        return lambda: self._restore(cinder_deployment)

    @pytest.fixture
    def freeze_server(self, cinder_deployment: Any) -> Iterator[Callable[[], None]]:
        def freeze() -> None:
            cinder_deployment.freeze_api()
            cinder_deployment.ceph.freeze()
        yield freeze
        self._restore(cinder_deployment)

    @pytest.fixture
    def thaw_server(self, cinder_deployment: Any) -> Callable[[], None]:
        return lambda: self._restore(cinder_deployment)

    @staticmethod
    def _restore(deployment: Any) -> None:
        """Everything running again (idempotent: also each hook's teardown)."""
        if deployment.ceph.frozen:
            deployment.ceph.thaw()
        deployment.thaw_api()
        deployment.start_api()
