"""Keystone v3 references and multi-tenant with Keystone tokens, for real:
Keystone 30 (sqlite, fernet) under gunicorn, Swift's authtoken + keystoneauth."""

from __future__ import annotations

import types
import uuid

import pytest

import multistore
from multistore import errors
from multistore.testing import make_conf, random_bytes

from swift_refs import MB, write_refs


def read(stores, location, **kwargs):
    with stores.get(location, **kwargs) as reader:
        return reader.read_all()


def test_keystone_v3_reference(keystone, tmp_path, all_logs):
    server, _ = keystone
    refs = write_refs(tmp_path / "glance-swift-store.conf", {"ks": {
        "auth_address": f"{server.url}/v3", "user": "demo:demo",
        "key": server.USERS["demo"], "user_domain_id": "default",
        "project_domain_id": "default", "auth_version": "3"}})
    conf = make_conf({"DEFAULT": {"enabled_backends": {"cloud": "swift"}},
                      "glance_store": {"default_backend": "cloud"},
                      "cloud": {"swift_store_config_file": refs,
                                "default_swift_reference": "ks",
                                "swift_store_region": "RegionOne",
                                "swift_store_endpoint_type": "internalURL",
                                "swift_store_create_container_on_put": True,
                                "swift_store_large_object_size": 1,
                                "swift_store_large_object_chunk_size": 1}}, tmp_path)
    data = random_bytes(3 * MB + 1, seed=11)
    with multistore.load(conf) as stores:
        image_id = str(uuid.uuid4())
        result = stores.add(image_id, data, len(data))
        assert result.location == f"swift+config://ks/glance/{image_id}"
        assert read(stores, result.location) == data
        assert read(stores, result.location, offset=MB, length=10) == data[MB:MB + 10]
        stores.delete(result.location)
        with pytest.raises(errors.NotFound):
            stores.get_size(result.location)
    # It really went through the Keystone-protected proxy, into demo's account.
    assert f"AUTH_{server.project_ids['demo']}" in "".join(
        r.getMessage() for r in all_logs.records)
    for record in all_logs.records:
        assert server.USERS["demo"] not in record.getMessage()


def test_keystone_wrong_password_is_refused(keystone, tmp_path):
    server, _ = keystone
    refs = write_refs(tmp_path / "refs.conf", {"ks": {
        "auth_address": f"{server.url}/v3", "user": "demo:demo", "key": "wrong-password",
        "auth_version": "3"}})
    conf = make_conf({"DEFAULT": {"enabled_backends": {"cloud": "swift"}},
                      "glance_store": {"default_backend": "cloud"},
                      "cloud": {"swift_store_config_file": refs,
                                "default_swift_reference": "ks"}}, tmp_path)
    with multistore.load(conf) as stores:
        with pytest.raises(errors.MultistoreError) as info:
            stores.add(str(uuid.uuid4()), b"x", 1)
        assert "wrong-password" not in str(info.value)


def _ks_context(server, user, catalog):
    token = server.token(user, server.USERS[user])
    return types.SimpleNamespace(auth_token=token, project_id=server.project_ids[user],
                                 service_catalog=catalog)


def test_multi_tenant_with_keystone_tokens_and_catalog(keystone, tmp_path):
    server, proxy_url = keystone
    catalog = None    # swift_store_endpoint names the storage URL
    conf = make_conf({"DEFAULT": {"enabled_backends": {"mt": "swift"}},
                      "glance_store": {"default_backend": "mt"},
                      "mt": {"swift_store_multi_tenant": True,
                             "swift_store_endpoint": f"{proxy_url}/v1/AUTH_%(tenant_id)s",
                             "swift_store_admin_tenants": server.project_ids["other"]},
                      }, tmp_path)
    demo = _ks_context(server, "demo", catalog)
    other = _ks_context(server, "other", catalog)
    data = random_bytes(MB, seed=12)
    with multistore.load(conf) as stores:
        result = stores.add(str(uuid.uuid4()), data, len(data), context=demo)
        assert f"/v1/AUTH_{server.project_ids['demo']}/glance_" in result.location
        assert read(stores, result.location, context=demo) == data
        with pytest.raises(errors.WriteDenied):
            read(stores, result.location, context=other)
        stores.set_acls(result.location, read_tenants=[server.project_ids["other"]],
                        context=demo)
        assert read(stores, result.location, context=other) == data
        stores.set_acls(result.location, context=demo)
        with pytest.raises(errors.WriteDenied):
            read(stores, result.location, context=other)
        stores.set_acls(result.location, public=True, context=demo)
        assert read(stores, result.location, context=other) == data
        stores.delete(result.location, context=demo)


def test_storage_url_from_a_v3_service_catalog(keystone, tmp_path):
    server, proxy_url = keystone
    pid = server.project_ids["demo"]
    catalog = [{"type": "identity", "endpoints": []},
               {"type": "object-store", "name": "swift", "endpoints": [
                   {"interface": "admin", "region_id": "RegionOne", "url": "http://wrong"},
                   {"interface": "public", "region_id": "RegionOne",
                    "url": f"{proxy_url}/v1/AUTH_{pid}"}]}]
    conf = make_conf({"DEFAULT": {"enabled_backends": {"mt": "swift"}},
                      "glance_store": {"default_backend": "mt"},
                      "mt": {"swift_store_multi_tenant": True,
                             "swift_store_region": "RegionOne"}}, tmp_path)
    with multistore.load(conf) as stores:
        result = stores.add(str(uuid.uuid4()), b"catalog", 7,
                            context=_ks_context(server, "demo", catalog))
        assert result.location.startswith(f"swift+http://127.0.0.1:{proxy_url.rsplit(':', 1)[1]}"
                                          f"/v1/AUTH_{pid}/glance_")
        stores.delete(result.location, context=_ks_context(server, "demo", catalog))
