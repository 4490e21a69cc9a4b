"""One configured store: a driver instance plus what the operator said of it.

Capabilities are checked here, in one place, before any driver call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from multistore import errors
from multistore.config import StoreConf, StoreSpec
from multistore.driver import Capabilities, Driver

_DISALLOWED_ID_CHARS = frozenset("/\\\0")


@dataclasses.dataclass(frozen=True, repr=False)
class Store:
    """A store id bound to its driver instance and its configuration."""

    spec: StoreSpec
    driver: Driver
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
        if (not isinstance(image_id, str) or not image_id or image_id in (".", "..")
                or _DISALLOWED_ID_CHARS & set(image_id) or len(image_id) > 255):
            raise errors.BadLocation(
                f"invalid image id {image_id!r}: it must be 1 to 255 characters "
                "without '/', '\\' or NUL, and not '.' or '..'",
                store=self.id, operation="add")

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
