"""Images on a vSphere datastore (vCenter or ESXi), as glance_store's vmware store keeps them.

Data goes over the datastore's ``/folder`` HTTPS interface (``PUT``, ``GET``
with ``Range``, ``HEAD``) with the session cookie of one SOAP session per
store (oslo.vmware's ``Vim`` client); deleting, moving and searching files
are SOAP tasks on the file manager and the datastore browser.

Locations are glance_store's, byte for byte for ordinary ids::

    vsphere://<host>[:<port>]/folder/<image dir>/<image id>?dsName=<ds>&dcPath=<dc>

(IPv6 hosts in brackets; the port only when it is not 443; the id
percent-encoded when it holds anything but letters, digits and ``-._~``).

How an add stays all or nothing: the bytes are PUT to a partial file in a
directory beside the image directory (``<image dir>-multistore-partial``),
then moved under the final name with ``MoveDatastoreFile_Task`` and
``force=false``, which refuses to replace an existing file: a reader never
sees a partial image and a duplicate never overwrites. A failed add deletes
its partial file; what a killed writer leaves there is found by
``find_leftovers`` (modification time older than the grace period).

Options are glance_store's (same names, types and defaults), plus
``vmware_server_port`` and ``vmware_timeout``.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import re
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import requests
from oslo_config import cfg

from multistore import errors
from multistore.context import Context
from multistore.driver import Capabilities, Driver, Leftover, ReadStream, Stored, Writer
from multistore.location import Location, image_id_problem, quote, split_url, unquote
from multistore.retry import ResumingRead, RetryPolicy
import contextlib

with warnings.catch_warnings():     # eventlet's deprecation warning, on import
    warnings.simplefilter("ignore")
    from oslo_vmware import exceptions as vexc  # type: ignore[import-untyped]
    from oslo_vmware import vim as oslo_vim  # type: ignore[import-untyped]
    from oslo_vmware import vim_util  # type: ignore[import-untyped]

LOG = logging.getLogger(__name__)
T = TypeVar("T")
MiB = 1024 * 1024
READ_CHUNK_SIZE = 4 * MiB
PARTIAL_SUFFIX = "-multistore-partial"
_HEAD_REFUSED = frozenset({403, 405, 501})

OPTIONS = [
    cfg.HostAddressOpt("vmware_server_host", sample_default="127.0.0.1",
                       help="ESX/ESXi or vCenter Server host."),
    cfg.StrOpt("vmware_server_username", sample_default="root",
               help="User name for the vCenter/ESXi server."),
    cfg.StrOpt("vmware_server_password", secret=True, sample_default="vmware",
               help="Password for the vCenter/ESXi server."),
    cfg.IntOpt("vmware_api_retry_count", default=10, min=1,
               help="How many times a SOAP call broken by the connection is "
                    "tried; also bounds a task wait (this many poll intervals)."),
    cfg.IntOpt("vmware_task_poll_interval", default=5, min=1,
               help="Longest pause, in seconds, between two looks at a running "
                    "task (the first looks come sooner)."),
    cfg.StrOpt("vmware_store_image_dir", default="/openstack_glance",
               help="Directory of the datastore the images are kept in."),
    cfg.BoolOpt("vmware_insecure", default=False, deprecated_name="vmware_api_insecure",
                help="Do not verify the server's certificate. Ignored when "
                     "vmware_ca_file is set."),
    cfg.StrOpt("vmware_ca_file",
               help="CA bundle the server's certificate is verified with."),
    cfg.MultiStrOpt("vmware_datastores",
                    help="Datastores, one per entry: "
                         "``<datacenter path>:<datastore name>[:<weight>]``. "
                         "An add goes to the highest weight with room, the "
                         "most free space among equal weights."),
    cfg.PortOpt("vmware_server_port", default=443,
                help="HTTPS port of the server (not in glance_store: 443)."),
    cfg.FloatOpt("vmware_timeout", default=60.0, min=0.1,
                 help="Seconds to wait for a connection, an answer or a block "
                      "of data (not in glance_store, which has no timeout)."),
]


class _MaskPasswords(logging.Filter):
    """suds logs every SOAP message at DEBUG, Login's password included:
    this filter, on every suds logger, masks the passwords of the vmware
    stores of this process in those records."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        text = record.getMessage()
        masked = text
        for secret in self.secrets:
            masked = masked.replace(secret, "***")
        # Always frozen: suds logs mutable XML nodes that get the password later.
        record.msg, record.args = masked, None
        return True


