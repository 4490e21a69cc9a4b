"""The exceptions multistore raises.

Every error carries the store id and the operation it happened in, so a
message read in a log names both without the caller adding anything::

    [store 'fast', add] image 'abc' already exists

The hierarchy is small and flat; glance_store's class names are kept as
aliases (at the bottom of this module) so existing ``except`` clauses carry
over unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence


class MultistoreError(Exception):
    """Base of every error raised by multistore.

    :param message: what went wrong, in words an operator understands.
    :param store: the store id, or the ids of every store involved (a copy
        to several targets), when any is involved.
    :param operation: ``add``, ``get``, ``delete``, ``get_size``, ``copy``,
        ``configure``, ``load`` ...

    Drivers raise these without context; the core attaches the store and
    the operation (:meth:`attach`) as the error leaves the driver.
    """

    def __init__(self, message: str, *, store: str | Sequence[str] | None = None,
                 operation: str | None = None) -> None:
        self.message = message
        self.stores: tuple[str, ...] = ()
        self.operation = operation
        self.attach(store=store)
        super().__init__(message)

    @property
    def store(self) -> str | None:
        """The store id when exactly one store is involved (see :attr:`stores`)."""
        return self.stores[0] if len(self.stores) == 1 else None

    def attach(self, *, store: str | Sequence[str] | None = None,
               operation: str | None = None) -> MultistoreError:
        """Fill in the context that is not set yet; returns the error."""
        if not self.stores and store is not None:
            self.stores = (store,) if isinstance(store, str) else tuple(store)
        if self.operation is None:
            self.operation = operation
        return self

    def __str__(self) -> str:
        context = []
        if self.stores:
            names = ", ".join(repr(s) for s in self.stores)
            context.append(f"store {names}" if len(self.stores) == 1 else f"stores {names}")
        if self.operation is not None:
            context.append(self.operation)
        if not context:
            return self.message
        return f"[{', '.join(context)}] {self.message}"

    # glance_store's GlanceStoreException kept its text in ``msg``.
    @property
    def msg(self) -> str:
        return str(self)


class ConfigError(MultistoreError):
    """The configuration is invalid: the service must not start."""

    def __init__(self, message: str, *, store: str | None = None,
                 option: str | None = None, operation: str | None = "configure"):
        self.option = option
        if option is not None:
            message = f"option {option!r}: {message}"
        super().__init__(message, store=store, operation=operation)


class DriverLoadError(ConfigError):
    """A driver could not be found or imported, or two packages claim one name."""


class NotFound(MultistoreError, LookupError):
    """The image is not in the store."""


class Duplicate(MultistoreError):
    """An image with this id already exists in the store; nothing was written."""


class StorageFull(MultistoreError):
    """The backend has no room for the image; the partial image was removed."""


class WriteDenied(MultistoreError):
    """The backend refused the write (permissions)."""


class BadLocation(MultistoreError, ValueError):
    """A location URL is malformed, belongs to no configured store, or does not
    belong to the store it was given with."""


class BackendUnavailable(MultistoreError):
    """The storage server could not be reached or stopped answering."""


class InUse(MultistoreError):
    """The image is in use in the backend (for instance, cloned); nothing was deleted."""


class DataMismatch(MultistoreError, ValueError):
    """The data read does not match what was announced."""


class SizeMismatch(DataMismatch):
    """The number of bytes read differs from the size announced."""


class ChecksumMismatch(DataMismatch):
    """A checksum computed while streaming differs from the one expected."""


class UnknownHashingAlgo(MultistoreError, ValueError):
    """The multihash algorithm is not available in hashlib."""


class NotSupported(MultistoreError):
    """The store cannot do this operation (a read-only store, no ranged reads ...)."""


class AddNotSupported(NotSupported):
    """The store takes no new images (read-only type or ``read_only = true``)."""


class GetNotSupported(NotSupported):
    """The store cannot be read."""


class RangeNotSupported(GetNotSupported):
    """The store cannot read part of an image."""


class DeleteNotSupported(NotSupported):
    """The store cannot delete images."""


# glance_store's names, so that callers' except clauses carry over.
GlanceStoreException = MultistoreError
BackendException = MultistoreError
BadStoreConfiguration = ConfigError
DriverLoadFailure = DriverLoadError
StorageWriteDenied = WriteDenied
Forbidden = WriteDenied
BadStoreUri = BadLocation
UnknownScheme = BadLocation
RemoteServiceUnavailable = BackendUnavailable
InUseByStore = InUse
Invalid = DataMismatch
StoreAddDisabled = AddNotSupported
StoreGetNotSupported = GetNotSupported
StoreRandomGetNotSupported = RangeNotSupported
StoreDeleteNotSupported = DeleteNotSupported

__all__ = [
    "MultistoreError", "ConfigError", "DriverLoadError", "NotFound", "Duplicate",
    "StorageFull", "WriteDenied", "BadLocation", "BackendUnavailable", "InUse",
    "DataMismatch", "SizeMismatch", "ChecksumMismatch", "UnknownHashingAlgo",
    "NotSupported", "AddNotSupported", "GetNotSupported", "RangeNotSupported",
    "DeleteNotSupported",
    "GlanceStoreException", "BackendException", "BadStoreConfiguration",
    "DriverLoadFailure", "StorageWriteDenied", "Forbidden", "BadStoreUri",
    "UnknownScheme", "RemoteServiceUnavailable", "InUseByStore", "Invalid",
    "StoreAddDisabled", "StoreGetNotSupported", "StoreRandomGetNotSupported",
    "StoreDeleteNotSupported",
]
