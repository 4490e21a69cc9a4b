"""The cinder driver against the real deployment: what the conformance suite
does not say.

Every test works in a project of its own; ``cinder_project`` checks at the
end, in Cinder's own volume list, that nothing but the images the test kept
is left (``make_cinder_stores`` removes those), and that no os-brick
temporary ceph.conf is left.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import multistore
from multistore import errors
from multistore.drivers.cinder import CinderLocation
from multistore.drivers.cinder.options import GLANCE_STORE_OPTIONS
from multistore.testing import Generated, properties, random_bytes
from multistore.testing.conformance import _FailingSource

MiB = 1024 * 1024
GiB = 1024 * MiB
ROOT = Path(__file__).resolve().parents[3]
GLANCE_VENV = Path("/opt/multistore-glance/33.0.0/venv")


def new_id() -> str:
    return str(uuid.uuid4())


def read(stores: Any, location: str, **kwargs: Any) -> bytes:
    with stores.get(location, **kwargs) as reader:
        return reader.read_all()


def volume_of(location: str) -> str:
    return CinderLocation.parse(location).volume_id


# -- options and locations (no server) -----------------------------------------------


def test_every_glance_store_option_with_its_type_and_default() -> None:
    """Compared with glance_store 5.x's own definitions, read from its source
    in the Glance venv (importing it would need os-brick and cinderclient
    there)."""
    source = next(GLANCE_VENV.glob("lib/python3*/site-packages/glance_store/_drivers/"
                                   "cinder/store.py"))
    tree = ast.parse(source.read_text())
    listed = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", "") == "_CINDER_OPTS")
    assert isinstance(listed, ast.List)
    theirs = []
    for call in listed.elts:
        assert isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
        kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg != "help"}
        theirs.append([ast.literal_eval(call.args[0]), call.func.attr, kw.get("default"),
                       kw.get("min"), kw.get("secret", False),
                       [kw["deprecated_name"]] if "deprecated_name" in kw else []])
    ours = [[o.dest, type(o).__name__, o.default, getattr(o.type, "min", None), o.secret,
             [d.name for d in o.deprecated_opts]] for o in GLANCE_STORE_OPTIONS]
    assert sorted(ours) == sorted(theirs)
    assert len(ours) == 22


def test_locations_parse_and_format() -> None:
    vol = "0b5f4c1e-2d7a-4f7e-9a55-3e1f0c9d8b7a"
    multi = CinderLocation.parse(f"cinder://netapp/{vol}")
    assert (multi.store, multi.volume_id) == ("netapp", vol)
    legacy = CinderLocation.parse(f"cinder://{vol}")
    assert (legacy.store, legacy.volume_id) == (None, vol)
    assert legacy.format() == f"cinder://{vol}"
    odd = CinderLocation(vol, "a b/%c")
    assert CinderLocation.parse(odd.format()) == odd
    assert CinderLocation.parse(f"cinder://netapp/{vol.upper()}") == multi
    for bad in (f"cinder://netapp/{vol}/x", f"cinder://netapp/{vol}?x=1",
                f"cinder://netapp/{vol}#", "cinder://netapp/not-a-uuid", "cinder://",
                f"cinder:///{vol}", f"rbd://netapp/{vol}", f"cinder://netapp/{vol[:-1]}"):
        with pytest.raises(ValueError):
            CinderLocation.parse(bad)
    # The conformance suite names a missing image with with_image_id: a
    # version-5 UUID, which Cinder (version 4) never gives a volume.
    missing = multi.with_image_id("not a uuid")
    assert missing.store == "netapp" and uuid.UUID(missing.volume_id).version == 5


@settings(max_examples=300)
@given(store=st.one_of(st.none(), properties.image_ids()), volume=st.uuids())
def test_locations_round_trip_for_any_store_id(store: str | None, volume: uuid.UUID) -> None:
    location = CinderLocation(str(volume), store)
    assert CinderLocation.parse(location.format()) == location


def test_arbitrary_strings_as_locations(make_cinder_stores: Callable[..., Any]) -> None:
    """Arbitrary strings and near misses of real locations (multi-store and
    legacy) are BadLocation, or NotFound from Cinder, or one store's image."""
    stores = make_cinder_stores({"netapp": {}, "powerstore": {}})
    result = stores.add(new_id(), b"real", 4)
    legacy = f"cinder://{volume_of(result.location)}"
    properties.check_arbitrary_locations(stores, examples=[result.location, legacy],
                                         max_examples=150)


