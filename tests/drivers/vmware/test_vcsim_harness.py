"""What a vmware datastore driver needs, proven against vcsim with oslo.vmware and requests.

No driver here: these tests pin down the simulator's answers (status codes,
fault names, what it does not check) that the driver's tests will rely on.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util

from vcsim_client import (IMAGE_DIR, cookie_header, datastores, delete_file, file_size,
                          find_datacenter, free_space, make_directory, open_session)

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def session(vcsim: Any) -> Iterator[Any]:
    """One session on ``vcsim`` for the tests that do not end it."""
    s = open_session(vcsim)
    yield s
    s.logout()


@pytest.fixture(scope="module")
def dc0(session: Any) -> Any:
    return find_datacenter(session, "DC0")


def _name() -> str:
    return f"{IMAGE_DIR}/{uuid.uuid4()}"


def _raw(session: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """A vim call without invoke_api's retry and session renewal."""
    return getattr(session.vim, method)(*args, **kwargs)


def _fault(call: Any) -> vexc.VimException:
    with pytest.raises(vexc.VimException) as info:
        call()
    return info.value


# -- session and TLS ---------------------------------------------------------

def test_login_over_tls_verified_with_the_test_ca(vcsim: Any, session: Any) -> None:
    about = session.vim.service_content.about
    assert about.apiType == "VirtualCenter"
    assert [c.name for c in session.vim.client.cookiejar] == ["vmware_soap_session"]
    assert cookie_header(session) == f"vmware_soap_session={session._session_id}"
    pem = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{vcsim.port}",
                          "-CAfile", vcsim.ca_file, "-verify_return_error"],
                         input="", capture_output=True, text=True, timeout=30)
    assert "Verify return code: 0 (ok)" in pem.stdout
    assert "Server public key is 2048 bit" in pem.stdout      # RSA-2048, not vcsim's 1024


def test_tls_refused_without_the_ca(vcsim: Any) -> None:
    # Note: VMwareAPISession(create_session=True) retries a connection error
    # *forever* (TLS refused, server down); only a WSDL not yet cached in the
    # process fails before that, with requests' own SSLError. A driver must
    # log in itself (create_session=False) to bound the wait.
    lazy = open_session(vcsim, cacert=None, wsdl_loc=vcsim.wsdl_file_url, create_session=False)
    with pytest.raises(vexc.VimConnectionException, match="CERTIFICATE_VERIFY_FAILED"):
        lazy.vim.service_content    # noqa: B018 - the property makes the first call


def test_wrong_password_is_invalid_login(vcsim: Any) -> None:
    class Wrong:
        host, port, ca_file = vcsim.host, vcsim.port, vcsim.ca_file
        username, password = vcsim.username, "wrong"

    fault = _fault(lambda: open_session(Wrong))
    assert isinstance(fault, vexc.VimFaultException)
    assert fault.fault_list == ["InvalidLogin"]


def test_wsdl_served_by_vcsim_and_usable_as_a_file(vcsim: Any) -> None:
    res = requests.get(vcsim.wsdl_url, verify=vcsim.ca_file, timeout=10)
    assert res.status_code == 200 and b"VimService" in res.content
    s = open_session(vcsim, wsdl_loc=vcsim.wsdl_file_url)
    try:
        assert find_datacenter(s, "DC0") is not None
    finally:
        s.logout()


# -- inventory, without recursive traversal -----------------------------------

def test_datacenters_and_datastores_by_inventory_path(session: Any, dc0: Any) -> None:
    assert dc0._type == "Datacenter"
    assert find_datacenter(session, "DC9") is None
    stores = datastores(session, dc0)
    assert set(stores) == {"LocalDS_0", "SmallDS"}
    local, small = stores["LocalDS_0"], stores["SmallDS"]
    assert local.capacity > local.freespace > 0
    assert small.capacity == 8 * MiB
    assert small.freespace <= 8 * MiB
    assert session.invoke_api(vim_util, "get_object_property", session.vim, local.ref,
                              "summary.accessible") is True


def test_two_datacenters_have_same_named_datastores(make_vcsim: Any) -> None:
    sim = make_vcsim(datacenters=2)
    s = open_session(sim)
    try:
        dc1 = find_datacenter(s, "DC1")
        assert set(datastores(s, dc1)) == {"LocalDS_0"}
        data = b"in DC1"
        url = sim.folder_url(_name(), datacenter="DC1")
        assert requests.put(url, data=data, verify=sim.ca_file).status_code == 200
        assert requests.get(url, verify=sim.ca_file).content == data
        other = url.replace("dcPath=DC1", "dcPath=DC0")
        assert requests.get(other, verify=sim.ca_file).status_code == 404
    finally:
        s.logout()


