"""Options, and reading the stores an operator declared.

The files operators already have load unchanged::

    [DEFAULT]
    enabled_backends = fast:rbd, cheap:rbd, shared:file

    [glance_store]
    default_backend = fast

    [fast]
    store_description = "Fast rbd backend"
    rbd_store_pool = images
    ...

Each store's driver options are registered in the store's own group with no
default, and once more in ``[backend_defaults]`` with the driver's default;
:class:`StoreConf` reads the store's group first and falls back to
``[backend_defaults]``, so options shared by all stores of a type may be set
once there. Drivers only ever see a :class:`StoreConf`: there is no way to
read a raw group and miss the fallback.

The legacy single-store form (``[glance_store] stores = file, http`` with
the driver options directly in ``[glance_store]``) loads as a set of stores
named after their types.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from oslo_config import cfg

from multistore import errors

CORE_GROUP = "glance_store"
SHARED_GROUP = "backend_defaults"
RESERVED_PREFIX = "os_glance_"
LEGACY_RESERVED = frozenset({"os_staging"})
MiB = 1024 * 1024

ENABLED_BACKENDS_OPT = cfg.DictOpt(
    "enabled_backends",
    help="The stores, as store id and driver type pairs: "
         "``fast:rbd, cheap:rbd, shared:file``. Each store id names a "
         "configuration group holding that store's options.")

DEPRECATED_DEFAULT_BACKEND_OPT = cfg.StrOpt(
    "default_backend",
    help="Deprecated: set ``default_backend`` in ``[glance_store]``.")

CORE_OPTS = [
    cfg.StrOpt("default_backend",
               help="The store id new images go to when the caller names "
                    "none. Required with ``enabled_backends``."),
    cfg.ListOpt("stores", default=["file", "http"],
                help="Legacy single-store form: the driver types to load, "
                     "each as a store whose id is its type. Used only when "
                     "``enabled_backends`` is not set."),
    cfg.StrOpt("default_store", default="file",
               help="Legacy single-store form: the default store's type "
                    "(or one of its URL schemes)."),
    cfg.IntOpt("stream_chunk_size", default=4 * MiB, min=64 * 1024,
               help="Size in bytes of the buffers data is streamed in."),
    cfg.IntOpt("stream_buffers", default=4, min=2,
               help="How many buffers one add or copy may hold at once; "
                    "memory per transfer is at most this times "
                    "``stream_chunk_size``, whatever the image size."),
]

STORE_OPTS = [
    cfg.StrOpt("store_description",
               help="What this store is, shown to users in the store listing."),
    cfg.IntOpt("weight", default=0,
               help="Order of preference among stores holding the same "
                    "image, for reads: higher first."),
    cfg.BoolOpt("read_only", default=False,
                help="Take no new images; existing ones stay readable and "
                     "deletable (retiring old storage)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the options that say which stores exist.

    May be called before or after ``conf()`` parses the files, and more
    than once. Per-store options are registered by :func:`multistore.load`,
    once the store ids are known.
    """
    _register(conf, [ENABLED_BACKENDS_OPT, DEPRECATED_DEFAULT_BACKEND_OPT], None)
    _register(conf, CORE_OPTS, CORE_GROUP)


def _register(conf: cfg.ConfigOpts, opts: Iterable[cfg.Opt], group: str | None) -> None:
    for opt in opts:
        try:
            conf.register_opt(opt, group=group)
        except cfg.DuplicateOptError as exc:
            raise errors.ConfigError(
                f"registered twice with different definitions ({exc})",
                option=opt.dest, store=group) from exc


@dataclasses.dataclass(frozen=True)
class StoreSpec:
    """One declared store: its id, driver type and the group its options live in."""

    id: str
    type: str
    group: str
    reserved: bool = False


@dataclasses.dataclass(frozen=True)
class Layout:
    """All declared stores and the default, as read from the configuration."""

    stores: tuple[StoreSpec, ...]
    default: str
    legacy: bool