# -- what a volume looks like ---------------------------------------------------------


def test_one_volume_per_image_named_tagged_and_sized_as_glance_store(
        make_cinder_stores: Callable[..., Any], cinder_project: tuple[str, Any],
        cinder_deployment: Any) -> None:
    project, client = cinder_project
    stores = make_cinder_stores({"netapp": {}})
    image_id = new_id()
    data = random_bytes(3 * MiB + 5, seed=1)
    result = stores.add(image_id, data, len(data))
    assert result.location.startswith("cinder://netapp/")
    volume = client.volumes.get(volume_of(result.location))
    assert volume.name == f"image-{image_id}"
    assert volume.volume_type == "netapp" and volume.size == 1
    assert volume.status == "available" and volume.attachments == []
    assert volume.metadata == {"glance_image_id": image_id, "image_size": str(len(data)),
                               "image_owner": project, "readonly": "True"}
    assert f"volume-{volume.id}" in cinder_deployment.rbd_images("netapp")
    assert stores["netapp"].driver.image_id(result.location) == image_id
    assert stores["netapp"].driver.location_for(image_id).format() == result.location
    assert read(stores, result.location) == data
    # The size announced, rounded up to GiB, before a byte is written.
    writer = stores["netapp"].driver.open_writer(new_id(), 3 * GiB + 1)
    try:
        assert client.volumes.get(writer.volume.id).size == 4
    finally:
        writer.abort()
    assert [v["id"] for v in cinder_deployment.volumes(project)] == [volume.id]


def test_two_cinder_stores_are_independent(
        make_cinder_stores: Callable[..., Any], cinder_project: tuple[str, Any],
        cinder_deployment: Any) -> None:
    """Different volume types, identities (projects) and sessions in one process."""
    project, _ = cinder_project
    other = project + "b"
    stores = make_cinder_stores({
        "netapp": {},
        "powerstore": {"cinder_store_project_name": other, "cinder_store_user_name": "ops"}})
    a, b = stores["netapp"].driver, stores["powerstore"].driver
    assert a.api.session() is not b.api.session()
    data = random_bytes(MiB, seed=2)
    image_id = new_id()
    try:
        one = stores.add(image_id, data, len(data), store="netapp")
        two = stores.add(image_id, data, len(data), store="powerstore")
        mine = {v["id"]: v for v in cinder_deployment.volumes(project)}
        theirs = {v["id"]: v for v in cinder_deployment.volumes(other)}
        assert set(mine) == {volume_of(one.location)}
        assert set(theirs) == {volume_of(two.location)}
        assert theirs[volume_of(two.location)]["metadata"]["image_owner"] == other
        assert f"volume-{volume_of(one.location)}" in cinder_deployment.rbd_images("netapp")
        assert f"volume-{volume_of(two.location)}" in \
            cinder_deployment.rbd_images("powerstore")
        assert read(stores, one.location) == read(stores, two.location) == data
        info = {e["id"]: e["properties"] for e in stores.info(detail=True)}
        assert info["netapp"]["project"] == project
        assert info["powerstore"]["project"] == other
        stores.delete(two.location)
    finally:
        client = cinder_deployment.client(other)
        for volume in cinder_deployment.volumes(other):
            client.volumes.delete(volume["id"])
    assert cinder_deployment.volumes(other) == [] or all(
        v["status"] == "deleting" for v in cinder_deployment.volumes(other))


def test_two_stores_on_one_volume_type_are_refused(
        make_cinder_stores: Callable[..., Any]) -> None:
    with pytest.raises(errors.ConfigError) as info:
        make_cinder_stores({"one": {"cinder_volume_type": "netapp"},
                            "two": {"cinder_volume_type": "netapp"}})
    assert "volume type 'netapp'" in str(info.value)
    assert set(info.value.stores) == {"one", "two"}


