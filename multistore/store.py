"""One configured store: a driver instance plus what the operator said of it.

Three things happen here, in one place, around every driver call:
capabilities are checked before it, location URLs are parsed into the
driver's typed locations, and errors leaving the driver get the store id
and the operation attached (:meth:`Store.context`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
from collections.abc import Iterator
from typing import Any

from multistore import errors
from multistore.config import StoreConf, StoreSpec
from multistore.driver import Capabilities, Driver
from multistore.location import MAX_ID_BYTES, Location, image_id_problem, redact


@dataclasses.dataclass(frozen=True, repr=False)
class Store:
    """A store id bound to its driver instance and its configuration."""

    spec: StoreSpec
    driver: Driver[Any]
    conf: StoreConf

    def __repr__(self) -> str:
        return f"<Store {self.id!r} type={self.type!r}>"

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def type(self) -> str:
        return self.spec.type

    @property
    def reserved(self) -> bool:
        return self.spec.reserved

    @property
    def description(self) -> str | None:
        return self.conf.store_description

    @property
    def weight(self) -> int:
        return self.conf.weight

    @property
    def capabilities(self) -> Capabilities:
        """What this store can do: its driver's, less writes if ``read_only``."""
        declared = self.driver.capabilities
        return declared.without_write() if self.conf.read_only else declared

    @property
    def read_only(self) -> bool:
        return self.capabilities.read_only

    def require(self, operation: str, *, offset: int = 0,
                length: int | None = None) -> None:
        """Raise the matching NotSupported error unless ``operation`` is allowed."""
        caps = self.capabilities
        if operation == "add" and not caps.write:
            why = ("is marked read_only" if self.driver.capabilities.write
                   else f"is a read-only {self.type} store")
            raise errors.AddNotSupported(f"the store {why}: it takes no new images",
                                         store=self.id, operation=operation)
        if operation == "get":
            if not caps.read:
                raise errors.GetNotSupported("the store cannot be read",
                                             store=self.id, operation=operation)
            if (offset or length is not None) and not caps.ranged_read:
                raise errors.RangeNotSupported(
                    f"the {self.type} driver cannot read part of an image "
                    f"(offset {offset}, length {length})", store=self.id,
                    operation=operation)
        if operation == "delete" and not caps.delete:
            raise errors.DeleteNotSupported(f"a {self.type} store cannot delete images",
                                            store=self.id, operation=operation)

    def check_image_id(self, image_id: str) -> None:
        """Refuse ids that cannot name exactly one image in every driver."""
        why = image_id_problem(image_id)
        if why:
            raise errors.BadLocation(
                f"invalid image id {image_id!r}: {why} (an id is 1 to {MAX_ID_BYTES} bytes "
                "of UTF-8 text, without '/', '\\' or control characters, and not "
                "'.' or '..')", store=self.id, operation="add")

    def copy_image_id(self, url: str, context: Any = None) -> str:
        """The image id a copy of ``url`` takes when none is given: the one
        the driver says it was written for (Cinder must be asked; most
        drivers read it from the location). A location whose id is only a
        hint (a web URL, :attr:`Location.image_id_is_hint`) may suggest no
        valid id: BadLocation naming why, before anything is read."""
        with self.context("copy"):
            image_id = self.driver.image_id(url, context=context)
        why = image_id_problem(image_id)
        if why:
            raise errors.BadLocation(
                f"{redact(url)} gives no valid image id ({image_id[:64]!r}: {why}); "
                "name the copy's image id (copy(..., image_id=...), multistore copy --id)",
                store=self.id, operation="copy")
        return image_id

    def locate(self, url: str) -> Location:
        """The driver's typed location for ``url``; BadLocation naming this store."""
        with self.context("locate"):
            return self.driver.parse_location(url)

    @contextlib.contextmanager
    def context(self, operation: str) -> Iterator[None]:
        """Attach this store and ``operation`` to any error leaving the block;
        other exceptions become the library's errors (the driver's
        :meth:`~multistore.driver.Driver.translate_error` first)."""
        try:
            yield
        except errors.MultistoreError as exc:
            exc.attach(store=self.id, operation=operation)
            raise
        except Exception as exc:
            translated = self.driver.translate_error(exc) or translate(exc)
            raise translated.attach(store=self.id, operation=operation) from exc

    def info(self, default: bool, detail: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": self.id,
            "description": self.description,
            "default": default,
            "read-only": self.read_only,
        }
        if detail:
            entry["type"] = self.type
            entry["weight"] = self.weight
            entry["properties"] = self.driver.properties()
        return entry


def translate(exc: BaseException) -> errors.MultistoreError:
    """The core's mapping of an exception no driver claimed."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return errors.StorageFull(f"no space left: {exc.strerror}")
    if isinstance(exc, PermissionError):
        return errors.WriteDenied(f"permission denied: {exc.strerror}")
    if isinstance(exc, FileNotFoundError):
        return errors.NotFound(f"not found: {exc.strerror}")
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return errors.BackendUnavailable(f"the backend did not answer: {redact(str(exc))}")
    return errors.MultistoreError(f"{type(exc).__name__}: {redact(str(exc))}")
