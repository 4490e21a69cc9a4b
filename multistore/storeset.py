"""The public API: every configured store, behind one object.

Everything hangs off a :class:`StoreSet` built from a ``ConfigOpts`` by
:func:`load`; there is no module-level state, so two configurations can
live in one process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from oslo_config import cfg

from multistore import config, errors, stream
from multistore.context import Context
from multistore.driver import Driver, ReadStream, Stored, Writer, check_driver_class
from multistore.failover import FailoverReader
from multistore.move import MoveResult, Mover
from multistore.location import Location, redact, scheme_of
from multistore.progress import Callback
from multistore.registry import Registry
from multistore.store import Store

LOG = logging.getLogger(__name__)
DEFAULT_HASHING_ALGO = "sha512"
#: How :meth:`StoreSet.copy` checks an offloaded copy.
VERIFY_MODES = ("read-back", "backend")


@dataclasses.dataclass(frozen=True)
class AddResult:
    """Where an image landed and what was stored.

    ``metadata`` is the location metadata to keep with the URL
    (``{'store': id}`` plus driver extras). ``read_back`` is true when
    ``size``, ``checksum`` and ``multihash`` were computed from the stored
    copy read back (a copy made inside the backend), not from the bytes on
    their way in.
    """

    location: str
    store: str
    size: int
    checksum: str
    multihash: str
    hashing_algo: str
    metadata: Mapping[str, Any]
    read_back: bool = False

    def as_glance_tuple(self) -> tuple[str, int, str, str, dict[str, Any]]:
        """glance_store's ``add`` return value: (url, size, md5, multihash, metadata)."""
        return (self.location, self.size, self.checksum, self.multihash, dict(self.metadata))

    def __repr__(self) -> str:
        return (f"AddResult(location={redact(self.location)!r}, store={self.store!r}, "
                f"size={self.size}, checksum={self.checksum!r})")


@dataclasses.dataclass(frozen=True)
class SweptLeftover:
    """One leftover of a dead writer, as :meth:`StoreSet.sweep` found it."""

    store: str
    name: str
    size: int | None
    age: float
    removed: bool


