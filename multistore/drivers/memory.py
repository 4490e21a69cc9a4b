"""Images held in this process's memory, for consumers' unit tests.

Locations are ``memory://<store id>/<image id>``. It behaves like the other
drivers (duplicates refused, partial images never visible, ranged reads,
an optional capacity that turns into StorageFull) and is fast. Each store
instance has its own images: two memory stores share nothing, unless a test
deliberately builds them from ``MemoryDriver.sharing(backend)`` to play two
processes looking at one storage.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from oslo_config import cfg

from multistore import errors
from multistore.driver import Capabilities, Driver, ReadStream, Stored, Writer

OPTIONS = [
    cfg.IntOpt("memory_store_capacity", default=0, min=0,
               help="Bytes the store may hold in all (0: no limit); beyond "
                    "it, adds fail with StorageFull."),
    cfg.IntOpt("memory_store_chunk_size", default=1024 * 1024, min=1,
               help="Size in bytes of the chunks images are read in."),
]


class MemoryBackend:
    """The storage behind memory stores: images per store id, and a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stores: dict[str, dict[str, bytes]] = {}
        self.reserved: dict[str, int] = {}


class MemoryDriver(Driver):
    schemes = ("memory",)
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
        self.prefix = f"memory://{self.store_id}/"

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

    def owns(self, location: str) -> bool:
        rest = location[len(self.prefix):]
        return location.startswith(self.prefix) and bool(rest) and "/" not in rest

    def _key(self, location: str) -> str:
        if not self.owns(location):
            raise errors.BadLocation(f"not a location of this store: {location!r}",
                                     store=self.store_id)
        return location[len(self.prefix):]

    def _image(self, location: str, operation: str) -> bytes:
        with self.lock:
            try:
                return self.images[self._key(location)]
            except KeyError:
                raise errors.NotFound(f"no image at {location}", store=self.store_id,
                                      operation=operation) from None

    def open_writer(self, image_id: str, size: int | None, context: Any = None) -> Writer:
        with self.lock:
            if image_id in self.images:
                raise errors.Duplicate(f"image {image_id!r} already exists",
                                       store=self.store_id, operation="add")
        return _MemoryWriter(self, image_id)

    def open_reader(self, location: str, offset: int, length: int | None,
                    context: Any = None) -> ReadStream:
        data = self._image(location, "get")
        end = len(data) if length is None else min(len(data), offset + length)
        start = min(offset, end)
        view = memoryview(data)
        step = self.chunk_size
        return ReadStream((bytes(view[i:min(i + step, end)]) for i in range(start, end, step)),
                          end - start)

    def get_size(self, location: str, context: Any = None) -> int:
        return len(self._image(location, "get_size"))

    def delete(self, location: str, context: Any = None) -> None:
        key = self._key(location)
        with self.lock:
            data = self.images.pop(key, None)
            if data is None:
                raise errors.NotFound(f"no image at {location}", store=self.store_id,
                                      operation="delete")
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
                        f"the store's capacity of {d.capacity} bytes is reached",
                        store=d.store_id, operation="add")
                d.reserved += len(data)
                self.counted += len(data)
        self.buf += data

    def commit(self) -> Stored:
        d = self.driver
        with d.lock:
            if self.image_id in d.images:
                raise errors.Duplicate(f"image {self.image_id!r} appeared while this "
                                       "copy was being written", store=d.store_id,
                                       operation="add")
            d.images[self.image_id] = bytes(self.buf)
        self.buf = bytearray()
        self.counted = 0   # now held by the image; released by delete
        return Stored(d.prefix + self.image_id)

    def abort(self) -> None:
        d = self.driver
        with d.lock:
            d.reserved -= self.counted
        self.counted = 0
        self.buf = bytearray()
