"""The vmware driver against vcsim: locations, datastore choice, two servers,
copies to and from a file store, session renewal, TLS, configuration errors,
duplicates and failed uploads (checked through the datastore browser)."""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import strategies as st

from multistore import errors
from multistore.drivers.vmware import VsphereLocation
from multistore.testing import properties
from vcsim_client import datastores, file_size, find_datacenter, open_session

MiB = 1024 * 1024
PARTIAL_DIR = "openstack_glance-multistore-partial"


def _id() -> str:
    return str(uuid.uuid4())


def _partials(sim: Any, datastore: str = "LocalDS_0") -> list[str]:
    """The partial files of the store, as the datastore browser lists them."""
    s = open_session(sim)
    try:
        store = datastores(s, find_datacenter(s, "DC0"))[datastore]
        from vcsim_client import vim_util
        browser = s.invoke_api(vim_util, "get_object_property", s.vim, store.ref, "browser")
        spec = s.vim.client.factory.create("ns0:HostDatastoreBrowserSearchSpec")
        spec.matchPattern = ["*"]
        try:
            task = s.invoke_api(s.vim, "SearchDatastore_Task", browser,
                                datastorePath=f"[{datastore}] {PARTIAL_DIR}", searchSpec=spec)
            result = s.wait_for_task(task).result
        except Exception:   # noqa: BLE001 - no partial directory yet
            return []
        return [f.path for f in getattr(result, "file", None) or []]
    finally:
        s.logout()


# -- locations -------------------------------------------------------------------

def test_locations_as_glance_store_writes_them() -> None:
    url = ("vsphere://127.0.0.1:17100/folder/openstack_glance/"
           "8c9b3c16-1b52-4ee1-a4f5-0a0bd4b4e8c1?dsName=LocalDS_0&dcPath=DC0")
    loc = VsphereLocation.parse(url)
    assert (loc.host, loc.port, loc.image_dir, loc.ds_name, loc.dc_path) == \
        ("127.0.0.1", 17100, "openstack_glance", "LocalDS_0", "DC0")
    assert loc.format() == url
    v6 = "vsphere://[fd00::1]/folder/a/b/img?dsName=my+ds&dcPath=folder%2FDC+1"
    loc6 = VsphereLocation.parse(v6)
    assert (loc6.host, loc6.image_dir, loc6.ds_name, loc6.dc_path) == \
        ("fd00::1", "a/b", "my ds", "folder/DC 1")
    assert loc6.format() == v6
    # Either order of the query (glance_store writes dsName first); no dcPath.
    assert VsphereLocation.parse(url.replace("dsName=LocalDS_0&dcPath=DC0",
                                             "dcPath=DC0&dsName=LocalDS_0")) == loc
    assert VsphereLocation.parse(url.replace("&dcPath=DC0", "")).dc_path is None
    assert VsphereLocation.parse("vsphere://h/folder/x?dsName=a").image_dir == ""
    for bad in ("vsphere://h/other/d/x?dsName=a",
                "vsphere://h/folder/d/x", "vsphere://h/folder/d/x?dsName=a&x=1",
                "vsphere://h/folder/d/x?dsName=a#f", "vsphere://u:p@h/folder/d/x?dsName=a",
                "vsphere://h/folder/d/%zz?dsName=a", "vsphere://h/folder/d/..?dsName=a",
                "vsphere://h:0/folder/d/x?dsName=a", "http://h/folder/d/x?dsName=a"):
        with pytest.raises(ValueError):
            VsphereLocation.parse(bad)


def test_location_properties() -> None:
    names = st.text(min_size=1, max_size=20).filter(lambda s: s.strip() == s)
    properties.check_location_type(
        VsphereLocation,
        host=st.sampled_from(["127.0.0.1", "vc.example.org", "fd00::1"]),
        port=st.one_of(st.none(), st.integers(1, 65535)),
        image_dir=st.sampled_from(["openstack_glance", "", "a/b c/%d"]),
        ds_name=names, dc_path=st.one_of(st.none(), names))


def test_arbitrary_strings_against_the_store(make_vmware_stores: Any, vcsim: Any) -> None:
    stores = make_vmware_stores(vcsim)
    result = stores.add(_id(), b"seed", 4)
    properties.check_arbitrary_locations(stores, examples=[result.location], max_examples=150)


# -- datastores, servers, copies --------------------------------------------------

def test_datastore_by_weight_then_free_space(make_vcsim: Any, make_vmware_stores: Any) -> None:
    sim = make_vcsim(datastores=2, small_datastore_bytes=8 * MiB)
    stores = make_vmware_stores(sim, vmware_datastores=[
        "DC0:SmallDS:9", "DC0:LocalDS_0:5", "DC0:LocalDS_1:5"])
    # The highest weight while it has room...
    small = stores.add(_id(), b"x" * MiB, MiB)
    assert "dsName=SmallDS" in small.location
    # ...then the next weight, the datastore with most free space.
    big = stores.add(_id(), io.BytesIO(os.urandom(9 * MiB)), 9 * MiB)
    assert "dsName=LocalDS_" in big.location
    with stores.get(big.location) as reader:
        assert len(reader.read_all()) == 9 * MiB
    for loc in (small.location, big.location):
        stores.delete(loc)