class ImageReader:
    """An open image: iterate it for bytes; use it as a context manager.

    ``size`` is the number of bytes this reader yields (the range's length
    for a ranged read), or ``None`` when the backend does not say.
    """

    def __init__(self, stream_: ReadStream, store: Store,
                 progress: Callback | None = None) -> None:
        self._stream = stream_
        self._store = store
        self.store = store.id
        self.size = stream_.size
        self._progress = progress
        if progress is not None:
            progress.set_size(self.size)

    def __iter__(self) -> Iterator[bytes]:
        with self._store.context("get"):
            for chunk in self._stream:
                if self._progress is not None:
                    self._progress.relative_update(len(chunk))
                yield chunk

    def read_all(self) -> bytes:
        return b"".join(self)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StoreSet:
    """All stores of one configuration. Thread-safe."""

    def __init__(self, conf: cfg.ConfigOpts, stores: Sequence[Store], default: str) -> None:
        self.conf = conf
        self._stores = {s.id: s for s in stores}
        self._default = default
        self._closed = threading.Event()

    def __repr__(self) -> str:
        return f"<StoreSet default={self._default!r} stores={list(self._stores)}>"

    # -- the stores --------------------------------------------------------

    @property
    def default(self) -> str:
        """The default store's id."""
        return self._default

    def __getitem__(self, store_id: str) -> Store:
        try:
            return self._stores[store_id]
        except KeyError:
            raise errors.BadLocation(
                f"no store with this id; configured: {', '.join(self.ids(hidden=True))}",
                store=store_id) from None

    def __contains__(self, store_id: object) -> bool:
        return store_id in self._stores

    def __iter__(self) -> Iterator[Store]:
        return iter(self._stores.values())

    def ids(self, hidden: bool = False) -> list[str]:
        """Store ids in configuration order; reserved stores only if ``hidden``."""
        return [s.id for s in self._stores.values() if hidden or not s.reserved]

    def info(self, detail: bool = False) -> list[dict[str, Any]]:
        """The store listing (reserved stores are not shown)."""
        return [s.info(s.id == self._default, detail)
                for s in self._stores.values() if not s.reserved]

    def weight(self, store_id: str) -> int:
        return self[store_id].weight

    def store_for(self, location: str, store: str | None = None) -> Store:
        """The store a location belongs to; with ``store``, check the binding."""
        return self._resolve(location, store)[0]

    def _resolve(self, location: str, store: str | None) -> tuple[Store, Location]:
        """The store a location URL belongs to, and the URL parsed by its driver."""
        if store is not None:
            found = self[store]
            return found, found.locate(location)
        scheme = scheme_of(location)
        matches = []
        for candidate in self._stores.values():
            if scheme in candidate.driver.schemes:
                try:
                    matches.append((candidate, candidate.driver.parse_location(location)))
                except errors.BadLocation:
                    continue
        if not matches:
            raise errors.BadLocation(
                f"no configured store holds {redact(location)!r}")
        if len(matches) > 1:
            raise errors.BadLocation(
                f"location {redact(location)!r} could belong to stores "
                f"{', '.join(m.id for m, _ in matches)}: name the store",
                store=[m.id for m, _ in matches])
        return matches[0]

    # -- operations --------------------------------------------------------

    def add(self, image_id: str, data: Any, size: int | None = None, *,
            store: str | None = None, hashing_algo: str = DEFAULT_HASHING_ALGO,
            verifier: stream.Verifier | None = None, progress: Callback | None = None,
            checksum: str | None = None, context: Context = None) -> AddResult:
        """Stream ``data`` into a store (the default one if not named).

        ``size`` 0 or ``None`` means unknown. md5 and the multihash are
        computed on the way; ``checksum``, if given, is the md5 the data must
        have. On any failure nothing is left in the store.
        """
        target = self[store or self._default]
        return self._write(image_id, data, size, [target], hashing_algo=hashing_algo,
                           verifier=verifier, progress=progress, checksum=checksum,
                           context=context, operation="add")[0]

    def get(self, location: str, *, store: str | None = None, offset: int = 0,
            length: int | None = None, progress: Callback | None = None,
            context: Context = None) -> ImageReader:
        """Open an image, whole or ``length`` bytes from ``offset``."""
        if offset < 0 or (length is not None and length < 0):
            raise errors.BadLocation(f"invalid range: offset {offset}, length {length}",
                                     store=store, operation="get")
        found, parsed = self._resolve(location, store)
        found.require("get", offset=offset, length=length)
        with found.context("get"):
            opened = found.driver.open_reader(parsed, offset, length, context=context)
        return ImageReader(opened, found, progress)

    def open_best(self, locations: Iterable[Any], *, offset: int = 0,
                  length: int | None = None, checksum: str | None = None,
                  progress: Callback | None = None,
                  context: Context = None) -> FailoverReader:
        """Read an image from the best of its copies, failing over to the next.

        ``locations`` are Glance's location records (``{"url": ...,
        "metadata": {"store": ...}}``), :class:`ImageLocation` values or bare
        URLs. Higher store ``weight`` first; a copy that fails before its
        first byte or mid-stream is left for the next from the same byte.
        ``checksum`` (the image's md5) is checked at the end of a whole read.
        """
        return FailoverReader(self, locations, offset=offset, length=length,
                              checksum=checksum, progress=progress, context=context)

    def get_size(self, location: str, *, store: str | None = None,
                 context: Context = None) -> int:
        found, parsed = self._resolve(location, store)
        with found.context("get_size"):
            return found.driver.get_size(parsed, context=context)

    def delete(self, location: str, *, store: str | None = None,
               context: Context = None) -> None:
        found, parsed = self._resolve(location, store)
        found.require("delete")
        with found.context("delete"):
            found.driver.delete(parsed, context=context)
        LOG.info("deleted %s from store %s", redact(location), found.id)

    def set_acls(self, location: str, *, public: bool = False,
                 read_tenants: Sequence[str] = (), write_tenants: Sequence[str] = (),
                 store: str | None = None, context: Context = None) -> None:
        """Set who may read or write an image in the backend, where the store
        has per-image access control (swift multi-tenant); NotSupported elsewhere."""
        found, parsed = self._resolve(location, store)
        with found.context("set_acls"):
            found.driver.set_acls(parsed, public=public, read_tenants=tuple(read_tenants),
                                  write_tenants=tuple(write_tenants), context=context)

    def copy(self, location: str, to: Sequence[str] | str, *, store: str | None = None,
             image_id: str | None = None, hashing_algo: str = DEFAULT_HASHING_ALGO,
             checksum: str | None = None, progress: Callback | None = None,
             offload: bool = False, verify: str = "read-back", multihash: str | None = None,
             context: Context = None) -> list[AddResult]:
        """Copy an image to other stores, reading the source once.

        ``to`` is a list of store ids or ``"all"`` (every writable store
        listed, except the source's). Every target is written from the same
        stream; each target's size is checked against the source's, and
        ``checksum`` (the md5 recorded for the image), if given, against the
        data. All targets succeed or none keeps the image.

        With ``offload``, a target in the same backend as the source copies
        inside the backend (:meth:`Driver.copy_within
        <multistore.driver.Driver.copy_within>`: a server-side copy, a clone,
        ``copy_file_range``); its copy is then read back to compute md5 and
        the multihash, so the result is the same as a streamed copy's. It is
        not the default: the read-back hashes every offloaded copy, where a
        streamed copy hashes the source once for all targets, so offload
        pays only where moving the bytes costs more than hashing them
        (a remote backend, one target); see benchmarks/bench_copy.py.

        ``verify="backend"`` (with ``offload``) skips that read-back where
        the backend vouches for the copy: the driver returned a
        :class:`~multistore.driver.Vouched` (Swift: the ETag, the md5 Swift
        computed of the bytes it stored, of the copy and of every segment,
        equal to the source's), and the caller gave the image's recorded
        ``checksum`` and ``multihash`` (of ``hashing_algo``; Glance keeps
        both). The size must match the source's, and the whole-image md5,
        where the backend has one, the ``checksum``; the result then
        carries the caller's ``checksum`` and ``multihash``, not hashes
        computed here. Where the backend vouches piece by piece only (a
        segmented Swift image), nothing checks the source itself against
        ``checksum``: the copy is proved equal to the source, and the
        source is trusted to hold what was recorded (the default
        ``"read-back"`` and a streamed copy do check it). A copy the
        backend does not vouch for (rbd, file), or a call without both
        digests, is read back as by default.
        """
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {', '.join(VERIFY_MODES)}, not {verify!r}")
        if verify == "backend" and multihash is not None:
            _check_multihash(multihash, hashing_algo)
        source, parsed = self._resolve(location, store)
        if to == "all":
            targets = [s for s in self._stores.values()
                       if not s.reserved and s.id != source.id and s.capabilities.write]
        else:
            if isinstance(to, str):
                to = [to]
            if not to:
                raise errors.BadLocation("no target store given", operation="copy")
            if len(set(to)) != len(to):
                raise errors.BadLocation(f"a target is named twice: {list(to)}",
                                         operation="copy")
            targets = [self[t] for t in to]
            for target in targets:
                if target.id == source.id:
                    raise errors.Duplicate("the image is already in this store "
                                           "(it is the copy's source)",
                                           store=target.id, operation="copy")
        if not targets:
            return []
        image_id = image_id or source.copy_image_id(location, context)
        offloaded = self._offload(source, parsed, image_id, targets, context) \
            if offload else []
        streamed = [t for t in targets if all(t is not o for o, _ in offloaded)]
        try:
            results = []
            if streamed:
                with self.get(location, store=source.id, context=context) as reader:
                    results = self._write(image_id, reader, reader.size, streamed,
                                          hashing_algo=hashing_algo, verifier=None,
                                          progress=progress, checksum=checksum,
                                          context=context, operation="copy")
            if offloaded:
                # What the offloaded copies must hold: the streamed copies'
                # size and digests, else the source's size and the record's.
                expected = (results[0].size, results[0].checksum, results[0].multihash) \
                    if results else (self.get_size(location, store=source.id,
                                                   context=context), checksum, multihash)
            for target, stored in offloaded:
                if verify == "backend" and stored.vouched is not None and \
                        expected[1] is not None and expected[2] is not None:
                    results.append(self._vouched(target, stored, image_id, hashing_algo,
                                                 expected))
                    continue
                if verify == "backend":
                    LOG.info("copy image %s to store %s: %s; reading the copy back",
                             image_id, target.id, "no checksum and multihash given"
                             if stored.vouched else "the backend does not vouch for it")
                results.append(self._read_back(target, stored, image_id, hashing_algo,
                                               expected[:2], context))
        except BaseException:
            for target, stored in offloaded:
                _delete_quietly(target, stored.location.format(), context)
            raise
        order = {t.id: n for n, t in enumerate(targets)}
        return sorted(results, key=lambda r: order[r.store])

    def _offload(self, source: Store, parsed: Location, image_id: str,
                 targets: Sequence[Store], context: Context) -> list[tuple[Store, Stored]]:
        """Copies the backend made itself, for the targets whose driver can."""
        done: list[tuple[Store, Stored]] = []
        try:
            for target in targets:
                target.require("add")
                target.check_image_id(image_id)
                with target.context("copy"):
                    stored = target.driver.copy_within(source.driver, parsed, image_id,
                                                       context=context)
                if stored is not None:
                    LOG.info("copy of image %s to store %s done inside the backend",
                             image_id, target.id)
                    done.append((target, stored))
        except BaseException:
            for target, stored in done:
                _delete_quietly(target, stored.location.format(), context)
            raise
        return done

    def _vouched(self, target: Store, stored: Stored, image_id: str, hashing_algo: str,
                 expected: tuple[int, str | None, str | None]) -> AddResult:
        """An offloaded copy's result from what the backend vouches for
        (``copy(verify="backend")``): no byte is read."""
        vouched = stored.vouched
        size, md5, multihash = expected
        assert vouched is not None and md5 is not None and multihash is not None
        url = stored.location.format()
        if vouched.size != size or (vouched.md5 is not None
                                    and vouched.md5.lower() != md5.lower()):
            raise errors.ChecksumMismatch(
                f"image {image_id}: the copy made inside the backend holds {vouched.size} "
                f"bytes, md5 {vouched.md5 or '(vouched for piece by piece)'} by the "
                f"backend's count; expected {size} bytes, md5 {md5}",
                store=target.id, operation="copy")
        LOG.info("copy image %s to store %s: %s, %d bytes (inside the backend; the md5 of "
                 "%d piece(s) vouched for by the backend, not read back)", image_id,
                 target.id, redact(url), size, vouched.pieces)
        return AddResult(url, target.id, size, md5, multihash, hashing_algo,
                         {**stored.metadata, "store": target.id})

    def _read_back(self, target: Store, stored: Stored, image_id: str, hashing_algo: str,
                   expected: tuple[int, str | None], context: Context) -> AddResult:
        """An offloaded copy's result, from its bytes read back, checked
        against the expected size and md5."""
        url = stored.location.format()
        size, (md5, multihash) = self.digest(url, ["md5", hashing_algo], store=target.id,
                                             context=context)
        if size != expected[0] or expected[1] not in (None, md5):
            raise errors.ChecksumMismatch(
                f"image {image_id}: the copy made inside the backend reads back as "
                f"{size} bytes, md5 "
                f"{md5}; expected {expected[0]} bytes, md5 {expected[1]}",
                store=target.id, operation="copy")
        LOG.info("copy image %s to store %s: %s, %d bytes (inside the backend)", image_id,
                 target.id, redact(url), size)
        return AddResult(url, target.id, size, md5, multihash, hashing_algo,
                         {**stored.metadata, "store": target.id}, read_back=True)

    def digest(self, location: str, algos: Sequence[str] = ("md5", DEFAULT_HASHING_ALGO),
               *, store: str | None = None, context: Context = None,
               ) -> tuple[int, list[str]]:
        """Read an image back: its size and hex digests (each hash in its own
        thread, as an add computes them)."""
        core = self.conf[config.CORE_GROUP]
        with self.get(location, store=store, context=context) as reader:
            try:
                return stream.digest(reader, algos, chunk_size=core.stream_chunk_size,
                                     buffers=core.stream_buffers)
            except errors.MultistoreError as exc:
                exc.attach(store=reader.store, operation="get")
                raise

    def move(self, records: Iterable[Any], to: Sequence[str], *,
             delete_source: bool = False, journal: str | None = None, parallel: int = 1,
             dry_run: bool = False, hashing_algo: str = DEFAULT_HASHING_ALGO,
             progress: Callable[[str], Callback] | None = None, offload: bool = False,
             context: Context = None) -> Iterator[MoveResult]:
        """Move images out of a store (see :mod:`multistore.move`).

        ``records`` are location records (``{"url", "metadata", "image_id",
        "checksum"}``) or URLs; each image is copied to every store in
        ``to``, each copy verified by reading it back, and the source
        deleted only with ``delete_source`` and only once every copy
        verified. ``journal`` makes an interrupted run resumable. Yields one
        :class:`~multistore.move.MoveResult` per image; errors are reported
        there, not raised, so one bad image does not stop the others.
        """
        mover = Mover(self, to, delete_source=delete_source, journal=journal,
                      dry_run=dry_run, hashing_algo=hashing_algo, progress=progress,
                      context=context, offload=offload)
        return mover.run(records, parallel=parallel)

    def sweep(self, stores: Sequence[str] | None = None, *, grace: float = 3600.0,
              remove: bool = True, context: Context = None) -> list[SweptLeftover]:
        """Find (and, with ``remove``, delete) what killed writers left behind.

        Only what is provably abandoned is touched: untouched for ``grace``
        seconds and held by no live writer; safe while other processes add
        images. Every store that writes, or those named.
        """
        found = []
        for store in (self[s] for s in stores) if stores is not None else self:
            if not store.driver.capabilities.write:
                continue
            with store.context("sweep"):
                leftovers = list(store.driver.find_leftovers(grace, context=context))
            for leftover in leftovers:
                removed = False
                if remove:
                    try:
                        with store.context("sweep"):
                            store.driver.remove_leftover(leftover, context=context)
                        removed = True
                    except errors.NotFound:
                        continue    # gone meanwhile (another sweeper)
                    except errors.MultistoreError:
                        LOG.exception("store %s: removing leftover %s failed",
                                      store.id, leftover.name)
                LOG.info("store %s: %s leftover %s (%s bytes, %.0f s old)", store.id,
                         "removed" if removed else "found", leftover.name,
                         leftover.size, leftover.age)
                found.append(SweptLeftover(store.id, leftover.name, leftover.size,
                                           leftover.age, removed))
        return found

    def close(self) -> None:
        """Release every driver's connections."""
        if self._closed.is_set():
            return
        self._closed.set()
        for s in self._stores.values():
            try:
                s.driver.close()
            except Exception:
                LOG.exception("closing store %s failed", s.id)

    def __enter__(self) -> StoreSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the write path ----------------------------------------------------

    def _write(self, image_id: str, data: Any, size: int | None, targets: Sequence[Store],
               *, hashing_algo: str, verifier: stream.Verifier | None,
               progress: Callback | None, checksum: str | None, context: Context,
               operation: str) -> list[AddResult]:
        """Stream ``data`` into every target; all of them keep the image or none.

        Every error leaves with the stores involved and ``operation``
        attached; on any failure, writers not committed are aborted and
        images already committed (a copy whose other target failed) deleted.
        """
        store_ids = [t.id for t in targets]
        for target in targets:
            target.require("add")
            target.check_image_id(image_id)
        size = size or None
        md5 = stream.HashSink("md5")
        try:
            multihash = stream.HashSink(hashing_algo)
        except errors.MultistoreError as exc:
            raise exc.attach(store=store_ids, operation=operation) from None
        sinks: list[stream.Sink] = [md5, multihash]
        if verifier is not None:
            sinks.append(stream.VerifierSink(verifier))
        writers: list[tuple[Store, Writer]] = []
        try:
            for target in targets:
                with target.context(operation):
                    writers.append((target, target.driver.open_writer(image_id, size,
                                                                      context=context)))
            sinks += [stream.WriterSink(t, w, operation) for t, w in writers]
            if progress is not None:
                progress.set_size(size)
            chunk = max([t.driver.write_chunk_size or self.conf[config.CORE_GROUP]
                         .stream_chunk_size for t in targets])
            total = self._transfer(data, size, sinks, chunk, store_ids, operation, progress)
            digests = md5.hexdigest(), multihash.hexdigest()
            if checksum is not None and checksum != digests[0]:
                raise errors.ChecksumMismatch(
                    f"the data's md5 is {digests[0]}, {checksum} was expected",
                    store=store_ids, operation=operation)
        except BaseException:
            for target, writer in writers:
                _abort(target, writer, operation)
            raise
        committed = _commit_all(writers, operation)
        results = []
        for target, stored in committed:
            metadata = {**stored.metadata, "store": target.id}
            results.append(AddResult(stored.location.format(), target.id, total, digests[0],
                                     digests[1], hashing_algo, metadata))
            LOG.info("%s image %s to store %s: %s, %d bytes", operation, image_id,
                     target.id, redact(results[-1].location), total)
        if operation == "copy":
            self._verify_copies(results, total, context)
        return results

    def _transfer(self, data: Any, size: int | None, sinks: list[stream.Sink],
                  chunk: int, store_ids: Sequence[str], operation: str,
                  progress: Callback | None) -> int:
        core = self.conf[config.CORE_GROUP]
        try:
            # A driver may want larger buffers (rbd: whole objects); the
            # caller's data is still read stream_chunk_size at a time.
            return stream.transfer(
                data, size, sinks, chunk_size=chunk, buffers=core.stream_buffers,
                progress=progress, read_size=core.stream_chunk_size)
        except errors.MultistoreError as exc:
            exc.attach(store=store_ids, operation=operation)
            raise
        except Exception as exc:
            # The caller's data (or verifier) failed: their exception, with context.
            exc.add_note(f"multistore: while streaming into store "
                         f"{', '.join(store_ids)} ({operation}); nothing was stored")
            raise

    def _verify_copies(self, results: list[AddResult], size: int, context: Context) -> None:
        for result in results:
            target = self._stores[result.store]
            with target.context("copy"):
                stored = target.driver.get_size(target.locate(result.location),
                                                context=context)
            if stored != size:
                for r in results:
                    _delete_quietly(self._stores[r.store], r.location, context)
                raise errors.SizeMismatch(
                    f"the copy holds {stored} bytes, the source {size}; "
                    "every copy was removed", store=result.store, operation="copy")


