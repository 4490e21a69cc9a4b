"""Writing an image into Swift: one writer, streamed PUTs, SLO segments.

Below ``swift_store_large_object_size`` (size known) an image is one PUT,
streamed while the core writes. Otherwise it is cut into segments of
``swift_store_large_object_chunk_size`` named ``<object>/<upload id>/<index>``
in ``<container>_segments``, each one a streamed PUT, then a Static Large
Object manifest listing every segment's etag and size (Swift checks them)
is written with ``If-None-Match: *``: an image is never silently replaced.

``swift_store_segment_concurrency`` is how many segments may be in flight
besides the one being fed: with 1 the next segment receives data while the
previous one is acknowledged (memory: a few chunks); with more, each
segment may buffer up to its whole size, so that several go up in
parallel when one stream does not keep the cluster busy (memory up to
about (concurrency + 1) x the segment size). An image of unknown size that
ends inside its first segment is then stored as a plain object.

Every PUT body is streamed, so none is retried. On abort every segment
started is deleted, and the image object too when this writer's PUT of it
landed (a plain DELETE: Swift answers 200 "Not an SLO manifest" to a
``multipart-manifest=delete`` of a plain object and keeps it).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import secrets
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from multistore import errors
from multistore.driver import Stored, Writer
from multistore.drivers.swift.auth import Account, client_exception
from multistore.drivers.swift.locations import SwiftLocation

#: Bytes per read of a request body (swiftclient's chunk of streamed PUTs).
CHUNK = 1024 * 1024
#: Swift's default max_manifest_segments.
MAX_SEGMENTS = 1000
#: Segment names: <object>/<upload id>/<index>; the upload id's length.
UPLOAD_ID_BYTES = 8


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where and how one image is written (what the driver decided)."""

    location: SwiftLocation
    segment_container: str
    segment_size: int
    large_size: int
    concurrency: int
    timeout: float

    @property
    def container(self) -> str:
        return self.location.container

    @property
    def obj(self) -> str:
        return self.location.image_id


def segment_prefix(obj: str, upload_id: str) -> str:
    return f"{obj}/{upload_id}/"


def split_segment(name: str) -> tuple[str, str] | None:
    """(object, upload id) of a segment name this driver writes, else None."""
    parts = name.split("/")
    if len(parts) != 3 or len(parts[1]) != 2 * UPLOAD_ID_BYTES or not parts[2].isdigit():
        return None
    return parts[0], parts[1]


class _Aborted(Exception):
    pass


