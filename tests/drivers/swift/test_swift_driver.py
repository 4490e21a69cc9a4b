"""The swift driver against a real Swift: what the conformance suite does not cover."""

from __future__ import annotations

import json
import socket
import time
import types
import uuid

import pytest
import swiftclient

import multistore
from multistore import errors
from multistore.testing import Generated, make_conf, random_bytes

from swift_refs import MB, tempauth_ref, write_refs


def new_id():
    return str(uuid.uuid4())


def read(stores, location, **kwargs):
    with stores.get(location, **kwargs) as reader:
        return reader.read_all()


def listing(conn, container):
    try:
        return [o["name"] for o in conn.get_container(container, full_listing=True)[1]]
    except swiftclient.ClientException as exc:
        if exc.http_status == 404:
            return []
        raise


# -- segments ------------------------------------------------------------------

@pytest.mark.parametrize("concurrency", [1, 3])
def test_segmented_upload_is_an_slo_and_delete_removes_segments(make_swift_stores,
                                                                 swift_conn, concurrency):
    data = random_bytes(5 * MB + 17, seed=1)
    with make_swift_stores(swift_store_large_object_size=2,
                           swift_store_segment_concurrency=concurrency) as stores:
        image_id = new_id()
        result = stores.add(image_id, data, len(data))
        assert result.location == f"swift+config://ref1/glance/{image_id}"
        headers = swift_conn.head_object("glance", image_id)
        assert headers["x-static-large-object"] == "True"
        manifest = json.loads(swift_conn.get_object(
            "glance", image_id, query_string="multipart-manifest=get")[1])
        assert [s["bytes"] for s in manifest] == [MB] * 5 + [17]
        segments = [n for n in listing(swift_conn, "glance_segments")
                    if n.startswith(image_id + "/")]
        assert len(segments) == 6
        assert read(stores, result.location) == data
        assert read(stores, result.location, offset=MB - 5, length=MB + 10) == \
            data[MB - 5:2 * MB + 5]
        assert stores.get_size(result.location) == len(data)
        stores.delete(result.location)
        assert not [n for n in listing(swift_conn, "glance_segments")
                    if n.startswith(image_id + "/")]
        assert image_id not in listing(swift_conn, "glance")


def test_unknown_size_small_image_is_a_plain_object(make_swift_stores, swift_conn):
    """With buffered segments (concurrency > 1) an image that fits one segment
    needs no manifest."""
    with make_swift_stores(swift_store_segment_concurrency=2) as stores:
        image_id = new_id()
        result = stores.add(image_id, iter([b"abc", b"def"]), None)
        headers = swift_conn.head_object("glance", image_id)
        assert "x-static-large-object" not in headers
        assert read(stores, result.location) == b"abcdef"


class _FailAfter:
    def __init__(self, data, fail_at):
        self.data, self.fail_at = data, fail_at

    def __iter__(self):
        for i in range(0, self.fail_at, 64 * 1024):
            yield self.data[i:min(i + 64 * 1024, self.fail_at)]
        raise ConnectionResetError("client went away")


@pytest.mark.parametrize("concurrency", [1, 3])
@pytest.mark.parametrize("fail_at", [int(2.5 * MB), 6 * MB])
def test_failure_mid_segment_leaves_nothing(make_swift_stores, swift_conn, fail_at,
                                            concurrency):
    data = random_bytes(8 * MB, seed=2)
    with make_swift_stores(swift_store_large_object_size=1,
                           swift_store_segment_concurrency=concurrency) as stores:
        image_id = new_id()
        with pytest.raises(ConnectionResetError):
            stores.add(image_id, _FailAfter(data, fail_at), len(data))
        assert image_id not in listing(swift_conn, "glance")
        assert not [n for n in listing(swift_conn, "glance_segments")
                    if n.startswith(image_id + "/")]
        result = stores.add(image_id, data, len(data))   # the id is free again
        assert read(stores, result.location) == data


