"""The fault suite: what a driver must survive, against its real backend.

Like the conformance suite, a driver's tests subclass the suites that apply
and supply fixtures (the *hooks*)::

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

The suites:

:class:`MixedLoad`
    16 threads of get, ranged get, get_size, copy (and add and delete where
    the stores take them) for a bounded time; every read checked by md5, no
    file descriptor or thread left. Runs on read-only stores too.
:class:`FaultSuite`
    the mixed load, and ``multistore add`` killed with SIGKILL at random
    points (writing drivers).
:class:`FullBackendFaults`
    a full backend: ``StorageFull`` and nothing left (writing drivers).
:class:`ServerReadFaults`
    the server killed (SIGKILL) or frozen (SIGSTOP) mid-get and mid-copy,
    and left down, or brought back within the driver's retry window: a
    clear ``BackendUnavailable`` naming the store within
    :attr:`~ServerReadFaults.server_timeout`, never a hang; a read that the
    driver resumes completes with the right bytes; a copy whose source dies
    leaves nothing in its target. Runs on read-only stores too.
:class:`ServerFaults`
    the same, and the server killed or frozen mid-add (writing drivers).

The hooks:

``fault_config`` (required)
    the path of a configuration file whose default store is the store under
    test. Other stores it declares take part in the mixed load (copies
    between stores); the server suites need one writable store besides the
    store under test (the target of copies). Child processes load it too
    (``multistore --config-file``), so its drivers must be installed (entry
    points). A small ``[glance_store] stream_chunk_size`` (64 KiB) makes kills
    land while bytes are being written rather than while a buffer fills.
``fault_drivers``
    driver classes for :func:`multistore.load` in this process (default:
    none beyond the installed ones).
``fault_seed_image``
    ``seed(stores, image_id, data) -> location``: put an image of ``data``
    (bytes) into the store under test and return its location. The default
    adds it; a read-only store's tests put it in the backend themselves (a
    file in a web server's directory) and remove it after the test.
``fill_backend`` (for :class:`FullBackendFaults`)
    ``fill(stores, store_id) -> release``: make the backend of the store too full for
    an image of :attr:`FullBackendFaults.full_image_size` bytes (a small
    tmpfs nearly filled, Ceph's full ratio, a Swift quota); ``release()``
    gives the room back.
``kill_server``, ``restart_server``, ``freeze_server``, ``thaw_server``
    (for :class:`ServerReadFaults` and :class:`ServerFaults`): ``SIGKILL``
    the server (every process of it: a worker left alive keeps serving),
    bring it back and wait until it answers, ``SIGSTOP`` it, ``SIGCONT`` it.
    Class attributes say what to expect: the error within
    :attr:`~ServerReadFaults.server_timeout` (the bound the store's timeout
    and retry options give, set in ``fault_config``), and with
    :attr:`~ServerReadFaults.resumes_reads` a read that completes when the
    server is back after :attr:`~ServerReadFaults.server_outage` seconds
    (longer than the store's read timeout, shorter than its retry window).

Every test prints one summary line (``pytest -s`` shows them). Every error a
test of a server suite sees is handed to the secrets guard
(``multistore_secrets``): register the passwords the seeded locations hold.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import hashlib
import logging
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
from multistore.progress import Callback
from multistore.store import Store
from multistore.testing import Generated, random_bytes

MiB = 1024 * 1024
EXE = os.path.join(os.path.dirname(sys.executable), "multistore")
Seed = Callable[[multistore.StoreSet, str, bytes], str]


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


class _Hooks:
    """The hooks every suite uses (see the module docstring)."""

    @pytest.fixture
    def fault_drivers(self) -> Mapping[str, Any] | None:
        return None

    @pytest.fixture
    def make_stores(self, fault_config: Any, fault_drivers: Mapping[str, Any] | None,
                    ) -> Callable[[], multistore.StoreSet]:
        return lambda: load_config(fault_config, fault_drivers)

    @pytest.fixture
    def fault_seed_image(self) -> Seed:
        def seed(stores: multistore.StoreSet, image_id: str, data: bytes) -> str:
            return stores.add(image_id, data, len(data)).location
        return seed


def _remove_seeded(stores: multistore.StoreSet, location: str) -> None:
    """Delete a seeded image where the store deletes (else the hook's
    fixture removes it)."""
    if stores.store_for(location).capabilities.delete:
        stores.delete(location)


# -- many threads at once -----------------------------------------------------

class MixedLoad(_Hooks):
    """Many threads of mixed operations, on writable and read-only stores."""

    #: The mixed load: threads, seconds, largest image, images alive at once.
    mixed_threads = 16
    mixed_seconds = 8.0
    mixed_image_size = 1 * MiB
    mixed_live_images = 32
    #: Images seeded (``fault_seed_image``) into a read-only store under
    #: test before the load; they are read and copied, never deleted.
    mixed_seed_images = 8
    #: Whether the load adds new images to the writable stores (false: it
    #: reads the seeded images, copies them and deletes the copies).
    mixed_adds = True
    #: Seed of the random choices (kill points, operations): a failure replays.
    seed = 14

    def test_mixed_load_from_many_threads(self, make_stores: Callable[[], Any],
                                          fault_seed_image: Seed) -> None:
        """get, ranged get, get_size and copy (and add and delete where the
        stores take them) across every store from many threads for a bounded
        time: every read checked by md5, only the errors the races explain,
        and no file descriptor or thread left. A read-only store under test
        is read from images seeded into it, and copied into the writable ones."""
        gc.collect()
        fds, threads = open_fds(), threading.active_count()
        counts: collections.Counter[str] = collections.Counter()
        failures: list[str] = []
        with make_stores() as stores:
            writable = [s.id for s in stores if s.capabilities.write]
            live: dict[str, tuple[str, bytes]] = {}   # location -> (image id, data)
            pinned: set[str] = set()                  # seeded: never deleted
            under_test = stores[stores.default]
            if not under_test.capabilities.write:
                rng = random.Random(self.seed)
                for n in range(self.mixed_seed_images):
                    image_id = f"mixed-{n}-{uuid.uuid4().hex[:8]}"
                    data = random_bytes(rng.randrange(0, self.mixed_image_size),
                                        seed=rng.randrange(1 << 30))
                    url = fault_seed_image(stores, image_id, data)
                    live[url] = (image_id, data)
                    pinned.add(url)
            adds = self.mixed_adds and bool(writable)
            ops = ["get", "get", "range", "range", "size", "copy"]
            ops += ["add", "add"] if adds else []
            ops += ["delete"] if writable else []
            lock = threading.Lock()
            deadline = time.monotonic() + self.mixed_seconds

            def pick(rng: random.Random, deletable: bool = False,
                     ) -> tuple[str, str, bytes] | None:
                with lock:
                    urls = [u for u in live if not (deletable and u in pinned)]
                    if not urls:
                        return None
                    url = rng.choice(urls)
                    return (url, *live[url])

            def one(rng: random.Random) -> None:
                op = rng.choice(ops)
                picked = pick(rng, deletable=op == "delete")
                with lock:
                    full = len(live) - len(pinned) >= self.mixed_live_images
                if op == "add" or (adds and picked is None):
                    if full:
                        op = "delete"
                        picked = pick(rng, deletable=True)
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
                if picked is None:
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
                    elif op == "size":
                        if stores.get_size(url) != len(data):
                            failures.append(f"get_size {url}: not {len(data)}")
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
                if url not in pinned:
                    stores.delete(url)
            counts["seeded"] = len(pinned)
        gc.collect()
        settle = time.monotonic() + 10
        while threading.active_count() > threads and time.monotonic() < settle:
            time.sleep(0.05)
        assert threading.active_count() <= threads, [t.name for t in threading.enumerate()]
        assert open_fds() <= fds, f"{open_fds() - fds} file descriptors left open"
        report(f"{type(self).__name__} mixed load",
               {"threads": self.mixed_threads, "seconds": self.mixed_seconds, **counts})


class FaultSuite(MixedLoad):
    """Killed writers, and many threads at once."""

    #: Adds killed with SIGKILL, and the largest image one of them writes.
    kills = 16
    kill_image_size = 4 * MiB

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


class FullBackendFaults(_Hooks):
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


# -- the server killed or frozen ----------------------------------------------------

class _Outage:
    """One server fault: struck once, ended once, either by the test (the
    server left down until then) or ``after`` seconds from the strike by a
    thread (the server back while the driver is still trying)."""

    def __init__(self, fault: Callable[[], None], restore: Callable[[], None],
                 after: float | None) -> None:
        self.fault, self.restore, self.after = fault, restore, after
        self.struck: float | None = None
        self.back: float | None = None      # seconds from the strike to the server back
        self._timer: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ended = False

    def strike(self) -> None:
        if self.struck is not None:
            return
        self.fault()
        self.struck = time.monotonic()
        if self.after is not None:
            self._timer = threading.Thread(target=self._later, name="fault-restore",
                                           daemon=True)
            self._timer.start()

    def since(self) -> float:
        assert self.struck is not None, "the fault never struck: the image is too small"
        return time.monotonic() - self.struck

    def _later(self) -> None:
        time.sleep(self.after or 0.0)
        try:
            self._restore()
        except BaseException as exc:  # noqa: BLE001 - re-raised by end()
            self._error = exc

    def _restore(self) -> None:
        self.restore()
        assert self.struck is not None
        self.back = time.monotonic() - self.struck

    def end(self) -> None:
        """The server back (once); re-raises a failure to bring it back."""
        if self.struck is None or self._ended:
            return
        self._ended = True
        if self._timer is not None:
            self._timer.join()
        else:
            self._restore()
        if self._error is not None:
            raise self._error


class _StrikeAt(Callback):
    """A progress callback that strikes once ``point`` bytes went through."""

    def __init__(self, point: int, strike: Callable[[], None]) -> None:
        super().__init__()
        self.point, self.strike = point, strike

    def call(self) -> None:
        if self.value >= self.point:
            self.strike()


class _Resumes(logging.Handler):
    """Counts the resumed reads :mod:`multistore.retry` logs while it is entered."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self._logger = logging.getLogger("multistore.retry")
        self._level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        if "resuming" in str(record.msg):
            self.count += 1

    def __enter__(self) -> _Resumes:
        if not self._logger.isEnabledFor(logging.WARNING):
            self._logger.setLevel(logging.WARNING)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