_SUDS_FILTER = _MaskPasswords()


def _guard_suds_logs(password: str) -> None:
    import importlib
    import pkgutil

    import suds  # type: ignore[import-untyped]
    _SUDS_FILTER.secrets.add(password)
    # suds makes some loggers on first use: import every module now.
    for module in pkgutil.walk_packages(suds.__path__, "suds."):
        try:
            importlib.import_module(module.name)
        except Exception:   # noqa: BLE001 - optional parts of suds
            continue
    for name in list(logging.root.manager.loggerDict):
        if name == "suds" or name.startswith("suds."):
            logger = logging.getLogger(name)
            if _SUDS_FILTER not in logger.filters:
                logger.addFilter(_SUDS_FILTER)


# -- locations ---------------------------------------------------------------

def _enc(value: str) -> str:
    return urllib.parse.quote_plus(value, safe="")


def _dec(value: str) -> str:
    return unquote(value.replace("+", " "))


@dataclasses.dataclass(frozen=True)
class VsphereLocation(Location):
    """``vsphere://host[:port]/folder/<image_dir>/<image_id>?dsName=..&dcPath=..``.

    ``image_dir`` is kept without leading or trailing ``/`` (``""`` for the
    datastore's root); ``dc_path`` is ``None`` when the URL has no dcPath.
    """

    host: str
    port: int | None
    image_dir: str
    image_id: str
    ds_name: str
    dc_path: str | None = None

    @classmethod
    def parse(cls, url: str) -> VsphereLocation:
        parts = split_url(url, ("vsphere",))
        if parts.fragment or "#" in url:
            raise ValueError("a fragment in a vsphere location")
        if "@" in parts.netloc:
            raise ValueError("user information in a vsphere location")
        host = parts.hostname
        if not host or any(c in host for c in " %\\/"):
            raise ValueError("no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the port is not a number from 1 to 65535") from None
        if port == 0:
            raise ValueError("port 0")
        if ":" in host and f"[{host}]" not in parts.netloc:
            raise ValueError("an IPv6 host not in brackets")
        segments = parts.path.split("/")
        if len(segments) < 3 or segments[0] != "" or segments[1] != "folder":
            raise ValueError("the path is not /folder/<image dir>/<image id>")
        names = [unquote(s) for s in segments[2:]]
        if any(not n or "/" in n for n in names):
            raise ValueError("an empty or '/'-holding path segment")
        image_id = names[-1]
        problem = image_id_problem(image_id)
        if problem:
            raise ValueError(f"the image id is not valid: {problem}")
        query: dict[str, str] = {}
        for pair in parts.query.split("&") if parts.query else ():
            key, eq, value = pair.partition("=")
            if not eq or key not in ("dsName", "dcPath") or key in query:
                raise ValueError("the query is not dsName=...[&dcPath=...]")
            query[key] = _dec(value)
        if not query.get("dsName"):
            raise ValueError("no dsName")
        dc = query.get("dcPath")
        if dc == "":
            raise ValueError("an empty dcPath")
        return cls(host.lower() if ":" not in host else host, port, "/".join(names[:-1]),
                   image_id, query["dsName"], dc)

    def format(self) -> str:
        return f"vsphere://{self.netloc}{self.path}?{self.query}"

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def file_path(self) -> str:
        """The file's path in the datastore, unescaped: ``openstack_glance/<id>``."""
        return f"{self.image_dir}/{self.image_id}" if self.image_dir else self.image_id

    @property
    def path(self) -> str:
        return "/folder/" + "/".join(quote(s) for s in self.file_path.split("/"))

    @property
    def query(self) -> str:
        # glance_store's order: dsName, then dcPath (urlencode of a dict).
        query = f"dsName={_enc(self.ds_name)}"
        return query if self.dc_path is None else f"{query}&dcPath={_enc(self.dc_path)}"


# -- the SOAP session --------------------------------------------------------

