"""The conformance suite on a real Swift: plain objects and segmented ones."""

import pytest

from multistore.testing.conformance import ConformanceSuite


class TestSwiftConformance(ConformanceSuite):
    """Default thresholds of the fixture: 4 MB objects plain, larger in 1 MB segments."""

    options: dict = {}

    @pytest.fixture
    def make_stores(self, make_swift_stores):
        def make(**overrides):
            return make_swift_stores(**self.options, **overrides)
        return make


class TestSwiftConformanceAllSegmented(TestSwiftConformance):
    """Every image of known size goes up as segments (threshold 1 MB), streamed."""

    options = {"swift_store_large_object_size": 1}


class TestSwiftConformanceBufferedSegments(TestSwiftConformance):
    """Segments copied into buffers and uploaded two at a time."""

    options = {"swift_store_large_object_size": 1, "swift_store_segment_concurrency": 2}