def read_layout(conf: cfg.ConfigOpts, reserved: Mapping[str, str] | None = None,
                type_of: Any = None) -> Layout:
    """Read which stores exist and which is the default; validate ids.

    ``type_of`` maps a name written by the operator (``file`` or an alias
    such as ``glance.store.filesystem.Store``) to a driver type; it raises
    :class:`~multistore.errors.DriverLoadError` for an unknown one.
    """
    register_opts(conf)
    type_of = type_of or (lambda name, store: name)
    reserved = dict(reserved or {})
    try:
        enabled = conf.enabled_backends
    except ValueError as exc:   # oslo.config refuses duplicate keys itself
        raise errors.ConfigError(_first_line(exc), option="enabled_backends") from exc

    if not enabled:
        return _read_legacy_layout(conf, reserved, type_of)

    specs: list[StoreSpec] = []
    # oslo.config reads group names without regard to case ('Fast' reads
    # [fast]): ids are compared the same way.
    taken: dict[str, str] = {}
    reserved_ids = {r.lower(): r for r in reserved}
    for store_id, type_name in enabled.items():
        store_id = store_id.strip()
        if not store_id or not type_name:
            raise errors.ConfigError(
                f"{store_id}:{type_name!s} is not an 'id:type' pair",
                option="enabled_backends")
        key = store_id.lower()
        if key.startswith(RESERVED_PREFIX) or key in LEGACY_RESERVED or key in reserved_ids:
            raise errors.ConfigError(
                f"store ids starting with {RESERVED_PREFIX!r} (and "
                f"{sorted(LEGACY_RESERVED | set(reserved))}) are reserved for the service's "
                f"internal stores", store=store_id, option="enabled_backends")
        if key in (CORE_GROUP, SHARED_GROUP, "default"):
            raise errors.ConfigError(f"{store_id!r} cannot be a store id: the group "
                                     "has another meaning", store=store_id,
                                     option="enabled_backends")
        if key in taken:
            raise errors.ConfigError(
                f"store ids {taken[key]!r} and {store_id!r} differ only in case: "
                "configuration groups do not, so both would read one group",
                store=store_id, option="enabled_backends")
        taken[key] = store_id
        specs.append(StoreSpec(store_id, type_of(type_name.strip(), store_id), store_id))
    for store_id, type_name in reserved.items():
        specs.append(StoreSpec(store_id, type_of(type_name, store_id), store_id, reserved=True))

    default = conf[CORE_GROUP].default_backend
    if default is None and conf.default_backend is not None:
        warnings.warn("default_backend in [DEFAULT] is deprecated: set it in "
                      "[glance_store]", DeprecationWarning, stacklevel=3)
        default = conf.default_backend
    if not default:
        raise errors.ConfigError("not set: the service must know where new images go",
                                 option="default_backend")
    if default not in enabled:
        raise errors.ConfigError(
            f"{default!r} is not one of the stores in enabled_backends "
            f"({', '.join(enabled)})", option="default_backend")
    return Layout(tuple(specs), default, legacy=False)


def _read_legacy_layout(conf: cfg.ConfigOpts, reserved: Mapping[str, str],
                        type_of: Any) -> Layout:
    group = conf[CORE_GROUP]
    types: list[str] = []
    for name in group.stores:
        type_name = type_of(name.strip(), None)
        if type_name not in types:
            types.append(type_name)
    clash = sorted({t for t in types} & set(reserved))
    if clash:
        raise errors.ConfigError(f"{clash[0]!r} is reserved for the service's internal "
                                 "store", store=clash[0], option="stores")
    specs = [StoreSpec(t, t, CORE_GROUP) for t in types]
    specs += [StoreSpec(i, type_of(t, i), i, reserved=True) for i, t in reserved.items()]
    default = type_of(group.default_store, None)
    if default not in types:
        raise errors.ConfigError(
            f"{group.default_store!r} is not one of the loaded stores ({', '.join(types)})",
            option="default_store")
    return Layout(tuple(specs), default, legacy=True)


def declared(conf: cfg.ConfigOpts, reserved: Mapping[str, str]) -> dict[str, str]:
    """The reserved stores whose group the configuration files have.

    A program that may run on configurations without its internal stores
    (the ``multistore`` command, a test layout) loads only these, so that a
    configuration without ``[os_glance_staging_store]`` never touches that
    store's default directory (``/var/lib/glance/...``).
    """
    sections = {s.lower() for s in conf.list_all_sections()}
    return {store_id: type_name for store_id, type_name in reserved.items()
            if store_id.lower() in sections}


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0]


