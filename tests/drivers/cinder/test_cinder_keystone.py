"""The cinder store's Keystone paths, against a real Keystone and a cinder-api
that trusts it.

The swift tests' Keystone harness (``tests/backends/swift.py``:
``KeystoneServer``, Keystone 30 under gunicorn, sqlite, fernet tokens) runs on
``base_port + 20``; a third cinder-api of the deployment runs with
``auth_strategy = keystone`` on ``base_port + 6`` (same database, bus and
backends as the noauth one), registered in Keystone's catalog as the
``volumev3`` service. Glance's service user ``glance`` (member of project
``service``) and an application credential of it are made here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import multistore
from multistore import errors
from multistore.testing import make_conf, random_bytes
from server_session import serving

from cinder_stores import BASE_PORT

MiB = 1024 * 1024
GLANCE_PASSWORD = "glance-" + uuid.uuid4().hex


def _swift_harness() -> Any:
    name = "multistore_swift_harness"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "backends" / "swift.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


def _call(url: str, method: str, body: Any = None, token: str | None = None,
          ) -> tuple[dict[str, str], Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body else None)
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return dict(r.headers), json.loads(text) if text else None


class Keystone:
    """Keystone with a volumev3 service, the ``glance`` service user, an
    application credential, and the demo user of the harness."""

    def __init__(self, server: Any, cinder_url: str) -> None:
        self.server = server
        self.url = server.url
        self.cinder_url = cinder_url
        admin = server.token()
        v3 = self.url + "/v3"
        service = _call(v3 + "/services", "POST", {"service": {
            "type": "volumev3", "name": "cinderv3"}}, admin)[1]["service"]["id"]
        for interface in ("public", "internal"):
            _call(v3 + "/endpoints", "POST", {"endpoint": {
                "service_id": service, "interface": interface, "region_id": "RegionOne",
                "url": f"{cinder_url}/v3/$(project_id)s"}}, admin)
        member = _call(v3 + "/roles?name=member", "GET", None, admin)[1]["roles"][0]["id"]
        self.service_project = _call(v3 + "/projects", "POST", {"project": {
            "name": "service", "domain_id": "default"}}, admin)[1]["project"]["id"]
        user = _call(v3 + "/users", "POST", {"user": {
            "name": "glance", "password": GLANCE_PASSWORD, "domain_id": "default",
            "default_project_id": self.service_project}}, admin)[1]["user"]["id"]
        _call(f"{v3}/projects/{self.service_project}/users/{user}/roles/{member}", "PUT",
              None, admin)
        glance = server.token("glance", GLANCE_PASSWORD, "service")
        cred = _call(f"{v3}/users/{user}/application_credentials", "POST",
                     {"application_credential": {"name": "multistore"}},
                     glance)[1]["application_credential"]
        self.app_id, self.app_secret = cred["id"], cred["secret"]
        self.demo_project = server.project_ids["demo"]

    def user_context(self) -> dict[str, Any]:
        """What Glance's RequestContext carries for the demo user."""
        headers, body = _call(self.url + "/v3/auth/tokens", "POST", {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "demo", "domain": {"id": "default"},
                "password": self.server.USERS["demo"]}}},
            "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}})
        return {"auth_token": headers["X-Subject-Token"], "project_id": self.demo_project,
                "user_id": body["token"]["user"]["id"],
                "service_catalog": body["token"]["catalog"]}


@pytest.fixture(scope="session")
def cinder_keystone(cinder_deployment: Any) -> Iterator[Keystone]:
    harness = _swift_harness()
    with serving(lambda directory: harness.KeystoneServer(
            directory, port=BASE_PORT + 20, swift_url=f"http://127.0.0.1:{BASE_PORT + 21}"),
            "multistore-cinder-keystone-", "MULTISTORE_CINDER_TMP") as server:
        yield Keystone(server, cinder_deployment.start_keystone_api(server.url,
                                                                   server.ADMIN_PASSWORD))