def test_detailed_listing_shows_type_backend_and_pool_capacity(
        make_cinder_stores: Callable[..., Any]) -> None:
    stores = make_cinder_stores({"netapp": {}, "powerstore": {}})
    info = {e["id"]: e for e in stores.info(detail=True)}
    for store_id in ("netapp", "powerstore"):
        props = info[store_id]["properties"]
        assert props["volume_type"] == store_id
        assert props["backend"] == store_id
        assert [p["name"] for p in props["pools"]] == [f"aio@{store_id}#{store_id}"]
        assert props["pools"][0]["storage_protocol"] == "ceph"
        # No ceph-mgr in the test cluster: the RBD driver cannot read pool
        # stats, and the listing says what the scheduler says.
        assert props["free_capacity_gb"] == "unknown"
        assert props["auth"] == "service identity (Cinder noauth)"


# -- unknown sizes ---------------------------------------------------------------------


@pytest.mark.parametrize("store, online", [("netapp", False), ("powerstore", True)])
def test_unknown_size_grows_the_volume(make_cinder_stores: Callable[..., Any],
                                       cinder_project: tuple[str, Any], store: str,
                                       online: bool) -> None:
    """Past 1 GiB with no size given: extended attached (3.42+) or detached,
    extended and attached again; the image reads back whole."""
    _, client = cinder_project
    stores = make_cinder_stores({store: {"cinder_do_extend_attached": online}})
    source = Generated(GiB + 3 * MiB + 11, seed=5)
    md5, _ = source.digests()
    result = stores.add(new_id(), iter(source), None)
    assert result.size == source.size and result.checksum == md5
    volume = client.volumes.get(volume_of(result.location))
    assert volume.size == 2
    assert volume.metadata["image_size"] == str(source.size)
    digest = hashlib.md5()
    with stores.get(result.location) as reader:
        for chunk in reader:
            digest.update(chunk)
    assert digest.hexdigest() == md5
    with stores.get(result.location, offset=GiB - 5, length=10) as reader:
        assert len(reader.read_all()) == 10
    stores.delete(result.location)


# -- failures leave nothing --------------------------------------------------------------


def test_a_failing_source_leaves_nothing_at_once(make_cinder_stores: Callable[..., Any],
                                                 cinder_project: tuple[str, Any],
                                                 cinder_deployment: Any) -> None:
    project, _ = cinder_project
    stores = make_cinder_stores({"netapp": {}})
    with pytest.raises(ConnectionResetError):
        stores.add(new_id(), _FailingSource(random_bytes(6 * MiB)), 12 * MiB)
    # The abort waited until Cinder removed the volume: not even "deleting".
    assert cinder_deployment.volumes(project) == []
    with pytest.raises(errors.SizeMismatch):
        stores.add(new_id(), random_bytes(MiB), MiB + 1)
    assert cinder_deployment.volumes(project) == []


def test_a_volume_in_error_is_removed(make_cinder_stores: Callable[..., Any],
                                      cinder_project: tuple[str, Any],
                                      cinder_deployment: Any, cinder_client: Any) -> None:
    """A type whose backend does not exist: the scheduler puts the volume in
    ``error``; the add says so, with Cinder's own message, and deletes it."""
    project, _ = cinder_project
    vtype = cinder_client.volume_types.create(f"nowhere-{uuid.uuid4().hex[:8]}")
    try:
        vtype.set_keys({"volume_backend_name": "nowhere"})
        stores = make_cinder_stores({"netapp": {"cinder_volume_type": vtype.name}})
        with pytest.raises(errors.MultistoreError) as info:
            stores.add(new_id(), b"x" * 100, 100)
        assert info.value.store == "netapp" and info.value.operation == "add"
        assert "'error', expected 'available'" in str(info.value)
        # Cinder's own user message for the volume, fetched by the driver
        assert "Could not find any available weighted backend" in str(info.value)
        assert cinder_deployment.volumes(project) == []
    finally:
        cinder_client.volume_types.delete(vtype.id)