class StoreConf:
    """One store's options: its own group first, then ``[backend_defaults]``.

    Read options as attributes (``conf.filesystem_store_datadir``). The
    ``repr`` never shows values: some options are secrets.
    """

    def __init__(self, conf: cfg.ConfigOpts, spec: StoreSpec,
                 options: Sequence[cfg.Opt], defaults: Mapping[str, Any],
                 shared_with_others: bool = False) -> None:
        self._conf = conf
        self.store_id = spec.id
        self.group = spec.group
        # The legacy form has no per-store group: these keep their defaults.
        self._legacy = spec.group == CORE_GROUP
        self._store_names = frozenset(o.dest for o in STORE_OPTS)
        self._driver_names = frozenset(o.dest for o in options)
        self._multi = frozenset(o.dest for o in options if o.multi)
        self._register(spec, options, defaults, shared_with_others)

    def _register(self, spec: StoreSpec, options: Sequence[cfg.Opt],
                  defaults: Mapping[str, Any], shared_with_others: bool) -> None:
        if spec.group != CORE_GROUP:
            for opt in STORE_OPTS:
                # glance_store (multistore inside Glance) may have registered
                # its own store_description and weight there: read those.
                with contextlib.suppress(cfg.DuplicateOptError):
                    self._conf.register_opt(opt, group=spec.group)
        if shared_with_others:
            # Inside Glance, glance_store's own drivers may have registered
            # options of the same names in [backend_defaults]: theirs stay.
            for opt in options:
                with contextlib.suppress(cfg.DuplicateOptError):
                    self._conf.register_opt(opt, group=SHARED_GROUP)
        else:
            _register(self._conf, options, SHARED_GROUP)
        for opt in options:
            local = copy.deepcopy(opt)
            local.default = defaults.get(opt.dest)
            try:
                self._conf.register_opt(local, group=spec.group)
            except cfg.DuplicateOptError:
                # Registered earlier by another load of the same ConfigOpts,
                # or (legacy form) by another driver sharing the option.
                self._conf.set_default(opt.dest, local.default, group=spec.group)

    def __getattr__(self, name: str) -> Any:
        if name in self._store_names:
            if self._legacy:
                return next(o.default for o in STORE_OPTS if o.dest == name)
            return self._read(self.group, name)
        if name not in self._driver_names:
            raise AttributeError(f"store {self.store_id!r} has no option {name!r}")
        value = self._read(self.group, name)
        if value is None or (name in self._multi and not value):
            value = self._read(SHARED_GROUP, name)
        return value

    def _read(self, group: str, name: str) -> Any:
        try:
            return self._conf[group][name]
        except (ValueError, cfg.ConfigFileValueError) as exc:
            raise errors.ConfigError(_first_line(exc), store=self.store_id,
                                     option=name) from exc

    def get(self, name: str, default: Any = None) -> Any:
        value = getattr(self, name)
        return default if value is None else value

    def check(self) -> None:
        """Read every option once, so a bad value is reported at load time."""
        for name in sorted(self._store_names | self._driver_names):
            getattr(self, name)

    def __repr__(self) -> str:
        return f"<StoreConf store={self.store_id!r} group={self.group!r}>"


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """The ``oslo.config.opts`` entry point: every option, for the sample file.

    Driver options appear in ``[backend_defaults]`` (shared by all stores)
    and in a group named after each driver type, as an example of a store's
    own group (in the legacy form that is the store's id).
    """
    from multistore.registry import Registry

    result: list[tuple[str | None, list[cfg.Opt]]] = [
        (None, [ENABLED_BACKENDS_OPT]),
        (CORE_GROUP, list(CORE_OPTS)),
    ]
    shared: dict[str, cfg.Opt] = {}
    for type_name, driver in Registry().drivers().items():
        result.append((type_name, [*STORE_OPTS, *driver.options]))
        for opt in driver.options:
            shared.setdefault(opt.dest, opt)
    result.append((SHARED_GROUP, list(shared.values())))
    return result
