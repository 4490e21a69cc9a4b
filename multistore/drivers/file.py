"""Images as files in one or more local (or NFS-mounted) directories.

Locations are ``file:///<directory>/<image id>``, as glance_store writes
them. An image is written aside, in the directory's hidden
``.multistore\\partial`` subdirectory (a name no image id can take: ids
never hold ``\\``), synced, then linked into place, which fails rather than
overwrite an existing image; readers never see a partial file. Locations
outside the store's directories are refused, and so is anything in a
directory that is not a regular file: symbolic links are never followed
(``O_NOFOLLOW``), FIFOs and devices never opened for reading.

A writer holds an exclusive ``flock`` on its partial file; the files of dead
writers are reclaimed by :meth:`FileDriver.find_leftovers` (``multistore
sweep``) and, past ``filesystem_store_leftover_grace``, when a store loads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import fcntl
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterator
from typing import Any, NoReturn

from oslo_config import cfg

from multistore import errors
from multistore.context import Context
from multistore.driver import Capabilities, Driver, Leftover, ReadStream, Stored, Writer
from multistore.location import Location, image_id_problem, quote, split_url, unquote

LOG = logging.getLogger(__name__)
MiB = 1024 * 1024
#: The subdirectory of every datadir that holds partial files. It holds a
#: backslash, which no image id may (:func:`~multistore.location.image_id_problem`),
#: so no location can name it or anything in it.
PARTIAL_DIR = ".multistore\\partial"
PARTIAL_SUFFIX = ".part"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Start write-back of dirty pages every this many bytes, so the final sync
#: has little left to do and the page cache does not fill with one image.
WRITEBACK_EVERY = 8 * MiB
#: Once written back, pages this far behind the write position are dropped
#: from the page cache: an add then recycles a few MiB of page cache instead
#: of taking fresh memory for every page of the image.
DROP_BEHIND = 32 * MiB

OPTIONS = [
    cfg.StrOpt("filesystem_store_datadir",
               help="Directory images are written to (when neither this nor "
                    "``filesystem_store_datadirs`` is set: ``/var/lib/glance/images``, "
                    "or ``/var/lib/glance/<store id>`` for a reserved store)."),
    cfg.MultiStrOpt("filesystem_store_datadirs",
                    help="Several directories, each as ``<dir>:<priority>``: an "
                         "image goes to the highest priority directory with "
                         "room, the one with most free space among equals. "
                         "Replaces ``filesystem_store_datadir``."),
    cfg.StrOpt("filesystem_store_metadata_file",
               help="JSON file of ``{\"id\": ..., \"mountpoint\": ...}`` "
                    "(or a list of them): the entry whose mountpoint holds "
                    "an image is returned in its location metadata."),
    cfg.IntOpt("filesystem_store_file_perm", default=0,
               help="Permissions of image files, in octal digits (``640``); 0 "
                    "keeps the process umask. Must give the owner read access; "
                    "setuid, setgid, sticky and world-write bits are refused."),
    cfg.IntOpt("filesystem_store_chunk_size", default=64 * 1024, min=1,
               help="Size in bytes of the chunks images are read in."),
    cfg.BoolOpt("filesystem_thin_provisioning", default=False,
                help="Leave holes for all-zero blocks instead of writing them."),
    cfg.BoolOpt("filesystem_store_fsync", default=True,
                help="Sync every image (and its directory) to disk before "
                     "reporting it stored. Off, a crash can lose an image "
                     "already reported stored (glance_store's behaviour)."),
    cfg.IntOpt("filesystem_store_leftover_grace", default=3600, min=-1,
               help="When the store loads, remove partial files of dead writers "
                    "(killed mid-add) untouched for this many seconds; -1 never "
                    "does (``multistore sweep`` still can). A partial file a "
                    "live writer holds is never removed, however old."),
]


def _sync_file_range() -> Any:
    """Linux's sync_file_range(2), to start write-back early; None elsewhere."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    fn = getattr(ctypes.CDLL(libc_name, use_errno=True), "sync_file_range", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WAIT_BEFORE = 1
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_AFTER = 4


