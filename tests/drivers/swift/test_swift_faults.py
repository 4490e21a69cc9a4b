"""The fault suite (multistore.testing.faults) on a real Swift.

The store under test reaches Swift through a proxy of its own, which the
server tests kill (SIGKILL), restart, freeze (SIGSTOP) and thaw; a
container quota of one byte on the image's containers makes the backend
full. A second swift store (through the main proxy, another container)
and a memory store take part in the mixed load and the copies."""

from __future__ import annotations

import time
import uuid

import pytest
import swiftclient

from multistore.testing import render_ini
from multistore.testing.faults import FaultSuite, FullBackendFaults, ServerFaults

from swift_refs import tempauth_ref, write_refs

PROXY = "proxy-faults"


class TestSwiftFaults(FaultSuite, FullBackendFaults, ServerFaults):
    #: 2 MB segments from 1 MB on: killed adds leave segments, a 32 MiB
    #: image under fault has 17 of them.
    fault_image_size = 32 * 1024 * 1024
    #: Broken reads resume (swift_store_retry_get_count = 8: about 11 s of
    #: backoff) at the first byte not delivered; an outage of 4 s is longer
    #: than the store's 3 s timeout and well within that window.
    resumes_reads = True
    server_outage = 4.0

    @pytest.fixture
    def container(self):
        return "faults" + uuid.uuid4().hex[:8]

    @pytest.fixture
    def fault_config(self, swift_server, swift_fault_proxy, tmp_path, container):
        refs = write_refs(tmp_path / "faults-refs.conf", {
            "faults": {**tempauth_ref(swift_server),
                       "auth_address": f"{swift_fault_proxy}/auth/v1.0"},
            "main": tempauth_ref(swift_server)})
        common = {"swift_store_config_file": refs,
                  "swift_store_create_container_on_put": True,
                  "swift_store_large_object_size": 1,
                  "swift_store_large_object_chunk_size": 2,
                  "swift_store_timeout": 3, "swift_store_retries": 1,
                  "swift_store_retry_get_count": 8}
        path = tmp_path / "faults.conf"
        path.write_text(render_ini({
            "DEFAULT": {"enabled_backends": {"objects": "swift", "other": "swift",
                                             "ram": "memory"}},
            # Small buffers: a kill lands while bytes are being written.
            "glance_store": {"default_backend": "objects", "stream_chunk_size": 65536},
            "objects": {**common, "default_swift_reference": "faults",
                        "swift_store_container": container},
            "other": {**common, "default_swift_reference": "main",
                      "swift_store_container": container + "other"},
        }))
        return path

    @pytest.fixture
    def fill_backend(self, swift_server, container):
        conn = swiftclient.Connection(authurl=swift_server.auth_url, user="test:tester",
                                      key=swift_server.users["test:tester"], retries=0)

        def quota(value):
            for name in (container, container + "_segments"):
                conn.put_container(name)
                conn.post_container(name, {"X-Container-Meta-Quota-Bytes": value})

        def release():
            quota("")
            time.sleep(1.5)      # the fault proxy caches container info for 1 s

        def fill(stores, store_id):
            quota("1")
            time.sleep(1.5)
            return release
        yield fill
        conn.close()

    @pytest.fixture
    def kill_server(self, swift_server):
        return lambda: swift_server.kill(PROXY)

    @pytest.fixture
    def restart_server(self, swift_server):
        return lambda: swift_server.restart(PROXY)

    @pytest.fixture
    def freeze_server(self, swift_server):
        return lambda: swift_server.freeze(PROXY)

    @pytest.fixture
    def thaw_server(self, swift_server):
        return lambda: swift_server.thaw(PROXY)