def _not_authenticated(exc: BaseException) -> bool:
    return isinstance(exc, vexc.NotAuthenticatedException) or (
        isinstance(exc, vexc.VimFaultException)
        and vexc.NOT_AUTHENTICATED in (exc.fault_list or ()))


class _Session:
    """One logged-in SOAP session, opened on first use, shared by threads;
    renewed once when the server says it is no longer authenticated."""

    def __init__(self, driver: VmwareDriver) -> None:
        self.driver = driver
        self.lock = threading.Lock()
        # suds keeps per-call state in its client: one SOAP call at a time
        # (the data path, /folder, is not serialised).
        self.soap_lock = threading.Lock()
        self.vim: Any = None
        self.valid = False          # logged in
        self.generation = 0         # logins so far

    def _login(self) -> None:
        d = self.driver
        vim = self.vim or oslo_vim.Vim(
            protocol="https", host=d.host, port=d.port, cacert=d.ca_file,
            insecure=d.insecure, connection_timeout=d.timeout)
        with self.soap_lock:
            content = vim.service_content
            vim.Login(content.sessionManager, userName=d.username, password=d.password)
        self.vim = vim
        self.valid = True
        self.generation += 1
        LOG.debug("store %s: logged in to %s", d.store_id, d.server)

    def current(self) -> tuple[Any, int]:
        with self.lock:
            if not self.valid:
                self._login()
            return self.vim, self.generation

    def renew(self, generation: int) -> None:
        with self.lock:
            if generation == self.generation:      # not renewed by another thread yet
                LOG.info("store %s: the session on %s ended; logging in again",
                         self.driver.store_id, self.driver.server)
                self.valid = False
                self._login()

    def call(self, fn: Any) -> Any:
        """``fn(vim)``, once more after renewing an ended session."""
        vim, generation = self.current()
        try:
            with self.soap_lock:
                return fn(vim)
        except Exception as exc:
            if not _not_authenticated(exc):
                raise
        self.renew(generation)
        vim = self.current()[0]
        with self.soap_lock:
            return fn(vim)

    def cookie(self) -> str:
        vim, _ = self.current()
        return "; ".join(f"{c.name}={c.value}" for c in vim.client.cookiejar)

    def close(self) -> None:
        with self.lock:
            vim, self.vim, self.valid = self.vim, None, False
        if vim is not None:
            try:
                with self.soap_lock:
                    vim.Logout(vim.service_content.sessionManager)
            except Exception:   # noqa: BLE001 - best effort
                pass


@dataclasses.dataclass
class _Datastore:
    dc_path: str
    name: str
    weight: int
    ref: Any = None
    dc_ref: Any = None
    dir_made: bool = False


def parse_datastores(entries: list[str]) -> list[_Datastore]:
    found = []
    for entry in entries:
        parts = entry.strip().split(":")
        if len(parts) == 3:
            try:
                weight = int(parts[2])
            except ValueError:
                raise errors.ConfigError(f"{entry!r}: the weight is not an integer",
                                         option="vmware_datastores") from None
        elif len(parts) == 2:
            weight = 0
        else:
            raise errors.ConfigError(f"{entry!r} is not <datacenter path>:<datastore "
                                     "name>[:<weight>]", option="vmware_datastores")
        if not parts[0].strip() or not parts[1].strip():
            raise errors.ConfigError(f"{entry!r}: empty datacenter path or datastore name",
                                     option="vmware_datastores")
        found.append(_Datastore(parts[0].strip(), parts[1].strip(), weight))
    return found


# -- the driver --------------------------------------------------------------

