"""Moving images out of a store: copy, verify by reading back, then (if asked) delete.

An operator retiring a store feeds :meth:`multistore.StoreSet.move` (or
``multistore move``) the location records of the images in it, one JSON
object per line, as an image service keeps them::

    {"image_id": "...", "url": "rbd://...", "metadata": {"store": "old"},
     "checksum": "<md5, optional>"}

For each image, every target store gets one copy (the source is read once
for all of them), each copy is read back and its size, md5 and multihash
compared with the source's, and only when every target verified is the
source deleted, if ``delete_source`` was asked. A journal (JSON lines,
flushed and synced after each step) records what was verified and deleted:
a run interrupted at any point, even by ``kill -9``, resumes where it
stopped without copying anything twice (a copy that was committed but not
yet journaled is found in its store and verified instead of copied again).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from multistore import errors
from multistore.context import Context
from multistore.location import redact
from multistore.progress import Callback

if TYPE_CHECKING:
    from multistore.storeset import StoreSet

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MoveRecord:
    """One image to move: its source location and, if known, its md5."""

    url: str
    image_id: str | None = None
    store: str | None = None
    checksum: str | None = None

    @classmethod
    def of(cls, value: Mapping[str, Any] | str) -> MoveRecord:
        if isinstance(value, str):
            return cls(value)
        url = value.get("url")
        if not isinstance(url, str):
            raise errors.BadLocation(f"a record needs a 'url': {sorted(value)}")
        metadata = value.get("metadata") or {}
        return cls(url, value.get("image_id") or value.get("id"),
                   metadata.get("store") if isinstance(metadata, Mapping) else None,
                   value.get("checksum"))


@dataclasses.dataclass
class MoveResult:
    """What happened to one image: the line an operator feeds back into the
    image service's database (old location, new locations)."""

    image_id: str
    source: str
    source_store: str
    targets: dict[str, str] = dataclasses.field(default_factory=dict)
    copied: list[str] = dataclasses.field(default_factory=list)
    verified: bool = False
    source_deleted: bool = False
    dry_run: bool = False
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "old": self.source,
                "old_store": self.source_store,
                "new": [{"url": url, "metadata": {"store": store}}
                        for store, url in self.targets.items()],
                "copied": self.copied, "verified": self.verified,
                "source_deleted": self.source_deleted, "dry_run": self.dry_run,
                "error": self.error}


