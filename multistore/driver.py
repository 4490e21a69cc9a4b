"""The contract between the core and a storage driver.

A driver only moves bytes. The core owns everything else: parsing location
URLs (through the driver's location type), reading the caller's data in
buffers, md5 and the multihash, the signature verifier, progress, size
checks, the capability checks, error context and cleanup on failure.

A driver package declares one entry point and nothing else::

    [options.entry_points]
    multistore.drivers =
        mystore = mypackage.driver:MyDriver

and writes a location type and a subclass of :class:`Driver`::

    @dataclasses.dataclass(frozen=True)
    class MyLocation(Location):
        bucket: str
        image_id: str

        @classmethod
        def parse(cls, url): ...                  # ValueError if malformed
        def format(self): ...                     # parse(format()) == self

    class MyDriver(Driver[MyLocation]):
        schemes = ("my",)
        location_type = MyLocation
        capabilities = Capabilities(read=True, ranged_read=True, write=True, delete=True)
        options = [cfg.StrOpt("my_endpoint", help="...")]

        def configure(self): ...                 # validate options, connect lazily
        def holds(self, location): ...           # is this parsed location this store's?
        def location_for(self, image_id): ...    # where an image with this id goes
        def open_writer(self, image_id, size, context=None): ...   # write=True
        def open_reader(self, location, offset, length, context=None): ...  # -> ReadStream
        def get_size(self, location, context=None): ...
        def delete(self, location, context=None): ...              # delete=True

Drivers raise the errors of :mod:`multistore.errors` without store or
operation: the core attaches both as the error leaves the driver, and maps
anything else through :meth:`Driver.translate_error` (one hook per driver
for its backend's exceptions), then through the core's own mapping of
``OSError`` and connection errors. Retries and resumed reads use
:mod:`multistore.retry`; request contexts are described in
:mod:`multistore.context`.

The driver is instantiated once per store id, with a view of that store's
configuration group (:class:`multistore.config.StoreConf`); it must keep no
module-level mutable state and must be safe to call from several threads.
:func:`check_driver_class` (run at load) refuses a class whose declared
capabilities do not match the methods it implements.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from oslo_config import cfg

from multistore import errors
from multistore.context import Context
from multistore.location import Location, redact, scheme_of

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
class Vouched:
    """What a backend vouches for about a copy it made inside itself
    (:meth:`Driver.copy_within`), so that the core need not read it back.

    The driver returns one only when the backend itself computed the md5 of
    the bytes it stored for the copy, and that md5 equals the one the
    backend holds for the same bytes of the source: for the whole image, or
    for each of its ``pieces`` in order (Swift: the ETag of an object, of
    each segment of a large object). It is evidence that the copy is
    byte-identical to the source, not a hash computed by this process.

    ``size`` is the copy's size as the backend counts it; ``md5`` the md5 of
    the whole copy when the backend has it (one piece), ``None`` when it
    vouches piece by piece only (then the core cannot check the source
    against a recorded checksum, and trusts the record).
    """

    size: int
    md5: str | None
    pieces: int


@dataclasses.dataclass(frozen=True)
class Stored:
    """What a driver's :meth:`Writer.commit` (or :meth:`Driver.copy_within`) returns.

    ``metadata`` holds driver extras for the location metadata (the file
    driver's metadata-file entries, for instance); the core adds ``store``.
    ``vouched`` is set only by a copy made inside the backend whose
    byte-identity with the source the backend vouches for (:class:`Vouched`).
    """

    location: Location
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    vouched: Vouched | None = None


@dataclasses.dataclass(frozen=True)
class Leftover:
    """Something a writer that died (``kill -9``, a crash, a lost server)
    left in the backend: a partial file, a partial image, orphan segments.

    ``name`` says what it is (never a secret); ``handle`` is the driver's own
    reference, passed back to :meth:`Driver.remove_leftover`.
    """

    name: str
    size: int | None
    age: float
    handle: Any = dataclasses.field(default=None, repr=False, compare=False)


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


L = TypeVar("L", bound=Location)


class Driver(abc.ABC, Generic[L]):
    """Base class of every storage driver. See the module docstring."""

    #: URL schemes this driver writes and reads, the first is the one it writes.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: The driver's location type (parse and format of its URLs).
    location_type: ClassVar[type[Location]]
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

    def claims(self) -> Iterable[str]:
        """What of the backend this store keeps to itself (``directory /x``,
        a pool of a cluster, a container of an account), in words an operator
        reads. Two stores of one configuration claiming the same thing is a
        configuration error at load: every location would belong to both.
        Called after :meth:`configure`; never contacts the server."""
        return ()

    def translate_error(self, exc: Exception) -> errors.MultistoreError | None:
        """The library's error for a backend exception that left a driver
        method, or ``None`` to let the core decide (``OSError`` by errno,
        connection errors as BackendUnavailable, anything else as
        MultistoreError). Never put secrets in the message."""
        return None

    # -- locations (the core calls these; drivers rarely override them) ------

    def parse_location(self, url: str) -> L:
        """The typed location of ``url`` if it is one of this store's images;
        :class:`~multistore.errors.BadLocation` otherwise. Never contacts the
        server."""
        if scheme_of(url) not in self.schemes:
            raise errors.BadLocation(f"{redact(url)!r} does not belong to this store: not a "
                                     f"{'/'.join(self.schemes)} location")
        try:
            location = self.location_type.parse(url)
        except errors.BadLocation:
            raise
        except (ValueError, TypeError) as exc:
            raise errors.BadLocation(f"malformed location {redact(url)!r}: "
                                     f"{redact(str(exc))}") from None
        if not self.holds(location):  # type: ignore[arg-type]
            raise errors.BadLocation(f"{redact(url)!r} does not belong to this store")
        return location  # type: ignore[return-value]

    def owns(self, url: str) -> bool:
        """Whether ``url`` is an image location of this store."""
        try:
            self.parse_location(url)
        except errors.BadLocation:
            return False
        return True

    def holds(self, location: L) -> bool:
        """Whether a well-formed location is this store's, not another store's
        of the same type (another directory, another cluster). Must not
        contact the server."""
        return True

    def image_id(self, url: str, context: Context = None) -> str:
        """The image id a location was written for (copy and move name the
        copies after it). Most URLs carry it; a driver whose URLs do not
        (cinder's name a volume) looks it up in the backend."""
        return self.parse_location(url).image_id

    def location_for(self, image_id: str, context: Context = None) -> L:
        """The location an image with this id has (or would have) in this
        store. The conformance suite uses it to name an image that does not
        exist; read-only drivers may leave it unimplemented."""
        raise NotImplementedError

    # -- images ----------------------------------------------------------

    def open_writer(self, image_id: str, size: int | None,
                    context: Context = None) -> Writer:
        """Start writing an image; raise Duplicate if ``image_id`` exists.

        ``size`` is ``None`` when unknown. The image id has been checked by
        the core (see :meth:`multistore.store.Store.check_image_id`).
        Needs ``capabilities.write``.
        """
        raise NotImplementedError

    @abc.abstractmethod
    def open_reader(self, location: L, offset: int, length: int | None,
                    context: Context = None) -> ReadStream:
        """Open ``length`` bytes (``None``: to the end) from ``offset``.

        ``size`` of the returned stream is the number of bytes it will yield.
        Raise NotFound if the image does not exist. A driver without
        ``capabilities.ranged_read`` is only called with offset 0, length None.
        """

    @abc.abstractmethod
    def get_size(self, location: L, context: Context = None) -> int:
        """The image's size in bytes; NotFound if it does not exist."""

    def delete(self, location: L, context: Context = None) -> None:
        """Remove the image; NotFound if it does not exist. Needs
        ``capabilities.delete``."""
        raise NotImplementedError

    def copy_within(self, source: Driver[Any], location: Location, image_id: str,
                    context: Context = None) -> Stored | None:
        """Copy an image from ``source`` (another store, perhaps of another
        driver) inside the backend, without its bytes passing through this
        process: a server-side copy, a clone, ``copy_file_range``.

        Return ``None`` when this pair of stores cannot (another cluster,
        another filesystem): the core then streams the copy. The copy must
        be all or nothing, like a writer's, and raise Duplicate if the id
        exists. The core reads the copy back to check and hash it, unless
        the caller asked for ``verify="backend"`` and the returned
        :class:`Stored` carries a :class:`Vouched`: then the backend's md5
        comparison stands for the read-back (see :meth:`multistore.StoreSet.copy`).
        Return ``vouched`` only for what the backend computed itself.
        """
        return None

    # -- what killed writers left behind -----------------------------------

    def find_leftovers(self, grace: float, context: Context = None) -> Iterable[Leftover]:
        """What dead writers left behind, *provably* abandoned: untouched for
        more than ``grace`` seconds and not held by a live writer (a lock, a
        watch, a lease: whatever the backend offers). Safe to call while
        other processes write. Drivers that write must implement it."""
        return ()

    def remove_leftover(self, leftover: Leftover, context: Context = None) -> None:
        """Remove one leftover found by :meth:`find_leftovers` (checking
        again, atomically where the backend allows, that it is abandoned)."""
        raise NotImplementedError

    def set_acls(self, location: L, public: bool = False,
                 read_tenants: Sequence[str] = (), write_tenants: Sequence[str] = (),
                 context: Context = None) -> None:
        """Who may read or write the image in the backend (swift multi-tenant).

        Stores without per-image access control keep this default, which
        says so; the caller may then ignore it, as Glance does.
        """
        raise errors.NotSupported("this store has no per-image access control")


def check_driver_class(cls: type[Driver[Any]]) -> None:
    """Refuse a driver class that does not keep the contract it declares.

    Checked at load, so that a driver saying ``write=True`` without an
    ``open_writer`` is a clear load error, not a failure at the first add.
    """
    problems = []
    if not cls.schemes:
        problems.append("it declares no URL schemes")
    location_type = getattr(cls, "location_type", None)
    if not (isinstance(location_type, type) and issubclass(location_type, Location)):
        problems.append("its location_type is not a multistore.location.Location subclass")
    else:
        if location_type.parse.__func__ is Location.parse.__func__:  # type: ignore[attr-defined]
            problems.append(f"{location_type.__name__} does not implement parse()")
        if location_type.format is Location.format:
            problems.append(f"{location_type.__name__} does not implement format()")
    caps = cls.capabilities
    needed = {"open_writer": caps.write, "location_for": caps.write,
              "find_leftovers": caps.write, "remove_leftover": caps.write,
              "delete": caps.delete}
    for method, declared in needed.items():
        if declared and getattr(cls, method) is getattr(Driver, method):
            capability = "delete" if method == "delete" else "write"
            problems.append(f"its capabilities declare {capability} but it "
                            f"does not implement {method}()")
    if problems:
        raise errors.DriverLoadError(f"driver class {cls.__module__}.{cls.__qualname__} "
                                     f"breaks the driver contract: {'; '.join(problems)}",
                                     operation="load")