class VmwareDriver(Driver[VsphereLocation]):
    schemes = ("vsphere",)
    location_type = VsphereLocation
    capabilities = Capabilities(read=True, ranged_read=True, write=True, delete=True)
    options = OPTIONS
    write_chunk_size = MiB

    def configure(self) -> None:
        c = self.conf
        for name in ("vmware_server_host", "vmware_server_username",
                     "vmware_server_password", "vmware_datastores"):
            if not getattr(c, name):
                raise errors.ConfigError("must be set", option=name)
        self.host = str(c.vmware_server_host).strip("[]")
        self.port = int(c.vmware_server_port)
        self.username = c.vmware_server_username
        self.password = c.vmware_server_password
        _guard_suds_logs(self.password)
        self.ca_file = c.vmware_ca_file or None
        self.insecure = bool(c.vmware_insecure) and not self.ca_file
        self.verify: str | bool = self.ca_file or not self.insecure
        self.timeout = float(c.vmware_timeout)
        self.poll_interval = float(c.vmware_task_poll_interval)
        self.retry_count = int(c.vmware_api_retry_count)
        self.image_dir = c.vmware_store_image_dir.strip("/")
        self.datastores = parse_datastores(list(c.vmware_datastores))
        names = [(d.dc_path, d.name) for d in self.datastores]
        if len(set(names)) != len(names):
            raise errors.ConfigError("a datastore is listed twice", option="vmware_datastores")
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        self.server = netloc if self.port == 443 else f"{netloc}:{self.port}"
        self.session = _Session(self)
        self.http = requests.Session()
        self.http.verify = self.verify
        self.retry = RetryPolicy(attempts=2, first_backoff=0.2, max_backoff=2.0)
        self._resolved = False
        self._resolve_lock = threading.Lock()
        self._writers: set[str] = set()
        try:
            self._resolve()
        except errors.ConfigError:
            raise
        except vexc.VimFaultException as exc:
            if "InvalidLogin" in (exc.fault_list or ()):
                raise errors.ConfigError(f"{self.server} refused the user name or password",
                                         option="vmware_server_password") from None
            raise
        except Exception as exc:    # noqa: BLE001 - the server may be down at load
            LOG.warning("store %s: cannot check the datastores on %s now (%s); they are "
                        "checked on first use", self.store_id, self.server,
                        self._message(exc))

    def close(self) -> None:
        self.session.close()
        self.http.close()

    def properties(self) -> dict[str, Any]:
        return {"server": self.server, "image_dir": "/" + self.image_dir,
                "datastores": [f"{d.dc_path}:{d.name}:{d.weight}" for d in self.datastores]}

    def claims(self) -> list[str]:
        return [f"directory /{self.image_dir} of datastore {d.dc_path}:{d.name} on "
                f"{self.server}" for d in self.datastores]

    # -- inventory -------------------------------------------------------

    def _resolve(self) -> None:
        """Find every configured datacenter and datastore; ConfigError naming
        ``vmware_datastores`` for one the server does not have."""
        with self._resolve_lock:
            if self._resolved:
                return
            dcs: dict[str, Any] = {}
            for ds in self.datastores:
                if ds.dc_path not in dcs:
                    dcs[ds.dc_path] = self.session.call(
                        lambda vim, p=ds.dc_path: vim.FindByInventoryPath(
                            vim.service_content.searchIndex, inventoryPath=p))
                    if dcs[ds.dc_path] is None or getattr(dcs[ds.dc_path], "_type", "") \
                            != "Datacenter":
                        raise errors.ConfigError(f"no datacenter {ds.dc_path!r} on "
                                                 f"{self.server}", option="vmware_datastores")
                ds.dc_ref = dcs[ds.dc_path]
                refs = self.session.call(lambda vim, r=ds.dc_ref: vim_util.get_object_property(
                    vim, r, "datastore"))
                for ref in getattr(refs, "ManagedObjectReference", []) or []:
                    name = self.session.call(lambda vim, r=ref: vim_util.get_object_property(
                        vim, r, "name"))
                    if name == ds.name:
                        ds.ref = ref
                if ds.ref is None:
                    raise errors.ConfigError(f"no datastore {ds.name!r} in datacenter "
                                             f"{ds.dc_path!r} on {self.server}",
                                             option="vmware_datastores")
            self._resolved = True

    def _forget(self) -> None:
        """Drop the inventory references (a restarted server has new ones)."""
        with self._resolve_lock:
            self._resolved = False
            for ds in self.datastores:
                ds.ref = ds.dc_ref = None
                ds.dir_made = False

    def _refreshing(self, op: Callable[[], T]) -> T:
        """``op()``, once more after finding the inventory again if the server
        no longer knows a reference (ManagedObjectNotFound)."""
        try:
            return op()
        except vexc.VimFaultException as exc:
            if "ManagedObjectNotFound" not in (exc.fault_list or ()):
                raise
        LOG.info("store %s: %s forgot the datacenters and datastores; finding them again",
                 self.store_id, self.server)
        self._forget()
        self._resolve()
        return op()

    def _free_space(self, ds: _Datastore) -> int:
        return int(self.session.call(lambda vim: vim_util.get_object_property(
            vim, ds.ref, "summary.freeSpace")))

    def select_datastore(self, size: int | None) -> _Datastore:
        return self._choose(size)[0]

    def _choose(self, size: int | None) -> tuple[_Datastore, int]:
        """The datastore for ``size`` bytes, and its free space."""
        self._resolve()
        for weight in sorted({d.weight for d in self.datastores}, reverse=True):
            spaces = [(self._free_space(d), d) for d in self.datastores if d.weight == weight]
            free, best = max(spaces, key=lambda s: s[0])
            if size is None or free >= size:
                return best, free
        raise errors.StorageFull(f"no datastore has room for {size} bytes")

    def _datastore_of(self, location: VsphereLocation) -> _Datastore:
        self._resolve()
        for d in self.datastores:
            if d.name == location.ds_name and location.dc_path in (None, d.dc_path):
                return d
        raise errors.BadLocation(f"{location} is not on a datastore of this store")

    # -- locations -------------------------------------------------------

    def holds(self, location: VsphereLocation) -> bool:
        port = 443 if location.port is None else location.port
        return (location.host.lower() == self.host.lower() and port == self.port
                and location.image_dir == self.image_dir
                and any(d.name == location.ds_name and location.dc_path in (None, d.dc_path)
                        for d in self.datastores))

    def location_for(self, image_id: str, context: Context = None,
                     ds: _Datastore | None = None) -> VsphereLocation:
        ds = ds or self.datastores[0]
        return VsphereLocation(self.host, None if self.port == 443 else self.port,
                               self.image_dir, image_id, ds.name, ds.dc_path)

    def _url(self, location: VsphereLocation) -> str:
        return f"https://{self.server}{location.path}?{location.query}"

    def _partial(self, location: VsphereLocation) -> VsphereLocation:
        directory = (self.image_dir + PARTIAL_SUFFIX) if self.image_dir else PARTIAL_SUFFIX[1:]
        name = f"{location.image_id}~{uuid.uuid4().hex}"
        return dataclasses.replace(location, image_dir=directory, image_id=name)

    # -- /folder requests ------------------------------------------------

    def _request(self, method: str, location: VsphereLocation, **kwargs: Any
                 ) -> requests.Response:
        """One request with the session cookie; a 401 renews the session once."""
        for attempt in (0, 1):
            _, generation = self.session.current()
            headers = {"Cookie": self.session.cookie(), **kwargs.pop("headers", {})}
            response = self.http.request(method, self._url(location), headers=headers,
                                         timeout=self.timeout, allow_redirects=False,
                                         verify=self.verify, **kwargs)
            if response.status_code != 401 or attempt:
                return response
            response.close()
            self.session.renew(generation)
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "Cookie"}
        raise AssertionError("unreachable")

    # -- tasks -----------------------------------------------------------

    def _wait(self, task: Any, what: str) -> Any:
        """Wait for a task: first looks after 50 ms, doubling up to the poll
        interval, for at most ``poll interval x api retry count`` seconds."""
        deadline = time.monotonic() + self.poll_interval * self.retry_count
        pause = 0.05
        while True:
            info = self.session.call(lambda vim: vim_util.get_object_property(
                vim, task, "info"))
            if info.state == "success":
                return info
            if info.state == "error":
                raise vexc.translate_fault(info.error)
            if time.monotonic() + pause > deadline:
                raise errors.BackendUnavailable(
                    f"{what} did not finish in {self.poll_interval * self.retry_count:g} s "
                    "(vmware_task_poll_interval x vmware_api_retry_count)")
            time.sleep(pause)
            pause = min(pause * 2, self.poll_interval)

    def _file_task(self, method: str, what: str, **kwargs: Any) -> Any:
        task = self.session.call(lambda vim: getattr(vim, method)(
            vim.service_content.fileManager, **kwargs))
        return self._wait(task, what)

    def _delete_file(self, location: VsphereLocation) -> None:
        ds = self._datastore_of(location)
        self._file_task("DeleteDatastoreFile_Task", f"deleting {location}",
                        name=f"[{ds.name}] {location.file_path}", datacenter=ds.dc_ref)

    def _search(self, ds: _Datastore, directory: str, pattern: str) -> list[Any]:
        """Files of ``directory`` matching ``pattern`` (datastore browser)."""
        def search(vim: Any) -> Any:
            browser = vim_util.get_object_property(vim, ds.ref, "browser")
            factory = vim.client.factory
            spec = factory.create("ns0:HostDatastoreBrowserSearchSpec")
            spec.matchPattern = [pattern]
            spec.details = factory.create("ns0:FileQueryFlags")
            spec.details.fileSize = True
            spec.details.fileType = False
            spec.details.modification = True
            spec.details.fileOwner = False
            return vim.SearchDatastore_Task(browser, datastorePath=f"[{ds.name}] {directory}",
                                            searchSpec=spec)
        try:
            info = self._wait(self.session.call(search), f"searching [{ds.name}] {directory}")
        except vexc.FileNotFoundException:
            return []
        return list(getattr(info.result, "file", None) or [])

    # -- images ------------------------------------------------------------

    def _make_image_dir(self, ds: _Datastore) -> None:
        """The image directory (and the partial one), made once per datastore."""
        if ds.dir_made:
            return
        for directory in (self.image_dir, self._partial(self.location_for("x")).image_dir):
            if not directory:
                continue
            with contextlib.suppress(vexc.FileAlreadyExistsException):
                self.session.call(lambda vim, d=directory: vim.MakeDirectory(
                    vim.service_content.fileManager, name=f"[{ds.name}] {d}",
                    datacenter=ds.dc_ref, createParentDirectories=True))
        ds.dir_made = True

    def open_writer(self, image_id: str, size: int | None,
                    context: Context = None) -> Writer:
        return self._refreshing(lambda: self._open_writer(image_id, size))

    def _open_writer(self, image_id: str, size: int | None) -> Writer:
        ds, free = self._choose(size)
        self._make_image_dir(ds)
        location = self.location_for(image_id, ds=ds)
        response = self._request("HEAD", location)
        response.close()
        if response.status_code == 200:
            raise errors.Duplicate(f"image {image_id!r} exists in {location}")
        return _Writer(self, ds, location, size, free)

    def open_reader(self, location: VsphereLocation, offset: int, length: int | None,
                    context: Context = None) -> ReadStream:
        if length == 0:
            self.get_size(location)
            return ReadStream(iter(()), 0)
        end = None if length is None else offset + length
        response = self._get(location, offset, end)
        if response is None:
            return ReadStream(iter(()), 0)
        size = int(response.headers.get("Content-Length", "0"))
        first: list[requests.Response] = [response]

        def open_at(position: int) -> Iterator[bytes]:
            current = first.pop() if first else self._get(location, position, end)
            if current is None:
                return iter(())
            return _chunks(current)

        def close() -> None:
            while first:
                first.pop().close()

        read = ResumingRead(open_at, offset, size, self.retry, what=str(location))
        return ReadStream(read, size, close)

    def _get(self, location: VsphereLocation, offset: int, end: int | None
             ) -> requests.Response | None:
        ranged = bool(offset) or end is not None
        headers = {"Range": f"bytes={offset}-{'' if end is None else end - 1}"} \
            if ranged else {}
        try:
            response = self._request("GET", location, headers=headers, stream=True)
        except requests.RequestException as exc:
            raise _Interrupted(_reason(exc)) from exc
        status = response.status_code
        if status in (200, 206) and not (ranged and status == 200 and offset):
            if response.headers.get("Content-Type", "").startswith("text/html"):
                response.close()
                raise errors.NotFound(f"{location} is a directory, not an image")
            return response
        response.close()
        if status == 416:
            return None
        if status == 404:
            raise errors.NotFound(f"no image at {location}")
        if status >= 500:
            raise _Interrupted(f"the server answered {status}")
        raise errors.BackendUnavailable(f"the server answered {status} for {location}")

    def get_size(self, location: VsphereLocation, context: Context = None) -> int:
        response = self._request("HEAD", location)
        response.close()
        if response.status_code == 200 and "Content-Length" in response.headers:
            return int(response.headers["Content-Length"])
        if response.status_code == 404:
            raise errors.NotFound(f"no image at {location}")
        if response.status_code not in _HEAD_REFUSED:
            raise errors.BackendUnavailable(f"the server answered {response.status_code} "
                                            f"to HEAD {location}")
        files = [f for f in self._refreshing(lambda: self._search(
            self._datastore_of(location), location.image_dir, location.image_id))
            if f.path == location.image_id]
        if not files:
            raise errors.NotFound(f"no image at {location}")
        return int(files[0].fileSize)

    def delete(self, location: VsphereLocation, context: Context = None) -> None:
        try:
            self._refreshing(lambda: self._delete_file(location))
        except vexc.FileNotFoundException:
            raise errors.NotFound(f"no image at {location}") from None

    # -- leftovers -------------------------------------------------------

    def find_leftovers(self, grace: float, context: Context = None) -> list[Leftover]:
        return self._refreshing(lambda: self._find_leftovers(grace))

    def _find_leftovers(self, grace: float) -> list[Leftover]:
        found = []
        now = time.time()
        for ds in self.datastores:
            self._resolve()
            probe = self._partial(self.location_for("x", ds=ds))
            for f in self._search(ds, probe.image_dir, "*"):
                if f.path in self._writers:
                    continue
                modified = getattr(f, "modification", None)
                age = now - modified.timestamp() if modified is not None else float("inf")
                if age > grace:
                    loc = dataclasses.replace(probe, image_id=f.path)
                    found.append(Leftover(f"[{ds.name}] {loc.file_path}",
                                          int(getattr(f, "fileSize", 0) or 0), age, loc))
        return found

    def remove_leftover(self, leftover: Leftover, context: Context = None) -> None:
        with contextlib.suppress(vexc.FileNotFoundException):
            self._delete_file(leftover.handle)

    # -- errors ----------------------------------------------------------

    def _message(self, exc: BaseException) -> str:
        text = _reason(exc) if isinstance(exc, requests.RequestException) else str(exc)
        return text.replace(self.password or "\0", "***") if self.password else text

    def translate_error(self, exc: Exception) -> errors.MultistoreError | None:
        if isinstance(exc, _Interrupted):
            return errors.BackendUnavailable(f"{self.server}: {exc}")
        if isinstance(exc, (vexc.VimConnectionException, vexc.VimSessionOverLoadException,
                            requests.RequestException)):
            return errors.BackendUnavailable(f"cannot reach {self.server}: "
                                             f"{self._message(exc)}")
        if isinstance(exc, vexc.VimFaultException) and "InvalidLogin" in (exc.fault_list or ()):
            return errors.ConfigError(f"{self.server} refused the user name or password",
                                      option="vmware_server_password")
        if isinstance(exc, vexc.VimException):
            return errors.BackendUnavailable(f"{self.server}: {self._message(exc)}")
        return None


