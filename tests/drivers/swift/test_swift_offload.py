"""Copies inside Swift (SwiftDriver.copy_within) against a real Swift, and the
core's copy(..., offload=True, verify="backend") that takes Swift's ETags as
the check instead of reading the copy back.

Stores: ``a`` (account AUTH_test, its own container), ``b`` (the same
account, another container), ``other`` (account AUTH_test2, credentials of
test2:tester2), all on the session's Swift; a second Swift cluster on ports
base + 20.. for the "another cluster" case.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import types
import uuid

import pytest
import swiftclient

import multistore
from multistore import errors
from multistore.testing import make_conf, random_bytes

from swift_refs import MB, names, read, tempauth_ref, write_refs

SEGMENTED = 5 * MB + 17          # six 1 MB segments (large objects from 4 MB)
PLAIN = 3 * MB + 5               # one object


def new_id():
    return str(uuid.uuid4())






def purge(conn, *containers):
    """Delete every object of these containers (some may be quarantined: 404)."""
    for container in containers:
        for name in names(conn, container):
            try:
                conn.delete_object(container, name)
            except swiftclient.ClientException as exc:
                if exc.http_status != 404:
                    raise


def refused_as_damaged(stores, src, swift_conn, containers, cause):
    """An offloaded, backend-verified copy of ``src`` to ``b`` fails with
    ChecksumMismatch naming the image and ``cause``; nothing is left in ``b``."""
    with pytest.raises(errors.ChecksumMismatch) as info:
        stores.copy(src.location, ["b"], offload=True, verify="backend",
                    checksum=src.checksum, multihash=src.multihash)
    image_id = src.location.rsplit("/", 1)[1]
    assert image_id in str(info.value) and info.value.stores == ("b",)
    assert cause in str(info.value)
    assert names(swift_conn, containers["b"]) == []
    assert names(swift_conn, containers["b"] + "_segments") == []
    purge(swift_conn, containers["a"], containers["a"] + "_segments")


def sections_for(refs_file, stores, **common):
    options = {"swift_store_config_file": str(refs_file),
               "swift_store_create_container_on_put": True,
               "swift_store_large_object_size": 4,
               "swift_store_large_object_chunk_size": 1, **common}
    return {"DEFAULT": {"enabled_backends": {name: "swift" for name in stores}},
            "glance_store": {"default_backend": next(iter(stores))},
            **{name: {**options, **values} for name, values in stores.items()}}


@pytest.fixture
def containers():
    """Containers of this test alone (the sweep and listings look only there)."""
    tag = uuid.uuid4().hex[:8]
    return {"a": f"src{tag}", "b": f"dst{tag}", "other": f"oth{tag}"}


@pytest.fixture
def store_sections(refs_file, containers):
    return sections_for(refs_file, {
        "a": {"default_swift_reference": "ref1", "swift_store_container": containers["a"]},
        "b": {"default_swift_reference": "ref1", "swift_store_container": containers["b"]},
        "other": {"default_swift_reference": "ref2",
                  "swift_store_container": containers["other"]}})


@pytest.fixture
def stores(store_sections, tmp_path):
    with multistore.load(make_conf(store_sections, tmp_path / "conf")) as loaded:
        yield loaded


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger="multistore")
    return caplog


def copy_kinds(caplog):
    """For each copy logged: 'backend' (vouched), 'read back' or 'streamed'."""
    kinds = []
    for record in caplog.records:
        text = record.getMessage()
        if "vouched for by the backend" in text:
            kinds.append("backend")
        elif "(inside the backend)" in text:
            kinds.append("read back")
        elif text.startswith("copy image") and "bytes" in text:
            kinds.append("streamed")
    return kinds


def only_own_segments(conn, container, image_id):
    """The target's manifest lists only segments of its own segment container."""
    manifest = json.loads(conn.get_object(container, image_id,
                                          query_string="multipart-manifest=get")[1])
    assert all(s["name"].startswith(f"/{container}_segments/{image_id}/") for s in manifest)
    return manifest