def test_recursive_traversal_crashes_vcsim_with_vms(make_vcsim: Any) -> None:
    """Why a driver must walk the inventory as glance_store does (vcsim 0.24.2)."""
    sim = make_vcsim()
    s = open_session(sim)
    with pytest.raises(vexc.VimConnectionException):
        vim_util.get_objects(s.vim, "Datacenter", 100, ["name"])
    deadline = time.monotonic() + 30
    while sim.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.pid() is None
    assert "goroutine stack exceeds" in sim.log_path.read_text(errors="replace")


# -- the /folder data path ----------------------------------------------------

def test_put_with_content_length_get_head_and_ranges(vcsim: Any, session: Any,
                                                     dc0: Any) -> None:
    data = os.urandom(MiB + 7)
    name = _name()
    url = vcsim.folder_url(name)
    cookie = {"Cookie": cookie_header(session)}
    put = requests.put(url, data=data, headers=cookie, verify=vcsim.ca_file)
    assert put.status_code == 200
    assert put.request.headers["Content-Length"] == str(len(data))

    head = requests.head(url, headers=cookie, verify=vcsim.ca_file)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Accept-Ranges"] == "bytes"

    get = requests.get(url, headers=cookie, verify=vcsim.ca_file)
    assert get.status_code == 200 and get.content == data
    assert get.headers["Content-Type"] == "application/octet-stream"

    def ranged(spec: str) -> requests.Response:
        return requests.get(url, headers={**cookie, "Range": f"bytes={spec}"},
                            verify=vcsim.ca_file)

    part = ranged("100-199")
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    tail = ranged(f"{MiB}-")
    assert tail.status_code == 206 and tail.content == data[MiB:]
    assert ranged("-5").content == data[-5:]
    beyond = ranged(f"{len(data)}-")
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(data)}"

    store = datastores(session, dc0)["LocalDS_0"]
    folder, base = name.rsplit("/", 1)
    assert file_size(session, store, folder, base) == len(data)
    delete_file(session, dc0, f"[LocalDS_0] {name}")


def test_put_chunked(vcsim: Any, session: Any, dc0: Any) -> None:
    data = os.urandom(3 * MiB)
    url = vcsim.folder_url(_name())
    put = requests.put(url, data=(data[i:i + 65536] for i in range(0, len(data), 65536)),
                       verify=vcsim.ca_file)
    assert put.status_code == 200
    assert put.request.headers["Transfer-Encoding"] == "chunked"
    assert requests.head(url, verify=vcsim.ca_file).headers["Content-Length"] == str(len(data))
    assert requests.get(url, verify=vcsim.ca_file).content == data


def test_put_overwrites_post_does_not(vcsim: Any) -> None:
    url = vcsim.folder_url(_name())
    assert requests.post(url, data=b"first", verify=vcsim.ca_file).status_code == 200
    assert requests.post(url, data=b"second", verify=vcsim.ca_file).status_code == 409
    assert requests.get(url, verify=vcsim.ca_file).content == b"first"
    assert requests.put(url, data=b"third", verify=vcsim.ca_file).status_code == 200
    assert requests.get(url, verify=vcsim.ca_file).content == b"third"


def test_missing_file_and_wrong_datacenter_or_datastore(vcsim: Any, session: Any,
                                                       dc0: Any) -> None:
    ca = vcsim.ca_file
    name = _name()
    missing = vcsim.folder_url(name)
    get = requests.get(missing, verify=ca)
    assert get.status_code == 404 and get.text == "404 page not found\n"
    assert requests.head(missing, verify=ca).status_code == 404
    for wrong in (vcsim.folder_url(IMAGE_DIR, datastore="NoSuchDS"),
                  vcsim.folder_url(IMAGE_DIR, datacenter="NoSuchDC")):
        assert requests.get(wrong, verify=ca).status_code == 404
        assert requests.put(wrong + "x", data=b"x", verify=ca).status_code == 404
    # No dcPath: vcsim takes the only datacenter; no query at all: 404.
    requests.put(missing, data=b"x", verify=ca)
    assert requests.get(missing.replace("dcPath=DC0&", ""), verify=ca).status_code == 200
    assert requests.get(missing.split("?")[0], verify=ca).status_code == 404

    store = datastores(session, dc0)["LocalDS_0"]
    assert file_size(session, store, IMAGE_DIR, "no-such-file") is None
    with pytest.raises(vexc.FileNotFoundException):
        file_size(session, store, "no-such-dir", "x")


