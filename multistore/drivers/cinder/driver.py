"""Images as Cinder volumes, one volume per image, as glance_store keeps them.

An add creates a volume ``image-<image id>`` of this store's
``cinder_volume_type``, sized from the image size rounded up to GiB, with
glance_store's metadata (``glance_image_id``, ``image_size``,
``image_owner``), attaches it to this host, writes the bytes through the
connector Cinder names (:mod:`.connectors`), detaches it and marks it
read-only. While it is written the volume also carries
``multistore_writer`` (host, process, a random part) and
``multistore_heartbeat`` (refreshed every 30 s): what :meth:`find_leftovers`
reads to tell a volume of a killed writer from one being written. The
commit replaces the metadata with glance_store's alone; only then is the
location handed out. Any failure detaches the volume and deletes it.

Locations are glance_store's: ``cinder://<store id>/<volume id>``, and the
legacy ``cinder://<volume id>`` of single-store Glance. A legacy location
names no store: every cinder store holds it syntactically (``holds`` may not
ask Cinder), so with several cinder stores the caller names the store, and
that store checks in the operation that the volume's type is its own (what
Glance's ``is_image_associated_with_store`` checks; :meth:`CinderDriver.
associated` is that check).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import logging
import math
import os
import re
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from multistore import errors
from multistore.config import CORE_GROUP
from multistore.context import Context, context_value
from multistore.driver import Capabilities, Driver, Leftover, ReadStream, Stored, Writer
from multistore.drivers.cinder import connectors
from multistore.drivers.cinder.client import CinderApi, translate
from multistore.drivers.cinder.options import OPTIONS
from multistore.location import Location, quote, split_url, unquote

LOG = logging.getLogger(__name__)
MiB = 1024 * 1024
GiB = 1024 * MiB
WRITER_KEY = "multistore_writer"
HEARTBEAT_KEY = "multistore_heartbeat"
#: Seconds between a writer's heartbeats; a writer not heard of for three
#: of them (and, on this host, whose process is gone) has died.
HEARTBEAT = 30.0
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
#: ``with_image_id`` of an id that is not a UUID: a version-5 UUID, which
#: never names a Cinder volume (Cinder makes version-4 ids).
_NOWHERE = uuid.UUID("6f0d7c3e-5b0a-4a8e-9a38-6d3c1d3c2a11")


@dataclasses.dataclass(frozen=True)
class CinderLocation(Location):
    """``cinder://<store id>/<volume id>``, or legacy ``cinder://<volume id>``
    (``store`` None).

    A cinder URL carries a volume id, not an image id: the image's id is in
    the volume's metadata, which only Cinder knows
    (:meth:`CinderDriver.image_id` asks). ``image_id`` here is the volume id,
    the only id the URL has.
    """

    volume_id: str
    store: str | None = None

    @classmethod
    def parse(cls, url: str) -> CinderLocation:
        parts = split_url(url, ("cinder",))
        if parts.query or parts.fragment or url.endswith(("?", "#")):
            raise ValueError("a cinder location has no query or fragment")
        if not parts.path:
            store, volume = None, parts.netloc
        elif parts.path.count("/") == 1 and parts.netloc:
            store, volume = unquote(parts.netloc), parts.path[1:]
        else:
            raise ValueError("expected cinder://<store id>/<volume id> or cinder://<volume id>")
        if not _UUID.fullmatch(volume):
            raise ValueError(f"{volume!r} is not a volume id (a UUID)")
        return cls(volume.lower(), store)

    def format(self) -> str:
        if self.store is None:
            return f"cinder://{self.volume_id}"
        return f"cinder://{quote(self.store)}/{self.volume_id}"

    @property
    def image_id(self) -> str:  # type: ignore[override]
        return self.volume_id

    def with_image_id(self, image_id: str) -> CinderLocation:
        volume = image_id.lower() if _UUID.fullmatch(image_id) else \
            str(uuid.uuid5(_NOWHERE, image_id))
        return dataclasses.replace(self, volume_id=volume)


class CinderDriver(Driver[CinderLocation]):
    schemes = ("cinder",)
    location_type = CinderLocation
    capabilities = Capabilities(read=True, ranged_read=True, write=True, delete=True)
    options = OPTIONS
    write_chunk_size = 4 * MiB

    # -- configuration ----------------------------------------------------------

    def configure(self) -> None:
        # os-brick imports eventlet; imported first in a worker thread, eventlet
        # leaves that thread unjoinable (Thread.join() waits for a thread that
        # has ended: seen with the first add in a thread). Imported here, at load.
        for module in ("cinderclient.v3.client", "keystoneauth1.session",
                       "os_brick.initiator.connector", "os_brick.privileged"):
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise errors.ConfigError(f"the cinder driver needs {module.split('.')[0]} "
                                         f"(pip install 'multistore[cinder]'): {exc}") from exc
        c = self.conf
        self.api = CinderApi(c)
        keyring = c.cinder_rbd_keyring_file
        if keyring:
            keyring = os.path.abspath(keyring)
            if not os.access(keyring, os.R_OK) or any(ch in keyring for ch in "\n\r"):
                raise errors.ConfigError(f"cannot read {keyring!r}",
                                         option="cinder_rbd_keyring_file")
        self.settings = connectors.Settings(
            root_helper=f"sudo glance-rootwrap {c.rootwrap_config}",
            use_multipath=c.cinder_use_multipath, timeout=self.api.timeout,
            keyring_file=keyring)
        self.legacy = c.group == CORE_GROUP
        self.online_extend = bool(c.cinder_do_extend_attached)
        self.host = socket.gethostname()
        self.process = f"{self.host}:{os.getpid()}:{_start_ticks(os.getpid())}"
        self._lock = threading.Lock()
        self._props_lock = threading.Lock()
        self._shared: dict[str, _Shared] = {}
        self.volume_type: str | None = c.cinder_volume_type
        self._default_type: str | None = None
        self._default_looked_up = False
        self._props: dict[str, Any] | None = None
        self._live: set[str] = set()
        self._stale: list[_Attachment] = []
        self._given_up: set[str] = set()

    def translate_error(self, exc: Exception) -> errors.MultistoreError | None:
        return translate(exc, self.api.timeout)

    def properties(self) -> dict[str, Any]:
        out: dict[str, Any] = {"volume_type": self.volume_type or "(Cinder's default type)",
                               **self.api.describe(),
                               "online_extend": self.online_extend,
                               "state_transition_timeout": self.api.transition_timeout}
        try:
            out.update(self._backend(None))
        except Exception as exc:   # noqa: BLE001 - a listing shows what it can
            err = exc if isinstance(exc, errors.MultistoreError) else \
                (self.translate_error(exc) or exc)
            out["cinder"] = f"unavailable: {getattr(err, 'message', str(err))}"
        return out

    def claims(self) -> list[str]:
        """A volume type at one Cinder (and project): two stores sharing it would
        each take the other's volumes for their own."""
        vtype = self.volume_type or "(Cinder's default)"
        return [f"volume type {vtype!r} of Cinder {self.api.where()}"]

    def _backend(self, context: Context) -> dict[str, Any]:
        """Backend and capacity of this store's type, from the scheduler's pools."""
        client = self.api.client(context)
        name = self._type_name(context)
        vtype = next((t for t in client.volume_types.list() if t.name == name), None)
        backend = (vtype.extra_specs or {}).get("volume_backend_name") if vtype else None
        pools = [p.to_dict() for p in client.pools.list(detailed=True)]
        mine = [p for p in pools if backend is None
                or (p.get("capabilities") or {}).get("volume_backend_name") == backend]
        listed = [{"name": p["name"],
                   **{k: (p.get("capabilities") or {}).get(k) for k in
                      ("free_capacity_gb", "total_capacity_gb", "storage_protocol",
                       "multiattach")}} for p in mine]
        free = [p["free_capacity_gb"] for p in listed]
        total: Any = "unknown"
        if free and all(isinstance(f, (int, float)) for f in free):
            total = sum(free)
        return {"volume_type": name, "backend": backend, "pools": listed,
                "free_capacity_gb": total}

    def _type_name(self, context: Context) -> str | None:
        """This store's volume type, or Cinder's default type when none is set
        (None if Cinder cannot say: then every type is this store's)."""
        if self.volume_type is not None:
            return self.volume_type
        if not self._default_looked_up:
            try:
                client = self.api.client(context, version="3.62")
                self._default_type = str(self.api.call(client.volume_types.default,
                                                       "default volume type").name)
                self._default_looked_up = True
            except errors.WriteDenied:
                raise
            except Exception:  # an older Cinder (3.62 is Victoria's): not asked again
                self._default_looked_up = True
                LOG.warning("store %s: Cinder does not say its default volume type: "
                            "volumes of any type count as this store's", self.store_id,
                            exc_info=True)
        return self._default_type

    # -- locations ----------------------------------------------------------------

    def holds(self, location: CinderLocation) -> bool:
        return location.store is None or location.store == self.store_id

    def _location(self, volume_id: str) -> CinderLocation:
        return CinderLocation(volume_id, None if self.legacy else self.store_id)

    def url_prefix(self) -> str:
        """Where this store's URLs start, as glance_store's cinder driver says
        (``cinder://<store id>``; Glance appends ``/<volume id>``)."""
        return "cinder://" if self.legacy else f"cinder://{quote(self.store_id)}"

    def location_for(self, image_id: str, context: Context = None) -> CinderLocation:
        """The volume holding this image in this store, found in Cinder; for an
        image not there, a location no volume has."""
        client = self.api.client(context)
        found = self._images(client, context, image_id)
        if found:
            return self._location(found[0].id)
        return self._location("").with_image_id(image_id)

    def image_id(self, url: str, context: Context = None) -> str:
        """The image id a location was written for, from its volume's metadata."""
        location = self.parse_location(url)
        volume = self._volume(self.api.client(context), context, location)
        image_id = (volume.metadata or {}).get("glance_image_id")
        if not image_id:
            raise errors.NotFound(f"volume {location.volume_id} names no image "
                                  "(no glance_image_id in its metadata)")
        return str(image_id)

    def associated(self, volume_id: str, context: Context = None) -> bool:
        """Whether a volume is of this store's type (glance_store's
        ``is_image_associated_with_store``: how a legacy location finds its store)."""
        try:
            volume = self.api.call(lambda: self.api.client(context).volumes.get(volume_id),
                                   "volume lookup")
        except Exception:  # noqa: BLE001 - as glance_store: not found, not ours
            return False
        return self._is_mine(context, volume)

    def _is_mine(self, context: Context, volume: Any) -> bool:
        name = self._type_name(context)
        return name is None or volume.volume_type == name

    def _images(self, client: Any, context: Context, image_id: str) -> list[Any]:
        """This store's finished volumes of an image, oldest first."""
        found = self.api.call(lambda: client.volumes.list(
            search_opts={"metadata": {"glance_image_id": image_id}}), "volume list")
        return sorted((v for v in found if WRITER_KEY not in (v.metadata or {})
                       and v.status not in ("deleting", "error_deleting")
                       and self._is_mine(context, v)),
                      key=lambda v: (v.created_at, v.id))

    def _volume(self, client: Any, context: Context, location: CinderLocation) -> Any:
        from cinderclient import exceptions as cinder_exc  # type: ignore[import-untyped]
        try:
            volume = self.api.call(lambda: client.volumes.get(location.volume_id),
                                   "volume lookup")
        except cinder_exc.NotFound:
            raise errors.NotFound(f"no volume {location.volume_id} in Cinder") from None
        if volume.status in ("deleting", "error_deleting"):
            raise errors.NotFound(f"volume {volume.id} is being deleted")
        if location.store is None and not self._is_mine(context, volume):
            raise errors.BadLocation(
                f"volume {volume.id} is of type {volume.volume_type!r}, not this store's "
                f"{self._type_name(context)!r}: it belongs to another cinder store")
        if WRITER_KEY in (volume.metadata or {}):
            raise errors.NotFound(f"volume {volume.id} holds an image that was never "
                                  "finished (being written, or left by a writer that died)")
        return volume

    # -- reading ---------------------------------------------------------------------

    def get_size(self, location: CinderLocation, context: Context = None) -> int:
        return _image_size(self._volume(self.api.client(context), context, location))

    def open_reader(self, location: CinderLocation, offset: int, length: int | None,
                    context: Context = None) -> ReadStream:
        client = self.api.client(context)
        volume = self._volume(client, context, location)
        size = _image_size(volume)
        start = min(offset, size)
        count = size - start if length is None else max(0, min(length, size - start))
        if not count:
            return ReadStream(iter(()), 0)
        shared = self._acquire(client, volume)
        try:
            io = shared.attachment.connection.open(writable=False)
        except BaseException:
            self._release(shared)
            raise
        return _Reading(self, shared, io, start, count).stream()

    def _acquire(self, client: Any, volume: Any) -> _Shared:
        """The attachment readers of this volume share in this process (a
        volume takes one attachment unless its type is multiattach)."""
        self._retry_stale(volume.id)
        with self._lock:
            shared = self._shared.setdefault(volume.id, _Shared(volume.id))
            shared.users += 1
        try:
            with shared.lock:
                if shared.attachment is None:
                    shared.attachment = _Attachment(self, client, volume.id, "ro").open()
        except BaseException:
            self._release(shared)
            raise
        return shared

    def _release(self, shared: _Shared) -> None:
        with self._lock:
            shared.users -= 1
            if shared.users:
                return
        with shared.lock:
            with self._lock:
                if shared.users:
                    return
            attachment, shared.attachment = shared.attachment, None
            try:
                if attachment is not None:
                    attachment.disconnect()
                    if self.api.away():
                        raise errors.BackendUnavailable("Cinder did not answer the last call")
                    attachment.delete()
            except Exception as exc:  # noqa: BLE001 - logged, retried later
                # The bytes were delivered: the reader closes without error,
                # and the attachment is deleted at the volume's next use.
                LOG.warning("store %s: detaching volume %s after a read failed (%s); "
                            "retried later", self.store_id, shared.volume_id, exc)
                with self._lock:
                    self._stale.append(attachment)
            finally:
                with self._lock:
                    if not shared.users and self._shared.get(shared.volume_id) is shared:
                        del self._shared[shared.volume_id]

    def _retry_stale(self, volume_id: str | None = None) -> None:
        """Delete attachments whose deletion failed earlier (Cinder was away)."""
        with self._lock:
            stale = [a for a in self._stale if volume_id in (None, a.volume_id)]
        for attachment in stale:
            try:
                attachment.close()
            except Exception:   # still away: kept for the next try
                LOG.debug("attachment of volume %s still not deleted", attachment.volume_id,
                          exc_info=True)
                continue
            with self._lock:
                self._stale.remove(attachment)

    # -- writing ---------------------------------------------------------------------

    def open_writer(self, image_id: str, size: int | None,
                    context: Context = None) -> Writer:
        client = self.api.client(context)
        if self._images(client, context, image_id):
            raise errors.Duplicate(f"image {image_id!r} already has a volume in this store")
        return _CinderWriter(self, client, context, image_id, size)

    def connector_properties(self) -> dict[str, Any]:
        """os-brick's description of this host (computed once)."""
        with self._props_lock:
            if self._props is None:
                from os_brick.initiator import connector  # type: ignore[import-untyped]
                from oslo_privsep import priv_context
                if os.geteuid() == 0:
                    # Root already: os-brick's privileged calls run here,
                    # not through sudo and a privsep daemon.
                    import os_brick.privileged  # type: ignore[import-untyped]
                    os_brick.privileged.default.set_client_mode(False)
                else:
                    priv_context.init(root_helper=shlex.split(self.settings.root_helper))
                self._props = connector.get_connector_properties(
                    self.settings.root_helper, _my_ip(self.host),
                    self.conf.cinder_use_multipath, self.conf.cinder_enforce_multipath,
                    host=self.host)
            return dict(self._props)

    def new_token(self) -> str:
        token = f"{self.process}:{uuid.uuid4().hex[:12]}"
        with self._lock:
            self._live.add(token)
        return token

    def writer_done(self, token: str, given_up: bool) -> None:
        with self._lock:
            self._live.discard(token)
            if given_up:
                self._given_up.add(token)

    # -- deleting ----------------------------------------------------------------------

    def delete(self, location: CinderLocation, context: Context = None) -> None:
        from cinderclient import exceptions as cinder_exc  # type: ignore[import-untyped]
        client = self.api.client(context)
        volume = self._volume(client, context, location)
        self._retry_stale(volume.id)
        try:
            self.api.call(lambda: client.volumes.delete(volume.id), "volume delete")
        except cinder_exc.BadRequest as exc:
            raise errors.InUse(f"Cinder keeps volume {volume.id} ({volume.status}): "
                               f"{exc}") from None
        except cinder_exc.NotFound:
            raise errors.NotFound(f"no volume {volume.id} in Cinder") from None
        self.api.wait_gone(client, volume.id)

    # -- what killed writers left ---------------------------------------------------------

    def find_leftovers(self, grace: float, context: Context = None) -> list[Leftover]:
        """Volumes of this store's type still tagged ``multistore_writer`` whose
        writer is gone: its process ended (same host), it gave up, or it has
        not been heard of for three heartbeats; and untouched for ``grace`` s."""
        client = self.api.client(context)
        now = time.time()
        found = []
        for volume in self._all_volumes(client):
            meta = volume.metadata or {}
            if WRITER_KEY in meta and self._is_mine(context, volume) \
                    and self._abandoned(meta, volume, now, grace):
                age = now - _heartbeat(meta, volume)
                found.append(Leftover(
                    f"volume {volume.id} (image {meta.get('glance_image_id')!r}, writer "
                    f"{meta[WRITER_KEY].rsplit(':', 1)[0]})", volume.size * GiB, age,
                    (volume.id, meta[WRITER_KEY])))
        return found

    def remove_leftover(self, leftover: Leftover, context: Context = None) -> None:
        from cinderclient import exceptions as cinder_exc  # type: ignore[import-untyped]
        volume_id, token = leftover.handle
        client = self.api.client(context)
        try:
            volume = self.api.call(lambda: client.volumes.get(volume_id), "volume lookup")
        except cinder_exc.NotFound:
            raise errors.NotFound(f"volume {volume_id} is gone") from None
        meta = volume.metadata or {}
        if meta.get(WRITER_KEY) != token or not self._abandoned(meta, volume, time.time(), 0):
            raise errors.InUse(f"volume {volume_id} is being written again")
        remove_volume(self.api, client, volume_id)

    def _abandoned(self, meta: dict[str, str], volume: Any, now: float, grace: float) -> bool:
        token = meta[WRITER_KEY]
        age = now - _heartbeat(meta, volume)
        if age <= grace:
            return False
        with self._lock:
            if token in self._live:
                return False
            if token in self._given_up:
                return True
        host, pid, start = (token.split(":") + ["", "", ""])[:3]
        if host == self.host and pid.isdigit() and _start_ticks(int(pid)) != start:
            return True          # that process is gone
        return age > 3 * HEARTBEAT

    def _all_volumes(self, client: Any) -> Iterator[Any]:
        marker: str | None = None
        while True:
            page: list[Any] = self.api.call(functools.partial(
                client.volumes.list, marker=marker, limit=500,
                sort="created_at:asc,id:asc"), "volume list")
            yield from page
            if len(page) < 500:
                return
            marker = page[-1].id

    def close(self) -> None:
        """Delete what attachments could not be deleted before; close the
        session (its pooled connections)."""
        self._retry_stale()
        with self._lock:
            left = len(self._stale)
        if left:
            LOG.warning("store %s: %d attachments could not be deleted (Cinder away); "
                        "their volumes stay in-use until deleted by hand", self.store_id, left)
        self.api.close()


