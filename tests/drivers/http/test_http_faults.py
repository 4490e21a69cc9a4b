"""The fault suite on the http driver, against real nginx servers.

- :class:`TestHttpServerFaults`: a private nginx (ports 18100-18102, so the
  session's nginx that the other tests use is never disturbed) killed with
  SIGKILL or frozen with SIGSTOP mid-get and mid-copy, left down or brought
  back within the store's retry window. Left down: ``BackendUnavailable``
  naming the store within the bound the store's timeouts and retries give;
  back: the read resumes and completes byte-identical. A copy into a file
  store whose source dies leaves no file there.
- :class:`TestHttpMixedLoad`: 16 threads of get, ranged get, get_size and
  copy into file stores, across images on the session's nginx served four
  ways (http, https with basic auth, chunked without Content-Length,
  https), every read checked by md5, no descriptor or thread left.

The images behind basic auth carry nginx's test password in their URLs:
the secrets guard looks for it in every log record and error.
"""

from __future__ import annotations

import itertools
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from multistore.drivers import http as http_driver
from multistore.testing import image_files, render_ini
from multistore.testing.faults import MixedLoad, ServerReadFaults

#: The store's options under fault: short timeouts, five resumes in a row.
CONNECT_TIMEOUT, READ_TIMEOUT, READ_RETRIES = 2.0, 2.0, 5


def worst_case(retries: int, connect: float, read: float) -> float:
    """Longest a broken read of an http store can take to fail: every
    attempt (the first and ``retries`` resumes) waits at most one connect
    and one read timeout, with the driver's pauses in between."""
    pauses = sum(min(http_driver.MAX_BACKOFF, http_driver.FIRST_BACKOFF * 2 ** n)
                 for n in range(retries))
    return (retries + 1) * (connect + read) + pauses


def retry_window(retries: int) -> float:
    """How long after a break the last resume is tried (a refused connection
    fails at once)."""
    return sum(min(http_driver.MAX_BACKOFF, http_driver.FIRST_BACKOFF * 2 ** n)
               for n in range(retries))


def quoted_password(server: Any) -> str:
    return urllib.parse.quote(server.password, safe="")


def seeder(server: Any, multistore_secrets: Any, kinds: list[tuple[str, bool, bool]]) -> Any:
    """``seed(stores, image_id, data)``: the image as a file of ``server``,
    its URL cycling through ``kinds`` (path prefix, https, basic auth)."""
    multistore_secrets.register(server.password, what="nginx's password")
    multistore_secrets.register(quoted_password(server), what="nginx's password, escaped")
    cycle = itertools.cycle(kinds)

    def seed(stores: Any, image_id: str, data: bytes) -> str:
        server.put(image_id, data)
        prefix, https, auth = next(cycle)
        return server.url(f"{prefix}/{image_id}", https=https, auth=auth)
    return seed


class TestHttpServerFaults(ServerReadFaults):
    resumes_reads = True
    server_rounds = 3
    #: Longer than the read timeout (a frozen server's connection times out
    #: and the read resumes on a new one), well inside the retry window.
    server_outage = READ_TIMEOUT + 1.0
    server_timeout = worst_case(READ_RETRIES, CONNECT_TIMEOUT, READ_TIMEOUT) + 5.0

    @pytest.fixture
    def fault_config(self, fault_nginx: Any, tmp_path: Path) -> Path:
        path = tmp_path / "faults.conf"
        path.write_text(render_ini({
            "DEFAULT": {"enabled_backends": {"web": "http", "local": "file"}},
            "glance_store": {"default_backend": "web"},
            "web": {"http_connect_timeout": CONNECT_TIMEOUT,
                    "http_read_timeout": READ_TIMEOUT,
                    "http_read_retries": READ_RETRIES,
                    "https_ca_certificates_file": fault_nginx.ca_file},
            "local": {"filesystem_store_datadir": tmp_path / "local"},
        }))
        return path

    @pytest.fixture
    def fault_seed_image(self, fault_nginx: Any, multistore_secrets: Any) -> Any:
        # Plain, and behind basic auth (the password must never show).
        return seeder(fault_nginx, multistore_secrets,
                      [("images", False, False), ("private", False, True)])

    @pytest.fixture
    def kill_server(self, fault_nginx: Any) -> Any:
        return fault_nginx.kill

    @pytest.fixture
    def restart_server(self, fault_nginx: Any) -> Any:
        return fault_nginx.restart

    @pytest.fixture
    def freeze_server(self, fault_nginx: Any) -> Any:
        return fault_nginx.freeze

    @pytest.fixture
    def thaw_server(self, fault_nginx: Any) -> Any:
        return fault_nginx.thaw

    def test_the_outage_fits_the_retry_window(self) -> None:
        """The "back" tests prove resuming only if the server comes back
        after the read timeout and well before the last resume."""
        assert READ_TIMEOUT < self.server_outage < retry_window(READ_RETRIES) - 3.0
        assert self.server_timeout < 60

    @pytest.mark.parametrize("back", [False, True], ids=["down", "back"])
    def test_server_killed_mid_copy(self, make_stores: Any, fault_seed_image: Any,
                                    multistore_secrets: Any, kill_server: Any,
                                    restart_server: Any, back: bool, tmp_path: Path) -> None:
        """The suite's test, then the file store's directory itself: not one
        file, whole or partial (the completed copies were deleted)."""
        super().test_server_killed_mid_copy(make_stores, fault_seed_image, multistore_secrets,
                                            kill_server, restart_server, back)
        assert image_files(tmp_path / "local") == []


class TestHttpMixedLoad(MixedLoad):
    """Reads of images on the session's nginx and copies of them into two
    file stores (copies are read and deleted too); nothing is added."""

    mixed_adds = False
    mixed_seed_images = 12
    mixed_image_size = 3 * 1024 * 1024

    @pytest.fixture
    def fault_config(self, nginx: Any, tmp_path: Path) -> Path:
        path = tmp_path / "mixed.conf"
        path.write_text(render_ini({
            "DEFAULT": {"enabled_backends": {"web": "http", "local": "file",
                                             "backup": "file"}},
            "glance_store": {"default_backend": "web"},
            "web": {"https_ca_certificates_file": nginx.ca_file},
            "local": {"filesystem_store_datadir": tmp_path / "local"},
            "backup": {"filesystem_store_datadir": tmp_path / "backup"},
        }))
        return path

    @pytest.fixture
    def fault_seed_image(self, nginx: Any, multistore_secrets: Any) -> Iterator[Any]:
        names: list[str] = []
        seed = seeder(nginx, multistore_secrets,
                      [("images", False, False), ("private", True, True),
                       ("chunked", False, False), ("images", True, False)])

        def tracked(stores: Any, image_id: str, data: bytes) -> str:
            names.append(image_id)
            return seed(stores, image_id, data)
        yield tracked
        for name in names:
            (nginx.docroot / name).unlink(missing_ok=True)