@pytest.mark.parametrize("concurrency", [1, 3])
def test_swift_refusing_a_segment_is_storage_full_and_leaves_nothing(
        make_swift_stores, swift_conn, concurrency):
    """A real 413 from Swift: a container quota on the segments container
    smaller than a segment (the proxy caches usage, so a quota between
    segments would not be seen in time)."""
    container = "quota" + uuid.uuid4().hex[:8]
    swift_conn.put_container(container)
    swift_conn.put_container(container + "_segments",
                             headers={"X-Container-Meta-Quota-Bytes": str(MB // 2)})
    data = random_bytes(6 * MB, seed=3)
    with make_swift_stores(swift_store_container=container,
                           swift_store_segment_concurrency=concurrency,
                           swift_store_large_object_size=1) as stores:
        image_id = new_id()
        with pytest.raises(errors.StorageFull):
            stores.add(image_id, data, len(data))
    assert listing(swift_conn, container) == []
    assert listing(swift_conn, container + "_segments") == []


def test_duplicate_segmented_image_keeps_the_original(make_swift_stores):
    data = random_bytes(3 * MB, seed=4)
    with make_swift_stores(swift_store_large_object_size=1) as stores:
        image_id = new_id()
        first = stores.add(image_id, data, len(data))
        with pytest.raises(errors.Duplicate):
            stores.add(image_id, iter([data[:2 * MB]]), None)
        assert read(stores, first.location) == data


@pytest.mark.parametrize("concurrency", [1, 2])
def test_memory_is_bounded_by_segments_in_flight(make_swift_stores, concurrency):
    """Peak memory of an add does not grow with the image: the core's buffers
    plus (2 in flight + 1 filling) 1 MB segments, whatever the size."""
    import tracemalloc

    peaks = {}
    with make_swift_stores(swift_store_large_object_size=1,
                           swift_store_segment_concurrency=concurrency) as stores:
        for size in (16, 64):
            source = Generated(size * 1024 * 1024, seed=5)
            tracemalloc.start()
            try:
                tracemalloc.reset_peak()
                result = stores.add(new_id(), source, source.size)
                peaks[size] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            stores.delete(result.location)
    core = 4 * 4 * 1024 * 1024            # stream_buffers x stream_chunk_size
    assert peaks[64] < core + 3 * 2 * MB + 4 * 1024 * 1024, peaks
    assert peaks[64] < peaks[16] + 3 * MB, peaks


# -- containers ----------------------------------------------------------------

def test_multiple_containers_seed(make_swift_stores, swift_conn):
    with make_swift_stores(swift_store_multiple_containers_seed=3) as stores:
        image_id = "ab-cdef01-2345"
        result = stores.add(image_id, b"x" * 10, 10)
        assert result.location == f"swift+config://ref1/glance_ab-c/{image_id}"
        assert image_id in listing(swift_conn, "glance_ab-c")
        assert stores["objects"].driver.owns(result.location)
        assert not stores["objects"].driver.owns(f"swift+config://ref1/glance/{image_id}")
        stores.delete(result.location)


def test_missing_container_without_create_on_put(make_swift_stores):
    container = "absent" + uuid.uuid4().hex[:6]
    with (make_swift_stores(swift_store_create_container_on_put=False,
                            swift_store_container=container) as stores,
          pytest.raises(errors.WriteDenied, match="does not exist")):
        stores.add(new_id(), b"x" * 10, 10)


def test_dead_server_is_backend_unavailable_quickly(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refs = write_refs(tmp_path / "refs.conf", {"ref1": {
        "auth_address": f"http://127.0.0.1:{port}/auth/v1.0", "user": "a:b",
        "key": "k", "auth_version": "1"}})
    conf = make_conf({"DEFAULT": {"enabled_backends": {"s": "swift"}},
                      "glance_store": {"default_backend": "s"},
                      "s": {"swift_store_config_file": refs}}, tmp_path)
    with multistore.load(conf) as stores:
        started = time.monotonic()
        with pytest.raises(errors.BackendUnavailable):
            stores.add(new_id(), b"x", 1)
        with pytest.raises(errors.BackendUnavailable):
            stores.get_size(f"swift+config://ref1/glance/{new_id()}")
        assert time.monotonic() - started < 10


# -- TLS -----------------------------------------------------------------------

@pytest.fixture
def make_tls_stores(swift_server, swift_tls_url, tmp_path):
    """Stores whose reference authenticates over HTTPS (tempauth hands out
    https storage URLs there), with the TLS options given."""
    refs = write_refs(tmp_path / "tls-refs.conf", {"tls": {
        "auth_address": f"{swift_tls_url}/auth/v1.0", "user": "test:tester",
        "key": swift_server.users["test:tester"], "auth_version": "1"}})

    def make(**tls_options):
        conf = make_conf({"DEFAULT": {"enabled_backends": {"s": "swift"}},
                          "glance_store": {"default_backend": "s"},
                          "s": {"swift_store_config_file": refs,
                                "default_swift_reference": "tls",
                                "swift_store_container": "tls",
                                "swift_store_create_container_on_put": True,
                                "swift_store_large_object_size": 1,
                                "swift_store_large_object_chunk_size": 1,
                                "swift_store_retries": 0, **tls_options}}, tmp_path)
        return multistore.load(conf)
    return make


def test_tls_with_the_servers_ca(make_tls_stores, swift_server, swift_conn):
    data = random_bytes(3 * MB + 5, seed=41)        # segmented, over TLS
    with make_tls_stores(swift_store_cacert=swift_server.ca_file) as stores:
        result = stores.add(new_id(), data, len(data))
        assert result.location.startswith("swift+config://tls/tls/")
        # The data went through the HTTPS proxy (tempauth's storage URL there is https).
        name = result.location.rsplit("/", 1)[1]
        assert f"PUT /v1/AUTH_test/tls/{name}" in swift_server.log_tail("proxy-tls", 500)
        assert read(stores, result.location) == data
        assert read(stores, result.location, offset=MB - 3, length=7) == data[MB - 3:MB + 4]
        assert name in listing(swift_conn, "tls")        # the same account, via plain http
        stores.delete(result.location)
        assert not [o for o in listing(swift_conn, "tls") if o.startswith(name)]


def test_tls_certificate_of_an_unknown_ca_is_refused(make_tls_stores, swift_conn):
    image_id = new_id()
    with make_tls_stores() as stores:                # verified against the system CAs
        with pytest.raises(errors.BackendUnavailable) as info:
            stores.add(image_id, b"x" * 100, 100)
        assert info.value.store == "s" and info.value.operation == "add"
        assert "certificate" in str(info.value).lower()
        assert "testing" not in str(info.value)      # tester's key
    assert not [o for o in listing(swift_conn, "tls") if o.startswith(image_id)]


def test_tls_insecure_skips_the_check(make_tls_stores):
    with make_tls_stores(swift_store_auth_insecure=True) as stores, \
            pytest.warns(Warning, match="Unverified HTTPS request"):   # urllib3 says so
        result = stores.add(new_id(), b"y" * 100, 100)
        assert read(stores, result.location) == b"y" * 100
        stores.delete(result.location)


# -- references ----------------------------------------------------------------

def test_two_stores_with_their_own_reference_files(swift_server, swift_conn, tmp_path):
    """Both files name their reference 'ref1', for different accounts."""
    a = write_refs(tmp_path / "a.conf", {"ref1": tempauth_ref(swift_server)})
    b = write_refs(tmp_path / "b.conf", {"ref1": tempauth_ref(swift_server, "test2:tester2"),
                                         "only_b": tempauth_ref(swift_server)})
    conf = make_conf({
        "DEFAULT": {"enabled_backends": {"alpha": "swift", "beta": "swift"}},
        "glance_store": {"default_backend": "alpha"},
        "backend_defaults": {"swift_store_create_container_on_put": True},
        "alpha": {"swift_store_config_file": a, "swift_store_container": "alpha"},
        "beta": {"swift_store_config_file": b, "swift_store_container": "beta"},
    }, tmp_path)
    other = swiftclient.Connection(authurl=swift_server.auth_url, user="test2:tester2",
                                   key=swift_server.users["test2:tester2"])
    with multistore.load(conf) as stores:
        ra = stores.add("img-a", b"A" * 100, 100, store="alpha")
        rb = stores.add("img-b", b"B" * 200, 200, store="beta")
        assert ra.location == "swift+config://ref1/alpha/img-a"
        assert rb.location == "swift+config://ref1/beta/img-b"
        assert "img-a" in listing(swift_conn, "alpha")      # account test
        assert "img-b" in listing(other, "beta")            # account test2
        assert "img-b" not in listing(swift_conn, "beta")
        # Each location resolves to its own store, by reference and container.
        assert stores.store_for(ra.location).id == "alpha"
        assert stores.store_for(rb.location).id == "beta"
        assert read(stores, ra.location) == b"A" * 100
        assert read(stores, rb.location) == b"B" * 200
        # alpha does not know beta's references.
        assert not stores["alpha"].driver.owns("swift+config://only_b/alpha/x")
        assert stores["beta"].driver.owns("swift+config://only_b/beta/x")
        stores.delete(ra.location)
        stores.delete(rb.location)


def test_unknown_default_reference_is_a_config_error(refs_file, tmp_path):
    conf = make_conf({"DEFAULT": {"enabled_backends": {"s": "swift"}},
                      "glance_store": {"default_backend": "s"},
                      "s": {"swift_store_config_file": refs_file,
                            "default_swift_reference": "nope"}}, tmp_path)
    with pytest.raises(errors.ConfigError, match="nope") as info:
        multistore.load(conf)
    assert info.value.store == "s"


def test_deprecated_single_account_options(swift_server, tmp_path):
    conf = make_conf({"DEFAULT": {"enabled_backends": {"s": "swift"}},
                      "glance_store": {"default_backend": "s"},
                      "s": {"swift_store_auth_address": swift_server.auth_url,
                            "swift_store_user": "test:tester",
                            "swift_store_key": swift_server.users["test:tester"],
                            "swift_store_auth_version": "1",
                            "swift_store_create_container_on_put": True}}, tmp_path)
    with multistore.load(conf) as stores:
        result = stores.add(new_id(), b"data", 4)
        assert result.location.startswith("swift+config://ref1/glance/")   # no credentials
        assert read(stores, result.location) == b"data"
        stores.delete(result.location)


def test_legacy_location_with_credentials_is_read(make_swift_stores, swift_server,
                                                  swift_conn):
    image_id = new_id()
    swift_conn.put_container("glance")
    swift_conn.put_object("glance", image_id, b"legacy bytes")
    key = swift_server.users["test:tester"]
    legacy = (f"swift+http://test%3Atester:{key}@127.0.0.1:{swift_server.ports['proxy']}"
              f"/auth/v1.0/glance/{image_id}")
    with make_swift_stores() as stores:
        assert stores.store_for(legacy).id == "objects"
        assert read(stores, legacy) == b"legacy bytes"
        assert stores.get_size(legacy) == 12
        missing = legacy.replace(image_id, new_id())
        with pytest.raises(errors.NotFound) as info:
            read(stores, missing)
        assert key not in str(info.value)
        wrong_key = legacy.replace(f":{key}@", ":not-the-key@")
        with pytest.raises(errors.MultistoreError) as info:
            read(stores, wrong_key)
        assert "not-the-key" not in str(info.value)
        stores.delete(legacy)
        with pytest.raises(errors.NotFound):
            stores.get_size(legacy)


def test_legacy_dlo_image_is_read_and_deleted(make_swift_stores, swift_conn):
    """glance_store wrote large images as DLOs: <obj>-00001 ... in the same container."""
    image_id = new_id()
    swift_conn.put_container("glance")
    parts = [random_bytes(1000, seed=i) for i in range(3)]
    for i, part in enumerate(parts, 1):
        swift_conn.put_object("glance", f"{image_id}-{i:05d}", part)
    swift_conn.put_object("glance", image_id, b"",
                          headers={"X-Object-Manifest": f"glance/{image_id}-"})
    with make_swift_stores() as stores:
        location = f"swift+config://ref1/glance/{image_id}"
        assert read(stores, location) == b"".join(parts)
        # A range: the manifest itself is empty, the image is not (this read
        # came back empty when the range was taken for past the end).
        assert read(stores, location, offset=1500, length=1000) == b"".join(parts)[1500:2500]
        stores.delete(location)
    assert not [n for n in listing(swift_conn, "glance") if n.startswith(image_id)]


# -- reads -----------------------------------------------------------------------

@pytest.mark.parametrize("segmented", [False, True])
def test_resume_after_a_dropped_connection(make_swift_stores, dropping_proxy, segmented):
    """The connection is cut mid-body (armed before the GET: socket buffers on
    loopback hold megabytes); the read resumes with a Range request."""
    data = random_bytes(3 * MB, seed=6)
    endpoint = f"{dropping_proxy.url}/v1/AUTH_test"
    with make_swift_stores(swift_store_endpoint=endpoint, swift_store_retry_get_count=2,
                           swift_store_large_object_size=1 if segmented else 100) as stores:
        result = stores.add(new_id(), data, len(data))
        dropping_proxy.drop_after(MB)
        assert read(stores, result.location) == data
        assert dropping_proxy.drops == 1
        # Ranged, too.
        dropping_proxy.drop_after(MB // 2)
        assert read(stores, result.location, offset=1000, length=2 * MB) == \
            data[1000:1000 + 2 * MB]
        assert dropping_proxy.drops == 2
        stores.delete(result.location)


def test_dropped_connection_without_retries_fails(make_swift_stores, dropping_proxy):
    data = random_bytes(3 * MB, seed=7)
    endpoint = f"{dropping_proxy.url}/v1/AUTH_test"
    with make_swift_stores(swift_store_endpoint=endpoint) as stores:
        result = stores.add(new_id(), data, len(data))
        dropping_proxy.drop_after(MB)
        with pytest.raises(errors.MultistoreError):
            read(stores, result.location)
        assert dropping_proxy.drops == 1
        stores.delete(result.location)


def test_range_past_the_end_is_empty(make_swift_stores):
    with make_swift_stores() as stores:
        result = stores.add(new_id(), b"0123456789", 10)
        assert read(stores, result.location, offset=10) == b""
        assert read(stores, result.location, offset=50, length=5) == b""
        assert read(stores, result.location, offset=8, length=50) == b"89"


# -- multi-tenant --------------------------------------------------------------

def _context(swift_server, user):
    url, token = swiftclient.get_auth(swift_server.auth_url, user, swift_server.users[user])
    return types.SimpleNamespace(auth_token=token, storage_url=url,
                                 project_id=user.split(":")[0])


@pytest.fixture
def tenant_stores(tmp_path):
    conf = make_conf({"DEFAULT": {"enabled_backends": {"mt": "swift"}},
                      "glance_store": {"default_backend": "mt"},
                      "mt": {"swift_store_multi_tenant": True,
                             "swift_store_acl_style": "tempauth",
                             "swift_store_large_object_size": 1,
                             "swift_store_large_object_chunk_size": 1}}, tmp_path)
    with multistore.load(conf) as stores:
        yield stores


def test_multi_tenant_images_live_in_the_users_account(tenant_stores, swift_server):
    alice = _context(swift_server, "test:tester")
    bob = _context(swift_server, "test2:tester2")
    data = random_bytes(2 * MB + 5, seed=8)      # segmented: ACLs must cover segments
    image_id = new_id()
    result = tenant_stores.add(image_id, data, len(data), context=alice)
    assert result.location == (f"swift+http://127.0.0.1:{swift_server.ports['proxy']}"
                               f"/v1/AUTH_test/glance_{image_id}/{image_id}")
    assert read(tenant_stores, result.location, context=alice) == data
    # Bob's token does not open Alice's account ...
    with pytest.raises(errors.WriteDenied):
        read(tenant_stores, result.location, context=bob)
    # ... until the image is shared with his project,
    tenant_stores.set_acls(result.location, read_tenants=["test2"], context=alice)
    assert read(tenant_stores, result.location, context=bob) == data
    with pytest.raises(errors.WriteDenied):
        tenant_stores.delete(result.location, context=bob)
    # unshared again,
    tenant_stores.set_acls(result.location, context=alice)
    with pytest.raises(errors.WriteDenied):
        read(tenant_stores, result.location, context=bob)
    # made public.
    tenant_stores.set_acls(result.location, public=True, context=alice)
    assert read(tenant_stores, result.location, context=bob) == data
    # Without a context there is no token to use.
    with pytest.raises(errors.WriteDenied):
        tenant_stores.get_size(result.location)
    tenant_stores.delete(result.location, context=alice)
    conn = swiftclient.Connection(preauthurl=alice.storage_url,
                                  preauthtoken=alice.auth_token)
    names = [c["name"] for c in conn.get_account(full_listing=True)[1]]
    assert f"glance_{image_id}" not in names
    assert f"glance_{image_id}_segments" not in names


def test_multi_tenant_write_acl_and_admin_tenants(tmp_path, swift_server):
    conf = make_conf({"DEFAULT": {"enabled_backends": {"mt": "swift"}},
                      "glance_store": {"default_backend": "mt"},
                      "mt": {"swift_store_multi_tenant": True,
                             "swift_store_acl_style": "tempauth",
                             "swift_store_admin_tenants": "admin"}}, tmp_path)
    alice = _context(swift_server, "test:tester")
    bob = _context(swift_server, "test2:tester2")
    with multistore.load(conf) as stores:
        result = stores.add(new_id(), b"x" * 10, 10, context=alice)
        stores.set_acls(result.location, read_tenants=["test2"], write_tenants=["test2"],
                        context=alice)
        conn = swiftclient.Connection(preauthurl=alice.storage_url,
                                      preauthtoken=alice.auth_token)
        container = result.location.rsplit("/", 2)[1]
        headers = conn.head_container(container)
        assert headers["x-container-write"] == "test2,admin"
        stores.delete(result.location, context=bob)     # write access deletes
        with pytest.raises(errors.NotFound):
            stores.get_size(result.location, context=alice)


def test_single_tenant_set_acls_is_not_supported(make_swift_stores):
    with make_swift_stores() as stores:
        result = stores.add(new_id(), b"x", 1)
        with pytest.raises(errors.NotSupported):
            stores.set_acls(result.location, public=True)


# -- secrets -------------------------------------------------------------------

def test_no_secret_in_logs_errors_or_locations(make_swift_stores, swift_server,
                                               swift_conn, all_logs):
    key = swift_server.users["test:tester"]
    token = swift_conn.get_auth()[1]
    secrets_ = [key, token, "test%3Atester:" + key]
    texts = []
    with make_swift_stores(swift_store_large_object_size=1) as stores:
        data = random_bytes(2 * MB, seed=9)
        result = stores.add(new_id(), data, len(data))
        texts.append(result.location)
        texts.append(repr(result))
        texts.append(repr(stores["objects"].driver))
        texts.append(repr(stores["objects"].driver.refs))
        texts.append(str(stores.info(detail=True)))
        read(stores, result.location)
        stores.delete(result.location)
        legacy = (f"swift+http://test%3Atester:{key}@127.0.0.1:"
                  f"{swift_server.ports['proxy']}/auth/v1.0/glance/{new_id()}")
        for call in (lambda: read(stores, legacy), lambda: stores.delete(legacy),
                     lambda: stores.get(legacy.replace("/glance/", "/other/"))):
            with pytest.raises(errors.MultistoreError) as info:
                call()
            texts += [str(info.value), repr(info.value)]
    texts += [r.getMessage() for r in all_logs.records]
    assert any("swiftclient" in r.name for r in all_logs.records)   # debug logs were on
    for text in texts:
        for secret in secrets_:
            assert secret not in text, text


@pytest.mark.parametrize("concurrency", [1, 2])
def test_ranges_at_segment_boundaries(make_swift_stores, concurrency):
    """Segments are read directly (not through the SLO middleware): every
    range around their boundaries gives exactly the image's bytes."""
    data = random_bytes(3 * MB + 7, seed=51)
    total = len(data)
    with make_swift_stores(swift_store_large_object_size=1,
                           swift_store_segment_concurrency=concurrency) as stores:
        result = stores.add(new_id(), data, total)
        for offset in (0, 1, MB - 1, MB, MB + 1, 2 * MB, 3 * MB - 1, 3 * MB, total - 1,
                       total, total + 5):
            for length in (None, 0, 1, MB, 2 * MB + 1):
                expected = data[offset:] if length is None else data[offset:offset + length]
                assert read(stores, result.location, offset=offset, length=length) == \
                    expected, (offset, length)
        stores.delete(result.location)
