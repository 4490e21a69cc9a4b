"""The pytest plugin consumers get: ready store sets in a temporary directory."""

import pytest


def test_ready_store_set(multistore_stores, tmp_path):
    assert multistore_stores.default == "local"
    assert [e["id"] for e in multistore_stores.info()] == ["local", "backup", "memory"]
    result = multistore_stores.add("img", b"data", 4)
    assert result.metadata == {"store": "local"}
    assert result.location.startswith(f"file://{tmp_path}")
    staged = multistore_stores.add("img", b"data", 4, store="os_glance_staging_store")
    assert staged.location.startswith(f"file://{tmp_path}")


class TestOverriddenLayout:
    @pytest.fixture
    def multistore_sections(self):
        return {"DEFAULT": {"enabled_backends": {"only": "memory"}},
                "glance_store": {"default_backend": "only"}}

    def test_layout_is_overridable(self, multistore_stores):
        assert multistore_stores.ids() == ["only"]
        # No [os_glance_staging_store] group: the staging store is not loaded
        # (it would default to /var/lib/glance/os_glance_staging_store).
        assert multistore_stores.ids(hidden=True) == ["only"]
