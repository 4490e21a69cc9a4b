"""Store options for the test simulators (a module of its own: ``from conftest import``
would find another directory's conftest when several test directories run together)."""

from __future__ import annotations

from typing import Any


def vmware_options(sim: Any, **overrides: Any) -> dict[str, Any]:
    """A vmware store's options for ``sim`` (fast task polls for tests)."""
    return {"vmware_server_host": sim.host, "vmware_server_port": sim.port,
            "vmware_server_username": sim.username, "vmware_server_password": sim.password,
            "vmware_ca_file": sim.ca_file, "vmware_datastores": ["DC0:LocalDS_0"],
            "vmware_task_poll_interval": 1, "vmware_api_retry_count": 10,
            "vmware_timeout": 10, **overrides}
