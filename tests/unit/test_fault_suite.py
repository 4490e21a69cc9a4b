"""The fault suite catches what it promises to: run on deliberately broken
drivers (in a pytester subprocess), its tests fail."""

BROKEN = '''
import os
import pytest
from multistore.drivers.memory import MemoryDriver
from multistore.testing import render_ini
from multistore.testing.faults import FaultSuite


class LeakyDriver(MemoryDriver):
    """Every read opens a file descriptor it never closes."""

    def open_reader(self, location, offset, length, context=None):
        os.open(os.devnull, os.O_RDONLY)
        return super().open_reader(location, offset, length, context)


class OffByOneDriver(MemoryDriver):
    """Ranged reads start one byte late."""

    def open_reader(self, location, offset, length, context=None):
        if offset:
            offset += 1
        return super().open_reader(location, offset, length, context)


class Base(FaultSuite):
    mixed_seconds = 1.5
    mixed_threads = 4

    @pytest.fixture
    def fault_config(self, tmp_path):
        path = tmp_path / "faults.conf"
        path.write_text(render_ini({
            "DEFAULT": {"enabled_backends": {"ram": "memory"}},
            "glance_store": {"default_backend": "ram"}}))
        return path


class TestLeaky(Base):
    @pytest.fixture
    def fault_drivers(self):
        return {"memory": LeakyDriver}


class TestOffByOne(Base):
    @pytest.fixture
    def fault_drivers(self):
        return {"memory": OffByOneDriver}


class TestSound(Base):
    pass
'''


def test_the_mixed_load_catches_fd_leaks_and_wrong_bytes(pytester):
    pytester.makepyfile(test_broken=BROKEN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "mixed")
    result.assert_outcomes(passed=1, failed=2)
    failed = sorted(line.split("::")[1] for line in result.stdout.lines
                    if line.startswith("FAILED"))
    assert failed == ["TestLeaky", "TestOffByOne"]
    assert "file descriptors left open" in result.stdout.str()
    assert "wrong bytes" in result.stdout.str()