def _commit_all(writers: Sequence[tuple[Store, Writer]],
                operation: str) -> list[tuple[Store, Stored]]:
    """Commit every writer, side by side. If any fails, abort it, delete the
    images the others committed, and re-raise the first failure."""
    def commit(target: Store, writer: Writer) -> Stored:
        try:
            with target.context(operation):
                return writer.commit()
        except BaseException:
            _abort(target, writer, operation)
            raise

    if len(writers) == 1:
        target, writer = writers[0]
        return [(target, commit(target, writer))]
    with concurrent.futures.ThreadPoolExecutor(
            max_workers=len(writers), thread_name_prefix="multistore-commit") as pool:
        futures = [pool.submit(commit, t, w) for t, w in writers]
        concurrent.futures.wait(futures)
    done = [(t, f.result()) for (t, _), f in zip(writers, futures, strict=True)
            if f.exception() is None]
    failures = [f.exception() for f in futures if f.exception() is not None]
    if failures:
        for target, stored in done:
            _delete_quietly(target, stored.location.format(), None)
        first = failures[0]
        assert first is not None
        raise first
    return done


def _check_multihash(multihash: str, hashing_algo: str) -> None:
    """A caller's multihash must look like a hex digest of ``hashing_algo``."""
    try:
        digest_size = hashlib.new(hashing_algo).digest_size
    except (ValueError, TypeError):
        raise errors.UnknownHashingAlgo(f"unknown hashing algorithm {hashing_algo!r}",
                                        operation="copy") from None
    if len(multihash) != 2 * digest_size or \
            any(c not in "0123456789abcdef" for c in multihash.lower()):
        raise errors.DataMismatch(f"the multihash given is not a {hashing_algo} hex digest",
                                  operation="copy")


