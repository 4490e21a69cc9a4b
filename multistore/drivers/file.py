"""Images as files in one or more local (or NFS-mounted) directories.

Locations are ``file:///<directory>/<image id>``, as glance_store writes
them. An image is written aside (``.<image id>.<random>.part``), synced,
then linked into place, which fails rather than overwrite an existing
image; readers never see a partial file. Locations outside the store's
directories are refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import fcntl
import json
import os
import secrets
import stat
import time
from typing import Any

from oslo_config import cfg

from multistore import errors
from multistore.context import Context
from multistore.driver import Capabilities, Driver, Leftover, ReadStream, Stored, Writer
from multistore.location import Location, quote, split_url, unquote

MiB = 1024 * 1024
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
               help="Permissions of image files, in octal (``640``); 0 keeps "
                    "the process umask. Must give the owner read access."),
    cfg.IntOpt("filesystem_store_chunk_size", default=64 * 1024, min=1,
               help="Size in bytes of the chunks images are read in."),
    cfg.BoolOpt("filesystem_thin_provisioning", default=False,
                help="Leave holes for all-zero blocks instead of writing them."),
    cfg.BoolOpt("filesystem_store_fsync", default=True,
                help="Sync every image (and its directory) to disk before "
                     "reporting it stored. Off, a crash can lose an image "
                     "already reported stored (glance_store's behaviour)."),
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
        if dirs and c.filesystem_store_datadir:
            raise errors.ConfigError("set either filesystem_store_datadir or "
                                     "filesystem_store_datadirs, not both",
                                     option="filesystem_store_datadirs")
        if dirs:
            self.datadirs = self._parse_datadirs(dirs)
        else:
            datadir = c.filesystem_store_datadir or "/var/lib/glance/images"
            self.datadirs = [(os.path.realpath(datadir), 0)]
        perm = c.filesystem_store_file_perm
        self.file_perm = int(str(perm), 8) if perm else 0
        if self.file_perm and not self.file_perm & stat.S_IRUSR:
            raise errors.ConfigError(f"{perm} does not let the owner read images",
                                     option="filesystem_store_file_perm")
        self.chunk_size = c.filesystem_store_chunk_size
        self.thin = c.filesystem_thin_provisioning
        self.fsync = c.filesystem_store_fsync
        self.metadata = self._read_metadata_file(c.filesystem_store_metadata_file)
        for path, _ in self.datadirs:
            self._prepare_dir(path)

    def _parse_datadirs(self, values: list[str]) -> list[tuple[str, int]]:
        seen: dict[str, int] = {}
        for value in values:
            path, sep, prio = value.strip().rpartition(":")
            if not sep or not path:
                path, prio = value.strip(), "0"
            try:
                priority = int(prio)
            except ValueError:
                raise errors.ConfigError(f"{value!r}: the priority must be an integer",
                                         option="filesystem_store_datadirs") from None
            path = os.path.realpath(path)
            if path in seen and seen[path] != priority:
                raise errors.ConfigError(f"{path} is listed with priorities "
                                         f"{seen[path]} and {priority}",
                                         option="filesystem_store_datadirs")
            seen[path] = priority
        return sorted(seen.items(), key=lambda item: -item[1])

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
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise errors.ConfigError(f"cannot create {path}: {exc.strerror}",
                                     option="filesystem_store_datadir") from exc
        if not os.access(path, os.W_OK | os.X_OK):
            raise errors.ConfigError(f"{path} is not writable by this process",
                                     option="filesystem_store_datadir")
        if self.file_perm:
            mode = os.stat(path).st_mode
            extra = (stat.S_IXOTH if self.file_perm & stat.S_IROTH else 0) | \
                    (stat.S_IXGRP if self.file_perm & stat.S_IRGRP else 0)
            if mode & extra != extra:
                os.chmod(path, stat.S_IMODE(mode) | extra)

    def properties(self) -> dict[str, Any]:
        return {"datadir": self.datadirs[0][0],
                "datadirs": [f"{p}:{prio}" for p, prio in self.datadirs],
                "chunk_size": self.chunk_size,
                "thin_provisioning": self.thin,
                "fsync": self.fsync}

    # -- locations ---------------------------------------------------------

    def holds(self, location: FileLocation) -> bool:
        return os.path.realpath(location.directory) in {d for d, _ in self.datadirs}

    def location_for(self, image_id: str, context: Context = None) -> FileLocation:
        return FileLocation(self.datadirs[0][0], image_id)

    def _path(self, location: FileLocation) -> str:
        return os.path.join(os.path.realpath(location.directory), location.image_id)

    # -- leftovers of dead writers ------------------------------------------

    def find_leftovers(self, grace: float, context: Context = None) -> list[Leftover]:
        """Partial files (``.<id>.<random>.part``) no live writer holds.

        A writer holds an exclusive ``flock`` on its partial file until it
        commits or aborts; the kernel drops it when the process dies, so a
        partial file we can lock is abandoned.
        """
        now = time.time()
        found = []
        for datadir, _ in self.datadirs:
            with os.scandir(datadir) as entries:
                for entry in entries:
                    if not (entry.name.startswith(".") and entry.name.endswith(".part")):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    age = now - st.st_mtime
                    if stat.S_ISREG(st.st_mode) and age > grace and not _locked(entry.path):
                        found.append(Leftover(entry.path, st.st_size, age, entry.path))
        return found

    def remove_leftover(self, leftover: Leftover, context: Context = None) -> None:
        path = leftover.handle
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise errors.NotFound(f"{path} is gone") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # a live writer holds it
            os.unlink(path)
        except BlockingIOError:
            raise errors.InUse(f"{path} is being written") from None
        finally:
            os.close(fd)

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
            st = os.statvfs(path)
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

    def open_reader(self, location: FileLocation, offset: int, length: int | None,
                    context: Context = None) -> ReadStream:
        path = self._path(location)
        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise errors.NotFound(f"no image at {path}") from None
        try:
            total = os.fstat(f.fileno()).st_size
        except BaseException:
            f.close()
            raise
        start = min(offset, total)
        count = total - start if length is None else max(0, min(length, total - start))
        return ReadStream(self._chunks(f, start, count), count, f.close)

    def _chunks(self, f: Any, offset: int, count: int):  # type: ignore[no-untyped-def]
        fd = f.fileno()
        while count > 0:
            chunk = os.pread(fd, min(self.chunk_size, count), offset)
            if not chunk:
                raise errors.SizeMismatch(f"the image file shrank while being read "
                                          f"({count} bytes missing)")
            offset += len(chunk)
            count -= len(chunk)
            yield chunk

    def get_size(self, location: FileLocation, context: Context = None) -> int:
        path = self._path(location)
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            raise errors.NotFound(f"no image at {path}") from None

    def delete(self, location: FileLocation, context: Context = None) -> None:
        path = self._path(location)
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise errors.NotFound(f"no image at {path}") from None
        if self.fsync:
            _fsync_dir(os.path.dirname(path))


    # -- copies inside the filesystem -----------------------------------------

    def copy_within(self, source: Driver[Any], location: Location, image_id: str,
                    context: Context = None) -> Stored | None:
        """Another file store's image on the same filesystem: ``copy_file_range``
        (the kernel copies, or shares extents on filesystems with reflinks)."""
        if not isinstance(source, FileDriver) or not isinstance(location, FileLocation):
            return None
        path = source._path(location)
        try:
            src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise errors.NotFound(f"no image at {path}") from None
        try:
            st = os.fstat(src)
            writer = self.open_writer(image_id, st.st_size, context)
            assert isinstance(writer, _FileWriter)
            if os.stat(writer.datadir).st_dev != st.st_dev:
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
    def __init__(self, driver: FileDriver, datadir: str, image_id: str) -> None:
        self.driver = driver
        self.datadir = datadir
        self.image_id = image_id
        self.final = os.path.join(datadir, image_id)
        self.temp = os.path.join(datadir, f".{image_id}.{secrets.token_hex(6)}.part")
        mode = driver.file_perm or 0o666
        self.fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        fcntl.flock(self.fd, fcntl.LOCK_EX)   # held while alive: see find_leftovers
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
        os.close(self.fd)
        self.fd = -1
        try:
            os.link(self.temp, self.final)   # never replaces an existing file
        except FileExistsError:
            raise errors.Duplicate(f"image {self.image_id!r} appeared "
                                   "while this copy was being written") from None
        os.unlink(self.temp)
        if self.driver.fsync:
            _fsync_dir(os.path.dirname(self.final))
        return Stored(FileLocation(self.datadir, self.image_id),
                      self.driver._image_metadata(self.final))

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)


def _locked(path: str) -> bool:
    """Whether a live process holds a lock on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["FileDriver", "FileLocation", "OPTIONS"]