@pytest.mark.parametrize("size", [PLAIN, SEGMENTED], ids=["whole-object", "slo"])
def test_copy_inside_swift_equals_a_streamed_copy(stores, swift_conn, containers, logs,
                                                  size):
    data = random_bytes(size, seed=size)
    image_id = new_id()
    src = stores.add(image_id, data, len(data), store="a")
    offloaded, = stores.copy(src.location, ["b"], offload=True, verify="backend",
                             checksum=src.checksum, multihash=src.multihash)
    assert copy_kinds(logs) == ["backend"]        # no byte read back, none streamed
    dst = containers["b"]
    assert offloaded.location == f"swift+config://ref1/{dst}/{image_id}"
    manifest = only_own_segments(swift_conn, dst, image_id)
    assert sum(s["bytes"] for s in manifest) == len(data)
    assert len(manifest) == (1 if size == PLAIN else 6)
    # The same result as a copy read back, and as a streamed copy.
    stores.delete(offloaded.location)
    read_back, = stores.copy(src.location, ["b"], offload=True)
    assert copy_kinds(logs)[-1] == "read back"
    stores.delete(read_back.location)
    streamed, = stores.copy(src.location, ["b"])
    assert copy_kinds(logs)[-1] == "streamed"
    stores.delete(streamed.location)
    again, = stores.copy(src.location, ["b"], offload=True, verify="backend",
                         checksum=src.checksum, multihash=src.multihash)
    for result in (read_back, streamed, again):
        assert (offloaded.location, offloaded.size, offloaded.checksum, offloaded.multihash,
                offloaded.metadata) == (result.location, result.size, result.checksum,
                                        result.multihash, result.metadata)
    assert offloaded.checksum == hashlib.md5(data).hexdigest()
    assert offloaded.multihash == hashlib.sha512(data).hexdigest()
    assert offloaded.metadata == {"store": "b"}
    # The copy does not depend on the source: deleted, the copy still reads.
    stores.delete(src.location)
    assert names(swift_conn, containers["a"] + "_segments") == []
    assert read(stores, again.location) == data
    assert stores.get_size(again.location) == len(data)
    stores.delete(again.location)
    assert names(swift_conn, dst + "_segments") == []
    assert stores.sweep(grace=0.0, remove=False) == []


def test_a_glance_dlo_is_copied_into_an_slo(stores, swift_conn, containers, logs):
    """glance_store's Dynamic Large Objects (segments <id>-00001 ... in the
    image's container) are copied segment by segment, then a manifest."""
    src_container = containers["a"]
    image_id = new_id()
    parts = [random_bytes(MB, seed=n) for n in range(3)] + [b"tail"]
    swift_conn.put_container(src_container)
    for n, part in enumerate(parts, 1):
        swift_conn.put_object(src_container, f"{image_id}-{n:05d}", part)
    swift_conn.put_object(src_container, image_id, b"",
                          headers={"X-Object-Manifest": f"{src_container}/{image_id}-"})
    data = b"".join(parts)
    location = f"swift+config://ref1/{src_container}/{image_id}"
    md5, sha = hashlib.md5(data).hexdigest(), hashlib.sha512(data).hexdigest()
    copied, = stores.copy(location, ["b"], offload=True, verify="backend", checksum=md5,
                          multihash=sha)
    assert copy_kinds(logs) == ["backend"]
    assert (copied.size, copied.checksum, copied.multihash) == (len(data), md5, sha)
    assert len(only_own_segments(swift_conn, containers["b"], image_id)) == 4
    stores.delete(location)                       # the DLO and its segments
    assert names(swift_conn, src_container) == []
    assert read(stores, copied.location) == data
    stores.delete(copied.location)


def test_backend_verification_needs_the_recorded_digests(stores, logs):
    """Without the image's multihash the copy is read back (and hashed here)."""
    data = random_bytes(SEGMENTED, seed=3)
    src = stores.add(new_id(), data, len(data), store="a")
    copied, = stores.copy(src.location, ["b"], offload=True, verify="backend",
                          checksum=src.checksum)
    assert copy_kinds(logs) == ["read back"]
    assert "no checksum and multihash given" in logs.text
    assert copied.multihash == src.multihash
    with pytest.raises(errors.DataMismatch):       # not a sha512 hex digest
        stores.copy(src.location, ["b"], offload=True, verify="backend",
                    checksum=src.checksum, multihash="abc")
    with pytest.raises(ValueError):
        stores.copy(src.location, ["b"], offload=True, verify="trust-me")
    for loc in (copied.location, src.location):
        stores.delete(loc)