@dataclasses.dataclass(frozen=True)
class FileLocation(Location):
    """``file:///<directory>/<image id>``: each path segment percent-encoded
    (glance_store wrote UUIDs, which encoding leaves as they are)."""

    directory: str
    image_id: str

    @classmethod
    def parse(cls, url: str) -> FileLocation:
        parts = split_url(url, FileDriver.schemes)
        if parts.query or parts.fragment or url.endswith(("?", "#")):
            raise ValueError("a file location has no query or fragment")
        raw = parts.netloc + parts.path
        if not raw.startswith("/"):
            raise ValueError("not an absolute path")
        segments = [unquote(segment) for segment in raw[1:].split("/")]
        for segment in segments:
            if segment in ("", ".", "..") or "/" in segment or "\0" in segment:
                raise ValueError("the path has empty, '.' or '..' segments, or "
                                 "encoded '/' or NUL")
        why = image_id_problem(segments[-1])
        if why:
            raise ValueError(f"not an image id: {why}")
        return cls("/" + "/".join(segments[:-1]), segments[-1])

    def format(self) -> str:
        segments = [quote(s) for s in self.directory.split("/") if s]
        return "file:///" + "/".join([*segments, quote(self.image_id)])

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.image_id)


class FileDriver(Driver[FileLocation]):
    schemes = ("file", "filesystem")
    location_type = FileLocation
    capabilities = Capabilities(read=True, ranged_read=True, write=True, delete=True)
    options = OPTIONS

    @classmethod
    def option_defaults(cls, store_id: str, reserved: bool) -> dict[str, Any]:
        # glance's internal stores each get a directory of their own.
        return {"filesystem_store_datadir": f"/var/lib/glance/{store_id}"} if reserved else {}

    # -- configuration ---------------------------------------------------

    def configure(self) -> None:
        c = self.conf
        dirs = c.filesystem_store_datadirs
        datadir = c.filesystem_store_datadir
        if dirs and datadir:
            raise errors.ConfigError("set either filesystem_store_datadir or "
                                     "filesystem_store_datadirs, not both",
                                     option="filesystem_store_datadirs")
        if datadir is not None and not datadir.strip():
            raise errors.ConfigError("empty: name the directory images go to (left "
                                     "unset, it is /var/lib/glance/images)",
                                     option="filesystem_store_datadir")
        if dirs:
            self.datadirs, written = self._parse_datadirs(dirs)
        else:
            written = [datadir or "/var/lib/glance/images"]
            self.datadirs = [(os.path.realpath(written[0]), 0)]
        # The directories a location may name: each datadir's real path, and
        # the path as the operator wrote it (through a symlink the operator
        # chose). Never a path that only resolves there through a link made
        # inside a datadir.
        self._spellings = {real: real for real, _ in self.datadirs}
        for path in written:
            self._spellings.setdefault(os.path.normpath(os.path.abspath(path)),
                                       os.path.realpath(path))
        self.file_perm = _file_perm(c.filesystem_store_file_perm)
        self.chunk_size = c.filesystem_store_chunk_size
        self.thin = c.filesystem_thin_provisioning
        self.fsync = c.filesystem_store_fsync
        self.metadata = self._read_metadata_file(c.filesystem_store_metadata_file)
        for path, _ in self.datadirs:
            self._prepare_dir(path)
        grace = c.filesystem_store_leftover_grace
        if grace >= 0:
            self._reclaim(grace)

    def _parse_datadirs(self, values: list[str]) -> tuple[list[tuple[str, int]], list[str]]:
        """(real path, priority) pairs, highest priority first; the paths as written."""
        seen: dict[str, int] = {}
        written = []
        for value in values:
            path, sep, prio = value.strip().rpartition(":")
            if not sep or not path:
                path, prio = value.strip(), "0"
            if not path.strip():
                raise errors.ConfigError(f"{value!r}: no directory",
                                         option="filesystem_store_datadirs")
            try:
                priority = int(prio)
            except ValueError:
                raise errors.ConfigError(f"{value!r}: the priority must be an integer",
                                         option="filesystem_store_datadirs") from None
            written.append(path)
            path = os.path.realpath(path)
            if path in seen and seen[path] != priority:
                raise errors.ConfigError(f"{path} is listed with priorities "
                                         f"{seen[path]} and {priority}",
                                         option="filesystem_store_datadirs")
            seen[path] = priority
        return sorted(seen.items(), key=lambda item: -item[1]), written

    def _read_metadata_file(self, path: str | None) -> list[dict[str, str]]:
        if not path:
            return []
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise errors.ConfigError(f"cannot read {path}: {exc}",
                                     option="filesystem_store_metadata_file") from exc
        entries = data if isinstance(data, list) else [data]
        for entry in entries:
            if not (isinstance(entry, dict) and isinstance(entry.get("id"), str)
                    and isinstance(entry.get("mountpoint"), str)):
                raise errors.ConfigError(
                    f"{path}: each entry must be an object with string 'id' and "
                    "'mountpoint'", option="filesystem_store_metadata_file")
        return entries

    def _prepare_dir(self, path: str) -> None:
        option = ("filesystem_store_datadirs" if self.conf.filesystem_store_datadirs
                  else "filesystem_store_datadir")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise errors.ConfigError(f"cannot create {path}: {exc.strerror}",
                                     option=option) from exc
        if not os.access(path, os.W_OK | os.X_OK):
            raise errors.ConfigError(f"{path} is not writable by this process", option=option)
        mode = os.stat(path).st_mode
        if self.file_perm:
            extra = (stat.S_IXOTH if self.file_perm & stat.S_IROTH else 0) | \
                    (stat.S_IXGRP if self.file_perm & stat.S_IRGRP else 0)
            if mode & extra != extra:
                os.chmod(path, stat.S_IMODE(mode) | extra)
        try:
            dfd = os.open(path, _DIR_FLAGS)
        except OSError as exc:
            raise errors.ConfigError(f"cannot open {path}: {exc.strerror}",
                                     option=option) from exc
        try:
            pfd = _open_partial_dir(dfd)
            try:
                if os.fstat(pfd).st_dev != os.fstat(dfd).st_dev:
                    raise errors.ConfigError(
                        f"{os.path.join(path, PARTIAL_DIR)} is on another filesystem "
                        f"than {path}: partial files must be linked into place",
                        option=option)
            finally:
                os.close(pfd)
        except OSError as exc:
            raise errors.ConfigError(f"cannot prepare {os.path.join(path, PARTIAL_DIR)}: "
                                     f"{exc.strerror}", option=option) from exc
        finally:
            os.close(dfd)

    def _reclaim(self, grace: float) -> None:
        """Remove what dead writers left, at load (never fails the load)."""
        try:
            for leftover in self.find_leftovers(grace):
                try:
                    self.remove_leftover(leftover)
                except errors.MultistoreError as exc:
                    LOG.info("store %s: leftover %s not removed: %s", self.store_id,
                             leftover.name, exc.message)
                else:
                    LOG.info("store %s: removed %s, a partial file (%s bytes) a writer "
                             "left %.0f s ago", self.store_id, leftover.name,
                             leftover.size, leftover.age)
        except (OSError, errors.MultistoreError) as exc:
            LOG.warning("store %s: looking for partial files of dead writers failed: %s",
                        self.store_id, exc)

    def properties(self) -> dict[str, Any]:
        return {"datadir": self.datadirs[0][0],
                "datadirs": [f"{p}:{prio}" for p, prio in self.datadirs],
                "chunk_size": self.chunk_size,
                "thin_provisioning": self.thin,
                "fsync": self.fsync}

    def claims(self) -> list[str]:
        return [f"directory {path}" for path, _ in self.datadirs]

    # -- locations ---------------------------------------------------------

    def holds(self, location: FileLocation) -> bool:
        return location.directory in self._spellings

    def location_for(self, image_id: str, context: Context = None) -> FileLocation:
        return self.location_in(self.datadirs[0][0], image_id)

    def location_in(self, datadir: str, image_id: str) -> FileLocation:
        """The location of an image written to ``datadir`` (subclasses with
        another location type override this)."""
        return FileLocation(datadir, image_id)

    def _where(self, location: FileLocation) -> tuple[str, str]:
        """The real datadir and the file's name in it."""
        return self._spellings[location.directory], location.image_id

    @contextlib.contextmanager
    def _dir(self, datadir: str, missing: type[errors.MultistoreError] = errors.NotFound,
             ) -> Iterator[int]:
        """The datadir, open; its last component is never a followed symlink."""
        try:
            dfd = os.open(datadir, _DIR_FLAGS)
        except OSError as exc:
            _gone(datadir, exc, missing)
        try:
            yield dfd
        finally:
            os.close(dfd)

    def _stat_image(self, location: FileLocation) -> os.stat_result:
        datadir, name = self._where(location)
        with self._dir(datadir) as dfd:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                raise errors.NotFound(f"no image at {os.path.join(datadir, name)}") from None
        _check_regular(st, os.path.join(datadir, name))
        return st

    # -- leftovers of dead writers ------------------------------------------

    def find_leftovers(self, grace: float, context: Context = None) -> list[Leftover]:
        """Partial files (``<datadir>/.multistore\\partial/<random>.part``)
        no live writer holds.

        A writer holds an exclusive ``flock`` on its partial file until it
        commits or aborts; the kernel drops it when the process dies, so a
        partial file we can lock is abandoned.
        """
        now = time.time()
        found = []
        for datadir, _ in self.datadirs:
            partial = os.path.join(datadir, PARTIAL_DIR)
            try:
                entries = os.scandir(partial)
            except FileNotFoundError:
                continue
            with entries:
                for entry in entries:
                    if not entry.name.endswith(PARTIAL_SUFFIX):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    age = now - st.st_mtime
                    if stat.S_ISREG(st.st_mode) and age > grace and not _locked(entry.path):
                        found.append(Leftover(entry.path, st.st_size, age,
                                              (partial, entry.name)))
        return found

    def remove_leftover(self, leftover: Leftover, context: Context = None) -> None:
        partial, name = leftover.handle
        path = os.path.join(partial, name)
        try:
            pfd = os.open(partial, _DIR_FLAGS)
        except FileNotFoundError:
            raise errors.NotFound(f"{path} is gone") from None
        try:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=pfd)
            except FileNotFoundError:
                raise errors.NotFound(f"{path} is gone") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # a live writer holds it
                named, held = os.stat(name, dir_fd=pfd, follow_symlinks=False), os.fstat(fd)
                if (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
                    raise errors.NotFound(f"{path} was replaced meanwhile")
                os.unlink(name, dir_fd=pfd)
            except BlockingIOError:
                raise errors.InUse(f"{path} is being written") from None
            finally:
                os.close(fd)
        finally:
            os.close(pfd)

    # -- writing ---------------------------------------------------------

    def open_writer(self, image_id: str, size: int | None, context: Context = None) -> Writer:
        for path, _ in self.datadirs:
            if os.path.lexists(os.path.join(path, image_id)):
                raise errors.Duplicate(f"image {image_id!r} already exists in {path}")
        return _FileWriter(self, self._choose_dir(size), image_id)

    def _choose_dir(self, size: int | None) -> str:
        if len(self.datadirs) == 1:
            return self.datadirs[0][0]
        best: tuple[int, int, str] | None = None
        for path, priority in self.datadirs:
            try:
                st = os.statvfs(path)
            except FileNotFoundError as exc:
                _gone(path, exc, errors.BackendUnavailable)
            free = st.f_bavail * st.f_frsize
            if size is not None and free < size:
                continue
            key = (priority, free, path)
            if best is None or key[:2] > best[:2]:
                best = key
        if best is None:
            raise errors.StorageFull(f"no directory has room for {size} bytes")
        return best[2]

    def _image_metadata(self, path: str) -> dict[str, str]:
        for entry in self.metadata:
            mount = os.path.join(os.path.realpath(entry["mountpoint"]), "")
            if path.startswith(mount):
                return dict(entry)
        return {}

    # -- reading -----------------------------------------------------------

    def _open_image(self, location: FileLocation) -> tuple[int, os.stat_result]:
        """The image's file, open for reading: a regular file in the datadir,
        reached without following any link; its stat."""
        datadir, name = self._where(location)
        path = os.path.join(datadir, name)
        with self._dir(datadir) as dfd:
            try:
                # O_NONBLOCK: opening a FIFO planted in the directory must not hang.
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=dfd)
            except FileNotFoundError:
                raise errors.NotFound(f"no image at {path}") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise errors.NotFound(f"no image at {path}: a symbolic link (never "
                                          "followed) is there") from None
                raise
        try:
            st = os.fstat(fd)
            _check_regular(st, path)
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def open_reader(self, location: FileLocation, offset: int, length: int | None,
                    context: Context = None) -> ReadStream:
        fd, st = self._open_image(location)
        total = st.st_size
        start = min(offset, total)
        count = total - start if length is None else max(0, min(length, total - start))
        return ReadStream(self._chunks(fd, start, count), count, lambda: os.close(fd))

    def _chunks(self, fd: int, offset: int, count: int) -> Iterator[bytes]:
        while count > 0:
            chunk = os.pread(fd, min(self.chunk_size, count), offset)
            if not chunk:
                raise errors.SizeMismatch(f"the image file shrank while being read "
                                          f"({count} bytes missing)")
            offset += len(chunk)
            count -= len(chunk)
            yield chunk

    def get_size(self, location: FileLocation, context: Context = None) -> int:
        return self._stat_image(location).st_size

    def delete(self, location: FileLocation, context: Context = None) -> None:
        datadir, name = self._where(location)
        path = os.path.join(datadir, name)
        with self._dir(datadir) as dfd:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                raise errors.NotFound(f"no image at {path}") from None
            _check_regular(st, path)
            try:
                os.unlink(name, dir_fd=dfd)     # never follows a link
            except FileNotFoundError:
                raise errors.NotFound(f"no image at {path}") from None
            if self.fsync:
                os.fsync(dfd)


    # -- copies inside the filesystem -----------------------------------------

    def copy_within(self, source: Driver[Any], location: Location, image_id: str,
                    context: Context = None) -> Stored | None:
        """Another file store's image on the same filesystem: ``copy_file_range``
        (the kernel copies, or shares extents on filesystems with reflinks)."""
        if not isinstance(source, FileDriver) or not isinstance(location, FileLocation):
            return None
        src, st = source._open_image(location)
        try:
            writer = self.open_writer(image_id, st.st_size, context)
            assert isinstance(writer, _FileWriter)
            if os.fstat(writer.dfd).st_dev != st.st_dev:
                writer.abort()
                return None
            try:
                writer.copy_from(src, st.st_size)
                return writer.commit()
            except BaseException:
                writer.abort()
                raise
        finally:
            os.close(src)