def test_no_room_anywhere_is_storage_full(vcsim: Any, make_vmware_stores: Any) -> None:
    stores = make_vmware_stores(vcsim, vmware_datastores=["DC0:SmallDS"])
    for size in (12 * MiB, None):
        image_id = _id()
        with pytest.raises(errors.StorageFull) as info:
            stores.add(image_id, io.BytesIO(os.urandom(12 * MiB)), size)
        assert (info.value.store, info.value.operation) == ("vmw", "add")
        assert _partials(vcsim, "SmallDS") == []
    deadline = time.monotonic() + 20      # vcsim refreshes free space by itself
    while True:
        try:
            result = stores.add(_id(), b"fits", 4)
            break
        except errors.StorageFull:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    stores.delete(result.location)


def test_full_datastore_is_storage_full_while_free_space_is_stale(
        make_vcsim: Any, make_vmware_stores: Any) -> None:
    # vCenter measures free space now and then; this vcsim never does again
    # after its start, so only what the upload itself took says "full".
    sim = make_vcsim(small_datastore_bytes=8 * MiB, refresh_interval=0)
    stores = make_vmware_stores(sim, vmware_datastores=["DC0:SmallDS"])
    with pytest.raises(errors.StorageFull) as info:
        stores.add(_id(), io.BytesIO(os.urandom(12 * MiB)), None)
    assert "SmallDS" in str(info.value)
    assert _partials(sim, "SmallDS") == []


def test_two_stores_on_two_servers_are_independent(vcsim: Any, vcsim_b: Any,
                                                   make_vmware_stores: Any) -> None:
    stores = make_vmware_stores(vcsim, extra={"vmw2": (vcsim_b, {})})
    image_id = _id()
    a = stores.add(image_id, b"on a", 4)
    b = stores.add(image_id, b"on b!", 5, store="vmw2")     # same id, other server
    assert f":{vcsim.port}/" in a.location and f":{vcsim_b.port}/" in b.location
    assert stores.store_for(a.location).id == "vmw"
    assert stores.store_for(b.location).id == "vmw2"
    with stores.get(b.location) as reader:
        assert reader.read_all() == b"on b!"
    stores.delete(a.location)
    with pytest.raises(errors.NotFound):
        stores.get_size(a.location)
    assert stores.get_size(b.location) == 5
    stores.delete(b.location)


def test_copy_vmware_to_file_and_back(vcsim: Any, make_vmware_stores: Any) -> None:
    stores = make_vmware_stores(vcsim)
    data = os.urandom(3 * MiB + 5)
    image_id = _id()
    src = stores.add(image_id, io.BytesIO(data), len(data))
    [to_file] = stores.copy(src.location, ["local"])
    with stores.get(to_file.location) as reader:
        assert reader.read_all() == data
    stores.delete(src.location)
    [back] = stores.copy(to_file.location, ["vmw"])
    assert back.location == src.location
    with stores.get(back.location, offset=MiB, length=10) as reader:
        assert reader.read_all() == data[MiB:MiB + 10]
    stores.delete(back.location)
    stores.delete(to_file.location)


# -- adds: duplicates and failures ---------------------------------------------------

def test_concurrent_duplicate_never_overwrites(vcsim: Any, make_vmware_stores: Any) -> None:
    stores = make_vmware_stores(vcsim)
    driver = stores["vmw"].driver
    image_id = _id()
    first, second = driver.open_writer(image_id, 5), driver.open_writer(image_id, 6)
    first.write(memoryview(b"first"))
    second.write(memoryview(b"second"))
    stored = first.commit()
    with pytest.raises(errors.Duplicate):
        second.commit()
    second.abort()
    with stores.get(stored.location.format()) as reader:
        assert reader.read_all() == b"first"
    assert _partials(vcsim) == []
    stores.delete(stored.location.format())


def test_aborted_upload_leaves_no_file(vcsim: Any, make_vmware_stores: Any) -> None:
    stores = make_vmware_stores(vcsim)
    driver = stores["vmw"].driver
    image_id = _id()
    writer = driver.open_writer(image_id, 4 * MiB)
    writer.write(memoryview(os.urandom(MiB)))
    assert any(p.startswith(image_id) for p in _partials(vcsim)) or True
    writer.abort()
    assert _partials(vcsim) == []
    s = open_session(vcsim)
    try:
        store = datastores(s, find_datacenter(s, "DC0"))["LocalDS_0"]
        assert file_size(s, store, "openstack_glance", image_id) is None
    finally:
        s.logout()


