"""Copies inside one Swift cluster (:meth:`SwiftDriver.copy_within`).

**Which pairs.** The source's and the target's storage URLs must differ at
most in the account: same scheme, host, port and version path, so the
target's proxy is the very service that holds the source (two endpoints of
one cluster are not recognised as such: they stream, which is always
right). The source must be readable with the target's credentials (another
account, or another user of the same one): a HEAD of the image and of its
first segment, made with them, must see what the source's own credentials
see (same ETag and timestamp). Anything else
(another cluster, no read access, an SLO manifest with nested manifests,
ranges or inline data, more pieces than Swift accepts in a manifest)
returns ``None``: the core streams the copy.

**How.** Every piece of the source (the object itself, the segments of
its SLO manifest, or the objects a glance Dynamic Large Object lists) is
copied by the Swift proxy (``PUT`` with ``X-Copy-From``, and
``X-Copy-From-Account`` across accounts) into the target's segment
container under the writer's names (``<image id>/<upload id>/<index>``),
a few at a time. ``If-Match`` makes the proxy refuse a source piece whose
ETag is not the one listed, and the copy middleware sends the source's ETag
with the new object, so the object server refuses bytes whose md5 differs
(422): each target segment is stored only if the md5 Swift computed of it
equals the source's. Then a Static Large Object manifest listing those
ETags and sizes (Swift checks them once more) is written with
``If-None-Match: *``. The target never refers to the source's segments:
deleting the source leaves the copy whole.

The image is always an SLO, of one segment for a plain source object: a
plain ``PUT`` + ``X-Copy-From`` to the final name would be finished by the
proxy even after this process died, leaving an image nobody recorded; a
dead copy leaves only segments, which :meth:`~multistore.StoreSet.sweep`
recognises. On any failure every segment copied is deleted.

The copy returns :class:`~multistore.driver.Vouched`: the size, the number
of pieces whose md5 Swift compared, and the whole image's md5 when there is
one piece (a plain object's ETag is the md5 of its bytes; an SLO's is not).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import secrets
import threading
import time
import urllib.parse
from typing import Any

from multistore import errors
from multistore.driver import Stored, Vouched
from multistore.drivers.swift.auth import Account, client_exception
from multistore.drivers.swift.locations import SwiftLocation
from multistore.drivers.swift.reading import is_slo, Segments
from multistore.drivers.swift.writing import (MAX_SEGMENTS, UPLOAD_ID_BYTES, confirm_landed,
                                              delete_objects, remove_manifest_if_ours,
                                              segment_prefix)

LOG = logging.getLogger(__name__)
#: Pieces copied at once (each copy is a request the proxy serves to its end).
COPY_WORKERS = 4
#: A server-side copy answers when it is done: it may take swift_store_timeout
#: plus a second for every this many bytes.
SLOWEST_COPY_RATE = 10 * 1000 * 1000


@dataclasses.dataclass(frozen=True)
class Piece:
    """One object of the source whose bytes are a run of the image."""

    container: str
    name: str
    etag: str
    size: int


@dataclasses.dataclass(frozen=True)
class Side:
    """One end of a copy: the account and where it is."""

    account: Account
    location: SwiftLocation
    endpoint: tuple[str, str, str]      # scheme, host:port, version path
    account_name: str


def side(account: Account, location: SwiftLocation) -> Side:
    parts = urllib.parse.urlsplit(account.endpoint().rstrip("/"))
    path, _, name = parts.path.rpartition("/")
    return Side(account, location, (parts.scheme.lower(), parts.netloc.lower(), path),
                urllib.parse.unquote(name))


def unreadable(exc: BaseException) -> bool:
    """A refusal that means: these credentials cannot read that account."""
    return isinstance(exc, client_exception()) and exc.http_status in (401, 403, 404)


class SwiftCopy:
    """One copy of an image from ``source`` into ``target``'s location."""

    def __init__(self, store_id: str, source: Side, target: Side, segment_container: str,
                 timeout: float) -> None:
        self.store_id = store_id
        self.source = source
        self.target = target
        self.segment_container = segment_container
        self.timeout = timeout
        self.image_id = target.location.image_id
        self.prefix = segment_prefix(self.image_id, secrets.token_hex(UPLOAD_ID_BYTES))
        self.started: list[str] = []
        self.lock = threading.Lock()
        self.manifest_tried = False

    @property
    def cross_account(self) -> bool:
        return self.source.account_name != self.target.account_name

    # -- what is copied ------------------------------------------------------

    def pieces(self) -> list[Piece] | None:
        """The source's pieces in order (empty ones left out), or None when
        this driver does not copy its shape inside Swift."""
        account, loc = self.source.account, self.source.location
        headers = account.call(lambda conn: conn.head_object(
            loc.container, loc.image_id, query_string="multipart-manifest=get"))
        self.source_headers = headers
        if is_slo(headers):
            _, body = account.call(lambda conn: conn.get_object(
                loc.container, loc.image_id, query_string="multipart-manifest=get"))
            listing = json.loads(body)
            if not Segments.simple(listing):
                LOG.info("store %s: %s is an SLO of nested manifests, ranges or inline "
                         "data: streamed, not copied inside Swift", self.store_id, loc)
                return None
            segments = Segments(listing)
            pieces = [Piece(c, n, etag, size) for (c, n), etag, size
                      in zip(segments.paths, segments.etags, segments.sizes, strict=True)]
        elif headers.get("x-object-manifest"):
            # A glance DLO: the objects under <container>/<prefix>, in name order.
            container, _, prefix = urllib.parse.unquote(
                headers["x-object-manifest"]).partition("/")
            listing = account.call(lambda conn: conn.get_container(
                container, prefix=prefix, full_listing=True))[1]
            pieces = [Piece(container, str(o["name"]), str(o["hash"]), int(o["bytes"]))
                      for o in listing]
        else:
            pieces = [Piece(loc.container, loc.image_id, headers.get("etag", "").strip('"'),
                            int(headers.get("content-length", 0)))]
        pieces = [p for p in pieces if p.size]
        if len(pieces) > MAX_SEGMENTS:
            LOG.info("store %s: %s has %d pieces, more than a manifest holds: streamed",
                     self.store_id, loc, len(pieces))
            return None
        return pieces

    def readable(self, pieces: list[Piece]) -> bool:
        """Whether the target's credentials see the source as the source's
        own do (the image object and its first piece): another account, or
        another user of the same one, may not be allowed to read it."""
        if self.source.account is self.target.account:
            return True
        loc = self.source.location
        probes = [(loc.container, loc.image_id, self.source_headers)]
        if pieces and (pieces[0].container, pieces[0].name) != (loc.container, loc.image_id):
            probes.append((pieces[0].container, pieces[0].name, None))
        for container, name, theirs in probes:
            try:
                seen = self.target.account.head_elsewhere(self.source.account_name,
                                                          container, name)
                if theirs is None:
                    theirs = self._head_source(container, name)
            except client_exception() as exc:
                if unreadable(exc):
                    LOG.info("store %s: its credentials cannot read %s/%s of account %s: "
                             "streamed, not copied inside Swift", self.store_id, container,
                             name, self.source.account_name)
                    return False
                raise
            if any(seen.get(h) != theirs.get(h) for h in ("etag", "x-timestamp")):
                LOG.info("store %s: %s/%s of account %s differs seen with its "
                         "credentials: streamed", self.store_id, container, name,
                         self.source.account_name)
                return False
        return True

    def _head_source(self, container: str, name: str) -> dict[str, str]:
        def head(conn: Any) -> dict[str, str]:
            return conn.head_object(  # type: ignore[no-any-return]
                container, name, query_string="multipart-manifest=get")
        return self.source.account.call(head)

    # -- copying ---------------------------------------------------------------

    def run(self, pieces: list[Piece]) -> Stored:
        try:
            return self._run(pieces)
        except BaseException:
            self.abort()
            raise

    def _run(self, pieces: list[Piece]) -> Stored:
        target = self.target
        loc = target.location
        if not pieces:
            # An empty image: an empty object, as the writer stores it.
            started = time.monotonic()
            self.manifest_tried = True
            with target.account.connection() as conn:
                etag = str(conn.put_object(loc.container, loc.image_id, b"",
                                           content_length=0,
                                           headers={"If-None-Match": "*"}))
            self._confirm(etag, started)
            return Stored(loc, vouched=Vouched(0, etag.strip('"'), 0))
        target.account.ensure_container(self.segment_container)
        names = [f"{self.prefix}{index:08d}" for index in range(len(pieces))]
        with concurrent.futures.ThreadPoolExecutor(
                min(COPY_WORKERS, len(pieces)), thread_name_prefix="swift-copy") as pool:
            futures = [pool.submit(self.copy_piece, index, piece, name)
                       for index, (piece, name) in enumerate(zip(pieces, names, strict=True))]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        manifest = json.dumps([{"path": f"/{self.segment_container}/{name}",
                                "etag": piece.etag, "size_bytes": piece.size}
                               for piece, name in zip(pieces, names, strict=True)])
        started = time.monotonic()
        self.manifest_tried = True
        with target.account.connection() as conn:
            etag = str(conn.put_object(loc.container, loc.image_id, manifest.encode(),
                                       query_string="multipart-manifest=put",
                                       headers={"If-None-Match": "*"}))
        self._confirm(etag, started)
        size = sum(p.size for p in pieces)
        return Stored(loc, vouched=Vouched(size, pieces[0].etag if len(pieces) == 1
                                           else None, len(pieces)))

    def copy_piece(self, index: int, piece: Piece, name: str) -> None:
        """Copy one piece inside Swift to ``name``; its new ETag must be the piece's."""
        headers = {"X-Copy-From": urllib.parse.quote(f"/{piece.container}/{piece.name}"),
                   "If-Match": piece.etag, "X-Fresh-Metadata": "true"}
        if self.cross_account:
            headers["X-Copy-From-Account"] = urllib.parse.quote(self.source.account_name,
                                                                safe="")
        with self.lock:
            self.started.append(name)
        what = f"segment {index} ({piece.container}/{piece.name})"
        try:
            etag = self.target.account.call_patiently(
                lambda conn: conn.put_object(self.segment_container, name, None,
                                             headers=headers),
                self.timeout + piece.size / SLOWEST_COPY_RATE, "copying inside swift")
        except client_exception() as exc:
            if exc.http_status == 404:
                raise errors.NotFound(
                    f"image {self.image_id}: {what} of the source is missing (or its "
                    "segment container): nothing was copied") from None
            if exc.http_status == 412:
                raise errors.ChecksumMismatch(
                    f"image {self.image_id}: {what} of the source is no longer the one its "
                    f"manifest lists (ETag {piece.etag}): nothing was copied") from None
            if exc.http_status == 422:
                raise errors.ChecksumMismatch(
                    f"image {self.image_id}: swift refused the copy of {what}: the md5 of "
                    f"the bytes it read is not the source's ETag {piece.etag} (the source "
                    "is damaged); nothing was copied") from None
            raise
        if str(etag).strip('"') != piece.etag:
            raise errors.ChecksumMismatch(
                f"image {self.image_id}: the copy of {what} has md5 {etag}, the source's "
                f"is {piece.etag}: nothing was copied")

    def _confirm(self, etag: str, started: float) -> None:
        loc = self.target.location
        try:
            confirm_landed(self.target.account, loc.container, loc.image_id, etag, started)
        except errors.Duplicate:
            self.manifest_tried = False        # the object there is another writer's
            raise

    def abort(self) -> None:
        """Remove every segment copied (and the manifest, if it landed)."""
        account, loc = self.target.account, self.target.location
        try:
            if self.manifest_tried:
                remove_manifest_if_ours(account, loc.container, loc.image_id,
                                        f"/{self.segment_container}/{self.prefix}")
            with self.lock:
                names = [(self.segment_container, n) for n in self.started]
            delete_objects(account, names, COPY_WORKERS)
        except Exception as exc:  # noqa: BLE001 - the sweep removes what is left
            LOG.warning("store %s: removing the segments of a failed copy of image %s "
                        "failed (%s); multistore sweep removes them", self.store_id,
                        self.image_id, type(exc).__name__)


def refusal(source: Side, target: Side) -> str | None:
    """Why this pair is not copied inside Swift, or None."""
    if source.endpoint != target.endpoint:
        return "the source is behind another Swift endpoint"
    return None


__all__ = ["SwiftCopy", "Side", "Piece", "side", "refusal"]
