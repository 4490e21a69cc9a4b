"""The contract between the core and a storage driver.

A driver only moves bytes. The core owns everything else: reading the
caller's data in buffers, md5 and the multihash, the signature verifier,
progress, size checks, the capability checks and cleanup on failure.

A driver package declares one entry point and nothing else::

    [options.entry_points]
    multistore.drivers =
        mystore = mypackage.driver:MyDriver

and writes a subclass of :class:`Driver`::

    class MyDriver(Driver):
        schemes = ("my",)
        capabilities = Capabilities(read=True, ranged_read=True, write=True, delete=True)
        options = [cfg.StrOpt("my_endpoint", help="...")]

        def configure(self): ...                 # validate options, connect lazily
        def owns(self, location): ...            # is this URL one of ours?
        def open_writer(self, image_id, size, context=None): ...   # -> Writer
        def open_reader(self, location, offset, length, context=None): ...  # -> ReadStream
        def get_size(self, location, context=None): ...
        def delete(self, location, context=None): ...

The driver is instantiated once per store id, with a view of that store's
configuration group (:class:`multistore.config.StoreConf`); it must keep no
module-level mutable state and must be safe to call from several threads.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from oslo_config import cfg

from multistore import errors

if TYPE_CHECKING:
    from multistore.config import StoreConf


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a driver can do; checked by the core in one place (:mod:`multistore.store`).

    ``read_only`` marks a driver that can never take new images (http); an
    operator can make any store read-only with ``read_only = true``.
    """

    read: bool = True
    ranged_read: bool = False
    write: bool = False
    delete: bool = False

    @property
    def read_only(self) -> bool:
        return not self.write

    def without_write(self) -> Capabilities:
        return dataclasses.replace(self, write=False)


@dataclasses.dataclass(frozen=True)
class Stored:
    """What a driver's :meth:`Writer.commit` returns.

    ``metadata`` holds driver extras for the location metadata (the file
    driver's metadata-file entries, for instance); the core adds ``store``.
    """

    location: str
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Writer(abc.ABC):
    """Receives one image's bytes, in order, from the core.

    The core calls :meth:`write` for every buffer, then exactly one of
    :meth:`commit` (all data arrived and was checked) or :meth:`abort`
    (anything failed: the driver must remove everything it wrote).
    Before :meth:`commit` returns, no reader may see the image.
    """

    @abc.abstractmethod
    def write(self, data: memoryview) -> None:
        """Store the next bytes. ``data`` is only valid during the call:
        copy it if it must outlive the call."""

    @abc.abstractmethod
    def commit(self) -> Stored:
        """Make the image visible (and durable, where the store promises it)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Remove whatever was written. Idempotent; called at most once after
        a failure, including a failure of :meth:`commit` itself."""


class ReadStream:
    """An open read: ``size`` bytes delivered by iterating, then closed.

    Drivers may return an instance of this class built from any iterator of
    bytes, or a subclass.
    """

    def __init__(self, chunks: Iterable[bytes], size: int | None,
                 close: Callable[[], None] | None = None) -> None:
        self.size = size
        self._chunks = iter(chunks)
        self._close = close

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        close, self._close = self._close, None
        try:
            if close is not None:
                close()
        finally:
            closer = getattr(self._chunks, "close", None)
            if closer is not None:
                closer()


class Driver(abc.ABC):
    """Base class of every storage driver. See the module docstring."""

    #: URL schemes this driver writes and reads, the first is the one it writes.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: What the driver can do.
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: The driver's oslo.config options, registered in each store's group.
    options: ClassVar[Sequence[cfg.Opt]] = ()
    #: Preferred size of the buffers the core hands to :meth:`Writer.write`
    #: (``None``: the core's ``stream_chunk_size``).
    write_chunk_size: int | None = None

    def __init__(self, store_id: str, conf: StoreConf) -> None:
        self.store_id = store_id
        self.conf = conf

    def __repr__(self) -> str:
        # Never print options: some hold secrets.
        return f"<{type(self).__name__} store={self.store_id!r}>"

    @classmethod
    def option_defaults(cls, store_id: str, reserved: bool) -> Mapping[str, Any]:
        """Defaults that differ per store id (a reserved store's directory, say)."""
        return {}

    def configure(self) -> None:
        """Check the options and prepare; raise :class:`~multistore.errors.ConfigError`.

        Called once, at load time. Connections to servers should be opened
        lazily, on first use, so that loading does not need every server up.
        """

    def close(self) -> None:
        """Release connections. Called by :meth:`multistore.StoreSet.close`."""

    def properties(self) -> dict[str, Any]:
        """Facts shown in the detailed store listing (never secrets)."""
        return {}

    @abc.abstractmethod
    def owns(self, location: str) -> bool:
        """Whether ``location`` is an image URL of this store (not of another
        store of the same type). Must not contact the server."""

    def image_id(self, location: str) -> str:
        """The image id a location was written for (used by copy)."""
        return location.rstrip("/").rsplit("/", 1)[-1]

    def open_writer(self, image_id: str, size: int | None,
                    context: Any = None) -> Writer:
        """Start writing an image; raise Duplicate if ``image_id`` exists.

        ``size`` is ``None`` when unknown. The image id has been checked by
        the core (no ``/``, no NUL, not ``.`` or ``..``).
        """
        raise NotImplementedError

    @abc.abstractmethod
    def open_reader(self, location: str, offset: int, length: int | None,
                    context: Any = None) -> ReadStream:
        """Open ``length`` bytes (``None``: to the end) from ``offset``.

        ``size`` of the returned stream is the number of bytes it will yield.
        Raise NotFound if the image does not exist.
        """

    @abc.abstractmethod
    def get_size(self, location: str, context: Any = None) -> int:
        """The image's size in bytes; NotFound if it does not exist."""

    def delete(self, location: str, context: Any = None) -> None:
        """Remove the image; NotFound if it does not exist."""
        raise NotImplementedError

    def set_acls(self, location: str, public: bool = False,
                 read_tenants: Sequence[str] = (), write_tenants: Sequence[str] = (),
                 context: Any = None) -> None:
        """Who may read or write the image in the backend (swift multi-tenant).

        Stores without per-image access control keep this default, which
        says so; the caller may then ignore it, as Glance does.
        """
        raise errors.NotSupported("this store has no per-image access control",
                                  store=self.store_id, operation="set_acls")