def test_directories(vcsim: Any, session: Any, dc0: Any) -> None:
    top = f"dir-{uuid.uuid4()}"
    make_directory(session, dc0, f"[LocalDS_0] {top}/sub")
    make_directory(session, dc0, f"[LocalDS_0] {top}/sub")     # with parents: no fault
    with pytest.raises(vexc.FileAlreadyExistsException):
        make_directory(session, dc0, f"[LocalDS_0] {top}/sub", parents=False)
    fault = _fault(lambda: make_directory(session, dc0, f"[NoSuchDS] {top}"))
    assert fault.fault_list == ["InvalidDatastore"]
    # A directory answers GET with an HTML listing: not a file to serve.
    listing = requests.get(vcsim.folder_url(f"{top}/"), verify=vcsim.ca_file)
    assert listing.status_code == 200
    assert listing.headers["Content-Type"].startswith("text/html")
    delete_file(session, dc0, f"[LocalDS_0] {top}")              # recursive
    assert requests.get(vcsim.folder_url(f"{top}/"), verify=vcsim.ca_file).status_code == 404


def test_delete_with_a_task(vcsim: Any, session: Any, dc0: Any) -> None:
    name = _name()
    url = vcsim.folder_url(name)
    assert requests.put(url, data=b"bye", verify=vcsim.ca_file).status_code == 200
    info = delete_file(session, dc0, f"[LocalDS_0] {name}")
    assert info.state == "success"
    assert requests.get(url, verify=vcsim.ca_file).status_code == 404
    with pytest.raises(vexc.FileNotFoundException):
        delete_file(session, dc0, f"[LocalDS_0] {name}")
    assert _fault(lambda: delete_file(session, dc0, f"[NoSuchDS] {name}")
                  ).fault_list == ["InvalidDatastore"]
    assert _fault(lambda: delete_file(session, dc0, name)).fault_list == ["InvalidDatastorePath"]
    assert _fault(lambda: delete_file(session, None, f"[LocalDS_0] {name}")
                  ).fault_list == ["InvalidArgument"]


def test_folder_does_not_check_the_session_cookie(vcsim: Any) -> None:
    """vcsim never checks: the driver's 401 path cannot be exercised on /folder."""
    url = vcsim.folder_url(_name())
    bogus = {"Cookie": "vmware_soap_session=not-a-session"}
    assert requests.put(url, data=b"x", verify=vcsim.ca_file).status_code == 200
    assert requests.put(url, data=b"y", headers=bogus, verify=vcsim.ca_file).status_code == 200
    assert requests.get(url, headers=bogus, verify=vcsim.ca_file).content == b"y"


# -- sessions ending ----------------------------------------------------------

def test_terminated_session_is_not_authenticated_then_renewed(vcsim: Any,
                                                              vim_session: Any) -> None:
    victim, admin = vim_session(vcsim), vim_session(vcsim)
    sm = victim.vim.service_content.sessionManager
    old = victim._session_id
    admin.invoke_api(admin.vim, "TerminateSession", sm, sessionId=[old])
    assert admin.vim.SessionIsActive(sm, sessionID=old, userName=vcsim.username) is False
    assert _fault(lambda: admin.invoke_api(admin.vim, "TerminateSession", sm,
                                           sessionId=[admin._session_id])
                  ).fault_list == ["InvalidArgument"]        # not one's own session
    search_index = victim.vim.service_content.searchIndex
    fault = _fault(lambda: _raw(victim, "FindByInventoryPath", search_index,
                                inventoryPath="DC0"))
    assert isinstance(fault, vexc.VimFaultException)
    assert fault.fault_list == ["NotAuthenticated"]
    # invoke_api renews the session by itself, but only after oslo's retry
    # sleep (RetryDecorator's first interval: 10 s).
    started = time.monotonic()
    assert find_datacenter(victim, "DC0") is not None
    assert 9 < time.monotonic() - started < 60
    assert victim._session_id != old


def test_logout_then_not_authenticated(vcsim: Any) -> None:
    s = open_session(vcsim)
    sm = s.vim.service_content.sessionManager
    _raw(s, "Logout", sm)
    fault = _fault(lambda: _raw(s, "FindByInventoryPath", s.vim.service_content.searchIndex,
                                inventoryPath="DC0"))
    assert fault.fault_list == ["NotAuthenticated"]
    assert _fault(lambda: _raw(s, "Logout", sm)).fault_list == ["NotAuthenticated"]


def test_idle_session_expires(make_vcsim: Any) -> None:
    sim = make_vcsim(idle_timeout=1)
    s = open_session(sim)
    index = s.vim.service_content.searchIndex
    assert _raw(s, "FindByInventoryPath", index, inventoryPath="DC0") is not None
    time.sleep(3.5)     # idle > 1 s is seen by the next 1 s tick
    fault = _fault(lambda: _raw(s, "FindByInventoryPath", index, inventoryPath="DC0"))
    assert fault.fault_list == ["NotAuthenticated"]


