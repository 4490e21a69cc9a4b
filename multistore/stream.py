"""The one place image data flows through on its way into stores.

:func:`transfer` reads the caller's data into a small, fixed pool of
buffers and fans every buffer out to *sinks*, each running in its own
thread: the md5 hasher, the multihash hasher, the signature verifier and
one writer per target store. A buffer goes back to the pool once every sink
is done with it, so memory is bounded by ``buffers * chunk_size`` whatever
the image size, and the slowest sink sets the pace (hashlib and file writes
release the GIL, so md5 and sha512 run side by side on two cores).

Size checks, progress and the verifier live here and nowhere else; the
caller (:class:`multistore.StoreSet`) opens the writers, commits them, and
aborts them all on any failure. Drivers only see
:meth:`~multistore.driver.Writer.write`, ``commit`` and ``abort``.
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from multistore import errors
from multistore.progress import Callback

if TYPE_CHECKING:
    from multistore.driver import Writer
    from multistore.store import Store


class Verifier(Protocol):
    """Glance's image-signature verifier: fed every byte, in order, once."""

    def update(self, data: bytes) -> None: ...


def new_hasher(algo: str) -> Any:
    """A hashlib object; md5 is not used for security here."""
    try:
        hasher = hashlib.new(algo, usedforsecurity=False)
    except (ValueError, TypeError) as exc:
        raise errors.UnknownHashingAlgo(f"unknown hashing algorithm {algo!r}") from exc
    if not hasher.digest_size:
        # shake_128/shake_256: a digest of any length, so none by default.
        raise errors.UnknownHashingAlgo(
            f"hashing algorithm {algo!r} has no fixed digest size; use sha512, sha256 ...")
    return hasher


# -- the source ------------------------------------------------------------

class Source:
    """The caller's data, whatever its shape, read into the core's buffers.

    Accepts bytes-like objects, binary files (``readinto`` is used when
    there, so bytes are copied once, from the kernel into a pool buffer) and
    iterables of bytes (coalesced into full buffers so that hashing and
    writing always work on large blocks).

    ``read_size`` caps what one ``read``/``readinto`` asks for, so that a
    buffer larger than that (a driver's ``write_chunk_size``) is filled by
    several reads: what the caller's file holds per read stays that size
    (inside Glance, each read is copied a few times on its way here).
    """

    def __init__(self, data: Any, read_size: int | None = None) -> None:
        self._read_size = read_size
        self._pending = memoryview(b"")
        self._readinto: Callable[[memoryview], int | None] | None = None
        self._read: Callable[[int], bytes] | None = None
        self._chunks: Iterator[bytes] | None = None
        if isinstance(data, (bytes, bytearray, memoryview)):
            self._pending = memoryview(data).cast("B")
        elif hasattr(data, "readinto") and not isinstance(data, io.TextIOBase):
            self._readinto = data.readinto
        elif hasattr(data, "read"):
            self._read = data.read
        elif isinstance(data, Iterable):
            self._chunks = iter(data)
        else:
            raise TypeError(f"image data must be bytes, a binary file or an "
                            f"iterable of bytes, not {type(data).__name__}")

    def fill(self, buf: memoryview) -> int:
        """Fill ``buf`` as far as the data goes; 0 means the end."""
        filled = 0
        size = len(buf)
        while filled < size:
            if self._pending:
                n = min(size - filled, len(self._pending))
                buf[filled:filled + n] = self._pending[:n]
                self._pending = self._pending[n:]
                filled += n
                continue
            want = size - filled if self._read_size is None else \
                min(size - filled, self._read_size)
            if self._readinto is not None:
                got = self._readinto(buf[filled:filled + want])
                if got is None:
                    # A non-blocking source with no data ready: it has not
                    # ended, and waiting is not ours to do.
                    raise errors.DataMismatch(
                        "the data source is non-blocking and had no data ready "
                        "(readinto returned None): give a blocking file")
                if not got:
                    break
                filled += got
                continue
            chunk = self._next_chunk(want)
            if chunk is None:
                break
            self._pending = memoryview(chunk).cast("B")
        return filled

    def _next_chunk(self, want: int) -> bytes | None:
        if self._read is not None:
            chunk = self._read(want)
            if chunk is None:
                raise errors.DataMismatch(
                    "the data source is non-blocking and had no data ready "
                    "(read returned None): give a blocking file")
            return chunk or None
        if self._chunks is not None:
            for chunk in self._chunks:
                if chunk:
                    if isinstance(chunk, str):
                        raise TypeError("image data chunks must be bytes, not str")
                    return chunk
        return None