class ServerReadFaults(_Hooks):
    """The server killed (SIGKILL) or frozen (SIGSTOP) mid-get and mid-copy.

    Left down: a ``BackendUnavailable`` naming the store within
    :attr:`server_timeout` (and ``get_size`` and a new ``get`` fail the same
    way while it is down), never a hang; a copy whose source dies leaves
    nothing in its target, whole or partial. Back after
    :attr:`server_outage` seconds: with :attr:`resumes_reads`, the read (or
    copy) resumes and completes with the right bytes; without it, a clear
    error or the right bytes. Once the server is back, the same store reads
    again. Needs ``kill_server``, ``restart_server``, ``freeze_server`` and
    ``thaw_server``, and a writable store besides the store under test.
    """

    #: Seconds within which a dead or frozen server must give an error: the
    #: bound the store's timeouts and retries give (with some slack).
    server_timeout = 60.0
    #: Size of the images read (and written) under fault: more than the
    #: client's and the server's buffers hold, so the fault breaks the transfer.
    fault_image_size = 32 * MiB
    #: How many times each test strikes, each time at a random byte.
    server_rounds = 2
    #: The driver resumes broken reads (through :mod:`multistore.retry`).
    resumes_reads = False
    #: Seconds the server stays down in the "back" tests: longer than the
    #: store's read timeout, well within its retry window.
    server_outage = 3.0
    seed = 14

    def _check_down(self, error: BaseException | None, store: Store, seconds: float,
                    secrets: Any, what: str) -> None:
        assert error is not None, f"{what} succeeded with the server down"
        assert isinstance(error, errors.BackendUnavailable), \
            f"{what}: {type(error).__name__}: {error}"
        assert error.store == store.id and f"'{store.id}'" in str(error), str(error)
        assert seconds < self.server_timeout, f"{what}: the error took {seconds:.1f} s"
        secrets.check(error, what)

    def _check_back(self, error: BaseException | None, right: bool, resumes: int,
                    store: Store, seconds: float, secrets: Any, what: str) -> str:
        assert seconds < self.server_timeout, f"{what} took {seconds:.1f} s"
        if error is not None:
            secrets.check(error, what)
            assert not self.resumes_reads, \
                f"{what} failed with the server back within the retry window: {error}"
            assert isinstance(error, errors.BackendUnavailable) and error.store == store.id, \
                f"{what}: {type(error).__name__}: {error}"
            return f"error {type(error).__name__}"
        assert right, f"{what}: wrong bytes"
        if self.resumes_reads:
            assert resumes, f"{what}: completed without resuming (server_outage too short?)"
        return "completed"

    def _read_rounds(self, make_stores: Callable[[], Any], seed_image: Seed, secrets: Any,
                     fault: Callable[[], None], restore: Callable[[], None], back: bool,
                     name: str) -> None:
        rng = random.Random(self.seed * 10 + back)
        counts: collections.Counter[str] = collections.Counter()
        times: list[float] = []
        with make_stores() as stores:
            store = stores[stores.default]
            for n in range(self.server_rounds):
                data = random_bytes(self.fault_image_size, seed=n)
                location = seed_image(stores, f"fault-read-{n}-{uuid.uuid4().hex[:8]}", data)
                point = rng.randrange(1, len(data) // 2)
                outage = _Outage(fault, restore, self.server_outage if back else None)
                digest, error = hashlib.md5(), None
                try:
                    with _Resumes() as resumes:
                        try:
                            with stores.get(location) as reader:
                                delivered = 0
                                for chunk in reader:
                                    digest.update(chunk)
                                    delivered += len(chunk)
                                    if delivered >= point:
                                        outage.strike()
                        except errors.MultistoreError as exc:
                            error = exc
                    seconds = outage.since()
                    times.append(seconds)
                    what = f"a get with the server {name} at byte {point}"
                    if back:
                        counts[self._check_back(error, digest.hexdigest() == md5(data),
                                                resumes.count, store, seconds, secrets,
                                                what)] += 1
                    else:
                        self._check_down(error, store, seconds, secrets, what)
                        counts[f"error {type(error).__name__}"] += 1
                        for again, call in (
                                ("get_size", functools.partial(stores.get_size, location)),
                                ("get", functools.partial(read_md5, stores, location))):
                            started, failed = time.monotonic(), None
                            try:
                                call()
                            except errors.MultistoreError as exc:
                                failed = exc
                            self._check_down(failed, store, time.monotonic() - started,
                                             secrets, f"{again} with the server {name}")
                    counts["resumes"] += resumes.count
                finally:
                    outage.end()
                # Back: the same store reads again (no dead connection kept).
                assert read_md5(stores, location) == md5(data)
                _remove_seeded(stores, location)
        report(f"{type(self).__name__} server {name} mid-get"
               f"{', back after ' + str(self.server_outage) + ' s' if back else ''}",
               {"rounds": self.server_rounds, **counts,
                "seconds": "/".join(f"{t:.1f}" for t in times)})

    @pytest.mark.parametrize("back", [False, True], ids=["down", "back"])
    def test_server_killed_mid_get(self, make_stores: Callable[[], Any],
                                   fault_seed_image: Seed, multistore_secrets: Any,
                                   kill_server: Callable[[], None],
                                   restart_server: Callable[[], None], back: bool) -> None:
        self._read_rounds(make_stores, fault_seed_image, multistore_secrets, kill_server,
                          restart_server, back, "killed")

    @pytest.mark.parametrize("back", [False, True], ids=["down", "back"])
    def test_server_frozen_mid_get(self, make_stores: Callable[[], Any],
                                   fault_seed_image: Seed, multistore_secrets: Any,
                                   freeze_server: Callable[[], None],
                                   thaw_server: Callable[[], None], back: bool) -> None:
        self._read_rounds(make_stores, fault_seed_image, multistore_secrets, freeze_server,
                          thaw_server, back, "frozen")

    @staticmethod
    def _copy_target(stores: multistore.StoreSet) -> Store:
        targets = [s for s in stores
                   if s.capabilities.write and s.id != stores.default and not s.reserved]
        assert targets, ("fault_config needs a writable store besides the store under "
                         "test: the target of the copies")
        return targets[0]

    @pytest.mark.parametrize("back", [False, True], ids=["down", "back"])
    def test_server_killed_mid_copy(self, make_stores: Callable[[], Any],
                                    fault_seed_image: Seed, multistore_secrets: Any,
                                    kill_server: Callable[[], None],
                                    restart_server: Callable[[], None], back: bool) -> None:
        """A copy from the store under test whose server dies mid-stream:
        nothing in the target, whole or partial (left down), or the whole
        image (back within the retry window, where the driver resumes)."""
        rng = random.Random(self.seed * 10 + 2 + back)
        counts: collections.Counter[str] = collections.Counter()
        times: list[float] = []
        with make_stores() as stores:
            store, target = stores[stores.default], self._copy_target(stores)
            for n in range(self.server_rounds):
                image_id = f"fault-copy-{n}-{uuid.uuid4().hex[:8]}"
                data = random_bytes(self.fault_image_size, seed=100 + n)
                location = fault_seed_image(stores, image_id, data)
                point = rng.randrange(1, len(data) // 2)
                outage = _Outage(kill_server, restart_server,
                                 self.server_outage if back else None)
                results, error = [], None
                try:
                    with _Resumes() as resumes:
                        try:
                            results = stores.copy(location, [target.id], offload=False,
                                                  progress=_StrikeAt(point, outage.strike))
                        except errors.MultistoreError as exc:
                            error = exc
                    seconds = outage.since()
                    times.append(seconds)
                    if error is not None:
                        # Nothing in the target, whole or partial, even before
                        # the server is back.
                        assert_absent(stores, target, image_id)
                        assert list(target.driver.find_leftovers(0)) == []
                    what = f"a copy with its source killed at byte {point}"
                    if back:
                        right = bool(results) and results[0].checksum == md5(data)
                        counts[self._check_back(error, right, resumes.count, store, seconds,
                                                multistore_secrets, what)] += 1
                    else:
                        self._check_down(error, store, seconds, multistore_secrets, what)
                        counts[f"error {type(error).__name__}, target empty"] += 1
                    counts["resumes"] += resumes.count
                finally:
                    outage.end()
                for result in results:
                    assert read_md5(stores, result.location) == md5(data)
                    stores.delete(result.location)
                _remove_seeded(stores, location)
        report(f"{type(self).__name__} server killed mid-copy"
               f"{', back after ' + str(self.server_outage) + ' s' if back else ''}",
               {"rounds": self.server_rounds, **counts,
                "seconds": "/".join(f"{t:.1f}" for t in times)})


class ServerFaults(ServerReadFaults):
    """:class:`ServerReadFaults`, and the server killed or frozen mid-add: a
    clear error within :attr:`server_timeout`, never a hang, nothing half
    visible."""

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
                                   multistore_secrets: Any,
                                   kill_server: Callable[[], None],
                                   restart_server: Callable[[], None]) -> None:
        with make_stores() as stores:
            try:
                image_id, took, error = self._add_under_fault(stores, kill_server)
                assert error is not None, "the add succeeded with its server killed"
                assert took < self.server_timeout, f"the error took {took:.0f} s"
                assert error.store == stores.default, str(error)
                multistore_secrets.check(error, "the add's error")
            finally:
                restart_server()
            swept = self._check_nothing_visible(stores, image_id)
        report(f"{type(self).__name__} server killed mid-add",
               {"error": type(error).__name__, "seconds": round(took, 1), "swept": swept})

    def test_server_frozen_mid_add(self, make_stores: Callable[[], Any],
                                   multistore_secrets: Any,
                                   freeze_server: Callable[[], None],
                                   thaw_server: Callable[[], None]) -> None:
        with make_stores() as stores:
            try:
                image_id, took, error = self._add_under_fault(stores, freeze_server)
            finally:
                thaw_server()
            assert error is not None, "the add succeeded with its server frozen"
            assert took < self.server_timeout, f"the error took {took:.0f} s"
            assert error.store == stores.default, str(error)
            multistore_secrets.check(error, "the add's error")
            swept = self._check_nothing_visible(stores, image_id)
        report(f"{type(self).__name__} server frozen mid-add",
               {"error": type(error).__name__, "seconds": round(took, 1), "swept": swept})


__all__ = ["MixedLoad", "FaultSuite", "FullBackendFaults", "ServerReadFaults", "ServerFaults",
           "load_config"]
