"""The path a cinder driver takes, proven against the real deployment.

Everything here goes through the real cinder-api, scheduler and volume
services and the real RBD driver on Ceph, the way glance_store's cinder
driver does it: cinderclient with a noauth token, volumes named
``image-<id>`` with glance_store's metadata, attachments reserved then
updated with os-brick's connector properties, os-brick's RBD connector with
``do_local_attach=False`` (librbd in this process). Each test works in a
project of its own, and checks at the end, in Cinder's own volume list, that
nothing is left.

The failure cases pin what a driver will see: the exception classes, HTTP
codes and messages of a quota exceeded, an in-use delete, an API that is
down or frozen, a certificate that is not trusted.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cinderclient import exceptions as cinder_exceptions
from keystoneauth1 import exceptions as ks_exceptions

from multistore.testing import random_bytes

MiB = 1024 * 1024
GiB = 1024 * MiB


def attach(harness: Any, deployment: Any, client: Any, volume_id: str, props: dict[str, Any],
           mode: str = "rw") -> Any:
    return harness.Attachment(client, volume_id, deployment.keyring_path, mode, props)


def write_all(f: Any, data: bytes, offset: int = 0, chunk: int = 4 * MiB) -> None:
    f.seek(offset)
    for i in range(0, len(data), chunk):
        f.write(data[i:i + chunk])     # librbd takes bytes only, no memoryview
    f.flush()


def read_all(f: Any, length: int, offset: int = 0, chunk: int = 4 * MiB) -> bytes:
    f.seek(offset)
    parts = []
    while length > 0:
        part = f.read(min(chunk, length))
        if not part:
            break
        parts.append(part)
        length -= len(part)
    return b"".join(parts)


# -- the deployment itself -------------------------------------------------------------


def test_two_backends_two_types_scheduler_sees_both(cinder_deployment: Any,
                                                     cinder_client: Any) -> None:
    pools = {p["name"]: p["capabilities"] for p in cinder_deployment.pools()}
    assert set(pools) == {"aio@netapp#netapp", "aio@powerstore#powerstore"}
    for name, caps in pools.items():
        backend = name.rsplit("#", 1)[1]
        assert caps["volume_backend_name"] == backend
        assert caps["storage_protocol"] == "ceph"
        assert caps["driver_version"]
        # No ceph-mgr: the RBD driver cannot read pool stats and says so.
        assert caps["free_capacity_gb"] == "unknown"
        assert caps["location_info"].endswith(f":{cinder_deployment.rbd_user}:{backend}")
    types = {t.name: t.get_keys() for t in cinder_client.volume_types.list()}
    assert types["netapp"] == {"volume_backend_name": "netapp"}
    assert types["powerstore"] == {"volume_backend_name": "powerstore"}
    services = {(s.binary, s.host): (s.state, s.status)
                for s in cinder_client.services.list()}
    for key in (("cinder-volume", "aio@netapp"), ("cinder-volume", "aio@powerstore"),
                ("cinder-scheduler", "aio")):
        assert services[key] == ("up", "enabled")


def test_every_listener_is_on_loopback(cinder_deployment: Any) -> None:
    listeners = cinder_deployment.listeners()
    kinds = {kind for kind, _, _ in listeners}
    assert {"api", "postgres", "rabbitmq", "epmd", "ceph-mon", "ceph-osd"} <= kinds
    assert all(ip in ("127.0.0.1", "::1") for _, ip, _ in listeners), listeners
    assert all(17200 <= port <= 17299 for _, _, port in listeners), listeners


# -- the data path ---------------------------------------------------------------------


@pytest.mark.parametrize("volume_type", ["netapp", "powerstore"])
def test_create_attach_write_read_detach_delete(
        volume_type: str, cinder_deployment: Any, cinder_harness: Any,
        cinder_project: tuple[str, Any], brick_properties: dict[str, Any]) -> None:
    name, client = cinder_project
    image_id = str(uuid.uuid4())
    size = 64 * MiB
    volume = client.volumes.create(
        1, name=f"image-{image_id}", volume_type=volume_type,
        metadata={"glance_image_id": image_id, "image_size": str(size),
                  "image_owner": name})
    volume = cinder_harness.wait_status(client, volume.id, "available")
    assert volume.size == 1 and volume.volume_type == volume_type
    assert getattr(volume, "os-vol-host-attr:host") == f"aio@{volume_type}#{volume_type}"
    assert volume.metadata == {"glance_image_id": image_id, "image_size": str(size),
                               "image_owner": name}
    # The RBD driver's image, in the backend's own pool and only there.
    pool = cinder_deployment.pool_of(volume_type)
    other = next(p for t, p in cinder_deployment.backends.items() if t != volume_type)
    assert f"volume-{volume.id}" in cinder_deployment.rbd_images(pool)
    assert f"volume-{volume.id}" not in cinder_deployment.rbd_images(other)

    data = random_bytes(size)
    with attach(cinder_harness, cinder_deployment, client, volume.id,
                brick_properties) as att:
        info = att.connection_info
        assert info["driver_volume_type"] == "rbd"
        assert info["name"] == f"{pool}/volume-{volume.id}"
        assert info["hosts"] == ["127.0.0.1"]
        assert info["ports"] == [str(cinder_deployment.ports["mon-v1"])]
        assert info["auth_username"] == cinder_deployment.rbd_user
        assert "keyring" not in info          # OSSN-0085: the client adds it
        assert type(att.file).__name__ == "RBDVolumeIOWrapper"
        assert client.volumes.get(volume.id).status == "in-use"
        write_all(att.file, data)
        assert read_all(att.file, size) == data
        att.file.seek(0, 2)
        assert att.file.tell() == GiB
    assert client.volumes.get(volume.id).status == "available"

    # A second attachment (a reader, later) sees the same bytes.
    with attach(cinder_harness, cinder_deployment, client, volume.id,
                brick_properties, mode="ro") as att:
        assert read_all(att.file, size) == data

    client.volumes.delete(volume.id)
    cinder_harness.wait_gone(client, volume.id, timeout=60)
    assert f"volume-{volume.id}" not in cinder_deployment.rbd_images(pool)
    with pytest.raises(cinder_exceptions.NotFound) as exc:
        client.volumes.get(volume.id)
    assert exc.value.code == 404
    assert f"Volume {volume.id} could not be found." in str(exc.value)


def test_online_extend_of_an_attached_volume(
        cinder_deployment: Any, cinder_harness: Any, cinder_project: tuple[str, Any],
        make_cinder_volume: Callable[..., Any], brick_properties: dict[str, Any]) -> None:
    """Microversion >= 3.42 extends an in-use RBD volume; os-brick's
    extend_volume reports the new size, and the open handle writes past the
    old end at once. Below 3.42 the same call is refused."""
    name, client = cinder_project
    volume = make_cinder_volume(1)
    head, tail = random_bytes(4 * MiB), random_bytes(4 * MiB, seed=7)
    with attach(cinder_harness, cinder_deployment, client, volume.id,
                brick_properties) as att:
        write_all(att.file, head)
        old = cinder_deployment.client(name, version="3.41")
        with pytest.raises(cinder_exceptions.BadRequest) as exc:
            old.volumes.extend(volume.id, 2)
        assert "to extend, currently in-use" in str(exc.value)

        client.volumes.extend(volume.id, 2)
        extended = cinder_harness.wait_status(client, volume.id, "in-use",
                                              transitional=("extending",))
        assert extended.size == 2
        assert att.connector.extend_volume(att.brick_info()) == 2 * GiB
        write_all(att.file, tail, offset=GiB + MiB)
        assert read_all(att.file, len(tail), offset=GiB + MiB) == tail
        assert read_all(att.file, len(head)) == head
        att.file.seek(0, 2)
        assert att.file.tell() == 2 * GiB


def test_offline_extend_detach_extend_reattach(
        cinder_deployment: Any, cinder_harness: Any, cinder_project: tuple[str, Any],
        make_cinder_volume: Callable[..., Any], brick_properties: dict[str, Any]) -> None:
    _, client = cinder_project
    volume = make_cinder_volume(1)
    head, tail = random_bytes(4 * MiB, seed=3), random_bytes(4 * MiB, seed=4)
    with attach(cinder_harness, cinder_deployment, client, volume.id,
                brick_properties) as att:
        write_all(att.file, head)
    client.volumes.extend(volume.id, 2)
    extended = cinder_harness.wait_status(client, volume.id, "available",
                                          transitional=("extending",))
    assert extended.size == 2
    with attach(cinder_harness, cinder_deployment, client, volume.id,
                brick_properties) as att:
        assert read_all(att.file, len(head)) == head
        write_all(att.file, tail, offset=GiB)
        assert read_all(att.file, len(tail), offset=GiB) == tail


def test_read_only_attachments(
        cinder_deployment: Any, cinder_harness: Any, cinder_project: tuple[str, Any],
        make_cinder_volume: Callable[..., Any], brick_properties: dict[str, Any]) -> None:
    """What "read-only" means on this path. Cinder records the mode, but
    os-brick's RBD connector (do_local_attach=False) opens the image
    read-write whatever the mode: a driver must open its reader read-only
    itself (librbd refuses writes then, EROFS)."""
    import rbd
    _, client = cinder_project
    volume = make_cinder_volume(1)
    data = random_bytes(MiB, seed=11)
    with attach(cinder_harness, cinder_deployment, client, volume.id,
                brick_properties) as att:
        write_all(att.file, data)

    with attach(cinder_harness, cinder_deployment, client, volume.id,
                brick_properties, mode="ro") as att:
        assert client.attachments.show(att.id).attach_mode == "ro"
        # connection_info is computed before "complete": it says rw.
        assert att.connection_info["access_mode"] == "rw"
        assert read_all(att.file, len(data)) == data
        # os-brick's handle writes all the same.
        write_all(att.file, b"X" * 16)
        assert read_all(att.file, 16) == b"X" * 16
        write_all(att.file, data[:16])
        # A read-only librbd handle on the same connection_info refuses.
        with att.read_only_handle() as handle:
            with pytest.raises(rbd.ReadOnlyImage):
                handle.write(b"x")
            assert handle.read(len(data)) == data

    # glance_store marks a finished image volume read-only: every attachment
    # of it is then "ro", even one asked for "rw", and connection_info says so.
    client.volumes.update_readonly_flag(volume.id, True)
    assert client.volumes.get(volume.id).metadata["readonly"] == "True"
    with attach(cinder_harness, cinder_deployment, client, volume.id,
                brick_properties, mode="rw") as att:
        assert att.connection_info["access_mode"] == "ro"
        assert client.attachments.show(att.id).attach_mode == "ro"
        assert read_all(att.file, len(data)) == data


def test_several_readers_of_one_volume_at_once(
        cinder_deployment: Any, cinder_harness: Any, cinder_project: tuple[str, Any],
        make_cinder_volume: Callable[..., Any], brick_properties: dict[str, Any]) -> None:
    """A second attachment of a volume that is not multiattach is refused while
    the first one lasts: concurrent readers of one image share one attachment
    (each with its own read-only librbd handle), or the volume type must be
    multiattach (see the next test)."""
    _, client = cinder_project
    volume = make_cinder_volume(1)
    data = random_bytes(8 * MiB, seed=5)
    with attach(cinder_harness, cinder_deployment, client, volume.id,
                brick_properties) as att:
        write_all(att.file, data)
    with attach(cinder_harness, cinder_deployment, client, volume.id,
                brick_properties, mode="ro") as one:
        with pytest.raises(cinder_exceptions.BadRequest) as exc:
            attach(cinder_harness, cinder_deployment, client, volume.id,
                   brick_properties, mode="ro").open()
        assert exc.value.code == 400
        assert str(exc.value).startswith(
            f"Invalid volume: Volume {volume.id} status must be available or downloading "
            f"to reserve, but the current status is in-use.")
        with one.read_only_handle() as h1, one.read_only_handle() as h2:
            results: list[bytes] = []
            threads = [threading.Thread(target=lambda h=h: results.append(
                read_all(h, len(data)))) for h in (h1, h2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert results == [data, data]
        assert len(client.volumes.get(volume.id).attachments) == 1
    assert client.volumes.get(volume.id).status == "available"


def test_multiattach_volume_type_takes_several_attachments(
        cinder_deployment: Any, cinder_harness: Any, cinder_project: tuple[str, Any],
        cinder_client: Any, brick_properties: dict[str, Any]) -> None:
    """The RBD driver reports multiattach; a type with ``multiattach=<is> True``
    gives volumes that take two read-only attachments at once."""
    _, client = cinder_project
    vtype = cinder_client.volume_types.create(f"multiattach-{uuid.uuid4().hex[:8]}")
    try:
        vtype.set_keys({"volume_backend_name": "netapp", "multiattach": "<is> True"})
        volume = client.volumes.create(1, volume_type=vtype.name)
        volume = cinder_harness.wait_status(client, volume.id, "available")
        assert volume.multiattach is True
        data = random_bytes(MiB, seed=9)
        with attach(cinder_harness, cinder_deployment, client, volume.id,
                    brick_properties) as att:
            write_all(att.file, data)
        with attach(cinder_harness, cinder_deployment, client, volume.id,
                    brick_properties, mode="ro") as one, \
                attach(cinder_harness, cinder_deployment, client, volume.id,
                       brick_properties, mode="ro") as two:
            assert len(client.volumes.get(volume.id).attachments) == 2
            assert read_all(one.file, len(data)) == data
            assert read_all(two.file, len(data)) == data
        client.volumes.delete(volume.id)
        cinder_harness.wait_gone(client, volume.id)
    finally:
        cinder_client.volume_types.delete(vtype.id)


def test_delete_of_a_volume_in_use_is_refused(
        cinder_deployment: Any, cinder_harness: Any, cinder_project: tuple[str, Any],
        make_cinder_volume: Callable[..., Any], brick_properties: dict[str, Any]) -> None:
    _, client = cinder_project
    volume = make_cinder_volume(1)
    with attach(cinder_harness, cinder_deployment, client, volume.id,
                brick_properties, mode="ro"):
        with pytest.raises(cinder_exceptions.BadRequest) as exc:
            client.volumes.delete(volume.id)
        assert exc.value.code == 400
        assert str(exc.value).startswith("Invalid volume: Volume status must be available")
        assert client.volumes.get(volume.id).status == "in-use"
    client.volumes.delete(volume.id)
    assert cinder_harness.wait_gone(client, volume.id) < 30


def test_parallel_volume_cycles(
        cinder_deployment: Any, cinder_harness: Any, cinder_project: tuple[str, Any],
        brick_properties: dict[str, Any]) -> None:
    """Four threads at once: create, attach, write, read, detach, delete
    (PostgreSQL, not SQLite: SQLite fails here)."""
    _, client = cinder_project
    errors: list[BaseException] = []

    def cycle(n: int) -> None:
        try:
            volume = client.volumes.create(1, name=f"image-{uuid.uuid4()}",
                                           volume_type=("netapp", "powerstore")[n % 2])
            cinder_harness.wait_status(client, volume.id, "available")
            data = random_bytes(4 * MiB, seed=n)
            with attach(cinder_harness, cinder_deployment, client, volume.id,
                        brick_properties) as att:
                write_all(att.file, data)
                assert read_all(att.file, len(data)) == data
            client.volumes.delete(volume.id)
            cinder_harness.wait_gone(client, volume.id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=cycle, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors


# -- failures a driver maps --------------------------------------------------------------


def test_quota_exceeded(cinder_deployment: Any, cinder_harness: Any,
                        cinder_project: tuple[str, Any]) -> None:
    """A real quota (gigabytes and volumes per project): Cinder answers 413,
    cinderclient raises OverLimit, and nothing is created."""
    name, client = cinder_project
    quota = cinder_deployment.set_quota(name, gigabytes=2, volumes=2)
    assert (quota["gigabytes"], quota["volumes"]) == (2, 2)

    with pytest.raises(cinder_exceptions.OverLimit) as exc:
        client.volumes.create(3, volume_type="netapp")
    assert exc.value.code == 413
    assert str(exc.value).startswith(
        "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed "
        "gigabytes quota. Requested 3G, quota is 2G and 0G has been consumed.")
    assert cinder_deployment.volumes(name) == []

    volume = client.volumes.create(2, volume_type="netapp")
    cinder_harness.wait_status(client, volume.id, "available")
    with pytest.raises(cinder_exceptions.OverLimit) as exc:
        client.volumes.create(1, volume_type="powerstore")
    assert "Requested 1G, quota is 2G and 2G has been consumed." in str(exc.value)
    # Extending is counted too (the message names the increase).
    with pytest.raises(cinder_exceptions.OverLimit) as exc:
        client.volumes.extend(volume.id, 3)
    assert str(exc.value).startswith("VolumeSizeExceedsAvailableQuota: ")
    assert "Requested 1G, quota is 2G and 2G has been consumed." in str(exc.value)
    assert client.volumes.get(volume.id).status == "available"

    cinder_deployment.set_quota(name, gigabytes=-1, volumes=1)
    with pytest.raises(cinder_exceptions.OverLimit) as exc:
        client.volumes.create(1, volume_type="netapp")
    assert str(exc.value).startswith(
        "VolumeLimitExceeded: Maximum number of volumes allowed (1) exceeded for quota "
        "'volumes'.")
    assert [v["id"] for v in cinder_deployment.volumes(name)] == [volume.id]
    client.volumes.delete(volume.id)
    cinder_harness.wait_gone(client, volume.id)


def test_api_down_killed_or_frozen(cinder_deployment: Any,
                                   cinder_project: tuple[str, Any]) -> None:
    """cinder-api killed: keystoneauth's ConnectFailure at once (cinderclient's
    ``retries`` does not retry it; keystoneauth's ``connect_retries`` does).
    Frozen (accepts, never answers): ConnectTimeout after the session timeout."""
    name, _ = cinder_project
    client = cinder_deployment.client(name, timeout=3, retries=3)
    client.volumes.list()
    cinder_deployment.freeze_api()
    try:
        t0 = time.monotonic()
        with pytest.raises(ks_exceptions.ConnectTimeout) as exc:
            client.volumes.list()
        elapsed = time.monotonic() - t0
        assert 2.9 < elapsed < 6, elapsed
        assert "timed out" in str(exc.value)
    finally:
        cinder_deployment.thaw_api()
    client.volumes.list()

    cinder_deployment.kill_api()
    try:
        t0 = time.monotonic()
        with pytest.raises(ks_exceptions.ConnectFailure) as failure:
            client.volumes.list()
        assert time.monotonic() - t0 < 2
        assert "Unable to establish connection to http://127.0.0.1:" in str(failure.value)
        assert not isinstance(failure.value, ks_exceptions.ConnectTimeout)
    finally:
        cinder_deployment.start_api()
    assert client.volumes.list() == []


def test_tls_endpoint(cinder_deployment: Any, cinder_tls_url: str,
                      cinder_project: tuple[str, Any],
                      make_cinder_volume: Callable[..., Any]) -> None:
    """The HTTPS-only cinder-api: trusted with the test CA
    (cinder_ca_certificates_file), or with verification off
    (cinder_api_insecure); refused with only the system CAs."""
    name, _ = cinder_project
    assert cinder_tls_url.startswith("https://127.0.0.1:")
    volume = make_cinder_volume(1)
    trusted = cinder_deployment.client(name, tls=True, cacert=cinder_deployment.ca_file)
    assert [v.id for v in trusted.volumes.list()] == [volume.id]
    insecure = cinder_deployment.client(name, tls=True, insecure=True)
    assert insecure.volumes.get(volume.id).status == "available"
    untrusted = cinder_deployment.client(name, tls=True,
                                         cacert="/etc/ssl/certs/ca-certificates.crt")
    with pytest.raises(ks_exceptions.SSLError) as exc:
        untrusted.volumes.list()
    assert "CERTIFICATE_VERIFY_FAILED" in str(exc.value)
