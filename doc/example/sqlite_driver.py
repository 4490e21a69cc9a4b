"""An example multistore driver: images as chunks in one SQLite database.

The worked example of doc/writing-a-driver.rst, complete and run through the
conformance suite by multistore's own tests
(tests/drivers/test_example_driver.py). Every contract method is here, each
with the capability that needs it. Package it with one entry point::

    [options.entry_points]
    multistore.drivers =
        sqlite = sqlite_driver:SqliteDriver
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sqlite3
import threading
import time

from oslo_config import cfg

from multistore import errors
from multistore.context import Context
from multistore.driver import Capabilities, Driver, Leftover, ReadStream, Stored, Writer
from multistore.location import Location, quote, split_url, unquote

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (id TEXT PRIMARY KEY, upload TEXT, size INTEGER);
CREATE TABLE IF NOT EXISTS chunks (upload TEXT, offset INTEGER, data BLOB,
                                   PRIMARY KEY (upload, offset));
CREATE TABLE IF NOT EXISTS uploads (upload TEXT PRIMARY KEY, pid INTEGER, started REAL);
"""


# 1. The location type: parse and format, nothing else. parse(format(x)) == x.
@dataclasses.dataclass(frozen=True)
class SqliteLocation(Location):
    """``sqlite:///<database path>?id=<image id>``, every part percent-encoded."""

    database: str
    image_id: str

    @classmethod
    def parse(cls, url: str) -> SqliteLocation:
        parts = split_url(url, ("sqlite",))
        key, _, value = parts.query.partition("=")
        if parts.netloc or not parts.path.startswith("/") or key != "id" or not value \
                or parts.fragment or url.endswith("#"):
            raise ValueError("expected sqlite:///<database path>?id=<image id>")
        return cls(unquote(parts.path), unquote(value))

    def format(self) -> str:
        return f"sqlite://{quote(self.database).replace('%2F', '/')}?id={quote(self.image_id)}"


# 2. The driver: options, configuration, and the operations its capabilities name.
class SqliteDriver(Driver[SqliteLocation]):
    schemes = ("sqlite",)
    location_type = SqliteLocation
    capabilities = Capabilities(read=True, ranged_read=True, write=True, delete=True)
    options = [cfg.StrOpt("sqlite_store_path", help="The database file of this store.")]

    def configure(self) -> None:                        # load time: check options
        if not self.conf.sqlite_store_path:
            raise errors.ConfigError("required", option="sqlite_store_path")
        self.path = os.path.realpath(self.conf.sqlite_store_path)
        self.local = threading.local()                  # one connection per thread
        with self.db() as db:
            db.executescript(SCHEMA)

    def db(self) -> sqlite3.Connection:
        if getattr(self.local, "db", None) is None:
            self.local.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        return self.local.db

    def translate_error(self, exc: Exception) -> errors.MultistoreError | None:
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return errors.BackendUnavailable(f"the database stayed locked: {exc}")
        return None                                      # the core's own mapping

    def holds(self, location: SqliteLocation) -> bool:  # this store's database?
        return os.path.realpath(location.database) == self.path

    def location_for(self, image_id: str, context: Context = None) -> SqliteLocation:
        return SqliteLocation(self.path, image_id)

    def open_writer(self, image_id: str, size: int | None,
                    context: Context = None) -> Writer:      # capabilities.write
        if self.image_row(image_id) is not None:
            raise errors.Duplicate(f"image {image_id!r} already exists")
        return SqliteWriter(self, image_id)

    def open_reader(self, location: SqliteLocation, offset: int, length: int | None,
                    context: Context = None) -> ReadStream:  # ranged_read: any range
        upload, size = self._image(location)
        end = size if length is None else min(size, offset + length)
        rows = self.db().execute(
            "SELECT offset, data FROM chunks WHERE upload = ? AND offset < ? "
            "AND offset + length(data) > ? ORDER BY offset", (upload, end, offset))
        chunks = (bytes(data[max(0, offset - at):end - at]) for at, data in rows)
        return ReadStream(chunks, max(0, end - offset))

    def get_size(self, location: SqliteLocation, context: Context = None) -> int:
        return self._image(location)[1]

    def delete(self, location: SqliteLocation, context: Context = None) -> None:
        db = self.db()
        db.execute("BEGIN IMMEDIATE")
        try:
            upload, _ = self._image(location)
            db.execute("DELETE FROM images WHERE id = ?", (location.image_id,))
            db.execute("DELETE FROM chunks WHERE upload = ?", (upload,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # Leftovers: chunks of uploads whose process died (one host: the pid tells).
    def find_leftovers(self, grace: float, context: Context = None) -> list[Leftover]:
        now = time.time()
        rows = self.db().execute(
            "SELECT u.upload, u.pid, u.started, sum(length(c.data)) FROM uploads u "
            "LEFT JOIN chunks c ON c.upload = u.upload GROUP BY u.upload").fetchall()
        return [Leftover(f"upload {upload}", size or 0, now - started, upload)
                for upload, pid, started, size in rows
                if now - started > grace and not _alive(pid)]

    def remove_leftover(self, leftover: Leftover, context: Context = None) -> None:
        self.drop_upload(leftover.handle)

    # The writer's narrow, public surface: db(), image_row(), drop_upload().
    def image_row(self, image_id: str) -> tuple[str, int] | None:
        return self.db().execute("SELECT upload, size FROM images WHERE id = ?",
                                 (image_id,)).fetchone()

    def _image(self, location: SqliteLocation) -> tuple[str, int]:
        row = self.image_row(location.image_id)
        if row is None:
            raise errors.NotFound(f"no image {location.image_id!r}")
        return row

    def drop_upload(self, upload: str) -> None:
        db = self.db()
        db.execute("DELETE FROM chunks WHERE upload = ?", (upload,))
        db.execute("DELETE FROM uploads WHERE upload = ?", (upload,))


# 3. The writer: bytes in order, then commit (visible at once) or abort (gone).
class SqliteWriter(Writer):
    def __init__(self, driver: SqliteDriver, image_id: str) -> None:
        self.driver, self.image_id = driver, image_id
        self.upload, self.size = secrets.token_hex(8), 0
        driver.db().execute("INSERT INTO uploads VALUES (?, ?, ?)",
                            (self.upload, os.getpid(), time.time()))

    def write(self, data: memoryview) -> None:           # data is valid during the call
        self.driver.db().execute("INSERT INTO chunks VALUES (?, ?, ?)",
                                 (self.upload, self.size, bytes(data)))
        self.size += len(data)

    def commit(self) -> Stored:
        db = self.driver.db()
        db.execute("BEGIN IMMEDIATE")
        try:
            if self.driver.image_row(self.image_id) is not None:
                raise errors.Duplicate(f"image {self.image_id!r} appeared meanwhile")
            db.execute("INSERT INTO images VALUES (?, ?, ?)",
                       (self.image_id, self.upload, self.size))
            db.execute("DELETE FROM uploads WHERE upload = ?", (self.upload,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return Stored(self.driver.location_for(self.image_id))

    def abort(self) -> None:
        self.driver.drop_upload(self.upload)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
