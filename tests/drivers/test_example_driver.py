"""The worked example of doc/writing-a-driver.rst keeps the contract:
it passes the conformance suite, and its leftovers are swept."""

import importlib.util
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import multistore
from multistore.testing import make_conf
from multistore.testing.conformance import ConformanceSuite

EXAMPLE = pathlib.Path(__file__).parents[2] / "doc" / "example" / "sqlite_driver.py"


def _example():
    spec = importlib.util.spec_from_file_location("sqlite_driver", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module            # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


sqlite_driver = _example()


def conf_for(tmp_path, **overrides):
    return make_conf({
        "DEFAULT": {"enabled_backends": {"lite": "sqlite"}},
        "glance_store": {"default_backend": "lite"},
        "lite": {"sqlite_store_path": str(tmp_path / "images.db"), **overrides},
    }, tmp_path)


class TestExampleDriverConformance(ConformanceSuite):
    large_image_size = 32 * 1024 * 1024

    @pytest.fixture
    def make_stores(self, tmp_path):
        def make(**overrides):
            return multistore.load(conf_for(tmp_path, **overrides),
                                   drivers={"sqlite": sqlite_driver.SqliteDriver})
        return make


def test_the_example_is_about_150_lines():
    assert len(EXAMPLE.read_text().splitlines()) <= 200


def test_a_killed_writer_leaves_an_upload_that_sweep_removes(tmp_path):
    child = f"""
import os, signal, sys, time
sys.path.insert(0, {str(EXAMPLE.parent)!r})
import multistore, sqlite_driver
from multistore.testing import make_conf
conf = make_conf({{"DEFAULT": {{"enabled_backends": {{"lite": "sqlite"}}}},
                  "glance_store": {{"default_backend": "lite"}},
                  "lite": {{"sqlite_store_path": {str(tmp_path / "images.db")!r}}}}},
                 {str(tmp_path / "child")!r})
stores = multistore.load(conf, drivers={{"sqlite": sqlite_driver.SqliteDriver}})
def source():
    yield b"x" * (4 << 20)      # one full buffer: handed to the writer
    time.sleep(1)               # ... which stores it meanwhile
    os.kill(os.getpid(), signal.SIGKILL)
stores.add("victim", source(), None)
"""
    done = subprocess.run([sys.executable, "-c", child], timeout=60)
    assert done.returncode == -signal.SIGKILL
    with multistore.load(conf_for(tmp_path),
                         drivers={"sqlite": sqlite_driver.SqliteDriver}) as stores:
        live = stores["lite"].driver.open_writer("alive", None)
        live.write(memoryview(b"y" * 10))
        assert stores.sweep(grace=3600) == []            # too young
        time.sleep(0.05)
        swept = stores.sweep(grace=0.01)
        assert [(s.size, s.removed) for s in swept] == [(4 << 20, True)]
        assert stores.sweep(grace=0) == []                # the live upload is kept
        live.abort()
        db = stores["lite"].driver.db()
        assert db.execute("SELECT count(*) FROM chunks").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM images").fetchone() == (0,)