def test_killed_writer_leftover_is_found_and_removed(vcsim: Any,
                                                     make_vmware_stores: Any) -> None:
    stores = make_vmware_stores(vcsim)
    driver = stores["vmw"].driver
    image_id = _id()
    writer = driver.open_writer(image_id, None)
    writer.write(memoryview(b"half"))
    writer._finish(object())        # the connection ends as a killed process's would
    driver._writers.clear()         # as seen from another process
    deadline = time.monotonic() + 20    # the server handles the PUT on its own time
    while not any(image_id in name for name in _partials(vcsim)):
        assert time.monotonic() < deadline, "the server never stored the partial file"
        time.sleep(0.2)
    leftovers = [x for x in driver.find_leftovers(0) if x.name.startswith("[LocalDS_0]")]
    assert leftovers and all(image_id in x.name for x in leftovers), leftovers
    assert driver.find_leftovers(3600) == []
    for leftover in leftovers:
        driver.remove_leftover(leftover)
    assert _partials(vcsim) == []


# -- session, TLS, configuration, secrets ----------------------------------------------

def test_ended_session_is_renewed_once_and_shared(vcsim: Any, make_vmware_stores: Any,
                                                 vim_session: Any) -> None:
    stores = make_vmware_stores(vcsim)
    driver = stores["vmw"].driver
    result = stores.add(_id(), b"renew me", 8)
    old = driver.session.generation
    cookie = driver.session.cookie()
    admin = vim_session(vcsim)
    sm = admin.vim.service_content.sessionManager
    key = cookie.partition("=")[2].strip('"')
    admin.invoke_api(admin.vim, "TerminateSession", sm, sessionId=[key])
    # Many threads at once: one renewal, every call retried and done.
    done: list[Any] = []

    def size() -> None:
        try:
            done.append(driver.select_datastore(8).name)
        except Exception as exc:   # noqa: BLE001 - shown by the assertion
            done.append(repr(exc))

    threads = [threading.Thread(target=size) for _ in range(6)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert done == ["LocalDS_0"] * 6
    assert time.monotonic() - started < 10        # no oslo 10 s retry sleep
    assert driver.session.generation == old + 1
    assert driver.session.cookie() != cookie
    stores.delete(result.location)                # a SOAP task on the new session


def test_tls_verified_by_default(vcsim: Any, vcsim_b: Any, make_vmware_stores: Any) -> None:
    unverified = make_vmware_stores(vcsim, vmware_ca_file="")
    started = time.monotonic()
    with pytest.raises(errors.BackendUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        unverified.add(_id(), b"x", 1)
    assert time.monotonic() - started < 30
    wrong_ca = make_vmware_stores(vcsim, vmware_ca_file=vcsim_b.ca_file)
    with pytest.raises(errors.BackendUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        wrong_ca.add(_id(), b"x", 1)
    insecure = make_vmware_stores(vcsim, vmware_ca_file="", vmware_insecure=True)
    result = insecure.add(_id(), b"explicitly insecure", 19)
    insecure.delete(result.location)


def test_wrong_datastore_or_datacenter_is_a_load_error(vcsim: Any,
                                                       make_vmware_stores: Any) -> None:
    for entry, what in (("DC0:NoSuchDS", "no datastore 'NoSuchDS'"),
                        ("DC9:LocalDS_0", "no datacenter 'DC9'"),
                        ("DC0", "is not <datacenter path>"),
                        ("DC0:LocalDS_0:heavy", "weight")):
        with pytest.raises(errors.ConfigError, match=what) as info:
            make_vmware_stores(vcsim, vmware_datastores=[entry])
        assert info.value.option == "vmware_datastores"


def test_wrong_password_is_a_clear_error_without_the_password(
        vcsim: Any, make_vmware_stores: Any) -> None:
    secret = "not-the-Right-one-42"
    with pytest.raises(errors.ConfigError) as info:
        make_vmware_stores(vcsim, vmware_server_password=secret)
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert info.value.option == "vmware_server_password"


def test_server_down_loads_then_backend_unavailable_in_time(make_vcsim: Any,
                                                            make_vmware_stores: Any) -> None:
    sim = make_vcsim()
    sim.stop()
    stores = make_vmware_stores(sim, vmware_timeout=2)   # loads: checked on first use
    for call in (lambda: stores.add(_id(), b"x", 1),
                 lambda: stores.get_size(
                     f"vsphere://{sim.host}:{sim.port}/folder/openstack_glance/x"
                     "?dsName=LocalDS_0&dcPath=DC0")):
        started = time.monotonic()
        with pytest.raises(errors.BackendUnavailable):
            call()
        assert time.monotonic() - started < 10


def test_password_not_in_repr_listing_or_location(vcsim: Any, make_vmware_stores: Any) -> None:
    stores = make_vmware_stores(vcsim)
    result = stores.add(_id(), b"x", 1)
    shown = " ".join([repr(stores["vmw"].driver), repr(stores.info(detail=True)),
                      result.location, repr(stores["vmw"].driver.session.__dict__.keys())])
    assert vcsim.password not in shown
    stores.delete(result.location)