class _Interrupted(ConnectionError):
    """A read or a write broken by the connection or a 5xx answer."""


def _chunks(response: requests.Response) -> Iterator[bytes]:
    try:
        yield from response.raw.stream(READ_CHUNK_SIZE, decode_content=False)
    except (requests.RequestException, OSError, Exception) as exc:
        if isinstance(exc, errors.MultistoreError):
            raise
        raise _Interrupted(_reason(exc)) from exc
    finally:
        response.close()


def _reason(exc: BaseException) -> str:
    current: BaseException = exc
    for _ in range(5):
        inner = getattr(current, "reason", None)
        if isinstance(inner, BaseException):
            current = inner
        elif current.args and isinstance(current.args[0], BaseException):
            current = current.args[0]
        else:
            break
    text = str(current) or type(current).__name__
    text = re.sub(r"\w+ConnectionPool\(host='[^']*', port=\d+\):\s*", "", text)
    return re.sub(r"^<[^>]*>:\s*", "", text)


# -- writing -------------------------------------------------------------------

_END = object()
_ABORT = object()


class _Aborted(Exception):
    pass


class _Body:
    """The PUT body: buffers handed over by ``write`` through a small queue
    (memory stays flat); ``__len__`` when the size is known, so requests
    sends Content-Length rather than chunks."""

    def __init__(self, size: int | None) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=4)
        self.size = size

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if item is _ABORT:
                raise _Aborted()
            yield item


