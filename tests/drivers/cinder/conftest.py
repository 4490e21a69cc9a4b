"""A real OpenStack Cinder on real Ceph for the cinder driver's tests.

One deployment per session (``tests/backends/cinder.py``): Ceph (pools
``netapp`` and ``powerstore``), PostgreSQL, RabbitMQ, cinder-api (noauth),
cinder-scheduler and cinder-volume with two RBD backends, volume types
``netapp`` and ``powerstore``; ports 17200-17299 on 127.0.0.1
(``$MULTISTORE_CINDER_PORT`` moves the base). A deployment that cannot start
fails the tests that need it; nothing is skipped.

Fixtures:

``cinder_deployment``
    the started :class:`CinderDeployment` (endpoint, token, ceph.conf,
    keyring, quotas, faults: see the harness module).
``cinder_client``
    cinderclient v3 (microversion 3.54) as an admin of the deployment's
    project (noauth token ``glance:multistore``).
``cinder_tls_url``
    the HTTPS-only second cinder-api (``cinder_deployment.ca_file`` is its CA).
``cinder_harness``
    the harness module itself (``brick_connection_info``, ``rbd_connector``,
    ``brick_connector_properties``, ``BACKENDS``...).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HARNESS = Path(__file__).resolve().parents[2] / "backends" / "cinder.py"


def _load_harness() -> Any:
    name = "multistore_cinder_harness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _HARNESS)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


harness = _load_harness()

BASE_PORT = int(os.environ.get("MULTISTORE_CINDER_PORT", "17200"))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def cinder_harness() -> Any:
    return harness


@pytest.fixture(scope="session")
def cinder_deployment() -> Iterator[Any]:
    # A run ended by SIGTERM (a CI timeout) must still stop the servers.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    base = Path(os.environ.get("MULTISTORE_CINDER_TMP") or tempfile.gettempdir())
    # mkdtemp, not pytest's tmp_path: PostgreSQL runs as "postgres" and must
    # reach its directory (pytest's base directory is private to root).
    directory = Path(tempfile.mkdtemp(prefix="multistore-cinder-", dir=base))
    deployment = harness.CinderDeployment(directory, BASE_PORT)
    atexit.register(deployment.stop)      # idempotent; for exits that skip teardown
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def cinder_client(cinder_deployment: Any) -> Any:
    return cinder_deployment.client()


@pytest.fixture(scope="session")
def cinder_tls_url(cinder_deployment: Any) -> str:
    return cinder_deployment.start_tls_api()
