"""The fault suite: what a writing driver must survive, against its real backend.

Like the conformance suite, a driver's tests subclass it and supply fixtures
(the *hooks*)::

    import pytest
    from multistore.testing.faults import FaultSuite, FullBackendFaults, ServerFaults

    class TestMyStoreFaults(FaultSuite, FullBackendFaults, ServerFaults):
        @pytest.fixture
        def fault_config(self, my_server, tmp_path):
            path = tmp_path / "faults.conf"
            path.write_text(...)       # default store: the one under test
            return path

        @pytest.fixture
        def fill_backend(self, my_server):
            def fill(stores, store_id):   # leave less room than full_image_size
                ...
                return release            # called to give the room back
            return fill

        @pytest.fixture
        def kill_server(self, my_server):      # SIGKILL the server
            return my_server.kill
        @pytest.fixture
        def restart_server(self, my_server):   # bring it back (and wait for it)
            return my_server.restart
        @pytest.fixture
        def freeze_server(self, my_server):    # SIGSTOP it
            return my_server.freeze
        @pytest.fixture
        def thaw_server(self, my_server):      # SIGCONT it
            return my_server.thaw

The hooks:

``fault_config`` (required)
    the path of a configuration file whose default store is the store under
    test. Other stores it declares take part in the mixed load (copies
    between stores). Child processes load it too (``multistore
    --config-file``), so its drivers must be installed (entry points). A
    small ``[glance_store] stream_chunk_size`` (64 KiB) makes kills land
    while bytes are being written rather than while a buffer fills.
``fault_drivers``
    driver classes for :func:`multistore.load` in this process (default:
    none beyond the installed ones).
``fill_backend`` (for :class:`FullBackendFaults`)
    ``fill(stores, store_id) -> release``: make the backend of the store too full for
    an image of :attr:`FullBackendFaults.full_image_size` bytes (a small
    tmpfs nearly filled, Ceph's full ratio, a Swift quota); ``release()``
    gives the room back.
``kill_server``, ``restart_server``, ``freeze_server``, ``thaw_server``
    (for :class:`ServerFaults`): ``SIGKILL`` the server, bring it back and
    wait until it answers, ``SIGSTOP`` it, ``SIGCONT`` it. The store's
    timeouts (set in ``fault_config``) must be shorter than
    :attr:`ServerFaults.server_timeout`.

:class:`FaultSuite` itself needs only ``fault_config``: the two mixins
apply where the backend can be filled or has a server to kill; a store that
has neither (memory, a local file store) subclasses only the suites that
apply. Every test prints one summary line (``pytest -s`` shows them).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from oslo_config import cfg

import multistore
from multistore import errors
from multistore.config import declared, register_opts
from multistore.store import Store
from multistore.testing import Generated, random_bytes

MiB = 1024 * 1024
EXE = os.path.join(os.path.dirname(sys.executable), "multistore")


def load_config(path: str | os.PathLike[str], drivers: Mapping[str, Any] | None = None,
                ) -> multistore.StoreSet:
    """A StoreSet from a configuration file (reserved stores it declares included)."""
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf(["--config-file", os.fspath(path)], project="multistore", default_config_files=[])
    reserved = declared(conf, {"os_glance_staging_store": "file"})
    return multistore.load(conf, reserved=reserved, drivers=drivers)


def missing_url(store: Store, image_id: str) -> str:
    return store.driver.location_for(image_id).format()


def assert_absent(stores: multistore.StoreSet, store: Store, image_id: str) -> None:
    with pytest.raises(errors.NotFound):
        stores.get_size(missing_url(store, image_id))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def read_md5(stores: multistore.StoreSet, location: str, **kwargs: Any) -> str:
    digest = hashlib.md5()
    with stores.get(location, **kwargs) as reader:
        for chunk in reader:
            digest.update(chunk)
    return digest.hexdigest()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def report(name: str, counts: Mapping[str, Any]) -> None:
    print(f"\nfault suite {name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


class FaultSuite:
    """Killed writers, and many threads at once."""

    #: Adds killed with SIGKILL, and the largest image one of them writes.
    kills = 16
    kill_image_size = 4 * MiB
    #: The mixed load: threads, seconds, largest image, images alive at once.
    mixed_threads = 16
    mixed_seconds = 8.0
    mixed_image_size = 1 * MiB
    mixed_live_images = 32
    #: Seed of the random choices (kill points, operations): a failure replays.
    seed = 14

    @pytest.fixture
    def fault_drivers(self) -> Mapping[str, Any] | None:
        return None

    @pytest.fixture
    def make_stores(self, fault_config: Any, fault_drivers: Mapping[str, Any] | None,
                    ) -> Callable[[], multistore.StoreSet]:
        return lambda: load_config(fault_config, fault_drivers)

    # -- a child process killed with SIGKILL mid-add ----------------------------

    def test_sigkill_at_random_points_of_an_add(self, fault_config: Any,
                                                make_stores: Callable[[], Any]) -> None:
        """``multistore add`` killed before, during and after the last byte:
        the image is whole or absent under its final name, never partial,
        and a sweep removes what the dead writers left."""
        rng = random.Random(self.seed)
        counts: collections.Counter[str] = collections.Counter()
        with make_stores() as stores:
            store = stores[stores.default]
            for n in range(self.kills):
                image_id = f"killed-{n}-{uuid.uuid4().hex[:8]}"
                data = random_bytes(rng.randrange(1, self.kill_image_size), seed=n)
                point = rng.choice(["before-data", "mid-data", "mid-data", "mid-data",
                                    "after-last-byte"])
                counts[point] += 1
                self._kill_an_add(fault_config, store.id, image_id, data, point, rng)
                try:
                    got = read_md5(stores, missing_url(store, image_id))
                except errors.NotFound:
                    counts["absent"] += 1
                else:
                    assert got == md5(data), f"a partial image under the final name ({point})"
                    counts["whole"] += 1
                    stores.delete(missing_url(store, image_id))
            swept = stores.sweep([store.id], grace=0)
            assert all(s.removed for s in swept), swept
            counts["swept"] = len(swept)
            counts["swept bytes"] = sum(s.size or 0 for s in swept)
            assert stores.sweep([store.id], grace=0) == []
            assert list(store.driver.find_leftovers(0)) == []
        report(f"{type(self).__name__} SIGKILL", {"kills": self.kills, **counts})

    @staticmethod
    def _kill_an_add(config: Any, store_id: str, image_id: str, data: bytes, point: str,
                     rng: random.Random) -> None:
        proc = subprocess.Popen(
            [EXE, "--config-file", os.fspath(config), "add", "-", "--id", image_id,
             "--store", store_id, "--no-progress"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert proc.stdin is not None
        try:
            end = {"before-data": 0, "mid-data": rng.randrange(len(data)),
                   "after-last-byte": len(data)}[point]
            view = memoryview(data)
            for start in range(0, end, 256 * 1024):
                proc.stdin.write(view[start:min(end, start + 256 * 1024)])
            proc.stdin.flush()
            if point == "after-last-byte":
                proc.stdin.close()     # the child commits now, or is killed first
            time.sleep(rng.uniform(0.0, 0.4))
        except BrokenPipeError:
            pass
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            if not proc.stdin.closed:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()

    # -- 16 threads of mixed operations -------------------------------------------

    def test_mixed_load_from_many_threads(self, make_stores: Callable[[], Any]) -> None:
        """add, get, ranged get, delete and copy across every writable store
        from many threads for a bounded time: every read checked by md5, only
        the errors the races explain, and no file descriptor or thread left."""
        gc.collect()
        fds, threads = open_fds(), threading.active_count()
        counts: collections.Counter[str] = collections.Counter()
        failures: list[str] = []
        with make_stores() as stores:
            writable = [s.id for s in stores if s.capabilities.write]
            live: dict[str, tuple[str, bytes]] = {}   # location -> (image id, data)
            lock = threading.Lock()
            deadline = time.monotonic() + self.mixed_seconds

            def pick(rng: random.Random) -> tuple[str, str, bytes] | None:
                with lock:
                    if not live:
                        return None
                    url = rng.choice(list(live))
                    return (url, *live[url])

            def one(rng: random.Random) -> None:
                op = rng.choice(["add", "add", "get", "get", "range", "range", "delete",
                                 "copy"])
                picked = pick(rng)
                with lock:
                    full = len(live) >= self.mixed_live_images
                if op == "add" or picked is None:
                    if full:
                        op = "delete" if picked else "none"
                    else:
                        image_id = uuid.uuid4().hex
                        data = random_bytes(rng.randrange(0, self.mixed_image_size),
                                            seed=rng.randrange(1 << 30))
                        result = stores.add(image_id, data, rng.choice([len(data), None]),
                                            store=rng.choice(writable))
                        assert (result.checksum, result.size) == (md5(data), len(data))
                        with lock:
                            live[result.location] = (image_id, data)
                        counts["add"] += 1
                        return
                if picked is None or op == "none":
                    return
                url, image_id, data = picked
                try:
                    if op == "get":
                        if read_md5(stores, url) != md5(data):
                            failures.append(f"get {url}: wrong bytes")
                    elif op == "range":
                        offset = rng.randrange(0, len(data) + 2)
                        length = rng.choice([None, rng.randrange(0, len(data) + 2)])
                        end = None if length is None else offset + length
                        if read_md5(stores, url, offset=offset, length=length) != \
                                md5(data[offset:end]):
                            failures.append(f"range {offset}+{length} of {url}: wrong bytes")
                    elif op == "delete":
                        with lock:
                            live.pop(url, None)
                        try:
                            stores.delete(url)
                        except errors.InUse:
                            # A store that keeps an image being read (cinder's
                            # attached volume) refuses: the image stays.
                            with lock:
                                live[url] = (image_id, data)
                            raise
                    elif op == "copy":
                        source = stores.store_for(url).id
                        targets = [t for t in writable if t != source]
                        if full or not targets:
                            return
                        for result in stores.copy(url, [rng.choice(targets)]):
                            assert result.checksum == md5(data)
                            with lock:
                                live[result.location] = (image_id, data)
                    counts[op] += 1
                except errors.NotFound:
                    counts[f"{op}: deleted meanwhile"] += 1     # another thread's delete
                except errors.Duplicate:
                    counts[f"{op}: already copied"] += 1        # another thread's copy
                except errors.InUse:
                    counts[f"{op}: being read"] += 1            # another thread's get

            def worker(n: int) -> None:
                rng = random.Random(self.seed * 1000 + n)
                while time.monotonic() < deadline:
                    try:
                        one(rng)
                    except Exception as exc:   # noqa: BLE001 - reported below
                        failures.append(f"{type(exc).__name__}: {exc}")
                        return

            pool = [threading.Thread(target=worker, args=(n,), name=f"fault-mixed-{n}")
                    for n in range(self.mixed_threads)]
            for t in pool:
                t.start()
            for t in pool:
                t.join(self.mixed_seconds + 120)
            assert not any(t.is_alive() for t in pool), "a thread hung"
            assert not failures, failures[:10]
            for url in list(live):
                stores.delete(url)
        gc.collect()
        settle = time.monotonic() + 10
        while threading.active_count() > threads and time.monotonic() < settle:
            time.sleep(0.05)
        assert threading.active_count() <= threads, [t.name for t in threading.enumerate()]
        assert open_fds() <= fds, f"{open_fds() - fds} file descriptors left open"
        report(f"{type(self).__name__} mixed load",
               {"threads": self.mixed_threads, "seconds": self.mixed_seconds, **counts})


class FullBackendFaults:
    """A backend with no room: StorageFull, and nothing left. Needs ``fill_backend``."""

    #: An image larger than what ``fill_backend`` leaves.
    full_image_size = 8 * MiB

    def test_backend_full_is_storage_full_and_leaves_nothing(
            self, make_stores: Callable[[], Any],
            fill_backend: Callable[[multistore.StoreSet, str], Callable[[], None]]) -> None:
        counts: collections.Counter[str] = collections.Counter()
        with make_stores() as stores:
            store = stores[stores.default]
            image_id = f"full-{uuid.uuid4().hex[:8]}"
            source = Generated(self.full_image_size, seed=5)
            release = fill_backend(stores, store.id)
            try:
                for size in (source.size, None):
                    with pytest.raises(errors.StorageFull) as info:
                        stores.add(image_id, Generated(self.full_image_size, seed=5), size)
                    assert (info.value.store, info.value.operation) == (store.id, "add")
                    assert_absent(stores, store, image_id)
                    assert list(store.driver.find_leftovers(0)) == []
                    counts["add refused"] += 1
                others = [s for s in stores if s.capabilities.write and s.id != store.id]
                if others:
                    src = stores.add(image_id, Generated(self.full_image_size, seed=5),
                                     source.size, store=others[0].id)
                    with pytest.raises(errors.StorageFull):
                        stores.copy(src.location, [store.id])
                    assert_absent(stores, store, image_id)
                    assert list(store.driver.find_leftovers(0)) == []
                    stores.delete(src.location)
                    counts["copy refused"] += 1
            finally:
                release()
            result = stores.add(image_id, Generated(self.full_image_size, seed=5), source.size)
            assert result.checksum == source.digests()[0]
            stores.delete(result.location)
        report(f"{type(self).__name__} backend full", counts)


class ServerFaults:
    """The server killed or frozen mid-add and mid-get: a clear error within
    :attr:`server_timeout`, never a hang, nothing half visible; a read that
    the driver resumes delivers the right bytes. Needs ``kill_server``,
    ``restart_server``, ``freeze_server`` and ``thaw_server``."""

    #: Seconds within which a dead or frozen server must give an error.
    server_timeout = 60.0
    #: Size of the images written and read under fault.
    fault_image_size = 32 * MiB

    def _add_under_fault(self, stores: multistore.StoreSet, fault: Callable[[], None],
                         ) -> tuple[str, float, errors.MultistoreError | None]:
        image_id = f"fault-{uuid.uuid4().hex[:8]}"
        source = Generated(self.fault_image_size, seed=9)
        struck: list[float] = []

        def data() -> Iterator[bytes]:
            for n, chunk in enumerate(source):
                if n == 2:
                    fault()
                    struck.append(time.monotonic())
                yield chunk

        try:
            stores.add(image_id, data(), source.size)
        except errors.MultistoreError as exc:
            return image_id, time.monotonic() - struck[0], exc
        return image_id, time.monotonic() - struck[0], None

    def _check_nothing_visible(self, stores: multistore.StoreSet, image_id: str) -> int:
        store = stores[stores.default]
        assert_absent(stores, store, image_id)
        swept = stores.sweep([store.id], grace=0)
        assert list(store.driver.find_leftovers(0)) == []
        result = stores.add(image_id, b"after the fault", 15)   # the id is free again
        stores.delete(result.location)
        return len(swept)

    def test_server_killed_mid_add(self, make_stores: Callable[[], Any],
                                   kill_server: Callable[[], None],
                                   restart_server: Callable[[], None]) -> None:
        with make_stores() as stores:
            image_id, took, error = self._add_under_fault(stores, kill_server)
            try:
                assert error is not None, "the add succeeded with its server killed"
                assert took < self.server_timeout, f"the error took {took:.0f} s"
                assert error.store == stores.default
            finally:
                restart_server()
            swept = self._check_nothing_visible(stores, image_id)
        report(f"{type(self).__name__} server killed mid-add",
               {"error": type(error).__name__, "seconds": round(took, 1), "swept": swept})

    def test_server_frozen_mid_add(self, make_stores: Callable[[], Any],
                                   freeze_server: Callable[[], None],
                                   thaw_server: Callable[[], None]) -> None:
        with make_stores() as stores:
            try:
                image_id, took, error = self._add_under_fault(stores, freeze_server)
            finally:
                thaw_server()
            assert error is not None, "the add succeeded with its server frozen"
            assert took < self.server_timeout, f"the error took {took:.0f} s"
            swept = self._check_nothing_visible(stores, image_id)
        report(f"{type(self).__name__} server frozen mid-add",
               {"error": type(error).__name__, "seconds": round(took, 1), "swept": swept})

    def _get_under_fault(self, stores: multistore.StoreSet, fault: Callable[[], None],
                         after: Callable[[], None]) -> dict[str, Any]:
        source = Generated(self.fault_image_size, seed=11)
        result = stores.add(f"read-{uuid.uuid4().hex[:8]}", source, source.size)
        digest = hashlib.md5()
        outcome: dict[str, Any] = {}
        try:
            with stores.get(result.location) as reader:
                chunks = iter(reader)
                digest.update(next(chunks))
                fault()
                started = time.monotonic()
                try:
                    for chunk in chunks:
                        digest.update(chunk)
                except errors.MultistoreError as exc:
                    outcome["error"] = type(exc).__name__
                    assert exc.store == stores.default
                else:
                    # The driver resumed (or had the bytes already): they must be right.
                    assert digest.hexdigest() == source.digests()[0]
                    outcome["resumed"] = True
                outcome["seconds"] = round(time.monotonic() - started, 1)
                assert outcome["seconds"] < self.server_timeout
        finally:
            after()
        stores.delete(result.location)
        return outcome

    def test_server_killed_mid_get(self, make_stores: Callable[[], Any],
                                   kill_server: Callable[[], None],
                                   restart_server: Callable[[], None]) -> None:
        with make_stores() as stores:
            outcome = self._get_under_fault(stores, kill_server, restart_server)
        report(f"{type(self).__name__} server killed mid-get", outcome)

    def test_server_frozen_mid_get(self, make_stores: Callable[[], Any],
                                   freeze_server: Callable[[], None],
                                   thaw_server: Callable[[], None]) -> None:
        with make_stores() as stores:
            outcome = self._get_under_fault(stores, freeze_server, thaw_server)
        report(f"{type(self).__name__} server frozen mid-get", outcome)


__all__ = ["FaultSuite", "FullBackendFaults", "ServerFaults", "load_config"]
