"""Helpers of the cinder driver's tests (imported by name: tests/ is not a package)."""

from __future__ import annotations

import os
from typing import Any

#: The deployment's first port ($MULTISTORE_CINDER_PORT moves it).
BASE_PORT = int(os.environ.get("MULTISTORE_CINDER_PORT", "17200"))


def cinder_store_options(deployment: Any, project: str, volume_type: str,
                         **extra: Any) -> dict[str, Any]:
    """A cinder store's group: noauth service identity ``glance:<project>``,
    the deployment's endpoint template, the keyring os-brick needs."""
    return {"cinder_store_auth_type": "noauth", "cinder_store_user_name": "glance",
            "cinder_store_project_name": project,
            "cinder_endpoint_template": f"{deployment.api_url}/v3/%(tenant)s",
            "cinder_volume_type": volume_type,
            "cinder_rbd_keyring_file": deployment.keyring_path,
            "cinder_state_transition_timeout": 120, **extra}