class _Sized(_Body):
    def __len__(self) -> int:
        return self.size or 0


class _Writer(Writer):
    def __init__(self, driver: VmwareDriver, ds: _Datastore, location: VsphereLocation,
                 size: int | None, free: int) -> None:
        self.driver = driver
        self.ds = ds
        self.free_at_start = free
        self.location = location
        self.partial = driver._partial(location)
        self.size = size
        self.sent = 0
        self.response: requests.Response | None = None
        self.error: BaseException | None = None
        self.body = _Sized(size) if size else _Body(size)
        driver._writers.add(self.partial.image_id)
        self.thread = threading.Thread(target=self._put, daemon=True,
                                       name=f"vmware-put-{driver.store_id}")
        self.thread.start()

    def _put(self) -> None:
        try:
            data: Any = b"" if self.size == 0 else self.body
            self.response = self.driver._request("PUT", self.partial, data=data)
            self.response.close()
        except BaseException as exc:    # noqa: BLE001 - reported by write/commit
            self.error = exc

    def _failure(self) -> Exception:
        if isinstance(self.error, _Aborted):
            return errors.BackendUnavailable("upload aborted")
        if self.error is not None:
            full = self._full()
            if full:
                return full
            if isinstance(self.error, requests.RequestException):
                return errors.BackendUnavailable(f"uploading to {self.driver.server} failed: "
                                                 f"{_reason(self.error)}")
            return self.error if isinstance(self.error, Exception) else RuntimeError("upload")
        status = self.response.status_code if self.response is not None else 0
        full = self._full() if status >= 500 else None
        return full or errors.BackendUnavailable(
            f"the server answered {status} to the upload of {self.location}")

    def _full(self) -> errors.StorageFull | None:
        """StorageFull if the failed upload ran out of room. vCenter measures
        free space now and then, so what this upload took of the space free
        at its start counts as well as the figure the server gives now."""
        free = self.free_at_start - self.sent
        with contextlib.suppress(Exception):
            free = min(free, self.driver._free_space(self.ds))
        free = max(free, 0)
        needed = (self.size - self.sent) if self.size is not None else MiB
        if free < max(needed, MiB):
            return errors.StorageFull(f"datastore {self.ds.name} is full ({free} bytes free)")
        return None

    def write(self, data: memoryview) -> None:
        if self.size == 0:
            return
        item = bytes(data)
        while True:
            if not self.thread.is_alive():
                raise self._failure()
            try:
                self.body.queue.put(item, timeout=0.2)
                break
            except queue.Full:
                continue
        self.sent += len(item)

    def _finish(self, item: object) -> None:
        if self.size != 0:
            while self.thread.is_alive():
                try:
                    self.body.queue.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
        self.thread.join()

    def commit(self) -> Stored:
        self._finish(_END)
        if self.error is not None or self.response is None or \
                self.response.status_code not in (200, 201):
            raise self._failure()
        try:
            try:
                self.driver._refreshing(self._move)
            except vexc.FileNotFoundException:
                # The image directory went away (removed by hand, a new
                # datastore): make it again, once.
                self.ds.dir_made = False
                self.driver._make_image_dir(self.ds)
                self._move()
        except vexc.FileAlreadyExistsException:
            raise errors.Duplicate(f"image {self.location.image_id!r} exists in "
                                   f"{self.location}") from None
        self.driver._writers.discard(self.partial.image_id)
        return Stored(self.location)

    def _move(self) -> None:
        """The partial file under its final name; never over an existing file."""
        self.driver._file_task(
            "MoveDatastoreFile_Task", f"moving the upload of {self.location}",
            sourceName=f"[{self.ds.name}] {self.partial.file_path}",
            sourceDatacenter=self.ds.dc_ref,
            destinationName=f"[{self.ds.name}] {self.location.file_path}",
            destinationDatacenter=self.ds.dc_ref, force=False)

    def abort(self) -> None:
        try:
            if self.thread.is_alive():
                self._finish(_ABORT)
            with contextlib.suppress(vexc.FileNotFoundException):
                self.driver._refreshing(lambda: self.driver._delete_file(self.partial))
        finally:
            self.driver._writers.discard(self.partial.image_id)


__all__ = ["VmwareDriver", "VsphereLocation", "OPTIONS"]