class _Pipe:
    """A file-like that swiftclient reads a streamed PUT body from.

    Items are either copies (:meth:`put`: at most ``limit`` bytes held, one
    item more when empty) or the caller's own buffer (:meth:`lend`: no copy;
    the call returns once the reader is done with it, which it shows by
    coming back for more, or by its PUT ending).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: collections.deque[Any] = collections.deque()
        self.held = 0
        self.pending = memoryview(b"")
        self.pos = 0
        self.taken = self.returned = self.added = 0
        self.ended = self.finished = False
        self.failed: BaseException | None = None
        self.cond = threading.Condition()

    def put(self, item: bytes, alive: Any) -> None:
        with self.cond:
            while self.held and self.held + len(item) > self.limit and self.failed is None:
                self.cond.wait(0.2)
                alive()
            self._add(item)

    def lend(self, view: memoryview, check: Any) -> None:
        with self.cond:
            seq = self._add(view)
            while self.returned < seq and not self.finished and self.failed is None:
                self.cond.wait(0.2)
                check()
        check()

    def _add(self, item: Any) -> int:
        self.items.append(item)
        self.held += len(item)
        self.added += 1
        self.cond.notify_all()
        return self.added

    def end(self) -> None:
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def finish(self) -> None:
        """The PUT is over: nothing will be read any more."""
        with self.cond:
            self.finished = True
            self.cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self.cond:
            self.failed = exc
            self.items.clear()
            self.held = 0
            self.cond.notify_all()

    def read(self, size: int = -1) -> Any:
        if not self.pending:
            with self.cond:
                self.returned = self.taken      # the reader is back: all it had went
                self.cond.notify_all()
                if size == 0:
                    return b""
                while not self.items and not self.ended and self.failed is None:
                    self.cond.wait()
                if self.failed is not None:
                    raise self.failed
                if not self.items:
                    return b""
                item = self.items.popleft()
                self.taken += 1
                self.held -= len(item)
                self.cond.notify_all()
            self.pending = memoryview(item)
        n = len(self.pending) if size is None or size < 0 else size
        out = self.pending[:n]          # a view: sent as it is, not copied
        self.pending = self.pending[len(out):]
        self.pos += len(out)
        return out

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos != self.pos:
            raise OSError("a streamed upload cannot be rewound")
        return self.pos


class _Upload:
    """One object PUT whose body is streamed from a pipe, in a thread once
    :meth:`start` is called (data may be buffered before)."""

    def __init__(self, account: Account, limit: int, lend: bool) -> None:
        self.account = account
        self.lend = lend
        self.pipe = _Pipe(limit)
        self.sent = 0
        self.result: Future[str] = Future()
        self.name = ""
        self.container = ""
        self.length: int | None = None
        self.started = False
        self.conn: Any = None
        self.thread: threading.Thread | None = None

    def start(self, container: str, name: str, length: int | None,
              headers: dict[str, str], query: str | None = None) -> None:
        self.container, self.name, self.length = container, name, length
        self.conn = self.account.take()
        self.started = True
        self.thread = threading.Thread(target=self._run, args=(headers, query), daemon=True,
                                       name="swift-put")
        self.thread.start()

    def _run(self, headers: dict[str, str], query: str | None) -> None:
        try:
            body = self.pipe if self.length is None else _body(self.pipe, self.length)
            etag = self.conn.put_object(self.container, self.name, body,
                                        content_length=self.length, headers=headers,
                                        query_string=query, chunk_size=CHUNK)
            self.result.set_result(str(etag))
        except client_exception() as exc:
            if exc.http_status == 404:
                self.result.set_exception(errors.WriteDenied(
                    f"container {self.container!r} does not exist (create it, or set "
                    "swift_store_create_container_on_put)"))
            else:
                self.result.set_exception(exc)
        except BaseException as exc:  # noqa: BLE001 - handed to the writer's thread
            self.result.set_exception(exc)
        finally:
            self.pipe.finish()

    def _check(self) -> None:
        if self.result.done() and self.result.exception() is not None:
            self.result.result()

    def _alive(self) -> None:
        if self.result.done():
            self.result.result()       # raises the PUT's error
            raise errors.BackendUnavailable("swift ended the upload early")

    def send(self, data: memoryview) -> None:
        """Queue a copy of ``data``, or, when lending, send ``data`` itself
        and return once it went."""
        self._alive()
        if self.lend:
            self.pipe.lend(data, self._check)
        else:
            self.pipe.put(bytes(data), self._alive)
        self.sent += len(data)

    def wait(self, timeout: float) -> str:
        """End the body; Swift's answer (the etag), or its error."""
        self.pipe.end()
        try:
            etag = self.result.result(timeout)
        except BaseException:
            self.close(False)
            raise
        self.close(True)
        return etag

    def cancel(self) -> None:
        if not self.result.done():
            self.pipe.fail(_Aborted("upload aborted"))
            if self.conn is not None:
                self.conn.close()      # breaks a PUT waiting on the network
        self.close(False)

    def close(self, reusable: bool) -> None:
        if self.thread is not None:
            self.thread.join(timeout=30)
        self.pipe = _Pipe(0)           # drop any bytes still held
        conn, self.conn = self.conn, None
        if conn is not None:
            self.account.release(conn, reusable)

    @property
    def landed(self) -> bool:
        return self.result.done() and self.result.exception() is None