# -- full datastore -------------------------------------------------------------

def test_full_datastore_put_is_500_and_leaves_a_partial_file(vcsim: Any, session: Any,
                                                             dc0: Any) -> None:
    small = datastores(session, dc0)["SmallDS"]
    data = os.urandom(12 * MiB)
    for body in (data, (data[i:i + 65536] for i in range(0, len(data), 65536))):
        name = _name()
        url = vcsim.folder_url(name, datastore="SmallDS")
        put = requests.put(url, data=body, verify=vcsim.ca_file)
        assert put.status_code == 500
        assert put.text == "the file could not be written whole\n"
        kept = file_size(session, small, IMAGE_DIR, name.rsplit("/", 1)[1])
        assert kept is not None and 0 <= kept < len(data)      # the driver must delete it
        _wait_for(lambda: free_space(session, small.ref) < MiB)   # refreshed by vcsim
        delete_file(session, dc0, f"[SmallDS] {name}")
        _wait_for(lambda: free_space(session, small.ref) == 8 * MiB)


def test_stock_vcsim_truncates_silently(make_vcsim: Any) -> None:
    """vcsim's own PUT (-stock-put), the reason for the harness's strict one."""
    sim = make_vcsim(small_datastore_bytes=8 * MiB, stock_put=True)
    url = sim.folder_url(_name(), datastore="SmallDS")
    assert requests.put(url, data=os.urandom(9 * MiB), verify=sim.ca_file).status_code == 200
    assert requests.head(url, verify=sim.ca_file).headers["Content-Length"] == str(8 * MiB)
    # A body much larger than the space left: the connection is closed under the client.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.put(sim.folder_url(_name(), datastore="SmallDS"),
                     data=os.urandom(16 * MiB), verify=sim.ca_file)


def _wait_for(condition: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# -- two simulators, faults -------------------------------------------------------

def test_two_simulators_are_independent(vcsim: Any, vcsim_b: Any, session: Any) -> None:
    url_a = vcsim.folder_url(_name())
    assert requests.put(url_a, data=b"only on a", verify=vcsim.ca_file).status_code == 200
    url_b = url_a.replace(f":{vcsim.port}/", f":{vcsim_b.port}/")
    assert requests.get(url_b, verify=vcsim_b.ca_file).status_code == 404
    # Each has its own CA, credentials and sessions.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url_b, verify=vcsim.ca_file)

    class Crossed:
        host, port, ca_file = vcsim_b.host, vcsim_b.port, vcsim_b.ca_file
        username, password = vcsim.username, vcsim.password

    assert _fault(lambda: open_session(Crossed)).fault_list == ["InvalidLogin"]
    b = open_session(vcsim_b)
    b.logout()
    b.vim.client.cookiejar.set("vmware_soap_session", session._session_id)   # a's session
    fault = _fault(lambda: _raw(b, "FindByInventoryPath", b.vim.service_content.searchIndex,
                                inventoryPath="DC0"))
    assert fault.fault_list == ["NotAuthenticated"]


def test_freeze_thaw_kill_restart(make_vcsim: Any) -> None:
    sim = make_vcsim()
    s = open_session(sim, connection_timeout=1)
    index = s.vim.service_content.searchIndex
    url = sim.folder_url(_name())
    assert requests.put(url, data=b"kept", verify=sim.ca_file).status_code == 200

    sim.freeze()
    with pytest.raises(requests.exceptions.ReadTimeout):   # TCP accepted, TLS never answered
        requests.get(url, verify=sim.ca_file, timeout=1)
    with pytest.raises(vexc.VimConnectionException):
        _raw(s, "FindByInventoryPath", index, inventoryPath="DC0")
    sim.thaw()
    assert requests.get(url, verify=sim.ca_file, timeout=10).content == b"kept"
    assert _raw(s, "FindByInventoryPath", index, inventoryPath="DC0") is not None

    sim.kill()
    assert sim.pid() is None
    with pytest.raises(requests.exceptions.ConnectionError):   # refused
        requests.get(url, verify=sim.ca_file, timeout=1)
    with pytest.raises(vexc.VimConnectionException):
        _raw(s, "FindByInventoryPath", index, inventoryPath="DC0")

    sim.start()     # a fresh inventory: the old session and files are gone
    assert requests.get(url, verify=sim.ca_file).status_code == 404
    fault = _fault(lambda: _raw(s, "FindByInventoryPath", index, inventoryPath="DC0"))
    assert fault.fault_list == ["NotAuthenticated"]
