"""Images held in this process's memory, for consumers' unit tests.

Locations are ``memory://<store id>/<image id>``. It behaves like the other
drivers (duplicates refused, partial images never visible, ranged reads,
an optional capacity that turns into StorageFull) and is fast. Each store
instance has its own images: two memory stores share nothing, unless a test
deliberately builds them from ``MemoryDriver.sharing(backend)`` to play two
processes looking at one storage.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, ClassVar

from oslo_config import cfg

from multistore import errors
from multistore.context import Context
from multistore.driver import Capabilities, Driver, Leftover, ReadStream, Stored, Writer
from multistore.location import Location, image_id_problem, quote, split_url, unquote

OPTIONS = [
    cfg.IntOpt("memory_store_capacity", default=0, min=0,
               help="Bytes the store may hold in all (0: no limit); beyond "
                    "it, adds fail with StorageFull."),
    cfg.IntOpt("memory_store_chunk_size", default=1024 * 1024, min=1,
               help="Size in bytes of the chunks images are read in."),
]


@dataclasses.dataclass(frozen=True)
class MemoryLocation(Location):
    """``memory://<store id>/<image id>``, both quoted."""

    scheme: ClassVar[str] = "memory"
    store: str
    image_id: str

    @classmethod
    def parse(cls, url: str) -> MemoryLocation:
        parts = split_url(url, (cls.scheme,))
        store, slash, image = parts.path.partition("/") if not parts.netloc else (
            parts.netloc, "/", parts.path[1:])
        if not slash or not store or not image or "/" in image or parts.query \
                or parts.fragment or url.endswith(("?", "#")):
            raise ValueError("expected memory://<store id>/<image id>")
        image_id = unquote(image)
        why = image_id_problem(image_id)
        if why:
            raise ValueError(f"not an image id: {why}")
        return cls(unquote(store), image_id)

    def format(self) -> str:
        return f"{self.scheme}://{quote(self.store)}/{quote(self.image_id)}"


class MemoryBackend:
    """The storage behind memory stores: images per store id, and a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stores: dict[str, dict[str, bytes]] = {}
        self.reserved: dict[str, int] = {}


class MemoryDriver(Driver[MemoryLocation]):
    schemes = ("memory",)
    location_type = MemoryLocation
    capabilities = Capabilities(read=True, ranged_read=True, write=True, delete=True)
    options = OPTIONS
    #: Set only on classes made by :meth:`sharing`.
    shared_backend: ClassVar[MemoryBackend | None] = None

    @classmethod
    def sharing(cls, backend: MemoryBackend) -> type[MemoryDriver]:
        """A driver class whose stores keep their images in ``backend``, so
        that several store sets (say, one read-only) see the same images."""
        return type("SharedMemoryDriver", (cls,), {"shared_backend": backend})

    def configure(self) -> None:
        self.capacity = self.conf.memory_store_capacity
        self.chunk_size = self.conf.memory_store_chunk_size
        backend = self.shared_backend or MemoryBackend()
        self.lock = backend.lock
        self.images = backend.stores.setdefault(self.store_id, {})
        self._reserved = backend.reserved
        self._reserved.setdefault(self.store_id, 0)

    @property
    def reserved(self) -> int:
        return self._reserved[self.store_id]

    @reserved.setter
    def reserved(self, value: int) -> None:
        self._reserved[self.store_id] = value

    def properties(self) -> dict[str, Any]:
        with self.lock:
            return {"images": len(self.images), "capacity": self.capacity,
                    "used": sum(map(len, self.images.values()))}

    def holds(self, location: MemoryLocation) -> bool:
        return location.store == self.store_id

    def location_for(self, image_id: str, context: Context = None) -> MemoryLocation:
        return self.location_type(self.store_id, image_id)  # type: ignore[return-value]

    def _image(self, location: MemoryLocation) -> bytes:
        with self.lock:
            try:
                return self.images[location.image_id]
            except KeyError:
                raise errors.NotFound(f"no image at {location}") from None

    def copy_within(self, source: Driver[Any], location: Location, image_id: str,
                    context: Context = None) -> Stored | None:
        """Another memory store of the same backend: copied under its lock,
        without the core's streaming."""
        if not isinstance(source, MemoryDriver) or source.lock is not self.lock \
                or not isinstance(location, MemoryLocation):
            return None
        data = source._image(location)
        writer = _MemoryWriter(self, image_id)
        try:
            writer.write(memoryview(data))
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def find_leftovers(self, grace: float, context: Context = None) -> tuple[()]:
        # A memory store lives and dies with its process: nothing outlives a writer.
        return ()

    def remove_leftover(self, leftover: Leftover, context: Context = None) -> None:
        raise errors.NotFound(f"no leftover {leftover.name!r} in a memory store")

    def open_writer(self, image_id: str, size: int | None, context: Context = None) -> Writer:
        with self.lock:
            if image_id in self.images:
                raise errors.Duplicate(f"image {image_id!r} already exists")
        return _MemoryWriter(self, image_id)

    def open_reader(self, location: MemoryLocation, offset: int, length: int | None,
                    context: Context = None) -> ReadStream:
        data = self._image(location)
        end = len(data) if length is None else min(len(data), offset + length)
        start = min(offset, end)
        view = memoryview(data)
        step = self.chunk_size
        return ReadStream((bytes(view[i:min(i + step, end)]) for i in range(start, end, step)),
                          end - start)

    def get_size(self, location: MemoryLocation, context: Context = None) -> int:
        return len(self._image(location))

    def delete(self, location: MemoryLocation, context: Context = None) -> None:
        with self.lock:
            data = self.images.pop(location.image_id, None)
            if data is None:
                raise errors.NotFound(f"no image at {location}")
            if self.capacity:
                self.reserved -= len(data)


class _MemoryWriter(Writer):
    def __init__(self, driver: MemoryDriver, image_id: str) -> None:
        self.driver = driver
        self.image_id = image_id
        self.buf = bytearray()
        self.counted = 0

    def write(self, data: memoryview) -> None:
        d = self.driver
        if d.capacity:
            with d.lock:
                if d.reserved + len(data) > d.capacity:
                    raise errors.StorageFull(
                        f"the store's capacity of {d.capacity} bytes is reached")
                d.reserved += len(data)
                self.counted += len(data)
        self.buf += data

    def commit(self) -> Stored:
        d = self.driver
        with d.lock:
            if self.image_id in d.images:
                raise errors.Duplicate(f"image {self.image_id!r} appeared while this "
                                       "copy was being written")
            d.images[self.image_id] = bytes(self.buf)
        self.buf = bytearray()
        self.counted = 0   # now held by the image; released by delete
        return Stored(d.location_for(self.image_id))

    def abort(self) -> None:
        d = self.driver
        with d.lock:
            d.reserved -= self.counted
        self.counted = 0
        self.buf = bytearray()