def test_an_attach_failure_is_cleaned_up(make_cinder_stores: Callable[..., Any],
                                         cinder_project: tuple[str, Any],
                                         cinder_deployment: Any, tmp_path: Path) -> None:
    """os-brick cannot open the image (a keyring with another key): the
    attachment and the volume are removed; the error names os-brick."""
    project, _ = cinder_project
    keyring = tmp_path / "wrong.keyring"
    keyring.write_text("[client.cinder]\n\tkey = AQBvaXRoZXJrZXlvdGhlcmtleW90aGVya2V5MTIzNA==\n")
    stores = make_cinder_stores({"netapp": {"cinder_rbd_keyring_file": str(keyring)}})
    started = time.monotonic()
    with pytest.raises(errors.MultistoreError) as info:
        stores.add(new_id(), b"x" * 100, 100)
    assert "os-brick" in str(info.value)
    assert time.monotonic() - started < 120
    assert cinder_deployment.volumes(project) == []


def test_a_state_transition_timeout_is_cleaned_up(make_cinder_stores: Callable[..., Any],
                                                  cinder_project: tuple[str, Any],
                                                  cinder_deployment: Any) -> None:
    """cinder-volume stopped (SIGSTOP): the volume stays ``creating``, the add
    gives up after cinder_state_transition_timeout, and its cleanup waits
    for the volume to settle (it cannot be deleted while creating) and
    deletes it once cinder-volume runs again."""
    project, _ = cinder_project
    stores = make_cinder_stores({"netapp": {"cinder_state_transition_timeout": 4}})
    cinder_deployment._signal_group("volume", signal.SIGSTOP)
    thaw = threading.Timer(6, cinder_deployment._signal_group, ("volume", signal.SIGCONT))
    thaw.start()
    try:
        started = time.monotonic()
        with pytest.raises(errors.BackendUnavailable) as info:
            stores.add(new_id(), b"x" * 100, 100)
        assert "still 'creating' after 4 s" in str(info.value)
        assert time.monotonic() - started < 30
    finally:
        thaw.join()
        cinder_deployment._signal_group("volume", signal.SIGCONT)
    assert cinder_deployment.volumes(project) == []


# -- readers ------------------------------------------------------------------------------