class _FileWriter(Writer):
    """Writes ``<datadir>/.multistore\\partial/<random>.part``, then links it
    to ``<datadir>/<image id>``. Holds both directories open (so neither can
    be swapped for a symlink meanwhile) and an exclusive flock on the partial
    file until it is linked into place or removed."""

    def __init__(self, driver: FileDriver, datadir: str, image_id: str) -> None:
        self.driver = driver
        self.datadir = datadir
        self.image_id = image_id
        self.final = os.path.join(datadir, image_id)
        self.temp = f"{secrets.token_hex(8)}{PARTIAL_SUFFIX}"
        self.fd = self.dfd = self.pfd = -1
        try:
            try:
                self.dfd = os.open(datadir, _DIR_FLAGS)
            except OSError as exc:
                _gone(datadir, exc, errors.BackendUnavailable)
            self.pfd = _open_partial_dir(self.dfd)
            mode = driver.file_perm or 0o666
            self.fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                              mode, dir_fd=self.pfd)
            fcntl.flock(self.fd, fcntl.LOCK_EX)   # held while alive: see find_leftovers
        except BaseException:
            self.abort()
            raise
        self.written = 0
        self.synced_to = 0
        self.dropped_to = 0
        self.hole_at_end = False
        self.zeros = b""

    def write(self, data: memoryview) -> None:
        n = len(data)
        if self.driver.thin:
            self._write_sparse(data)
        else:
            self._write_all(data)
        self.written += n
        if _SYNC_FILE_RANGE is not None and self.written - self.synced_to >= WRITEBACK_EVERY:
            self._write_behind()

    def copy_from(self, src: int, size: int) -> None:
        """All of file descriptor ``src``, copied by the kernel."""
        while self.written < size:
            n = os.copy_file_range(src, self.fd, size - self.written, self.written,
                                   self.written)
            if n == 0:
                raise errors.SizeMismatch(f"the source file shrank to {self.written} bytes "
                                          f"while being copied ({size} expected)")
            self.written += n

    def _write_behind(self) -> None:
        """Start write-back of what was just written; drop what is on disk.

        With ``filesystem_store_fsync`` on, waits for the older range to be
        written (the final sync would wait for it anyway); off, pages not yet
        clean are left in the page cache.
        """
        _SYNC_FILE_RANGE(self.fd, self.synced_to, self.written - self.synced_to,
                         _SYNC_FILE_RANGE_WRITE)
        self.synced_to = self.written
        end = self.synced_to - DROP_BEHIND
        if end - self.dropped_to < WRITEBACK_EVERY:
            return
        if self.driver.fsync:
            _SYNC_FILE_RANGE(self.fd, self.dropped_to, end - self.dropped_to,
                             _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE
                             | _SYNC_FILE_RANGE_WAIT_AFTER)
        os.posix_fadvise(self.fd, self.dropped_to, end - self.dropped_to,
                         os.POSIX_FADV_DONTNEED)
        self.dropped_to = end

    def _write_all(self, view: memoryview) -> None:
        while view:
            view = view[os.write(self.fd, view):]

    def _write_sparse(self, data: memoryview) -> None:
        """Write ``data``, seeking over every all-zero chunk (chunk_size each)."""
        step = self.driver.chunk_size
        pending = 0   # start of the bytes not yet written nor skipped
        for start in range(0, len(data), step):
            piece = data[start:start + step]
            if self._is_zero(piece):
                self._write_all(data[pending:start])
                os.lseek(self.fd, len(piece), os.SEEK_CUR)
                pending = start + len(piece)
        self._write_all(data[pending:])
        self.hole_at_end = pending == len(data)

    def _is_zero(self, data: memoryview) -> bool:
        if len(self.zeros) < len(data):
            self.zeros = bytes(len(data))
        return self.zeros.startswith(data)   # memcmp: ~20 GB/s, no copy

    def commit(self) -> Stored:
        if self.hole_at_end:
            os.ftruncate(self.fd, self.written)
        if self.driver.fsync:
            os.fdatasync(self.fd)
        if self.driver.file_perm:
            os.fchmod(self.fd, self.driver.file_perm)
        try:
            # Never replaces an existing file, never follows a link; the
            # partial file stays locked until it is gone from the partial dir.
            os.link(self.temp, self.image_id, src_dir_fd=self.pfd, dst_dir_fd=self.dfd,
                    follow_symlinks=False)
        except FileExistsError:
            raise errors.Duplicate(f"image {self.image_id!r} appeared "
                                   "while this copy was being written") from None
        os.unlink(self.temp, dir_fd=self.pfd)
        if self.driver.fsync:
            os.fsync(self.dfd)
        self._close()
        return Stored(self.driver.location_in(self.datadir, self.image_id),
                      self.driver._image_metadata(self.final))

    def abort(self) -> None:
        if self.pfd >= 0 and self.fd >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp, dir_fd=self.pfd)
        self._close()

    def _close(self) -> None:
        for name in ("fd", "pfd", "dfd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)


def _file_perm(value: int) -> int:
    """``filesystem_store_file_perm`` as a mode, refusing what no image should have."""
    option = "filesystem_store_file_perm"
    text = str(value)
    if value < 0 or not set(text) <= set("01234567"):
        raise errors.ConfigError(f"{value} is not a permission in octal digits "
                                 "(write 640, 600 ...; 0 keeps the umask)", option=option)
    mode = int(text, 8)
    if mode & ~0o777:
        raise errors.ConfigError(f"{value}: setuid, setgid and sticky bits are refused "
                                 "on images", option=option)
    if mode & stat.S_IWOTH:
        raise errors.ConfigError(f"{value}: world-writable images are refused", option=option)
    if mode and not mode & stat.S_IRUSR:
        raise errors.ConfigError(f"{value} does not let the owner read images", option=option)
    return mode


def _open_partial_dir(dfd: int) -> int:
    """The datadir's partial-file directory, open (created with the datadir's mode)."""
    try:
        return os.open(PARTIAL_DIR, _DIR_FLAGS, dir_fd=dfd)
    except FileNotFoundError:
        pass
    with contextlib.suppress(FileExistsError):
        os.mkdir(PARTIAL_DIR, stat.S_IMODE(os.fstat(dfd).st_mode), dir_fd=dfd)
    return os.open(PARTIAL_DIR, _DIR_FLAGS, dir_fd=dfd)


def _gone(datadir: str, exc: OSError, error: type[errors.MultistoreError]) -> NoReturn:
    """The store's directory cannot be opened: say which, and why."""
    if isinstance(exc, FileNotFoundError):
        raise error(f"the store's directory {datadir} does not exist (removed after the "
                    "store was loaded? it is not created again)") from None
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        raise error(f"the store's directory {datadir} is no longer a directory (replaced "
                    "by a symbolic link or a file?)") from None
    raise exc


def _check_regular(st: os.stat_result, path: str) -> None:
    """Only regular files are images: links are never followed, FIFOs,
    devices and directories never read."""
    if not stat.S_ISREG(st.st_mode):
        kind = ("a symbolic link (never followed)" if stat.S_ISLNK(st.st_mode)
                else "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file")
        raise errors.NotFound(f"no image at {path}: {kind} is there")


def _locked(path: str) -> bool:
    """Whether a live process holds a lock on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


__all__ = ["FileDriver", "FileLocation", "OPTIONS", "PARTIAL_DIR"]
