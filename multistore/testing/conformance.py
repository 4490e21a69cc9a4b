"""The behaviour suite every driver passes against its real backend.

A driver package runs it in a few lines::

    import pytest
    import multistore
    from multistore.testing import make_conf
    from multistore.testing.conformance import ConformanceSuite

    class TestMyDriver(ConformanceSuite):
        @pytest.fixture
        def make_stores(self, my_server, tmp_path):
            def make(**overrides):
                conf = make_conf({
                    "DEFAULT": {"enabled_backends": {"mine": "mydriver"}},
                    "glance_store": {"default_backend": "mine"},
                    "mine": {"my_endpoint": my_server.url, **overrides},
                }, tmp_path)
                return multistore.load(conf)
            return make

``make_stores(**overrides)`` returns a StoreSet whose default store is the
store under test; ``overrides`` are extra options for that store's group
(the suite uses ``read_only=True``). A read-only driver subclasses
:class:`ReadOnlyConformance` instead and provides ``seed_image``, a fixture
returning ``seed(image_id, data) -> location`` that puts an image on the
backend by other means.

The tests assert behaviour only through the public API, so they hold for
every driver; class attributes tune sizes for slow backends.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import multistore
from multistore import errors
from multistore.testing import Generated, random_bytes

MiB = 1024 * 1024

Seed = Callable[[str, bytes], str]


def new_id() -> str:
    return str(uuid.uuid4())


def read(stores: multistore.StoreSet, location: str, **kwargs: Any) -> bytes:
    with stores.get(location, **kwargs) as reader:
        data = reader.read_all()
    return data


class _Recorder:
    """A verifier and a progress callback in one: records what it is given."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.progress = multistore.Callback()

    def update(self, data: bytes) -> None:
        self.chunks.append(bytes(data))


class _FailingSource:
    """Yields ``good`` bytes, then fails like a dropped client connection."""

    def __init__(self, good: bytes) -> None:
        self.good = good

    def __iter__(self) -> Iterator[bytes]:
        yield self.good
        raise ConnectionResetError("the client went away")


class ReadConformance:
    """Reading: every driver. Needs ``make_stores`` and ``seed_image``."""

    #: Size of the "large" image; memory must stay below ``max_memory``.
    large_image_size = 64 * MiB
    max_memory = 64 * MiB
    #: Size of the image most read tests use (more than one buffer).
    image_size = 5 * MiB + 123

    @pytest.fixture
    def stores(self, make_stores: Callable[..., multistore.StoreSet],
               ) -> Iterator[multistore.StoreSet]:
        with make_stores() as stores:
            yield stores

    @pytest.fixture
    def store_id(self, stores: multistore.StoreSet) -> str:
        return stores.default

    @pytest.fixture
    def image(self) -> bytes:
        return random_bytes(self.image_size, seed=7)

    @pytest.fixture
    def seeded(self, seed_image: Seed, image: bytes) -> str:
        return seed_image(new_id(), image)

    def test_get_returns_every_byte(self, stores: multistore.StoreSet, seeded: str,
                                    image: bytes) -> None:
        with stores.get(seeded) as reader:
            assert reader.size in (len(image), None)
            assert reader.read_all() == image

    def test_location_resolves_to_the_store(self, stores: multistore.StoreSet,
                                            store_id: str, seeded: str) -> None:
        assert stores.store_for(seeded).id == store_id
        assert read(stores, seeded, store=store_id)[:16] == read(stores, seeded)[:16]

    def test_get_size(self, stores: multistore.StoreSet, seeded: str, image: bytes) -> None:
        assert stores.get_size(seeded) == len(image)

    def test_ranged_get(self, stores: multistore.StoreSet, store_id: str, seeded: str,
                        image: bytes) -> None:
        if not stores[store_id].capabilities.ranged_read:
            with pytest.raises(errors.RangeNotSupported):
                stores.get(seeded, offset=1, length=10)
            return
        cases = [(0, 1), (1, 10), (MiB - 1, MiB + 2), (len(image) - 5, 5),
                 (len(image) - 5, 100), (4 * MiB, None)]
        for offset, length in cases:
            end = None if length is None else offset + length
            with stores.get(seeded, offset=offset, length=length) as reader:
                got = reader.read_all()
                assert got == image[offset:end], (offset, length)
                assert reader.size in (len(got), None)

    def test_get_progress_counts_bytes(self, stores: multistore.StoreSet, seeded: str,
                                       image: bytes) -> None:
        progress = multistore.Callback()
        with stores.get(seeded, progress=progress) as reader:
            reader.read_all()
        assert progress.value == len(image)

    def test_empty_image_reads_back_empty(self, stores: multistore.StoreSet,
                                          seed_image: Seed) -> None:
        location = seed_image(new_id(), b"")
        assert read(stores, location) == b""
        assert stores.get_size(location) == 0

    def test_missing_image_is_not_found(self, stores: multistore.StoreSet,
                                        seeded: str) -> None:
        # The driver names the missing image: string surgery on a URL would
        # edit the wrong part of some location formats (rbd's ends in 'snap').
        missing = stores[stores.default].locate(seeded).with_image_id(new_id()).format()
        assert missing != seeded
        with pytest.raises(errors.NotFound) as info:
            read(stores, missing)
        assert info.value.store == stores.default
        with pytest.raises(errors.NotFound):
            stores.get_size(missing)

    def test_foreign_location_is_refused(self, stores: multistore.StoreSet,
                                         store_id: str) -> None:
        with pytest.raises(errors.BadLocation):
            stores.get("nosuchscheme://x/y", store=store_id)
        with pytest.raises(errors.BadLocation):
            stores.get("nosuchscheme://x/y")


