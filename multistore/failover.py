"""Reading an image from the best of its copies, and from the next one when that fails.

An image service keeps several locations per image (Glance: ``[{"url": ...,
"metadata": {"store": ...}}, ...]``). :class:`FailoverReader` orders them
(higher store ``weight`` first, the given order among equals), opens the
first that answers, and when a copy fails before its first byte or in the
middle (a server gone, a connection reset, a copy found short), continues
from the same byte on the next copy: the consumer sees one unbroken stream.
A copy whose size disagrees with the first one's is not used. Every switch
is logged and counted; given the image's md5, a whole read is checked
against it at the end, whichever copies served it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from multistore import errors
from multistore.context import Context
from multistore.location import redact
from multistore.progress import Callback

if TYPE_CHECKING:
    from multistore.storeset import ImageReader, StoreSet

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImageLocation:
    """One copy of an image, in the shape Glance keeps it."""

    url: str
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, value: ImageLocation | Mapping[str, Any] | str) -> ImageLocation:
        if isinstance(value, ImageLocation):
            return value
        if isinstance(value, str):
            return cls(value)
        if not isinstance(value, Mapping) or not isinstance(value.get("url"), str):
            raise errors.BadLocation(f"a location record needs a 'url': {value!r}")
        return cls(value["url"], dict(value.get("metadata") or {}))

    @property
    def store(self) -> str | None:
        store = self.metadata.get("store")
        return store if isinstance(store, str) else None

    def __repr__(self) -> str:
        return f"ImageLocation({redact(self.url)!r}, store={self.store!r})"


@dataclasses.dataclass(frozen=True)
class Switch:
    """The reader left one copy for the next at ``position``."""

    from_store: str
    to_store: str | None
    position: int
    reason: str


class FailoverReader:
    """Iterate for bytes; use as a context manager. ``size`` is the number of
    bytes it yields (``None`` if no copy says); ``switches`` lists every
    change of copy, ``stores`` the copies that served bytes."""

    def __init__(self, stores: StoreSet, locations: Iterable[Any], *, offset: int = 0,
                 length: int | None = None, checksum: str | None = None,
                 progress: Callback | None = None, context: Context = None) -> None:
        if offset < 0 or (length is not None and length < 0):
            raise errors.BadLocation(f"invalid range: offset {offset}, length {length}",
                                     operation="get")
        self._stores = stores
        self._candidates = self._order(stores, [ImageLocation.of(v) for v in locations])
        self._offset = offset
        self._length = length
        self._checksum = checksum if offset == 0 and length is None else None
        self._progress = progress
        self._context = context
        self.switches: list[Switch] = []
        self.stores: list[str] = []
        self.position = offset
        self._reader: ImageReader | None = None
        self._index = -1
        self._failures: list[str] = []
        self._end: int | None = None
        self._open_next()
        self.size = self._reader.size if self._reader is not None else None
        self._end = None if self.size is None else offset + self.size
        if progress is not None:
            progress.set_size(self.size)
        self._chunks = self._read()

    @staticmethod
    def _order(stores: StoreSet, locations: Sequence[ImageLocation]) -> list[tuple[str, str]]:
        """(store id, url) of every usable copy, best first."""
        found = []
        for index, location in enumerate(locations):
            try:
                store = stores.store_for(location.url, location.store)
            except errors.BadLocation as exc:
                LOG.warning("skipping copy %s: %s", redact(location.url), exc)
                continue
            if not store.capabilities.read:
                continue
            found.append((-store.weight, index, store.id, location.url))
        if not found:
            raise errors.BadLocation("none of the image's locations belongs to a "
                                     "configured store that can be read", operation="get")
        return [(store_id, url) for _, _, store_id, url in sorted(found)]

    def _open_next(self) -> None:
        """Open the next copy at the current position; raise when none is left."""
        while self._index + 1 < len(self._candidates):
            self._index += 1
            store_id, url = self._candidates[self._index]
            store = self._stores[store_id]
            remaining = None if self._length is None else \
                self._length - (self.position - self._offset)
            if (self.position or remaining is not None) and not store.capabilities.ranged_read:
                self._failures.append(f"{store_id}: cannot read part of an image")
                continue
            try:
                reader = self._stores.get(url, store=store_id, offset=self.position,
                                          length=remaining, context=self._context)
            except errors.MultistoreError as exc:
                self._note_failure(store_id, exc)
                continue
            expected = None if self._end is None else self._end - self.position
            if expected is not None and reader.size is not None and reader.size != expected:
                reader.close()
                self._note_failure(store_id, errors.SizeMismatch(
                    f"this copy has {reader.size} bytes from byte {self.position}, "
                    f"the first one had {expected}"))
                continue
            self._reader = reader
            return
        self._reader = None
        raise errors.BackendUnavailable(
            f"no copy of the image could be read from byte {self.position}: "
            f"{'; '.join(self._failures) or 'no copies'}",
            store=[s for s, _ in self._candidates], operation="get")

    def _note_failure(self, store_id: str, exc: BaseException) -> None:
        self._failures.append(f"{store_id}: {exc}")
        following = self._candidates[self._index + 1][0] \
            if self._index + 1 < len(self._candidates) else None
        self.switches.append(Switch(store_id, following, self.position, str(exc)))
        LOG.warning("reading from store %s failed at byte %d (%s); %s", store_id,
                    self.position, exc,
                    f"trying store {following}" if following else "no copy left")

    def _read(self) -> Generator[bytes, None, None]:
        md5 = hashlib.md5(usedforsecurity=False) if self._checksum else None
        while self._reader is not None:
            reader = self._reader
            store_id = reader.store
            try:
                for chunk in reader:
                    if store_id not in self.stores:
                        self.stores.append(store_id)
                    self.position += len(chunk)
                    if md5 is not None:
                        md5.update(chunk)
                    if self._progress is not None:
                        self._progress.relative_update(len(chunk))
                    yield chunk
            except errors.MultistoreError as exc:
                reader.close()
                self._note_failure(store_id, exc)
                self._open_next()
                continue
            reader.close()
            if self._end is not None and self.position < self._end:
                self._note_failure(store_id, errors.SizeMismatch(
                    f"the copy ended at byte {self.position} of {self._end}"))
                self._open_next()
                continue
            self._reader = None
        if md5 is not None and md5.hexdigest() != self._checksum:
            raise errors.ChecksumMismatch(
                f"the image read from {', '.join(self.stores)} has md5 "
                f"{md5.hexdigest()}, {self._checksum} was recorded",
                store=self.stores, operation="get")

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def read_all(self) -> bytes:
        return b"".join(self)

    def close(self) -> None:
        self._chunks.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> FailoverReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ImageLocation", "FailoverReader", "Switch"]
