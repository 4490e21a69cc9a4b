"""The fault suite on a cinder store of the real deployment.

``netapp`` (the store under test, in the test's project) and ``powerstore``
(in a second project, so that a quota on the first leaves it room) take the
mixed load; killed ``multistore add`` children leave volumes the sweep
removes; "the backend full" is a real quota of 0 GiB; "the server" is
cinder-api (killed, frozen): bytes go to Ceph through librbd, so an add
fails when it needs the API again (to commit), and a read finishes and
detaches once the API is back.
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

    @pytest.fixture
    def fault_config(self, cinder_deployment: Any, cinder_project: tuple[str, Any],
                     tmp_path: Path) -> Iterator[Path]:
        project, _ = cinder_project
        other = project + "b"
        # 16 threads attaching at once queue in cinder-volume (each attachment
        # runs the ceph CLI there): calls of 10 s happen; a frozen API costs
        # an add two timeouts (the commit, then its cleanup): 2 x 20 < 60.
        timeouts = {"cinder_api_timeout": 20, "cinder_http_retries": 1,
                    "cinder_state_transition_timeout": 60}
        path = tmp_path / "faults.conf"
        path.write_text(render_ini({
            "DEFAULT": {"enabled_backends": {"netapp": "cinder", "powerstore": "cinder"}},
            "glance_store": {"default_backend": "netapp", "stream_chunk_size": 65536},
            "netapp": cinder_store_options(cinder_deployment, project, "netapp", **timeouts),
            "powerstore": cinder_store_options(cinder_deployment, other, "powerstore",
                                               cinder_do_extend_attached=True, **timeouts),
        }))
        yield path
        client = cinder_deployment.client(other)
        for volume in cinder_deployment.volumes(other):
            client.volumes.delete(volume["id"])
        assert cinder_deployment.volumes(other) == [] or all(
            v["status"] == "deleting" for v in cinder_deployment.volumes(other))

    @pytest.fixture
    def fill_backend(self, cinder_deployment: Any, cinder_project: tuple[str, Any],
                     ) -> Callable[..., Callable[[], None]]:
        project, _ = cinder_project

        def fill(stores: Any, store_id: str) -> Callable[[], None]:
            cinder_deployment.set_quota(project, gigabytes=0)
            return lambda: cinder_deployment.set_quota(project, gigabytes=-1)
        return fill

    @pytest.fixture
    def kill_server(self, cinder_deployment: Any) -> Callable[[], None]:
        return cinder_deployment.kill_api

    @pytest.fixture
    def restart_server(self, cinder_deployment: Any) -> Callable[[], None]:
        return cinder_deployment.start_api

    @pytest.fixture
    def freeze_server(self, cinder_deployment: Any) -> Callable[[], None]:
        return cinder_deployment.freeze_api

    @pytest.fixture
    def thaw_server(self, cinder_deployment: Any) -> Callable[[], None]:
        return cinder_deployment.thaw_api