class Journal:
    """JSON lines of verified targets and deleted sources; safe across threads."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.verified: dict[tuple[str, str], dict[str, str]] = {}
        self.deleted: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        entry = json.loads(line)
                        key = (entry["image_id"], entry["source"])
                        if entry["event"] == "verified":
                            self.verified.setdefault(key, {})[entry["store"]] = entry["url"]
                        elif entry["event"] == "source_deleted":
                            self.deleted.add(key)
                    except (ValueError, KeyError, TypeError):
                        # The last line of a run killed mid-write: ignored.
                        LOG.warning("journal %s: line %d is unreadable, ignored", path, number)

    def record(self, **entry: str) -> None:
        if not self.path:
            return
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            key = (entry["image_id"], entry["source"])
            if entry["event"] == "verified":
                self.verified.setdefault(key, {})[entry["store"]] = entry["url"]
            elif entry["event"] == "source_deleted":
                self.deleted.add(key)


class Mover:
    """Runs a move; see :meth:`multistore.StoreSet.move`."""

    def __init__(self, stores: StoreSet, to: Sequence[str], *, delete_source: bool,
                 journal: str | None, dry_run: bool, hashing_algo: str,
                 progress: Callable[[str], Callback] | None, context: Context,
                 offload: bool = False) -> None:
        if not to:
            raise errors.BadLocation("no target store given", operation="move")
        for target in to:
            store = stores[target]
            store.require("add")
        self.stores = stores
        self.to = list(to)
        self.delete_source = delete_source
        self.journal = Journal(journal)
        self.dry_run = dry_run
        self.hashing_algo = hashing_algo
        self.progress = progress
        self.context = context
        self.offload = offload

    def run(self, records: Iterable[Any], parallel: int = 1) -> Iterator[MoveResult]:
        records = (MoveRecord.of(r) for r in records)
        if parallel <= 1:
            for record in records:
                yield self.one(record)
            return
        with concurrent.futures.ThreadPoolExecutor(
                max_workers=parallel, thread_name_prefix="multistore-move") as pool:
            pending: set[concurrent.futures.Future[MoveResult]] = set()
            for record in records:
                pending.add(pool.submit(self.one, record))
                if len(pending) >= 2 * parallel:
                    done, pending = concurrent.futures.wait(
                        pending, return_when=concurrent.futures.FIRST_COMPLETED)
                    yield from (f.result() for f in done)
            for future in concurrent.futures.as_completed(pending):
                yield future.result()

    def one(self, record: MoveRecord) -> MoveResult:
        """Move one image; errors are reported in the result, never raised."""
        try:
            source = self.stores.store_for(record.url, record.store)
            image_id = record.image_id or source.copy_image_id(record.url, self.context)
        except errors.MultistoreError as exc:
            return MoveResult(record.image_id or "?", redact(record.url), record.store or "?",
                              error=str(exc))
        result = MoveResult(image_id, record.url, source.id, dry_run=self.dry_run)
        key = (image_id, record.url)
        done = dict(self.journal.verified.get(key, {}))
        result.targets.update({s: u for s, u in done.items() if s in self.to})
        missing = [t for t in self.to if t not in done and t != source.id]
        try:
            if self.dry_run:
                result.copied = missing
                return result
            if missing:
                self._copy(record, image_id, missing, result)
            result.verified = all(t in result.targets for t in self.to if t != source.id)
            if self.delete_source and result.verified:
                self._delete_source(record, source.id, key, result)
        except errors.MultistoreError as exc:
            result.error = str(exc)
            LOG.error("moving image %s failed; its source is kept: %s", image_id, exc)
        return result

    def _copy(self, record: MoveRecord, image_id: str, targets: list[str],
              result: MoveResult) -> None:
        # A copy committed by a run killed before its journal line is found
        # where its store puts the image: verified, not copied again.
        urls = self._existing(image_id, targets)
        source: tuple[int, str, str] | None = None
        read_back: dict[str, tuple[int, str, str]] = {}
        fresh = [t for t in targets if t not in urls]
        if fresh:
            checksum = record.checksum
            if self.offload:
                # A copy made inside the backend was hashed from its own
                # bytes, not the source's: the source is read to have
                # something to check it (and every copy) against.
                source = self._digest(record.url, record.store)
                checksum = checksum or source[1]
            progress = self.progress(image_id) if self.progress else None
            try:
                copies = self.stores.copy(record.url, fresh, store=record.store,
                                          image_id=image_id, hashing_algo=self.hashing_algo,
                                          checksum=checksum, progress=progress,
                                          offload=self.offload, context=self.context)
            finally:
                if progress is not None:
                    progress.close()
            if source is None:
                # The copy hashed the source's bytes on their way to every target.
                source = (copies[0].size, copies[0].checksum, copies[0].multihash)
            urls.update({c.store: c.location for c in copies})
            # A copy made inside the backend was already read back by the
            # copy: its digests are the stored bytes', not read a second time.
            read_back.update({c.store: (c.size, c.checksum, c.multihash)
                              for c in copies if c.read_back})
        else:
            source = self._digest(record.url, record.store)
        result.copied = [t for t in targets if t in urls]
        for store, url in urls.items():
            got = read_back.get(store) or self._digest(url, store)
            if got != source:
                raise errors.ChecksumMismatch(
                    f"image {image_id}: the copy in store {store} reads back as "
                    f"{got[0]} bytes, md5 {got[1]}; the source has {source[0]} bytes, "
                    f"md5 {source[1]}; the source is kept", store=store, operation="move")
            self.journal.record(event="verified", image_id=image_id, source=record.url,
                                store=store, url=url)
            result.targets[store] = url

    def _existing(self, image_id: str, targets: list[str]) -> dict[str, str]:
        urls = {}
        for target in targets:
            url = self.stores[target].driver.location_for(image_id, self.context).format()
            try:
                self.stores.get_size(url, store=target, context=self.context)
            except errors.NotFound:
                continue
            urls[target] = url
        return urls

    def _digest(self, url: str, store: str | None) -> tuple[int, str, str]:
        """Size, md5 and multihash of an image, read from its store."""
        size, (md5, multihash) = self.stores.digest(url, ["md5", self.hashing_algo],
                                                    store=store, context=self.context)
        return size, md5, multihash

    def _delete_source(self, record: MoveRecord, source: str, key: tuple[str, str],
                       result: MoveResult) -> None:
        if key in self.journal.deleted:
            result.source_deleted = True
            return
        store = self.stores[source]
        if store.conf.read_only or not store.capabilities.delete:
            result.error = (f"the source store {source} is read-only: every copy verified, "
                            "the source is kept")
            return
        with contextlib.suppress(errors.NotFound):     # deleted by an earlier run
            self.stores.delete(record.url, store=source, context=self.context)
        self.journal.record(event="source_deleted", image_id=result.image_id,
                            source=record.url, store=source, url=record.url)
        result.source_deleted = True


__all__ = ["MoveRecord", "MoveResult", "Mover", "Journal"]
