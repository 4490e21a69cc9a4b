"""The write path: sources, size checks, sinks, bounded buffers."""

import hashlib
import io
import threading

import pytest

from multistore import errors, stream
from multistore.testing import random_bytes

DATA = random_bytes(3 * 65536 + 17, seed=1)


class Collect(stream.Sink):
    name = "collect"

    def __init__(self):
        self.parts = []
        self.threads = set()

    def consume(self, data):
        self.threads.add(threading.get_ident())
        self.parts.append(bytes(data))


def run(data, size=None, sinks=None, chunk=65536, buffers=2, **kw):
    sinks = sinks if sinks is not None else [Collect()]
    total = stream.transfer(data, size, sinks, chunk_size=chunk, buffers=buffers, **kw)
    return total, sinks


@pytest.mark.parametrize("make", [
    lambda: DATA,
    lambda: bytearray(DATA),
    lambda: memoryview(DATA),
    lambda: io.BytesIO(DATA),
    lambda: io.BufferedReader(io.BytesIO(DATA)),
    lambda: iter([DATA[:5], b"", DATA[5:100000], DATA[100000:]]),
    lambda: [DATA[i:i + 7] for i in range(0, len(DATA), 7)],
])
def test_every_source_shape_delivers_every_byte_in_full_buffers(make):
    total, (sink,) = run(make(), len(DATA))
    assert total == len(DATA)
    assert b"".join(sink.parts) == DATA
    assert all(len(p) == 65536 for p in sink.parts[:-1])


@pytest.mark.parametrize("readinto", [True, False])
def test_reads_are_capped_by_read_size_and_buffers_stay_full(readinto):
    """A buffer larger than ``read_size`` is filled by several reads."""
    asked = []

    class File(io.RawIOBase):
        def __init__(self):
            self.data = io.BytesIO(DATA)

        def readable(self):
            return True

        def readinto(self, buf):
            asked.append(len(buf))
            return self.data.readinto(buf)

    class Reader:
        def __init__(self):
            self.data = io.BytesIO(DATA)

        def read(self, n):
            asked.append(n)
            return self.data.read(n)

    total, (sink,) = run(File() if readinto else Reader(), len(DATA), read_size=4096)
    assert total == len(DATA) and b"".join(sink.parts) == DATA
    assert all(len(p) == 65536 for p in sink.parts[:-1])
    assert max(asked) == 4096


def test_text_is_refused():
    with pytest.raises(TypeError):
        run(io.StringIO("text"))
    with pytest.raises(TypeError):
        run(["text"])


@pytest.mark.parametrize("size", [len(DATA) - 1, len(DATA) + 1, 1])
def test_size_mismatch(size):
    with pytest.raises(errors.SizeMismatch):
        run(DATA, size)


def test_longer_data_is_noticed_without_reading_it_all():
    produced = []

    def endless():
        while True:
            produced.append(1)
            yield b"x" * 65536

    with pytest.raises(errors.SizeMismatch, match="longer"):
        run(endless(), 100_000)
    assert len(produced) <= 4


def test_unknown_size_reads_to_the_end():
    total, (sink,) = run(io.BytesIO(DATA), None)
    assert total == len(DATA)


def test_each_sink_runs_in_its_own_thread_and_hashes_match():
    md5, sha = stream.HashSink("md5"), stream.HashSink("sha512")
    a, b = Collect(), Collect()
    run(DATA, len(DATA), [md5, sha, a, b])
    assert md5.hexdigest() == hashlib.md5(DATA).hexdigest()
    assert sha.hexdigest() == hashlib.sha512(DATA).hexdigest()
    assert a.threads.isdisjoint(b.threads)
    assert threading.get_ident() not in a.threads


def test_a_failing_sink_stops_the_transfer():
    class Boom(stream.Sink):
        name = "boom"
        calls = 0

        def consume(self, data):
            Boom.calls += 1
            raise OSError(28, "No space left on device")

    read = []

    def source():
        for _ in range(1000):
            read.append(1)
            yield b"x" * 65536

    with pytest.raises(OSError) as info:
        run(source(), None, [Boom(), Collect()])
    assert info.value.errno == 28
    assert Boom.calls == 1
    assert len(read) < 20


def test_source_errors_propagate_unchanged():
    def source():
        yield b"x" * 10
        raise ValueError("client went away")

    with pytest.raises(ValueError, match="client went away"):
        run(source())


def test_memory_is_bounded_by_the_buffer_pool():
    seen = set()

    class Ids(stream.Sink):
        def consume(self, data):
            seen.add(id(data.obj))

    run(io.BytesIO(random_bytes(40 * 65536)), None, [Ids(), Ids()], buffers=3)
    assert len(seen) <= 3


def test_unknown_hashing_algorithm():
    with pytest.raises(errors.UnknownHashingAlgo):
        stream.HashSink("nope")


def test_progress_counts_bytes():
    from multistore.progress import Callback
    progress = Callback()
    run(DATA, len(DATA), progress=progress)
    assert progress.value == len(DATA)