class SwiftWriter(Writer):
    """Streams one image into Swift: see the module docstring."""

    def __init__(self, account: Account, plan: Plan, size: int | None) -> None:
        self.account = account
        self.plan = plan
        self.left = size
        self.segmented = size is None or size >= plan.large_size
        self.upload_id = secrets.token_hex(UPLOAD_ID_BYTES)
        self.prefix = segment_prefix(plan.obj, self.upload_id)
        self.current: _Upload | None = None
        self.in_flight: collections.deque[_Upload] = collections.deque()
        self.started: list[_Upload] = []
        self.done: list[tuple[str, str, int]] = []
        self.image: _Upload | None = None      # the PUT of the image object itself
        self.manifest_tried = False
        self.lost = False
        if not self.segmented:
            self.image = self.current = _Upload(account, 2 * CHUNK, lend=True)
            self.current.start(plan.container, plan.obj, size, {"If-None-Match": "*"})

    # -- feeding -----------------------------------------------------------

    def write(self, data: memoryview) -> None:
        view = data.cast("B") if data.format != "B" else data
        room_of = self.plan.segment_size if self.segmented else len(view)
        while view:
            if self.current is None:
                self.current = self._next_segment()
            room = room_of - self.current.sent if self.segmented else len(view)
            piece = view[:room]
            view = view[len(piece):]
            self.current.send(piece)
            if self.segmented and self.current.sent >= self.plan.segment_size:
                self._segment_full()

    def _next_segment(self) -> _Upload:
        if len(self.started) >= MAX_SEGMENTS:
            raise errors.StorageFull(
                f"the image needs more than {MAX_SEGMENTS} segments: raise "
                "swift_store_large_object_chunk_size")
        if not self.started:
            self.account.ensure_container(self.plan.segment_container)
        # One segment in flight: the core's buffers are lent, not copied.
        # More: each segment copies what it is given, up to its size.
        lend = self.plan.concurrency == 1
        upload = _Upload(self.account, 2 * CHUNK if lend else self.plan.segment_size, lend)
        self.started.append(upload)
        if not self._may_end_in_first_segment():
            self._start_segment(upload)
        return upload

    def _may_end_in_first_segment(self) -> bool:
        """An image of unknown size may fit one segment: with buffered
        segments, its first one waits to see (then it is a plain object)."""
        return self.left is None and self.plan.concurrency > 1 and len(self.started) == 1

    def _start_segment(self, upload: _Upload) -> None:
        index = self.started.index(upload)
        length = None if self.left is None else min(self.plan.segment_size,
                                                    self.left + upload.sent)
        upload.start(self.plan.segment_container, f"{self.prefix}{index:08d}", length, {})
        self.in_flight.append(upload)
        # At most ``concurrency`` segments in flight besides the one being fed.
        while len(self.in_flight) > self.plan.concurrency + 1:
            self._settle()

    def _segment_full(self) -> None:
        upload, self.current = self.current, None
        assert upload is not None
        if self.left is not None:
            self.left -= upload.sent
        if not upload.started:
            self._start_segment(upload)
        upload.pipe.end()
        while len(self.in_flight) > self.plan.concurrency:
            self._settle()

    def _settle(self) -> None:
        upload = self.in_flight.popleft()
        etag = upload.wait(self.plan.timeout)
        self.done.append((upload.name, etag, upload.sent))

    # -- the end -----------------------------------------------------------

    def commit(self) -> Stored:
        plan = self.plan
        started = time.monotonic()
        if self.image is not None:
            etag = self.image.wait(plan.timeout)
            self.current = None
            return self._verified(etag, started)
        current, self.current = self.current, None
        if current is not None and not current.started:
            # Unknown size, everything in the first segment: a plain object.
            self.started.remove(current)
            self.image = current
            current.start(plan.container, plan.obj, current.sent, {"If-None-Match": "*"})
            return self._verified(current.wait(plan.timeout), started)
        if current is not None:
            if self.left is not None:
                self.left -= current.sent
            current.pipe.end()
        while self.in_flight:
            self._settle()
        self.manifest_tried = True
        started = time.monotonic()
        with self.account.connection() as conn:
            if not self.done:      # no data at all
                etag = conn.put_object(plan.container, plan.obj, b"", content_length=0,
                                       headers={"If-None-Match": "*"})
            else:
                manifest = json.dumps([
                    {"path": f"/{plan.segment_container}/{name}", "etag": etag,
                     "size_bytes": size} for name, etag, size in self.done])
                etag = conn.put_object(plan.container, plan.obj, manifest.encode(),
                                       query_string="multipart-manifest=put",
                                       headers={"If-None-Match": "*"})
        return self._verified(str(etag), started)

    def _verified(self, etag: str, started: float) -> Stored:
        try:
            confirm_landed(self.account, self.plan.container, self.plan.obj, etag, started)
        except errors.Duplicate:
            self.lost = True
            raise
        return Stored(self.plan.location)

    def abort(self) -> None:
        uploads = [*self.started, *([self.image] if self.image else [])]
        for upload in uploads:
            if upload.started and upload.sent and upload.sent == upload.length \
                    and not upload.result.done():
                # Every byte went: Swift answers soon; know whether it landed.
                with contextlib.suppress(Exception):
                    upload.wait(self.plan.timeout)
            upload.cancel()
        if self.lost:
            pass            # the object is another writer's
        elif self.image is not None and self.image.landed:
            delete_objects(self.account, [(self.plan.container, self.plan.obj)])
        elif self.manifest_tried:
            self._remove_manifest_if_ours()
        names = [(self.plan.segment_container, u.name) for u in self.started if u.started]
        delete_objects(self.account, names, self.plan.concurrency + 1)
        self.started.clear()
        self.in_flight.clear()
        self.image = self.current = None

    def _remove_manifest_if_ours(self) -> None:
        """The manifest PUT failed without an answer: it may have landed."""
        remove_manifest_if_ours(self.account, self.plan.container, self.plan.obj,
                                f"/{self.plan.segment_container}/{self.prefix}")