@pytest.fixture
def keystone_stores(cinder_keystone: Keystone, cinder_deployment: Any,
                    tmp_path: Path) -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(**options: Any) -> Any:
        conf = make_conf({
            "DEFAULT": {"enabled_backends": {"kstone": "cinder"}},
            "glance_store": {"default_backend": "kstone"},
            "kstone": {"cinder_volume_type": "netapp",
                       "cinder_rbd_keyring_file": cinder_deployment.keyring_path,
                       "cinder_api_timeout": 30, **options}}, tmp_path / f"c{len(made)}")
        made.append(multistore.load(conf))
        return made[-1]

    yield make
    for stores in made:
        stores.close()
    for project in (cinder_keystone.service_project, cinder_keystone.demo_project):
        assert cinder_deployment.volumes(project) == [], project


def _service(keystone: Keystone, **extra: Any) -> dict[str, Any]:
    return {"cinder_store_auth_address": keystone.url + "/v3",
            "cinder_store_project_name": "service", **extra}


def _round_trip(stores: Any, project: str, deployment: Any, context: Any = None) -> None:
    data = random_bytes(3 * MiB + 1, seed=11)
    image_id = str(uuid.uuid4())
    result = stores.add(image_id, data, len(data), context=context)
    [volume] = deployment.volumes(project)
    assert volume["name"] == f"image-{image_id}" and volume["volume_type"] == "netapp"
    assert volume["metadata"]["image_owner"] in (project, "service")
    with stores.get(result.location, context=context) as reader:
        assert reader.read_all() == data
    assert stores["kstone"].driver.image_id(result.location, context=context) == image_id
    stores.delete(result.location, context=context)


def test_service_user_and_password(keystone_stores: Callable[..., Any],
                                   cinder_keystone: Keystone, cinder_deployment: Any) -> None:
    stores = keystone_stores(**_service(cinder_keystone, cinder_store_user_name="glance",
                                        cinder_store_password=GLANCE_PASSWORD))
    props = stores.info(detail=True)[0]["properties"]
    assert props["auth"] == "service credentials (Keystone)"
    assert props["project"] == "service"
    _round_trip(stores, cinder_keystone.service_project, cinder_deployment)


def test_application_credential(keystone_stores: Callable[..., Any],
                                cinder_keystone: Keystone, cinder_deployment: Any) -> None:
    stores = keystone_stores(**_service(
        cinder_keystone, cinder_store_application_credential_id=cinder_keystone.app_id,
        cinder_store_application_credential_secret=cinder_keystone.app_secret))
    _round_trip(stores, cinder_keystone.service_project, cinder_deployment)


def test_bad_credentials_name_the_store_and_never_the_secret(
        keystone_stores: Callable[..., Any], cinder_keystone: Keystone,
        caplog: pytest.LogCaptureFixture) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    caplog.set_level("DEBUG")
    stores = keystone_stores(**_service(cinder_keystone, cinder_store_user_name="glance",
                                        cinder_store_password=wrong))
    with pytest.raises(errors.WriteDenied) as info:
        stores.add(str(uuid.uuid4()), b"x", 1)
    assert info.value.store == "kstone" and info.value.operation == "add"
    assert "refused the store's credentials" in str(info.value)
    texts = [str(info.value), repr(info.value), *(r.getMessage() for r in caplog.records)]
    assert not [t for t in texts if wrong in t]


def test_the_request_context_and_its_service_catalog(
        keystone_stores: Callable[..., Any], cinder_keystone: Keystone,
        cinder_deployment: Any) -> None:
    """No service credentials and no endpoint template: glance_store's path
    through the user's token and the volumev3 endpoint of its catalog."""
    stores = keystone_stores()
    context = cinder_keystone.user_context()
    _round_trip(stores, cinder_keystone.demo_project, cinder_deployment, context)
