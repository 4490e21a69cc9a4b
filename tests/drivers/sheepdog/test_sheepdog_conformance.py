"""The shared behaviour suite, on both session clusters (``sheepdog_a``, ``sheepdog_b``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sheepdog_stores import sheepdog_stores

import multistore
from multistore.testing.conformance import ConformanceSuite


class TestConformanceA(ConformanceSuite):
    @pytest.fixture
    def make_stores(self, sheepdog_a: Any, tmp_path: Path,
                    ) -> Callable[..., multistore.StoreSet]:
        def make(**overrides: Any) -> multistore.StoreSet:
            return sheepdog_stores(tmp_path, {"sd": (sheepdog_a, overrides)})
        return make


class TestConformanceB(ConformanceSuite):
    @pytest.fixture
    def make_stores(self, sheepdog_b: Any, tmp_path: Path,
                    ) -> Callable[..., multistore.StoreSet]:
        def make(**overrides: Any) -> multistore.StoreSet:
            return sheepdog_stores(tmp_path, {"herd": (sheepdog_b, overrides)})
        return make