def confirm_landed(account: Account, container: str, obj: str, etag: str,
                   started: float) -> None:
    """Swift checks ``If-None-Match: *`` when a PUT starts, so two writers
    of one id that commit at the same moment both succeed and the later
    timestamp wins. Look again, at once and after about twice the PUT's
    time (it started at ``started``, monotonic): if the object is not the
    one written here (``etag``), this write lost: Duplicate."""
    pause = max(0.05, 2 * (time.monotonic() - started))
    for delay in (0.0, pause):
        time.sleep(delay)
        headers = account.call(lambda conn: conn.head_object(container, obj))
        if headers.get("etag", "").strip('"') != etag.strip('"'):
            raise errors.Duplicate(f"image {obj!r} was stored by another "
                                   "writer at the same moment; this copy was dropped")


def remove_manifest_if_ours(account: Account, container: str, obj: str,
                            segments: str) -> None:
    """Delete the SLO manifest ``container/obj`` if it lists segments whose
    path starts with ``segments`` (``/<segment container>/<object>/<upload id>/``):
    a manifest PUT that failed without an answer may have landed."""
    try:
        headers = account.call(lambda conn: conn.head_object(
            container, obj, query_string="multipart-manifest=get"))
        if headers.get("x-static-large-object", "").lower() != "true":
            return      # another writer's plain object
        _, body = account.call(lambda conn: conn.get_object(
            container, obj, query_string="multipart-manifest=get"))
    except client_exception() as exc:
        if exc.http_status == 404:
            return
        raise
    if any(str(s.get("name", "")).startswith(segments) for s in json.loads(body)):
        delete_objects(account, [(container, obj)])


@functools.cache
def _body_class() -> Any:
    from swiftclient.utils import LengthWrapper  # type: ignore[import-untyped]

    class Body(LengthWrapper):  # type: ignore[misc]
        """swiftclient's LengthWrapper, which tells the pipe when the last
        piece went (it asks for more: the lent buffer is free)."""

        def read(self, size: int = -1) -> Any:
            if self._remaining <= 0:
                self._readable.read(0)
                return b""
            return super().read(size)

    return Body


def _body(pipe: _Pipe, length: int) -> Any:
    return _body_class()(pipe, length)


def delete_objects(account: Account, names: Iterable[tuple[str, str]],
                   workers: int = 1) -> None:
    """Delete (container, object) pairs, several at once; missing ones are fine.
    Names are sent as they are: never unquoted, so '%' in a name is kept.
    The first failure stops the rest (a server that does not answer is not
    asked again for every segment: what is left, a sweep removes)."""
    names = list(names)
    failed = threading.Event()

    def delete_one(name: tuple[str, str]) -> None:
        if failed.is_set():
            return
        try:
            account.call(lambda conn: conn.delete_object(*name), "deleting an object")
        except client_exception() as exc:
            if exc.http_status != 404:
                failed.set()
                raise
        except BaseException:
            failed.set()
            raise

    if len(names) <= 1 or workers <= 1:
        for name in names:
            delete_one(name)
        return
    with ThreadPoolExecutor(min(workers, len(names), 8),
                            thread_name_prefix="swift-delete") as pool:
        for future in [pool.submit(delete_one, n) for n in names]:
            future.result()


__all__ = ["SwiftWriter", "Plan", "delete_objects", "segment_prefix", "split_segment",
           "confirm_landed", "remove_manifest_if_ours", "MAX_SEGMENTS", "UPLOAD_ID_BYTES"]
