"""Style and types are part of every test run: ruff and mypy over the library."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def run(*argv):
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    return done.returncode, done.stdout + done.stderr


def test_ruff():
    paths = [p for p in ("multistore", "tests", "benchmarks", "doc/example")
             if os.path.isdir(os.path.join(ROOT, p))]
    code, out = run(os.path.join(BIN, "ruff"), "check", *paths)
    assert code == 0, out


def test_mypy():
    code, out = run(sys.executable, "-m", "mypy", "multistore", "doc/example")
    assert code == 0, out
