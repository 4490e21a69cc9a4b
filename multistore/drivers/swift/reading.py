"""Reading an image from Swift, whole or a range, resumed where it breaks.

The first request asks for the object with ``multipart-manifest=get``: a
plain object answers with its bytes, a Static Large Object with its
manifest. The segments of a manifest are then read directly, one after
the other on one connection, each with ``If-Match`` its etag in the
manifest (the object server compares it with what it stored): the proxy
then serves plain objects, without the large-object middleware's second
md5 of every byte. Manifests this driver did not write (nested, with
ranges or inline data) and glance's Dynamic Large Objects are read
through the proxy as before.

A body that breaks is resumed at the first byte not delivered, up to
``swift_store_retry_get_count`` times in a row without progress
(:class:`multistore.retry.ResumingRead`); a plain object is resumed with
``If-Match`` its etag, so an object replaced meanwhile is an error, never
a mix of two images.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from typing import Any, NoReturn

from multistore import errors
from multistore.driver import ReadStream
from multistore.drivers.swift.auth import Account, client_exception, retryable
from multistore.drivers.swift.locations import SwiftLocation
from multistore.retry import ResumingRead, RetryPolicy, ShortBody

#: Bytes per read of a response body.
READ_CHUNK = 1024 * 1024


class Segments:
    """The segments of an SLO manifest: paths, etags, sizes, start offsets."""

    def __init__(self, listing: list[dict[str, Any]]) -> None:
        self.paths: list[tuple[str, str]] = []
        self.etags: list[str] = []
        self.sizes: list[int] = []
        self.starts: list[int] = []
        total = 0
        for entry in listing:
            container, _, obj = str(entry["name"]).lstrip("/").partition("/")
            self.paths.append((container, obj))
            self.etags.append(str(entry["hash"]))
            self.sizes.append(int(entry["bytes"]))
            self.starts.append(total)
            total += int(entry["bytes"])
        self.total = total

    @staticmethod
    def simple(listing: Any) -> bool:
        """Whether every entry is a whole plain segment (what this driver writes)."""
        return isinstance(listing, list) and all(
            isinstance(e, dict) and "name" in e and "hash" in e and "bytes" in e
            and not e.get("sub_slo") and "range" not in e and "data" not in e
            for e in listing)


class SwiftRead:
    """One open read; :meth:`open` returns its :class:`ReadStream`."""

    def __init__(self, account: Account, location: SwiftLocation, offset: int,
                 length: int | None, resumes: int) -> None:
        self.account = account
        self.loc = location
        self.offset = offset
        self.length = length
        self.policy = RetryPolicy(attempts=resumes, first_backoff=0.2, max_backoff=2.0,
                                  retryable=retryable)
        self.conn: Any = None
        self.complete = False

    # -- connection --------------------------------------------------------

    def _connection(self, fresh: bool = False) -> Any:
        if fresh and self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.conn is None:
            self.conn = self.account.take()
        return self.conn

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self.account.release(conn, self.complete)

    def _get(self, container: str, obj: str, start: int = 0, end: int | None = None,
             etag: str | None = None, manifest: bool = False,
             fresh: bool = False) -> tuple[dict[str, str], Any]:
        """GET bytes ``start`` to ``end`` (exclusive; None: to the end)."""
        headers = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        if etag:
            headers["If-Match"] = etag
        try:
            return self._connection(fresh).get_object(  # type: ignore[no-any-return]
                container, obj, resp_chunk_size=READ_CHUNK, headers=headers,
                query_string="multipart-manifest=get" if manifest else None)
        except client_exception() as exc:
            if exc.http_status == 412:
                raise errors.DataMismatch(f"{container}/{obj} changed while being read "
                                          "(its etag is not the one it had)") from None
            raise
        except Exception:
            self._connection(fresh=True)   # the connection may be broken
            raise

    # -- opening -------------------------------------------------------------

    def open(self) -> ReadStream:
        try:
            stream = self._open()
        except BaseException:
            self.close()
            raise
        if stream.size == 0:
            self.complete = True
            self.close()
        return stream

    def _open(self) -> ReadStream:
        loc = self.loc
        ranged = bool(self.offset) or self.length is not None
        end = None if self.length is None else self.offset + self.length
        if self.length == 0:
            self.account.call(lambda conn: conn.head_object(loc.container, loc.image_id))
            return ReadStream(iter(()), 0)
        try:
            headers, body = self._get(loc.container, loc.image_id, self.offset, end,
                                      manifest=True)
        except client_exception() as exc:
            if exc.http_status != 416:
                raise
            # Past the end of a plain object, or of a manifest's listing.
            headers = self.account.call(lambda conn: conn.head_object(
                loc.container, loc.image_id, query_string="multipart-manifest=get"))
            if headers.get("x-object-manifest"):
                # A DLO's manifest is an empty object: the range is past its
                # end, not past the image's.
                return self._through_proxy()
            if not is_slo(headers):
                return ReadStream(iter(()), 0)
            headers, body = self._get(loc.container, loc.image_id, manifest=True)
            ranged = False
        if is_slo(headers):
            if ranged and "content-range" in headers:
                body.close()
                headers, body = self._get(loc.container, loc.image_id, manifest=True)
            listing = json.loads(b"".join(body))
            if Segments.simple(listing):
                return self._segmented(Segments(listing))
            return self._through_proxy()
        if headers.get("x-object-manifest"):
            body.close()
            return self._through_proxy()
        return self._plain(headers, body)

    def _plain(self, headers: dict[str, str], body: Any) -> ReadStream:
        size = int(headers.get("content-length", 0))
        etag = headers.get("etag")
        first: list[Any] = [body]

        def open_at(position: int) -> Any:
            if first:
                return first.pop()
            return self._get(self.loc.container, self.loc.image_id, position,
                             self.offset + size, etag, manifest=True, fresh=True)[1]
        return self._stream(open_at, size)

    def _through_proxy(self) -> ReadStream:
        """A large object the proxy assembles (DLO, or an SLO of another shape)."""
        end = None if self.length is None else self.offset + self.length
        try:
            headers, body = self._get(self.loc.container, self.loc.image_id, self.offset, end)
        except client_exception() as exc:
            if exc.http_status != 416:
                raise
            return ReadStream(iter(()), 0)
        size = int(headers.get("content-length", 0))
        first: list[Any] = [body]

        def open_at(position: int) -> Any:
            if first:
                return first.pop()
            return self._get(self.loc.container, self.loc.image_id, position,
                             self.offset + size, fresh=True)[1]
        return self._stream(open_at, size)

    def _segmented(self, segments: Segments) -> ReadStream:
        start = min(self.offset, segments.total)
        end = segments.total if self.length is None else min(segments.total,
                                                              self.offset + self.length)

        opened = [False]

        def open_at(position: int) -> Iterator[bytes]:
            fresh, opened[0] = opened[0], True     # a resume: a new connection
            index = bisect.bisect_right(segments.starts, position) - 1
            while position < end:
                seg_start = segments.starts[index]
                seg_end = seg_start + segments.sizes[index]
                lo, hi = position - seg_start, min(end, seg_end) - seg_start
                whole = lo == 0 and hi == segments.sizes[index]
                container, obj = segments.paths[index]
                try:
                    _, body = self._get(container, obj, 0 if whole else lo,
                                        None if whole else hi, segments.etags[index],
                                        fresh=fresh)
                except client_exception() as exc:
                    if exc.http_status != 404:
                        raise
                    self._missing_segment(container, obj)
                fresh = False
                got = 0
                try:
                    for chunk in body:
                        got += len(chunk)
                        if got > hi - lo:
                            raise errors.SizeMismatch(f"segment {obj} is longer than "
                                                      "its manifest says")
                        yield chunk
                finally:
                    body.close()
                if got < hi - lo:
                    raise ShortBody(f"segment {obj} ended {hi - lo - got} bytes early")
                position += got
                index += 1
        return self._stream(open_at, end - start, start)

    def _missing_segment(self, container: str, obj: str) -> NoReturn:
        """A segment is gone: the image was deleted meanwhile (NotFound), or
        is damaged (its manifest is still there)."""
        loc = self.loc
        try:
            self.account.call(lambda conn: conn.head_object(loc.container, loc.image_id))
        except client_exception() as exc:
            if exc.http_status == 404:
                raise errors.NotFound(f"{loc} was deleted while being read") from None
            raise
        raise errors.MultistoreError(f"segment {container}/{obj} of {loc} is missing: "
                                     "the image is damaged")

    def _stream(self, open_at: Any, size: int, offset: int | None = None) -> ReadStream:
        reader = ResumingRead(open_at, self.offset if offset is None else offset, size,
                              self.policy, what=str(self.loc))
        return ReadStream(self._watch(reader), size, self.close)

    def _watch(self, reader: ResumingRead) -> Iterator[bytes]:
        yield from reader
        self.complete = True


def is_slo(headers: dict[str, str]) -> bool:
    return str(headers.get("x-static-large-object", "")).lower() == "true"


__all__ = ["SwiftRead", "READ_CHUNK"]
