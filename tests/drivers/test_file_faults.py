"""The fault suite on the file store: its datadir on a 128 MiB tmpfs mounted
for the test (root), nearly filled for the full-backend case; other stores
(a file store on disk, a memory store, the staging store) take part in the
mixed load. A local file store has no server to kill or freeze."""

import os
import subprocess

import pytest

from multistore.testing import render_ini
from multistore.testing.faults import FaultSuite, FullBackendFaults

TMPFS_SIZE = 128 * 1024 * 1024


@pytest.fixture
def tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "tmpfs",
                    str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


class TestFileFaults(FaultSuite, FullBackendFaults):
    @pytest.fixture
    def fault_config(self, tmp_path, tmpfs):
        path = tmp_path / "faults.conf"
        path.write_text(render_ini({
            "DEFAULT": {"enabled_backends": {"disk": "file", "other": "file", "ram": "memory"}},
            # Small buffers: a kill lands while bytes are being written.
            "glance_store": {"default_backend": "disk", "stream_chunk_size": 65536},
            "disk": {"filesystem_store_datadir": tmpfs / "images"},
            "other": {"filesystem_store_datadir": tmp_path / "other"},
            "os_glance_staging_store": {"filesystem_store_datadir": tmp_path / "staging"},
        }))
        return path

    @pytest.fixture
    def fill_backend(self, tmpfs):
        def fill(stores, store_id):
            st = os.statvfs(tmpfs)
            room = st.f_bavail * st.f_frsize - self.full_image_size // 2
            filler = tmpfs / "filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, room)
            finally:
                os.close(fd)
            return filler.unlink
        return fill