def test_a_wrong_recorded_checksum_is_caught_without_reading(stores, swift_conn, containers):
    """One piece: Swift's ETag is the md5 of the whole image, so a record
    that does not match it fails the copy, which is removed."""
    data = random_bytes(PLAIN, seed=4)
    src = stores.add(new_id(), data, len(data), store="a")
    wrong = hashlib.md5(b"another image").hexdigest()
    with pytest.raises(errors.ChecksumMismatch) as info:
        stores.copy(src.location, ["b"], offload=True, verify="backend", checksum=wrong,
                    multihash=src.multihash)
    image_id = src.location.rsplit("/", 1)[1]
    assert image_id in str(info.value) and info.value.stores == ("b",)
    assert names(swift_conn, containers["b"]) == []
    assert names(swift_conn, containers["b"] + "_segments") == []
    stores.delete(src.location)


def test_an_existing_image_is_never_overwritten(stores, swift_conn, containers):
    image_id = new_id()
    first, second = random_bytes(SEGMENTED, seed=5), random_bytes(PLAIN, seed=6)
    src = stores.add(image_id, first, len(first), store="a")
    there = stores.add(image_id, second, len(second), store="b")
    before = names(swift_conn, containers["b"] + "_segments")
    with pytest.raises(errors.Duplicate):
        stores.copy(src.location, ["b"], offload=True, verify="backend",
                    checksum=src.checksum, multihash=src.multihash)
    parsed = stores["a"].driver.parse_location(src.location)
    with pytest.raises(errors.Duplicate):
        stores["b"].driver.copy_within(stores["a"].driver, parsed, image_id)
    assert read(stores, there.location) == second
    assert names(swift_conn, containers["b"] + "_segments") == before
    for loc in (src.location, there.location):
        stores.delete(loc)


def test_a_copy_failing_midway_leaves_nothing(stores, swift_conn, containers):
    """A source segment is gone: the segments copied before are removed,
    nothing is under the final name, and the error names the image."""
    data = random_bytes(SEGMENTED, seed=7)
    image_id = new_id()
    src = stores.add(image_id, data, len(data), store="a")
    seg_container = containers["a"] + "_segments"
    segments = names(swift_conn, seg_container)
    swift_conn.delete_object(seg_container, segments[4])
    with pytest.raises(errors.NotFound) as info:
        stores.copy(src.location, ["b"], offload=True, verify="backend",
                    checksum=src.checksum, multihash=src.multihash)
    assert image_id in str(info.value)
    assert names(swift_conn, containers["b"]) == []
    assert names(swift_conn, containers["b"] + "_segments") == []
    stores.delete(src.location)


def test_a_source_segment_replaced_through_swift_is_caught(stores, swift_conn, containers):
    """A segment overwritten with other bytes of the same size: its ETag is
    no longer the one the manifest lists, and Swift refuses to copy it."""
    data = random_bytes(SEGMENTED, seed=8)
    image_id = new_id()
    src = stores.add(image_id, data, len(data), store="a")
    seg_container = containers["a"] + "_segments"
    victim = names(swift_conn, seg_container)[2]
    swift_conn.put_object(seg_container, victim, random_bytes(MB, seed=99))
    refused_as_damaged(stores, src, swift_conn, containers,
                       "no longer the one its manifest lists")


@pytest.mark.parametrize("size", [PLAIN, SEGMENTED], ids=["whole-object", "slo"])
def test_bit_rot_on_the_object_server_is_caught(stores, swift_server, swift_conn,
                                                containers, size):
    """One byte of a source segment flipped on the object server's disk (its
    stored ETag unchanged): the md5 Swift computes of the copied bytes is
    not the source's ETag, so the copy is refused; nothing is left."""
    data = random_bytes(size, seed=size + 1)
    image_id = new_id()
    src = stores.add(image_id, data, len(data), store="a")
    seg_container = containers["a"] + "_segments"
    segment = names(swift_conn, seg_container, prefix=image_id + "/")[0] \
        if size == SEGMENTED else None
    if segment:
        swift_server.rot_object("AUTH_test", seg_container, segment, offset=1000)
    else:
        swift_server.rot_object("AUTH_test", containers["a"], image_id, offset=1000)
    refused_as_damaged(stores, src, swift_conn, containers, "the source is damaged")


