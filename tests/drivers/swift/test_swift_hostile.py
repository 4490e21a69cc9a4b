"""Hostile input against a real Swift (issue 16's swift items, and more).

Each test names what it proves; each failed against the driver before the
typed, quoted locations (40d74ae).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import types
import uuid

import pytest
import swiftclient

import multistore
from multistore import errors
from multistore.testing import make_conf, random_bytes

from swift_refs import MB, names, read


def new_id():
    return str(uuid.uuid4())






ODD = ("A", "%41", "a?b", "a#b", "a%2Fb", "%25", "%", "a%2F..%2Fb")


@pytest.mark.parametrize("segmented", [False, True])
def test_odd_ids_are_separate_objects_each_read_and_deleted_through_its_location(
        make_swift_stores, swift_conn, segmented):
    """Issue 16.3: '%41' and 'A' (and 'a?b', 'a#b', 'a%2Fb', '%25') name
    separate objects; each location reads and deletes its own object,
    segments too; nothing is left behind."""
    prefix = new_id()[:8]
    size = 2 * MB + 3 if segmented else 100
    with make_swift_stores(swift_store_large_object_size=1) as stores:
        added = {}
        for i, odd in enumerate(ODD):
            data = random_bytes(size, seed=100 + i)
            result = stores.add(prefix + odd, data, len(data))
            added[prefix + odd] = (result.location, data)
        assert sorted(names(swift_conn, "glance", prefix)) == sorted(added)
        if segmented:
            listed = {n.rsplit("/", 2)[0] for n in names(swift_conn, "glance_segments", prefix)}
            assert listed == set(added)
        for image_id, (location, data) in added.items():
            assert read(stores, location) == data, image_id
            assert read(stores, location, offset=1, length=50) == data[1:51]
            assert stores.get_size(location) == len(data)
        for image_id, (location, _) in added.items():
            assert stores[stores.default].locate(location).image_id == image_id
        for image_id, (location, _) in added.items():
            stores.delete(location)
            with pytest.raises(errors.NotFound):
                stores.get_size(location)
            # The others are still there.
            remaining = [i for i in added if i != image_id]
            assert set(names(swift_conn, "glance", prefix)) <= set(remaining)
    assert names(swift_conn, "glance", prefix) == []
    assert names(swift_conn, "glance_segments", prefix) == []


TRAVERSALS = (
    "swift+config://ref1/glance/..%2F{secret}%2Fobj",
    "swift+config://ref1/glance/%2E%2E%2F{secret}%2Fobj",
    "swift+config://ref1/glance/..%2F..%2FAUTH_test2%2F{secret}%2Fobj",
    "swift+config://ref1/glance/..",
    "swift+config://ref1/glance/%2e%2e",
    "swift+config://ref1/glance/.",
    "swift+config://ref1/%2E%2E/{secret}",
    "swift+config://ref1/glance/obj%0Aheader",
)


def test_percent_encoded_traversal_is_refused_without_a_request(make_swift_stores,
                                                               swift_conn, swift_server):
    """Issue 16.4: names that decode to '..', '/' or control characters are
    BadLocation before anything is sent; the object they aimed at survives."""
    secret = "secret" + uuid.uuid4().hex[:8]
    swift_conn.put_container(secret)
    swift_conn.put_object(secret, "obj", b"not yours")

    def requests_naming_the_secret():
        time.sleep(0.5)         # the proxy's log line comes after its answer
        return sum(secret in line for line in swift_server.log_tail("proxy", 5000).splitlines())

    before = requests_naming_the_secret()
    with make_swift_stores() as stores:
        for template in TRAVERSALS:
            location = template.format(secret=secret)
            for call in (read, stores.get_size, stores.delete):
                with pytest.raises(errors.BadLocation):
                    call(*((stores,) if call is read else ()), location)
            assert not stores["objects"].driver.owns(location)
    assert requests_naming_the_secret() == before
    assert swift_conn.get_object(secret, "obj")[1] == b"not yours"


@pytest.mark.parametrize("concurrency", [1, 3])
def test_segments_of_ids_with_percent_are_removed(make_swift_stores, swift_conn,
                                                  concurrency):
    """Issue 16.5: a failed add and a delete remove every segment of an id
    holding '%' (segment names are sent as listed, never unquoted)."""
    prefix = new_id()[:8]
    image_id = prefix + "%41%25x"
    data = random_bytes(4 * MB, seed=31)

    def failing():
        yield data[:3 * MB]
        raise ConnectionResetError("the client went away")

    with make_swift_stores(swift_store_large_object_size=1,
                           swift_store_segment_concurrency=concurrency) as stores:
        with pytest.raises(ConnectionResetError):
            stores.add(image_id, failing(), len(data))
        assert names(swift_conn, "glance_segments", prefix) == []
        result = stores.add(image_id, data, len(data))
        assert len(names(swift_conn, "glance_segments", prefix)) == 4
        stores.delete(result.location)
    assert names(swift_conn, "glance_segments", prefix) == []
    assert names(swift_conn, "glance", prefix) == []


def test_abort_after_a_plain_put_landed_deletes_the_object(make_swift_stores, swift_conn):
    """Issue 16.6: the whole small image reached Swift, then the add failed
    (checksum mismatch): the object is deleted, not just asked
    'multipart-manifest=delete' (Swift answers 200 and keeps a plain object)."""
    image_id = new_id()
    data = random_bytes(100_000, seed=32)
    with make_swift_stores() as stores:
        with pytest.raises(errors.ChecksumMismatch):
            stores.add(image_id, data, len(data), checksum="0" * 32)
        assert names(swift_conn, "glance", image_id) == []
        result = stores.add(image_id, data, len(data))      # the id is free
        assert read(stores, result.location) == data


def test_delete_of_a_manifest_listing_another_images_segments_keeps_them(
        make_swift_stores, swift_conn):
    """A manifest written by hand that lists another image's segments:
    deleting it removes the manifest only, the other image stays whole."""
    data = random_bytes(3 * MB, seed=33)
    with make_swift_stores(swift_store_large_object_size=1) as stores:
        victim = stores.add(new_id(), data, len(data))
        victim_id = victim.location.rsplit("/", 1)[1]
        manifest = swift_conn.get_object("glance", victim_id,
                                          query_string="multipart-manifest=get")[1]
        evil_id = new_id()
        swift_conn.put_object("glance", evil_id, json.dumps(
            [{"path": s["name"], "etag": s["hash"], "size_bytes": s["bytes"]}
             for s in json.loads(manifest)]), query_string="multipart-manifest=put")
        evil = f"swift+config://ref1/glance/{evil_id}"
        assert read(stores, evil) == data
        stores.delete(evil)
        with pytest.raises(errors.NotFound):
            stores.get_size(evil)
        assert read(stores, victim.location) == data
        stores.delete(victim.location)


def test_legacy_key_with_url_characters_is_parsed_and_never_shown(make_swift_stores,
                                                                  swift_server):
    """A legacy location whose key holds '?', '#', '/', '@' and ':' (quoted
    as glance_store's quote() left them: '/' raw) parses to that key, and
    neither repr, str nor errors show it."""
    key = "k?e#y/z@w:v"
    quoted = "k%3Fe%23y/z%40w%3Av"
    url = (f"swift+http://test%3Atester:{quoted}@127.0.0.1:{swift_server.ports['proxy']}"
           f"/auth/v1.0/glance/{new_id()}")
    with make_swift_stores() as stores:
        parsed = stores["objects"].locate(url)
        assert parsed.key == key and parsed.user == "test:tester"
        assert type(parsed).parse(parsed.format()) == parsed
        for text in (repr(parsed), str(parsed)):
            assert "k?e" not in text and "z@w" not in text and quoted not in text
        with pytest.raises(errors.MultistoreError) as info:     # the key is wrong
            stores.get_size(url)
        assert "k?e" not in str(info.value) and quoted not in str(info.value)


def test_query_or_fragment_in_a_location_is_refused(make_swift_stores, swift_conn):
    """'?multipart-manifest=delete' smuggled into a location is refused; an
    encoded '?' is part of the object's name."""
    with make_swift_stores() as stores:
        result = stores.add(new_id(), b"keep me", 7)
        for suffix in ("?multipart-manifest=delete", "#x", "?"):
            with pytest.raises(errors.BadLocation):
                stores.delete(result.location + suffix)
        with pytest.raises(errors.NotFound):
            stores.delete(result.location + "%3Fmultipart-manifest=delete")
        assert read(stores, result.location) == b"keep me"


@pytest.fixture
def tenant_stores(tmp_path):
    conf = make_conf({"DEFAULT": {"enabled_backends": {"mt": "swift"}},
                      "glance_store": {"default_backend": "mt"},
                      "mt": {"swift_store_multi_tenant": True,
                             "swift_store_acl_style": "tempauth"}}, tmp_path)
    with multistore.load(conf) as stores:
        yield stores


def _context(swift_server, user="test:tester"):
    url, token = swiftclient.get_auth(swift_server.auth_url, user, swift_server.users[user])
    return types.SimpleNamespace(auth_token=token, storage_url=url,
                                 project_id=user.split(":")[0])


def test_multi_tenant_token_never_goes_to_another_host(tenant_stores, swift_server):
    """A multi-tenant location naming another host: the user's token is not
    sent there (BadLocation), whatever the operation."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]
    connected = []

    def accept():
        try:
            conn, _ = listener.accept()
            connected.append(conn.recv(65536))
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    context = _context(swift_server)
    image_id = new_id()
    location = f"swift+http://127.0.0.1:{port}/v1/AUTH_test/glance_{image_id}/{image_id}"
    try:
        for call in (lambda: read(tenant_stores, location, context=context),
                     lambda: tenant_stores.get_size(location, context=context),
                     lambda: tenant_stores.delete(location, context=context),
                     lambda: tenant_stores.set_acls(location, public=True,
                                                    context=context)):
            with pytest.raises(errors.BadLocation):
                call()
    finally:
        listener.close()
        thread.join()
    assert connected == []


def test_multi_tenant_id_too_long_for_a_container_is_refused(tenant_stores, swift_server):
    """Swift container names hold 256 bytes: an id that cannot make
    '<container>_<id>_segments' is a clear refusal, before any request."""
    context = _context(swift_server)
    with pytest.raises(errors.BadLocation, match="container"):
        tenant_stores.add("x" * 245, b"data", 4, context=context)
    result = tenant_stores.add("y" * 240, b"data", 4, context=context)
    assert read(tenant_stores, result.location, context=context) == b"data"
    tenant_stores.delete(result.location, context=context)


def test_delete_of_a_dlo_pointing_elsewhere_keeps_what_it_points_to(make_swift_stores,
                                                                    swift_conn):
    """A DLO manifest (glance's large-object form) whose X-Object-Manifest
    names another image's objects: deleting it removes the manifest only."""
    with make_swift_stores() as stores:
        victim = stores.add(new_id(), b"victim bytes", 12)
        victim_id = victim.location.rsplit("/", 1)[1]
        evil_id = new_id()
        swift_conn.put_object("glance", evil_id, b"",
                              headers={"X-Object-Manifest": f"glance/{victim_id[:8]}"})
        evil = f"swift+config://ref1/glance/{evil_id}"
        assert read(stores, evil) == b"victim bytes"
        stores.delete(evil)
        with pytest.raises(errors.NotFound):
            stores.get_size(evil)
        assert read(stores, victim.location) == b"victim bytes"
        stores.delete(victim.location)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_concurrent_adds_of_one_id_keep_one_image_and_no_segments_of_the_other(
        make_swift_stores, swift_conn, concurrency):
    """Two adds of the same id race (both pass the existence check): one
    wins, the other is Duplicate and leaves none of its segments; the
    winner's segments are untouched."""
    image_id = new_id()
    data = {0: random_bytes(3 * MB, seed=41), 1: random_bytes(3 * MB, seed=42)}
    outcome = {}
    barrier = threading.Barrier(2)
    with make_swift_stores(swift_store_large_object_size=1,
                           swift_store_segment_concurrency=concurrency) as stores:
        def add(n):
            def source():
                barrier.wait(timeout=30)      # both opened their writers
                yield data[n]
            try:
                outcome[n] = stores.add(image_id, source(), len(data[n]))
            except errors.Duplicate as exc:
                outcome[n] = exc
        threads = [threading.Thread(target=add, args=(n,)) for n in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        winners = [n for n, r in outcome.items() if not isinstance(r, Exception)]
        assert len(winners) == 1 and len(outcome) == 2, outcome
        winner = winners[0]
        assert read(stores, outcome[winner].location) == data[winner]
        uploads = {n.split("/")[1] for n in names(swift_conn, "glance_segments", image_id)}
        assert len(uploads) == 1
        stores.delete(outcome[winner].location)
    assert names(swift_conn, "glance_segments", image_id) == []


def test_a_missing_segment_is_an_error_not_a_missing_image(make_swift_stores, swift_conn):
    """Reading a manifest whose segment was removed behind the store's back
    fails loudly; it is not NotFound (which a caller may take as 'the image
    is gone, forget its location')."""
    data = random_bytes(3 * MB, seed=43)
    with make_swift_stores(swift_store_large_object_size=1) as stores:
        result = stores.add(new_id(), data, len(data))
        image_id = result.location.rsplit("/", 1)[1]
        second = sorted(names(swift_conn, "glance_segments", image_id))[1]
        swift_conn.delete_object("glance_segments", second)
        with pytest.raises(errors.MultistoreError, match="missing") as info:
            read(stores, result.location)
        assert not isinstance(info.value, errors.NotFound)
        assert stores.get_size(result.location) == len(data)
        stores.delete(result.location)


@pytest.mark.parametrize("member", ["x,.r:*", ".r:*", "test2,*", "a b", "test2:tester2",
                                    "x\n", ""])
def test_acl_entries_that_are_not_project_ids_are_refused(tenant_stores, swift_server,
                                                          member):
    """A 'tenant' smuggling an ACL element (',.r:*' makes a container world
    readable; Glance takes member ids as they come) is refused; the image
    stays private."""
    alice = _context(swift_server)
    bob = _context(swift_server, "test2:tester2")
    result = tenant_stores.add(new_id(), b"private", 7, context=alice)
    with pytest.raises(errors.WriteDenied, match="not a project id"):
        tenant_stores.set_acls(result.location, read_tenants=["test3", member],
                               context=alice)
    with pytest.raises(errors.WriteDenied):
        read(tenant_stores, result.location, context=bob)
    anonymous = swiftclient.Connection(preauthurl=alice.storage_url, preauthtoken="x",
                                       retries=0)
    with pytest.raises(swiftclient.ClientException):
        anonymous.get_object(result.location.rsplit("/", 2)[1],
                             result.location.rsplit("/", 1)[1])
    tenant_stores.delete(result.location, context=alice)