def test_several_readers_share_one_read_only_attachment(
        make_cinder_stores: Callable[..., Any], cinder_project: tuple[str, Any]) -> None:
    _, client = cinder_project
    stores = make_cinder_stores({"netapp": {}})
    data = random_bytes(8 * MiB + 3, seed=3)
    result = stores.add(new_id(), data, len(data))
    volume_id = volume_of(result.location)
    ranges = [(0, None), (0, None), (5 * MiB, None), (MiB - 1, 3), (7 * MiB, MiB)]
    readers = [stores.get(result.location, offset=o, length=n) for o, n in ranges]
    try:
        volume = client.volumes.get(volume_id)
        assert volume.status == "in-use" and len(volume.attachments) == 1
        attachment = client.attachments.show(volume.attachments[0]["attachment_id"])
        assert attachment.attach_mode == "ro"
        got: dict[int, bytes] = {}
        threads = [threading.Thread(target=lambda n=n, r=r: got.__setitem__(n, r.read_all()))
                   for n, r in enumerate(readers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for n, (offset, length) in enumerate(ranges):
            assert got[n] == data[offset:None if length is None else offset + length]
    finally:
        for r in readers:
            r.close()
    assert client.volumes.get(volume_id).status == "available"


def test_delete_of_an_image_being_read_is_in_use(make_cinder_stores: Callable[..., Any],
                                                cinder_project: tuple[str, Any]) -> None:
    _, client = cinder_project
    stores = make_cinder_stores({"netapp": {}})
    data = random_bytes(2 * MiB, seed=4)
    result = stores.add(new_id(), data, len(data))
    with stores.get(result.location) as reader:
        with pytest.raises(errors.InUse) as info:
            stores.delete(result.location)
        assert info.value.store == "netapp" and info.value.operation == "delete"
        assert reader.read_all() == data
    assert client.volumes.get(volume_of(result.location)).status == "available"
    stores.delete(result.location)
    with pytest.raises(errors.NotFound):
        stores.get_size(result.location)


# -- quotas, outages, TLS -----------------------------------------------------------------


def test_quota_exceeded_is_storage_full(make_cinder_stores: Callable[..., Any],
                                        cinder_project: tuple[str, Any],
                                        cinder_deployment: Any) -> None:
    project, _ = cinder_project
    cinder_deployment.set_quota(project, gigabytes=1, volumes=-1)
    stores = make_cinder_stores({"netapp": {}})
    with pytest.raises(errors.StorageFull) as info:
        stores.add(new_id(), Generated(GiB + 1, seed=1), GiB + 1)
    assert "quota" in str(info.value) and info.value.store == "netapp"
    assert cinder_deployment.volumes(project) == []
    # Unknown size: the extend past the quota is refused.
    with pytest.raises(errors.StorageFull):
        stores.add(new_id(), iter(Generated(GiB + MiB, seed=2)), None)
    assert cinder_deployment.volumes(project) == []
    cinder_deployment.set_quota(project, gigabytes=-1, volumes=1)
    kept = stores.add(new_id(), b"one", 3)
    with pytest.raises(errors.StorageFull) as info:
        stores.add(new_id(), b"two", 3)
    assert "VolumeLimitExceeded" in str(info.value)
    assert [v["id"] for v in cinder_deployment.volumes(project)] == [volume_of(kept.location)]


def test_cinder_down_is_backend_unavailable_within_the_timeout(
        make_cinder_stores: Callable[..., Any], cinder_deployment: Any) -> None:
    stores = make_cinder_stores({"netapp": {"cinder_api_timeout": 3, "cinder_http_retries": 2}})
    kept = stores.add(new_id(), b"data", 4)
    cinder_deployment.kill_api()
    try:
        for call in (lambda: stores.add(new_id(), b"x", 1), lambda: read(stores, kept.location),
                     lambda: stores.get_size(kept.location)):
            started = time.monotonic()
            with pytest.raises(errors.BackendUnavailable) as info:
                call()
            # refused at once; retried twice (0.5 s, 1 s) for the reads
            assert time.monotonic() - started < 5
            assert "cannot reach Cinder" in str(info.value)
    finally:
        cinder_deployment.start_api()
    cinder_deployment.freeze_api()
    try:
        started = time.monotonic()
        with pytest.raises(errors.BackendUnavailable) as info:
            stores.get_size(kept.location)
        assert 2.9 < time.monotonic() - started < 6     # one timeout, never retried
        assert "did not answer within 3 s" in str(info.value)
    finally:
        cinder_deployment.thaw_api()
    assert read(stores, kept.location) == b"data"


def test_tls_endpoint(make_cinder_stores: Callable[..., Any], cinder_deployment: Any,
                      cinder_tls_url: str, cinder_project: tuple[str, Any]) -> None:
    project, _ = cinder_project
    https = {"cinder_endpoint_template": f"{cinder_tls_url}/v3/%(tenant)s"}
    stores = make_cinder_stores({
        "trusted": {**https, "cinder_volume_type": "netapp",
                    "cinder_ca_certificates_file": cinder_deployment.ca_file},
        "insecure": {**https, "cinder_volume_type": "powerstore",
                     "cinder_api_insecure": True}})
    for store in ("trusted", "insecure"):
        result = stores.add(new_id(), b"over TLS", 8, store=store)
        assert read(stores, result.location) == b"over TLS"
        stores.delete(result.location)
    # (a store set of its own: two stores on one type and Cinder are refused)
    untrusted = make_cinder_stores({"untrusted": {**https, "cinder_volume_type": "netapp"}})
    with pytest.raises(errors.BackendUnavailable) as info:
        untrusted.add(new_id(), b"x", 1)
    assert "TLS" in str(info.value) and "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert cinder_deployment.volumes(project) == []


# -- identities, secrets ------------------------------------------------------------------


def test_without_service_identity_the_request_context_acts(
        make_cinder_stores: Callable[..., Any], cinder_project: tuple[str, Any],
        cinder_deployment: Any) -> None:
    """glance_store's path without service credentials: the request's token
    and project (noauth: ``user:project``), the endpoint from the template."""
    project, _ = cinder_project
    stores = make_cinder_stores({"netapp": {"cinder_store_auth_type": "keystone",
                                            "cinder_store_user_name": None}})
    with pytest.raises(errors.WriteDenied) as info:
        stores.add(new_id(), b"x", 1)
    assert "request context" in str(info.value)
    context = {"project_id": project, "user_id": "alice"}
    result = stores.add(new_id(), b"as alice", 8, context=context)
    assert [v["metadata"]["image_owner"] for v in cinder_deployment.volumes(project)] == \
        [project]
    assert read(stores, result.location, context=context) == b"as alice"
    stores.delete(result.location, context=context)


def test_no_secret_in_logs_errors_reprs_or_locations(
        make_cinder_stores: Callable[..., Any], cinder_deployment: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """DEBUG logs of every library (os-brick traces connection_info), errors,
    reprs, the listing and locations hold no cephx key, password or
    application credential secret."""
    key = next(line.split("=", 1)[1].strip() for line in
               Path(cinder_deployment.keyring_path).read_text().splitlines() if "key" in line)
    password, app_secret = "pw-" + uuid.uuid4().hex, "as-" + uuid.uuid4().hex
    caplog.set_level("DEBUG")
    stores = make_cinder_stores({
        "netapp": {},
        "keystone": {"cinder_volume_type": "netapp", "cinder_store_auth_type": "keystone",
                     "cinder_store_auth_address": "http://127.0.0.1:17240/v3",
                     "cinder_store_user_name": "glance", "cinder_store_password": password,
                     "cinder_store_project_name": "service",
                     "cinder_api_timeout": 3, "cinder_http_retries": 1},
        "appcred": {"cinder_volume_type": "netapp", "cinder_store_auth_type": "keystone",
                    "cinder_store_auth_address": "http://127.0.0.1:17240/v3",
                    "cinder_store_application_credential_id": "app",
                    "cinder_store_application_credential_secret": app_secret,
                    "cinder_http_retries": 0}})
    texts = [repr(stores), repr(stores["keystone"]), repr(stores["keystone"].driver),
             repr(stores["keystone"].conf), json.dumps(stores.info(detail=True))]
    data = random_bytes(2 * MiB, seed=6)
    result = stores.add(new_id(), data, len(data))
    texts.append(result.location)
    texts.append(repr(result))
    assert read(stores, result.location) == data
    for store in ("keystone", "appcred"):
        with pytest.raises(errors.BackendUnavailable) as info:
            stores.add(new_id(), b"x", 1, store=store)
        texts += [str(info.value), repr(info.value)]
        cause: BaseException | None = info.value
        while cause is not None:
            texts.append(repr(cause))
            cause = cause.__cause__ or cause.__context__
    stores.delete(result.location)
    texts += [r.getMessage() for r in caplog.records]
    assert any("connect_volume" in t for t in texts)   # os-brick's traces were there
    for secret in (key, password, app_secret):
        assert not [t for t in texts if secret in t]


# -- legacy locations -----------------------------------------------------------------------


def test_legacy_locations_find_their_store_by_volume_type(
        make_cinder_stores: Callable[..., Any], tmp_path: Path) -> None:
    stores = make_cinder_stores({"netapp": {}, "powerstore": {}})
    data = random_bytes(MiB, seed=7)
    result = stores.add(new_id(), data, len(data))
    volume = volume_of(result.location)
    legacy = f"cinder://{volume}"
    # Two cinder stores: the location alone cannot tell (holds() may not ask
    # Cinder); the caller names the store, and the store checks the type.
    with pytest.raises(errors.BadLocation) as info:
        stores.get_size(legacy)
    assert set(info.value.stores) == {"netapp", "powerstore"}
    assert read(stores, legacy, store="netapp") == data
    with pytest.raises(errors.BadLocation) as info:
        stores.get_size(legacy, store="powerstore")
    assert "of type 'netapp'" in str(info.value)
    assert stores["netapp"].driver.associated(volume) is True
    assert stores["powerstore"].driver.associated(volume) is False
    # One cinder store (and a file store): the legacy location is its.
    single = make_cinder_stores({"netapp": {}}, extra_backends={"files": "file"},
                                extra_sections={"files": {
                                    "filesystem_store_datadir": str(tmp_path / "files")}})
    assert single.store_for(legacy).id == "netapp"
    assert read(single, legacy) == data
    single.delete(legacy)


def test_legacy_single_store_layout_writes_legacy_locations(
        cinder_deployment: Any, cinder_project: tuple[str, Any], tmp_path: Path) -> None:
    from multistore.testing import make_conf

    from cinder_stores import cinder_store_options
    project, _ = cinder_project
    conf = make_conf({"glance_store": {
        "stores": "cinder", "default_store": "cinder",
        **cinder_store_options(cinder_deployment, project, "netapp")}}, tmp_path)
    with multistore.load(conf) as stores:
        result = stores.add(new_id(), b"single store", 12)
        assert result.location == f"cinder://{volume_of(result.location)}"
        assert read(stores, result.location) == b"single store"
        stores.delete(result.location)


# -- what killed writers leave ----------------------------------------------------------------

WRITER = """
import sys, time
import multistore
from oslo_config import cfg
conf = cfg.ConfigOpts()
multistore.register_opts(conf)
conf(["--config-file", sys.argv[1]], project="multistore", default_config_files=[])
stores = multistore.load(conf)
def source():
    yield b"x" * (8 * 1024 * 1024)
    print("WRITING", flush=True)
    time.sleep(600)
stores.add(sys.argv[2], source(), 16 * 1024 * 1024)
"""


def test_a_killed_writer_leaves_a_volume_the_sweep_removes(
        make_cinder_stores: Callable[..., Any], cinder_project: tuple[str, Any],
        cinder_deployment: Any, tmp_path: Path) -> None:
    project, _ = cinder_project
    stores = make_cinder_stores({"netapp": {}})
    conf_file = stores.conf.config_file[0]
    image_id = new_id()
    # A SIGKILL-ed process removes nothing: os-brick's temporary file goes to
    # the test's directory, not to the one cinder_project checks.
    child = subprocess.Popen([sys.executable, "-c", WRITER, conf_file, image_id],
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "WRITING"
        # A live writer in another process: not a leftover.
        assert stores["netapp"].driver.find_leftovers(0) == []
    finally:
        child.kill()
        child.wait()
    [volume] = cinder_deployment.volumes(project)
    assert volume["metadata"]["multistore_writer"].split(":")[1] == str(child.pid)
    assert volume["status"] == "in-use"          # the dead writer's attachment
    swept = stores.sweep(grace=0)
    assert [(s.store, s.removed) for s in swept] == [("netapp", True)]
    assert image_id in swept[0].name and swept[0].size == GiB
    assert cinder_deployment.volumes(project) == []


def test_a_live_writer_in_this_process_is_not_a_leftover(
        make_cinder_stores: Callable[..., Any]) -> None:
    stores = make_cinder_stores({"netapp": {}})
    go, writing = threading.Event(), threading.Event()

    def source() -> Iterator[bytes]:
        yield b"y" * MiB
        writing.set()
        go.wait(120)
        yield b"y" * MiB

    done: list[Any] = []
    t = threading.Thread(target=lambda: done.append(stores.add(new_id(), source(), 2 * MiB)))
    t.start()
    try:
        assert writing.wait(120)
        assert stores.sweep(grace=0) == []
    finally:
        go.set()
        t.join(120)
    assert read(stores, done[0].location) == b"y" * (2 * MiB)


FIRST_ADD_IN_A_THREAD = """
import sys, threading, uuid
import multistore
from oslo_config import cfg
conf = cfg.ConfigOpts()
multistore.register_opts(conf)
conf(["--config-file", sys.argv[1]], project="multistore", default_config_files=[])
stores = multistore.load(conf)
done = []
t = threading.Thread(target=lambda: done.append(stores.add(str(uuid.uuid4()), b"x", 1)))
t.start()
t.join(120)
print("alive" if t.is_alive() else "joined", done[0].location if done else "", flush=True)
"""


def test_the_first_add_in_a_fresh_process_may_run_in_a_thread(
        make_cinder_stores: Callable[..., Any], cinder_project: tuple[str, Any]) -> None:
    """os-brick imports eventlet, which, imported first in a worker thread,
    leaves that thread unjoinable: the driver imports it at load."""
    stores = make_cinder_stores({"netapp": {}})
    done = subprocess.run([sys.executable, "-c", FIRST_ADD_IN_A_THREAD,
                           stores.conf.config_file[0]], capture_output=True, text=True,
                          timeout=300, check=True)
    state, location = done.stdout.split()
    assert state == "joined"
    stores.delete(location)