CHILD = r"""
import json, sys, threading, time
import multistore
from multistore.drivers.swift import copying
from multistore.testing import make_conf

sections, conf_dir, location = sys.argv[1:4]
real = copying.SwiftCopy.copy_piece
done = []
lock = threading.Lock()

def copy_piece(self, index, piece, name):
    # Pieces 0-2 are copied; the others wait until the process is killed.
    if index >= 3:
        time.sleep(3600)
    real(self, index, piece, name)
    with lock:
        done.append(index)
        if len(done) == 3:
            print("ready", flush=True)

copying.SwiftCopy.copy_piece = copy_piece
stores = multistore.load(make_conf(json.loads(sections), conf_dir))
stores.copy(location, ["b"], offload=True)
print("finished", flush=True)
"""


def test_a_killed_copy_leaves_only_what_the_sweep_removes(stores, store_sections, swift_conn,
                                                          containers, tmp_path):
    data = random_bytes(SEGMENTED, seed=9)
    image_id = new_id()
    src = stores.add(image_id, data, len(data), store="a")
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(store_sections),
                              str(tmp_path / "child"), src.location],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    seg_container = containers["b"] + "_segments"
    left = names(swift_conn, seg_container)
    assert len(left) == 3 and len({name.rsplit("/", 1)[0] for name in left}) == 1
    assert names(swift_conn, containers["b"]) == []          # nothing under the final name
    time.sleep(2.5)
    swept = stores.sweep(["b"], grace=2.0)
    assert [(s.name, s.removed) for s in swept] == [
        (f"{seg_container}/{left[0].rsplit('/', 1)[0]}/ (3 segments)", True)]
    assert names(swift_conn, seg_container) == []
    stores.delete(src.location)


def test_another_account_is_copied_inside_swift_only_when_readable(stores, swift_conn,
                                                                   containers, logs):
    """AUTH_test2's credentials cannot read AUTH_test: streamed. With a read
    ACL on the source's containers, Swift copies across accounts."""
    data = random_bytes(SEGMENTED, seed=10)
    image_id = new_id()
    src = stores.add(image_id, data, len(data), store="a")
    parsed = stores["a"].driver.parse_location(src.location)
    assert stores["other"].driver.copy_within(stores["a"].driver, parsed, image_id) is None
    streamed, = stores.copy(src.location, ["other"], offload=True, verify="backend",
                            checksum=src.checksum, multihash=src.multihash)
    assert copy_kinds(logs) == ["streamed"]
    assert "cannot read" in logs.text
    stores.delete(streamed.location)
    for container in (containers["a"], containers["a"] + "_segments"):
        swift_conn.post_container(container, {"X-Container-Read": "test2"})
    copied, = stores.copy(src.location, ["other"], offload=True, verify="backend",
                          checksum=src.checksum, multihash=src.multihash)
    assert copy_kinds(logs) == ["streamed", "backend"]
    assert copied.location == f"swift+config://ref2/{containers['other']}/{image_id}"
    assert (copied.size, copied.checksum, copied.multihash) == \
        (streamed.size, streamed.checksum, streamed.multihash)
    stores.delete(src.location)
    assert read(stores, copied.location) == data
    stores.delete(copied.location)


@pytest.fixture(scope="module")
def second_cluster(swift_server, tmp_path_factory):
    """Another Swift all-in-one (ports base + 20 ..): same accounts, same
    container names, another cluster."""
    server = type(swift_server)(tmp_path_factory.mktemp("swift-two"),
                                swift_server.ports["proxy"] + 20)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_stores_on_another_cluster_are_streamed(swift_server, second_cluster, tmp_path,
                                                logs):
    # Each store its own references file.
    refs = {ref: write_refs(tmp_path / f"refs-{ref}.conf", {ref: tempauth_ref(server)})
            for ref, server in (("one", swift_server), ("two", second_cluster))}
    container = "same" + uuid.uuid4().hex[:8]
    sections = sections_for(refs["one"], {
        "a": {"swift_store_container": container, "default_swift_reference": "one"},
        "b": {"swift_store_container": container, "default_swift_reference": "two",
              "swift_store_config_file": str(refs["two"])}})
    with multistore.load(make_conf(sections, tmp_path / "conf")) as two:
        data = random_bytes(SEGMENTED, seed=11)
        image_id = new_id()
        src = two.add(image_id, data, len(data), store="a")
        parsed = two["a"].driver.parse_location(src.location)
        # The same account, container and object names: still another cluster.
        assert two["b"].driver.copy_within(two["a"].driver, parsed, image_id) is None
        assert "another Swift endpoint" in logs.text
        copied, = two.copy(src.location, ["b"], offload=True, verify="backend",
                           checksum=src.checksum, multihash=src.multihash)
        assert copy_kinds(logs) == ["streamed"]
        assert (copied.checksum, copied.multihash) == (src.checksum, src.multihash)
        assert read(two, copied.location) == data
        for loc in (src.location, copied.location):
            two.delete(loc)