class ReadOnlyConformance(ReadConformance):
    """A read-only driver: reads work, writes are refused clearly."""

    def test_listed_read_only(self, stores: multistore.StoreSet, store_id: str) -> None:
        entry = next(e for e in stores.info() if e["id"] == store_id)
        assert entry["read-only"] is True

    def test_add_is_refused(self, stores: multistore.StoreSet, store_id: str) -> None:
        with pytest.raises(errors.AddNotSupported) as info:
            stores.add(new_id(), b"data", 4, store=store_id)
        assert info.value.store == store_id

    def test_delete_is_refused(self, stores: multistore.StoreSet, seeded: str,
                               image: bytes) -> None:
        with pytest.raises(errors.DeleteNotSupported):
            stores.delete(seeded)
        assert read(stores, seeded) == image


class ConformanceSuite(ReadConformance):
    """A writable driver: everything."""

    @pytest.fixture
    def seed_image(self, stores: multistore.StoreSet) -> Seed:
        def seed(image_id: str, data: bytes) -> str:
            return stores.add(image_id, data, len(data)).location
        return seed

    # -- add ---------------------------------------------------------------

    def test_add_reports_location_size_and_hashes(self, stores: multistore.StoreSet,
                                                  store_id: str, image: bytes) -> None:
        result = stores.add(new_id(), image, len(image))
        assert result.store == store_id
        assert result.metadata["store"] == store_id
        assert result.size == len(image)
        assert result.checksum == hashlib.md5(image).hexdigest()
        assert result.multihash == hashlib.sha512(image).hexdigest()
        assert result.hashing_algo == "sha512"
        assert read(stores, result.location) == image

    @pytest.mark.parametrize("shape", ["bytes", "file", "small-chunks", "reader"])
    def test_add_accepts_every_data_shape(self, stores: multistore.StoreSet,
                                          image: bytes, shape: str) -> None:
        class ReadOnly:   # a file-like object with read() and no readinto()
            def __init__(self, data: bytes) -> None:
                self.f = io.BytesIO(data)

            def read(self, n: int = -1) -> bytes:
                return self.f.read(min(n, 100_000))

        data: Any = {
            "bytes": lambda: image,
            "file": lambda: io.BytesIO(image),
            "small-chunks": lambda: (image[i:i + 65536] for i in range(0, len(image), 65536)),
            "reader": lambda: ReadOnly(image),
        }[shape]()
        result = stores.add(new_id(), data, len(image))
        assert result.checksum == hashlib.md5(image).hexdigest()
        assert read(stores, result.location) == image

    def test_other_hashing_algorithm(self, stores: multistore.StoreSet, image: bytes) -> None:
        result = stores.add(new_id(), image, len(image), hashing_algo="sha256")
        assert result.multihash == hashlib.sha256(image).hexdigest()
        with pytest.raises(errors.UnknownHashingAlgo):
            stores.add(new_id(), image, len(image), hashing_algo="no-such-hash")

    def test_unknown_size(self, stores: multistore.StoreSet, image: bytes) -> None:
        for size in (None, 0):
            chunks = (image[i:i + MiB] for i in range(0, len(image), MiB))
            result = stores.add(new_id(), chunks, size)
            assert result.size == len(image)
            assert stores.get_size(result.location) == len(image)
            assert read(stores, result.location) == image

    def test_empty_image(self, stores: multistore.StoreSet) -> None:
        result = stores.add(new_id(), b"", 0)
        assert result.size == 0
        assert result.checksum == hashlib.md5(b"").hexdigest()
        assert read(stores, result.location) == b""

    def test_duplicate_is_refused_and_original_kept(self, stores: multistore.StoreSet,
                                                    store_id: str, image: bytes) -> None:
        image_id = new_id()
        first = stores.add(image_id, image, len(image))
        with pytest.raises(errors.Duplicate) as info:
            stores.add(image_id, b"other data", 10)
        assert info.value.store == store_id
        assert read(stores, first.location) == image

    @pytest.mark.parametrize("announced", [-1, +1])
    def test_size_mismatch_leaves_nothing(self, stores: multistore.StoreSet,
                                          image: bytes, announced: int) -> None:
        image_id = new_id()
        with pytest.raises(errors.SizeMismatch):
            stores.add(image_id, image, len(image) + announced)
        # Nothing left behind: the same id can be added afresh.
        result = stores.add(image_id, image, len(image))
        assert read(stores, result.location) == image

    def test_source_failing_mid_stream_leaves_nothing(self, stores: multistore.StoreSet,
                                                      image: bytes) -> None:
        image_id = new_id()
        with pytest.raises(ConnectionResetError):
            stores.add(image_id, _FailingSource(image), 2 * len(image))
        result = stores.add(image_id, image, len(image))
        assert read(stores, result.location) == image

    def test_bad_image_ids_are_refused(self, stores: multistore.StoreSet) -> None:
        for bad in ("", ".", "..", "a/b", "../escape", "nul\0", "tab\t", "new\nline",
                    "x" * 256):
            with pytest.raises(errors.BadLocation):
                stores.add(bad, b"x", 1)

    #: Ids that are easy to get wrong in URLs: each must name exactly one image.
    odd_image_ids = ("%41", "A", "a b", "a?b", "a#b", "%25", "a%2Fb", "a+b", "a;b",
                     "a@b", "a:b", "..x", ".hidden", "~", "\u00fc\u00f1\u00ee",
                     "x" * 200)

    def test_odd_image_ids_round_trip(self, stores: multistore.StoreSet,
                                      store_id: str) -> None:
        prefix = new_id()[:8]
        added = {}
        for index, odd in enumerate(self.odd_image_ids):
            image_id = prefix + odd if len(odd) < 200 else odd[:-8] + prefix
            data = f"image {index} {odd}".encode()
            result = stores.add(image_id, data, len(data))
            parsed = stores[store_id].locate(result.location)
            # The id the location was written for (from the URL, or where a
            # URL does not carry it, cinder's, from the backend).
            assert stores[store_id].driver.image_id(result.location) == image_id
            assert type(parsed).parse(parsed.format()) == parsed
            added[image_id] = (result.location, data)
        assert len({url for url, _ in added.values()}) == len(added)
        for image_id, (url, data) in added.items():
            assert read(stores, url) == data, image_id
            assert stores.get_size(url) == len(data)
        for url, _ in added.values():
            stores.delete(url)
            with pytest.raises(errors.NotFound):
                stores.get_size(url)

    def test_verifier_and_progress_see_every_byte_once(self, stores: multistore.StoreSet,
                                                       image: bytes) -> None:
        recorder = _Recorder()
        stores.add(new_id(), io.BytesIO(image), len(image), verifier=recorder,
                   progress=recorder.progress)
        assert b"".join(recorder.chunks) == image
        assert recorder.progress.value == len(image)
        assert recorder.progress.size == len(image)

    def test_checksum_mismatch_leaves_nothing(self, stores: multistore.StoreSet,
                                              image: bytes) -> None:
        image_id = new_id()
        with pytest.raises(errors.ChecksumMismatch):
            stores.add(image_id, image, len(image), checksum="0" * 32)
        stores.add(image_id, image, len(image))

    def test_large_image_in_bounded_memory(self, stores: multistore.StoreSet) -> None:
        source = Generated(self.large_image_size, seed=3)
        md5, sha512 = source.digests()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            result = stores.add(new_id(), source, source.size)
            held, peak = tracemalloc.get_traced_memory()
            # What the add needed beyond what the store keeps (a memory
            # store keeps the image itself).
            assert peak - max(held, base) < self.max_memory
            tracemalloc.reset_peak()
            digest = hashlib.md5()
            with stores.get(result.location) as reader:
                for chunk in reader:
                    digest.update(chunk)
            assert tracemalloc.get_traced_memory()[1] - held < self.max_memory
        finally:
            tracemalloc.stop()
        assert (result.checksum, result.multihash) == (md5, sha512)
        assert digest.hexdigest() == md5
        stores.delete(result.location)

    def test_concurrent_adds(self, stores: multistore.StoreSet) -> None:
        images = {new_id(): random_bytes(MiB + i, seed=i) for i in range(6)}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = dict(zip(images, pool.map(
                lambda item: stores.add(item[0], item[1], len(item[1])), images.items()),
                               strict=True))
        for image_id, data in images.items():
            assert read(stores, results[image_id].location) == data
        assert len({r.location for r in results.values()}) == len(images)

    # -- delete ------------------------------------------------------------

    def test_delete(self, stores: multistore.StoreSet, image: bytes) -> None:
        result = stores.add(new_id(), image, len(image))
        stores.delete(result.location)
        with pytest.raises(errors.NotFound):
            read(stores, result.location)
        with pytest.raises(errors.NotFound):
            stores.delete(result.location)

    # -- read-only by configuration -----------------------------------------

    def test_read_only_store_keeps_serving(self, make_stores: Callable[..., Any],
                                           stores: multistore.StoreSet,
                                           image: bytes) -> None:
        existing = stores.add(new_id(), image, len(image))
        with make_stores(read_only=True) as retired:
            store_id = retired.default
            assert retired[store_id].read_only
            entry = next(e for e in retired.info() if e["id"] == store_id)
            assert entry["read-only"] is True
            with pytest.raises(errors.AddNotSupported):
                retired.add(new_id(), image, len(image))
            assert read(retired, existing.location) == image
            retired.delete(existing.location)
        with pytest.raises(errors.NotFound):
            stores.get_size(existing.location)