# -- attachments -------------------------------------------------------------------------


class _Attachment:
    """One attachment of a volume to this host, made as glance_store makes it:
    reserve, update with os-brick's connector properties (mountpoint
    ``glance_store``), connect, complete. ``close`` undoes all of it."""

    def __init__(self, driver: CinderDriver, client: Any, volume_id: str, mode: str) -> None:
        self.driver, self.client, self.volume_id, self.mode = driver, client, volume_id, mode
        self.id: str | None = None
        self.connection: Any = None

    def open(self) -> _Attachment:
        api = self.driver.api
        self.id = self._reserve()
        try:
            props = dict(self.driver.connector_properties(), mountpoint="glance_store")
            updated = api.call(lambda: self.client.attachments.update(self.id, props),
                               "attachment update")
            self.connection = connectors.connect(dict(updated.connection_info),
                                                 self.driver.settings)
            api.call(lambda: self.client.attachments.complete(self.id), "attachment complete")
        except BaseException:
            self.close()
            raise
        return self

    def _reserve(self) -> str:
        """``attachments.create`` without a connector, retried while the volume
        is in a state that refuses it (another attachment, a transition)."""
        from cinderclient import exceptions as cinder_exc  # type: ignore[import-untyped]
        attempts = self.driver.conf.cinder_attachment_retry_attempts
        delay = 0.25
        for attempt in range(1, attempts + 1):
            try:
                att = self.driver.api.call(lambda: self.client.attachments.create(
                    self.volume_id, None, mode=self.mode), "attachment create",
                    idempotent=False)
                return str(att["id"])
            except cinder_exc.BadRequest as exc:
                if "current status is deleting" in str(exc):
                    raise errors.NotFound(f"volume {self.volume_id} is being deleted") from None
                if "to reserve" not in str(exc) or attempt == attempts:
                    if "to reserve" in str(exc):
                        raise errors.BackendUnavailable(
                            f"volume {self.volume_id} could not be attached after "
                            f"{attempts} attempts (attached elsewhere?): {exc}") from None
                    raise
                LOG.debug("volume %s cannot be attached yet (%s); again in %.2f s",
                          self.volume_id, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Disconnect, then delete the attachment (volume back to ``available``);
        again after a failure deletes what is left."""
        try:
            self.disconnect()
        finally:
            self.delete()

    def disconnect(self, background: bool = False) -> None:
        """os-brick's disconnect (this host only); in a thread of its own when
        the storage stopped answering (it waits for it again)."""
        connection, self.connection = self.connection, None
        if connection is None:
            return
        if background:
            threading.Thread(target=connection.close, daemon=True,
                             name="multistore-cinder-disconnect").start()
        else:
            connection.close()

    def delete(self) -> None:
        """Delete the attachment in Cinder."""
        from cinderclient import exceptions as cinder_exc  # type: ignore[import-untyped]
        att = self.id
        if att is not None:
            with contextlib.suppress(cinder_exc.NotFound):
                self.driver.api.call(lambda: self.client.attachments.delete(att),
                                     "attachment delete")
            self.id = None


@dataclasses.dataclass(eq=False)
class _Shared:
    volume_id: str
    users: int = 0
    attachment: Any = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class _Reading:
    """One reader's handle on a shared attachment, released when closed."""

    def __init__(self, driver: CinderDriver, shared: _Shared, io: Any, start: int,
                 count: int) -> None:
        self.driver, self.shared, self.io = driver, shared, io
        self.chunks = io.read(start, count)
        self.count = count
        self.done = False

    def stream(self) -> ReadStream:
        return ReadStream(self._iterate(), self.count, self.close)

    def _iterate(self) -> Iterator[bytes]:
        yield from self.chunks
        self.close()

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.chunks.close()
            self.io.close()
        finally:
            self.driver._release(self.shared)


# -- the writer ----------------------------------------------------------------------------


class _CinderWriter(Writer):
    def __init__(self, driver: CinderDriver, client: Any, context: Context, image_id: str,
                 size: int | None) -> None:
        self.driver, self.client, self.api = driver, client, driver.api
        self.context, self.image_id = context, image_id
        # glance_store's image_owner: the request's project (else the store's)
        project = context_value(context, "project_id", "tenant") or self.api.project(context)
        self.token = driver.new_token()
        self.offset = 0
        self.volume: Any = None
        self.capacity = 0
        self.attachment: _Attachment | None = None
        self.io: Any = None
        self.finished = False
        self.stop = threading.Event()
        self.metadata = {"glance_image_id": image_id, "image_size": str(size or 0)}
        if project:
            self.metadata["image_owner"] = project
        try:
            self._create(max(1, math.ceil((size or 0) / GiB)))
            self._attach()
        except BaseException:
            self.abort()
            raise
        self.heart = threading.Thread(target=self._beat, daemon=True,
                                      name=f"multistore-cinder-heartbeat-{self.image_id[:16]}")
        self.heart.start()

    def _create(self, size_gb: int) -> None:
        from cinderclient import exceptions as cinder_exc  # type: ignore[import-untyped]
        meta = {**self.metadata, WRITER_KEY: self.token, HEARTBEAT_KEY: str(int(time.time()))}
        try:
            self.volume = self.api.call(lambda: self.client.volumes.create(
                size_gb, name=f"image-{self.image_id}"[:255], metadata=meta,
                volume_type=self.driver.volume_type), "volume create", idempotent=False)
        except cinder_exc.NotFound as exc:     # the volume type, not an image
            raise errors.ConfigError(f"Cinder: {exc}", option="cinder_volume_type",
                                     operation=None) from None
        self.volume = self.api.wait(self.client, self.volume.id, "available")
        self.capacity = self.volume.size * GiB

    def _attach(self) -> None:
        self.attachment = _Attachment(self.driver, self.client, self.volume.id, "rw").open()
        self.io = self.attachment.connection.open(writable=True)

    def _detach(self) -> None:
        io, self.io = self.io, None
        attachment, self.attachment = self.attachment, None
        try:
            if io is not None:
                io.close()
        finally:
            if attachment is not None:
                attachment.close()

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT):
            try:
                self.api.call(lambda: self.client.volumes.set_metadata(
                    self.volume.id, {HEARTBEAT_KEY: str(int(time.time()))}), "heartbeat")
            except Exception:   # the writer reports real failures
                LOG.debug("heartbeat of volume %s failed", self.volume.id, exc_info=True)

    def write(self, data: memoryview) -> None:
        n = len(data)
        if not n:
            return
        end = self.offset + n
        if end > self.capacity:
            self._grow(end)
        buf = data.obj if isinstance(data.obj, bytearray) and len(data.obj) == n \
            else bytes(data)
        self.io.write(self.offset, buf)
        self.offset = end

    def _grow(self, needed: int) -> None:
        """Extend the volume to hold ``needed`` bytes, in GiB as glance_store does."""
        size_gb = math.ceil(needed / GiB)
        LOG.debug("extending volume %s to %d GiB (%s)", self.volume.id, size_gb,
                  "online" if self.driver.online_extend else "detached")
        if self.driver.online_extend:
            self._extend(size_gb, "in-use")
            self.attachment.connection.extend(size_gb * GiB)  # type: ignore[union-attr]
        else:
            self.io.drain()
            self._detach()
            self.api.wait(self.client, self.volume.id, "available")
            self._extend(size_gb, "available")
            self._attach()
        self.capacity = size_gb * GiB

    def _extend(self, size_gb: int, status: str) -> None:
        self.api.call(lambda: self.client.volumes.extend(self.volume.id, size_gb),
                      "volume extend", idempotent=False)
        self.volume = self.api.wait(self.client, self.volume.id, status)

    def commit(self) -> Stored:
        self.io.drain()
        self._detach()
        self._stop_heart()
        client, volume = self.client, self.volume
        if self.driver._images(client, self.context, self.image_id):
            raise errors.Duplicate(f"image {self.image_id!r} got a volume in this store "
                                   "while this one was written")
        self.api.call(lambda: client.volumes.update_readonly_flag(volume.id, True),
                      "read-only flag")
        final = {**self.metadata, "image_size": str(self.offset)}
        self.api.call(lambda: client.volumes.update_all_metadata(volume.id, final),
                      "volume metadata")
        # Two writers of one image may both get here: the older volume wins.
        first = self.driver._images(client, self.context, self.image_id)[0]
        if first.id != volume.id:
            raise errors.Duplicate(f"image {self.image_id!r} got a volume in this store "
                                   "while this one was written")
        self.finished = True
        self.driver.writer_done(self.token, given_up=False)
        return Stored(self.driver._location(volume.id))

    def _stop_heart(self, wait: float | None = None) -> None:
        """Stop the heartbeats; wait for one in flight (a commit must: a late
        one would put its key back), or not that long (an abort)."""
        self.stop.set()
        heart = getattr(self, "heart", None)
        if heart is not None:
            heart.join(wait)

    def abort(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._stop_heart(wait=1.0)
        given_up = False
        try:
            stalled = self.io is not None and self.io.stalled()
            if stalled or self.api.away():
                # Ceph or Cinder did not answer: more calls would only add
                # their timeouts to the error. The volume is closed on this
                # host (in the background if Ceph is away); the sweep deletes
                # its attachment and the volume.
                io, self.io = self.io, None
                attachment, self.attachment = self.attachment, None
                if io is not None:
                    io.close()
                if attachment is not None:
                    attachment.disconnect(background=stalled)
                raise errors.BackendUnavailable("Cinder or Ceph is away")
            with contextlib.suppress(Exception):
                if self.io is not None:
                    self.io.drain()
            self._detach()
            volumes = [self.volume] if self.volume is not None else self._mine()
            for volume in volumes:
                remove_volume(self.api, self.client, volume.id)
        except Exception:
            given_up = True
            LOG.warning("store %s: the volume of failed add of image %s could not be "
                        "removed now; a sweep will remove it", self.driver.store_id,
                        self.image_id, exc_info=True)
        finally:
            self.driver.writer_done(self.token, given_up)

    def _mine(self) -> list[Any]:
        """Volumes carrying this writer's token (a create whose answer was lost)."""
        found = self.api.call(lambda: self.client.volumes.list(
            search_opts={"metadata": {WRITER_KEY: self.token}}), "volume list")
        return list(found)


def remove_volume(api: CinderApi, client: Any, volume_id: str) -> None:
    """Delete a volume and wait until Cinder has: once it has settled (a
    volume still ``creating`` cannot be deleted), its attachments first."""
    from cinderclient import exceptions as cinder_exc  # type: ignore[import-untyped]
    try:
        volume = api.settle(client, volume_id)
        if volume.status != "deleting":
            attachments = getattr(volume, "attachments", None) or []
            for attachment in attachments:
                att = attachment.get("attachment_id") or attachment.get("id")
                with contextlib.suppress(cinder_exc.NotFound):
                    api.call(functools.partial(client.attachments.delete, att),
                             "attachment delete")
            if attachments:
                api.settle(client, volume_id)
            api.call(lambda: client.volumes.delete(volume_id), "volume delete")
    except cinder_exc.NotFound:
        return
    api.wait_gone(client, volume_id)


def _image_size(volume: Any) -> int:
    meta = volume.metadata or {}
    try:
        return int(meta["image_size"])
    except (KeyError, ValueError):
        return int(volume.size) * GiB


def _heartbeat(meta: dict[str, str], volume: Any) -> float:
    try:
        return float(meta[HEARTBEAT_KEY])
    except (KeyError, ValueError):
        created = str(getattr(volume, "created_at", "") or "")
        with contextlib.suppress(ValueError):
            from datetime import UTC, datetime
            return datetime.fromisoformat(created).replace(tzinfo=UTC).timestamp()
        return 0.0


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks ('' if there is no such process):
    a pid and this tell a live process from a recycled pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _my_ip(host: str) -> str:
    """This host's address, as glance_store finds it (IPv6 first)."""
    for family in (socket.AF_INET6, socket.AF_INET):
        with contextlib.suppress(OSError, IndexError):
            return str(socket.getaddrinfo(host, None, family)[0][4][0])
    return "127.0.0.1"


__all__ = ["CinderDriver", "CinderLocation"]
