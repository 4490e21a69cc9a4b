"""The conformance suite on the file driver: durable, not synced, thin."""

import pytest

import multistore
from multistore.testing import image_files, make_conf
from multistore.testing.conformance import ConformanceSuite


class TestFileConformance(ConformanceSuite):
    options = {"filesystem_store_fsync": True}

    @pytest.fixture
    def make_stores(self, tmp_path):
        def make(**overrides):
            conf = make_conf({
                "DEFAULT": {"enabled_backends": {"disk": "file"}},
                "glance_store": {"default_backend": "disk"},
                "disk": {"filesystem_store_datadir": tmp_path / "images",
                         **self.options, **overrides},
            }, tmp_path)
            return multistore.load(conf)
        return make

    def test_nothing_but_images_in_the_directory(self, stores, tmp_path):
        stores.add("a", b"x" * 10, 10)
        with pytest.raises(multistore.SizeMismatch):
            stores.add("b", b"x" * 10, 11)
        assert image_files(tmp_path / "images") == ["a"]


class TestFileConformanceNoSync(TestFileConformance):
    options = {"filesystem_store_fsync": False}


class TestFileConformanceThin(TestFileConformance):
    """Thin provisioning changes how bytes are written, not what is read."""

    options = {"filesystem_thin_provisioning": True}
