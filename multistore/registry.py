"""Finding driver classes: stevedore entry points in ``multistore.drivers``.

A third-party package adds a driver by declaring an entry point and nothing
else. Two packages claiming one name is an error, never a silent shadow.
glance_store's names for its drivers (``glance.store.filesystem.Store``,
URL schemes such as ``filesystem`` or ``swift+config``) are accepted as
aliases so existing ``enabled_backends`` and ``stores`` values keep working.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping

from stevedore import driver as stevedore_driver
from stevedore import exception as stevedore_exc

from multistore import errors
from multistore.driver import Driver

NAMESPACE = "multistore.drivers"

#: glance_store's names for each driver type.
ALIASES: Mapping[str, str] = {
    "filesystem": "file",
    "glance.store.filesystem.Store": "file",
    "glance_store._drivers.filesystem.Store": "file",
    "https": "http",
    "glance.store.http.Store": "http",
    "glance_store._drivers.http.Store": "http",
    "swift+http": "swift",
    "swift+https": "swift",
    "swift+config": "swift",
    "glance.store.swift.Store": "swift",
    "glance_store._drivers.swift.Store": "swift",
    "glance.store.rbd.Store": "rbd",
    "glance_store._drivers.rbd.Store": "rbd",
    "glance.store.cinder.Store": "cinder",
    "glance_store._drivers.cinder.Store": "cinder",
    "vsphere": "vmware",
    "glance.store.vmware_datastore.Store": "vmware",
    "glance_store._drivers.vmware_datastore.Store": "vmware",
    "glance.store.sheepdog.Store": "sheepdog",
    "glance_store._drivers.sheepdog.Store": "sheepdog",
}


class Registry:
    """Driver classes by type name: entry points, plus any given in-process.

    ``extra`` lets a program (or a test) use a driver class without
    packaging it: ``Registry({"mine": MyDriver})``.
    """

    def __init__(self, extra: Mapping[str, type[Driver]] | None = None,
                 namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        self._extra = dict(extra or {})
        self._loaded: dict[str, type[Driver]] = {}

    def canonical(self, name: str, store: str | None = None) -> str:
        """The driver type an operator's name stands for."""
        name = name.strip()
        if name in self._extra or name in self.names():
            return name
        if name in ALIASES:
            return ALIASES[name]
        raise errors.DriverLoadError(
            f"unknown driver type {name!r}; installed: {', '.join(sorted(self.names()))}",
            store=store, operation="load")

    def names(self) -> set[str]:
        """Every installed driver type, without importing any driver."""
        listed = {ep.name for ep in importlib.metadata.entry_points(group=self.namespace)}
        return listed | set(self._extra)

    def load(self, name: str, store: str | None = None) -> type[Driver]:
        """Import one driver class; clear errors for missing, conflicting or broken ones."""
        name = self.canonical(name, store)
        if name in self._extra:
            return self._extra[name]
        if name in self._loaded:
            return self._loaded[name]
        try:
            manager: stevedore_driver.DriverManager[Driver] = stevedore_driver.DriverManager(
                self.namespace, name, invoke_on_load=False,
                on_load_failure_callback=_reraise)
        except stevedore_exc.MultipleMatches as exc:
            raise errors.DriverLoadError(
                f"several installed packages declare the driver {name!r}: {exc}; "
                "uninstall all but one", store=store, operation="load") from exc
        except stevedore_exc.NoMatches as exc:
            raise errors.DriverLoadError(f"driver {name!r} is not installed",
                                         store=store, operation="load") from exc
        except ImportError as exc:
            raise errors.DriverLoadError(
                f"driver {name!r} could not be imported: {exc}",
                store=store, operation="load") from exc
        cls = manager.driver
        if not (isinstance(cls, type) and issubclass(cls, Driver)):
            raise errors.DriverLoadError(
                f"entry point {name!r} is {cls!r}, not a multistore.driver.Driver subclass",
                store=store, operation="load")
        self._loaded[name] = cls
        return cls

    def drivers(self) -> dict[str, type[Driver]]:
        """Every installed driver class, by type (imports them all)."""
        return {name: self.load(name) for name in sorted(self.names())}


def _reraise(manager: object, entrypoint: object, exc: BaseException) -> None:
    raise exc
