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
    the harness module itself (``Attachment``, ``wait_status``, ``wait_gone``,
    ``brick_connection_info``, ``rbd_connector``, ``BACKENDS``...).
``cinder_project``
    ``(name, client)``: a project of the test's own (noauth takes any name)
    and an admin cinderclient in it; at the end Cinder's own volume list of
    that project must be empty (leftovers are removed and fail the test), and
    no os-brick ``brickrbd_*`` file (a ceph.conf naming the keyring) may be
    left in the test's own temporary directory (``tempfile.tempdir`` during
    the test).
``make_cinder_volume``
    ``make(size_gb=1, volume_type="netapp", image_size=0)``: a volume in
    ``cinder_project`` made as glance_store's add makes it (``image-<id>``,
    its metadata), ``available``; removed at the end without complaint.
``brick_properties``
    os-brick's connector properties for this host (privsep in process).
"""

from __future__ import annotations

import json
import importlib.util
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cinder_stores import BASE_PORT, cinder_store_options
from server_session import running

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


@pytest.fixture(scope="session")
def cinder_harness() -> Any:
    return harness


@pytest.fixture(scope="session")
def cinder_deployment() -> Iterator[Any]:
    reuse = os.environ.get("MULTISTORE_CINDER_REUSE")
    if reuse:
        # Development: a deployment started by hand (``python
        # tests/backends/cinder.py start DIR``) serves several runs; it is
        # left running.
        yield _reused(Path(reuse))
        return
    # Not pytest's tmp_path: PostgreSQL runs as "postgres" and must reach
    # its directory (pytest's base directory is private to root).
    yield from running(lambda directory: harness.CinderDeployment(directory, BASE_PORT),
                       "multistore-cinder-", "MULTISTORE_CINDER_TMP")


def _reused(directory: Path) -> Any:
    info = json.loads((directory / "cinder.json").read_text())
    deployment = harness.CinderDeployment(directory, info["ports"]["api"])
    deployment.ceph.fsid = info["fsid"]
    if info.get("tls_endpoint"):
        deployment.tls_url = info["tls_endpoint"].rsplit("/v3/", 1)[0]
        deployment.ca_file = info["ca_file"]
    return deployment


@pytest.fixture(scope="session")
def cinder_client(cinder_deployment: Any) -> Any:
    return cinder_deployment.client()


@pytest.fixture(scope="session")
def cinder_tls_url(cinder_deployment: Any) -> str:
    return cinder_deployment.start_tls_api()


@pytest.fixture
def cinder_owned_volumes() -> list[str]:
    """Volumes that make_cinder_volume created: removed at the end without complaint."""
    return []


@pytest.fixture
def cinder_project(cinder_deployment: Any, cinder_harness: Any,
                   cinder_owned_volumes: list[str], tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """A project of the test's own and an admin cinderclient in it (3.54). At
    the end, every volume the test made itself must be gone or being deleted:
    what is left is removed (attachments first), and the test fails; so does
    a temporary ceph.conf of os-brick's (it holds the keyring) left behind."""
    name = "t" + uuid.uuid4().hex[:12]
    client = cinder_deployment.client(name)
    # os-brick makes its temporary ceph.conf with tempfile.mkstemp: in a
    # directory of the test's own, so that another process's os-brick file in
    # /tmp (other runs on the machine, seen mid-teardown) is not taken for
    # this test's, and this test's cannot hide among old ones.
    brick_tmp = tmp_path_factory.mktemp("brick")
    monkeypatch.setattr(tempfile, "tempdir", str(brick_tmp))
    yield name, client
    # os-brick writes a ceph.conf with the cephx key per connection: none may stay.
    assert sorted(p.name for p in brick_tmp.glob("brickrbd_*")) == []
    left = [v for v in cinder_deployment.volumes(name) if v["status"] != "deleting"]
    for volume in left:
        for att in volume["attachments"]:
            client.attachments.delete(att["attachment_id"])
        cinder_harness.wait_status(client, volume["id"], "available", timeout=60)
        client.volumes.delete(volume["id"])
    deadline = time.monotonic() + 60
    while cinder_deployment.volumes(name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cinder_deployment.volumes(name) == []
    leaked = [(v["id"], v["status"]) for v in left if v["id"] not in cinder_owned_volumes]
    assert leaked == [], f"volumes left in {name}: {leaked}"


@pytest.fixture(scope="session")
def brick_properties(cinder_harness: Any) -> dict[str, Any]:
    """os-brick's connector properties for this host (privsep in process)."""
    return cinder_harness.brick_connector_properties()


@pytest.fixture
def make_cinder_volume(cinder_harness: Any, cinder_project: tuple[str, Any],
                       cinder_owned_volumes: list[str]) -> Callable[..., Any]:
    """``make(size_gb, volume_type, image_size)``: a volume as
    glance_store's add creates it, waited until ``available`` (cinder_project
    removes what the test leaves)."""
    name, client = cinder_project

    def make(size_gb: int = 1, volume_type: str = "netapp", image_size: int = 0) -> Any:
        image_id = str(uuid.uuid4())
        volume = client.volumes.create(
            size_gb, name=f"image-{image_id}", volume_type=volume_type,
            metadata={"glance_image_id": image_id, "image_size": str(image_size),
                      "image_owner": name})
        cinder_owned_volumes.append(volume.id)
        return cinder_harness.wait_status(client, volume.id, "available", timeout=60)

    return make


# -- multistore's cinder stores on the deployment -------------------------------------


@pytest.fixture
def make_cinder_stores(cinder_deployment: Any, cinder_project: tuple[str, Any],
                       cinder_owned_volumes: list[str],
                       tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make(stores={"netapp": {...options}}, default=None, extra_sections={})``:
    a StoreSet of cinder stores (each of the type named by its id unless its
    options say otherwise) in the test's own project; closed at the end.

    Images the test kept (finished image volumes: glance_store's metadata
    only, ``available``, not attached) are deleted at the end; any other
    volume (one still tagged by a writer, attached, in error) is a leak that
    ``cinder_project`` reports."""
    import multistore
    from multistore.testing import make_conf

    project, _ = cinder_project
    made: list[Any] = []
    count = [0]

    def make(stores: dict[str, dict[str, Any]] | None = None, default: str | None = None,
             extra_backends: dict[str, str] | None = None,
             extra_sections: dict[str, dict[str, Any]] | None = None) -> Any:
        stores = stores if stores is not None else {"netapp": {}}
        sections: dict[str, dict[str, Any]] = {
            "DEFAULT": {"enabled_backends": {**{s: "cinder" for s in stores},
                                             **(extra_backends or {})}},
            "glance_store": {"default_backend": default or next(iter(stores))},
        }
        for store_id, given in stores.items():
            options = dict(given)
            sections[store_id] = {k: v for k, v in cinder_store_options(
                cinder_deployment, project, options.pop("cinder_volume_type", store_id),
                **options).items() if v is not None}     # None: not set at all
        sections.update(extra_sections or {})
        count[0] += 1
        loaded = multistore.load(make_conf(sections, tmp_path / f"conf{count[0]}"))
        made.append(loaded)
        return loaded

    yield make
    for stores in made:
        stores.close()
    _, client = cinder_project
    for volume in cinder_deployment.volumes(project):
        meta = volume["metadata"]
        if "glance_image_id" in meta and "multistore_writer" not in meta \
                and volume["status"] == "available" and not volume["attachments"]:
            client.volumes.delete(volume["id"])
            cinder_owned_volumes.append(volume["id"])