def _abort(target: Store, writer: Writer, operation: str) -> None:
    try:
        writer.abort()
    except Exception:
        LOG.exception("store %s: cleaning up after a failed %s also failed",
                      target.id, operation)


def _delete_quietly(target: Store, location: str, context: Context) -> None:
    try:
        with target.context("cleanup"):
            target.driver.delete(target.locate(location), context=context)
    except Exception:
        LOG.exception("store %s: removing %s failed", target.id, redact(location))


def load(conf: cfg.ConfigOpts, reserved: Mapping[str, str] | None = None,
         drivers: Mapping[str, type[Driver]] | None = None) -> StoreSet:
    """Build the store set an operator configured.

    ``reserved`` maps internal store ids (``os_glance_staging_store``) to
    their driver types; they work like any store but are not listed.
    ``drivers`` adds driver classes without entry points (tests, embedding).
    Raises :class:`~multistore.errors.ConfigError` naming the store and
    option for anything wrong.
    """
    # The configuration itself rides on the record, for the test suite's
    # secrets guard (multistore.testing.secrets); a log line shows only the files.
    LOG.debug("loading the stores of %s", ", ".join(_config_files(conf)) or "no file",
              extra={"multistore_conf": conf})
    registry = Registry(drivers)
    layout = config.read_layout(conf, reserved, registry.canonical)
    stores = []
    for spec in layout.stores:
        cls = registry.load(spec.type, store=spec.id)
        try:
            check_driver_class(cls)
        except errors.MultistoreError as exc:
            raise exc.attach(store=spec.id) from None
        store_conf = config.StoreConf(conf, spec, cls.options,
                                      cls.option_defaults(spec.id, spec.reserved))
        store_conf.check()
        driver = cls(spec.id, store_conf)
        with _configuring(spec.id):
            driver.configure()
        stores.append(Store(spec, driver, store_conf))
    _check_claims(stores)
    LOG.debug("loaded stores %s (default %s)", [s.id for s in stores], layout.default)
    return StoreSet(conf, stores, layout.default)


def _config_files(conf: cfg.ConfigOpts) -> list[str]:
    try:
        return list(conf.config_file or [])
    except cfg.NoSuchOptError:
        return []


def _check_claims(stores: Sequence[Store]) -> None:
    """Refuse two stores that would share a directory, a pool, a container."""
    owner: dict[str, str] = {}
    for store in stores:
        for claim in store.driver.claims():
            other = owner.setdefault(claim, store.id)
            if other != store.id:
                raise errors.ConfigError(
                    f"stores {other!r} and {store.id!r} both use {claim}: every location "
                    "in it would belong to both; give each store its own").attach(
                        store=[other, store.id])


@contextlib.contextmanager
def _configuring(store_id: str) -> Iterator[None]:
    """Any failure while configuring a store is a ConfigError naming it."""
    try:
        yield
    except errors.ConfigError as exc:
        exc.attach(store=store_id)
        raise
    except Exception as exc:
        raise errors.ConfigError(f"{type(exc).__name__}: {redact(str(exc))}",
                                 store=store_id) from exc