# -- sinks -----------------------------------------------------------------

class Sink:
    """Consumes every buffer in order, in a thread of its own."""

    name = "sink"

    def consume(self, data: memoryview) -> None:
        raise NotImplementedError


class HashSink(Sink):
    def __init__(self, algo: str) -> None:
        self.name = algo
        self.hasher = new_hasher(algo)

    def consume(self, data: memoryview) -> None:
        self.hasher.update(data)

    def hexdigest(self) -> str:
        return self.hasher.hexdigest()


class VerifierSink(Sink):
    name = "verifier"

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier

    def consume(self, data: memoryview) -> None:
        # bytes, not the pool's buffer: a verifier may keep what it is given.
        self.verifier.update(bytes(data))


class WriterSink(Sink):
    """One target store's writer; its errors leave with the store's context."""

    def __init__(self, store: Store, writer: Writer, operation: str) -> None:
        self.name = f"writer for store {store.id!r}"
        self.store = store
        self.writer = writer
        self.operation = operation

    def consume(self, data: memoryview) -> None:
        with self.store.context(self.operation):
            self.writer.write(data)


# -- the pipeline ----------------------------------------------------------

class _Item:
    __slots__ = ("view", "buf", "pending", "lock")

    def __init__(self, view: memoryview, buf: bytearray, pending: int) -> None:
        self.view = view
        self.buf = buf
        self.pending = pending
        self.lock = threading.Lock()


class _Worker(threading.Thread):
    def __init__(self, sink: Sink, release: Callable[[_Item], None],
                 failed: threading.Event) -> None:
        super().__init__(name=f"multistore-{sink.name}", daemon=True)
        self.sink = sink
        self.queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self._release = release
        self._failed = failed

    def run(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                if self.error is None:
                    self.sink.consume(item.view)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self.error = exc
                self._failed.set()
            finally:
                self._release(item)


def transfer(data: Any, size: int | None, sinks: Sequence[Sink], *,
             chunk_size: int, buffers: int, progress: Callback | None = None,
             read_size: int | None = None) -> int:
    """Stream ``data`` through every sink; return the number of bytes.

    Buffers are ``chunk_size`` bytes; ``data`` is read at most ``read_size``
    bytes at a time (see :class:`Source`).

    Raises :class:`~multistore.errors.SizeMismatch` when ``size`` is given
    and the data is longer or shorter (the caller attaches the stores), or
    when a non-blocking source has no data ready; re-raises the first sink's
    exception or the source's own exception as it is. The caller commits or
    aborts writers.
    """
    source = Source(data, read_size)
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    allocated = 0
    failed = threading.Event()

    def release(item: _Item) -> None:
        with item.lock:
            item.pending -= 1
            last = item.pending == 0
        if last:
            free.put(item.buf)

    workers = [_Worker(sink, release, failed) for sink in sinks]
    for worker in workers:
        worker.start()
    total = 0
    try:
        while not failed.is_set():
            if allocated < buffers and free.empty():
                buf = bytearray(chunk_size)
                allocated += 1
            else:
                buf = free.get()
            view = memoryview(buf)
            if size is not None:
                # Read one byte past the announced end to notice longer data.
                view = view[:max(1, min(chunk_size, size + 1 - total))]
            n = source.fill(view)
            if n == 0:
                free.put(buf)
                break
            total += n
            if size is not None and total > size:
                raise errors.SizeMismatch(
                    f"the data is longer than the {size} bytes announced")
            item = _Item(view[:n], buf, len(workers))
            for worker in workers:
                worker.queue.put(item)
            if progress is not None:
                progress.relative_update(n)
    finally:
        for worker in workers:
            worker.queue.put(None)
        for worker in workers:
            worker.join()
    for worker in workers:
        if worker.error is not None:
            raise worker.error
    if size is not None and total != size:
        raise errors.SizeMismatch(
            f"the data ended after {total} bytes, {size} were announced")
    return total


def digest(data: Any, algos: Sequence[str], *, chunk_size: int, buffers: int,
           progress: Callback | None = None) -> tuple[int, list[str]]:
    """Size and hex digests of ``data``, each hash in its own thread (the
    same pipeline an add uses): what reading an image back to check it costs."""
    sinks = [HashSink(algo) for algo in algos]
    size = transfer(data, None, sinks, chunk_size=chunk_size, buffers=buffers,
                    progress=progress)
    return size, [sink.hexdigest() for sink in sinks]