def test_the_command_line_copies_inside_swift(stores, tmp_path, capsys, logs):
    from multistore import cli
    data = random_bytes(SEGMENTED, seed=12)
    src = stores.add(new_id(), data, len(data), store="a")
    code = cli.main(["--config-file", str(tmp_path / "conf" / "multistore.conf"), "--json",
                     "copy", src.location, "--to", "b", "--offload", "--verify", "backend",
                     "--checksum", src.checksum, "--multihash", src.multihash,
                     "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    copied, = json.loads(out)
    assert (copied["store"], copied["checksum"], copied["multihash"]) == \
        ("b", src.checksum, src.multihash)
    assert copy_kinds(logs) == ["backend"]
    stores.delete(src.location)
    assert read(stores, copied["location"]) == data
    stores.delete(copied["location"])


def test_multi_tenant_stores_copy_inside_the_users_account(swift_server, tmp_path, logs):
    """Two multi-tenant stores: the user's token reaches the source and the
    target (the same account); each image has containers of its own."""
    url, token = swiftclient.get_auth(swift_server.auth_url, "test:tester",
                                      swift_server.users["test:tester"])
    alice = types.SimpleNamespace(auth_token=token, storage_url=url, project_id="test")
    tag = uuid.uuid4().hex[:8]
    sections = {"DEFAULT": {"enabled_backends": {"mta": "swift", "mtb": "swift"}},
                "glance_store": {"default_backend": "mta"},
                **{name: {"swift_store_multi_tenant": True, "swift_store_container": name + tag,
                          "swift_store_large_object_size": 4,
                          "swift_store_large_object_chunk_size": 1}
                   for name in ("mta", "mtb")}}
    data = random_bytes(SEGMENTED, seed=13)
    image_id = new_id()
    with multistore.load(make_conf(sections, tmp_path / "mt")) as mt:
        src = mt.add(image_id, data, len(data), context=alice)
        copied, = mt.copy(src.location, ["mtb"], offload=True, verify="backend",
                          checksum=src.checksum, multihash=src.multihash, context=alice)
        assert copy_kinds(logs) == ["backend"]
        assert copied.location == f"{url.replace('http', 'swift+http', 1)}/mtb{tag}_{image_id}/" \
            f"{image_id}"
        mt.delete(src.location, context=alice)
        with mt.get(copied.location, context=alice) as reader:
            assert reader.read_all() == data
        mt.delete(copied.location, context=alice)
    conn = swiftclient.Connection(preauthurl=url, preauthtoken=token)
    assert not [c["name"] for c in conn.get_account(full_listing=True)[1] if tag in c["name"]]


def test_one_copy_offloaded_and_one_streamed(stores, logs):
    """``b`` is copied by Swift, ``other`` (an account it cannot read) is
    streamed; the streamed copy's digests are what the offloaded one must
    match, and both results agree."""
    data = random_bytes(SEGMENTED, seed=14)
    src = stores.add(new_id(), data, len(data), store="a")
    both = stores.copy(src.location, ["other", "b"], offload=True, verify="backend",
                       checksum=src.checksum, multihash=src.multihash)
    assert sorted(copy_kinds(logs)) == ["backend", "streamed"]
    assert [r.store for r in both] == ["other", "b"]
    assert {(r.size, r.checksum, r.multihash) for r in both} == \
        {(len(data), src.checksum, src.multihash)}
    for result in both:
        assert read(stores, result.location) == data
        stores.delete(result.location)
    stores.delete(src.location)
