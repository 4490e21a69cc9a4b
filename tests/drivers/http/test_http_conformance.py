"""The read-only conformance suite on the http driver, against a real nginx:
plain HTTP, HTTPS with a test CA, and basic auth through a redirect."""

from __future__ import annotations

from typing import Any

import pytest

from multistore.testing.conformance import ReadOnlyConformance


class TestHttpConformance(ReadOnlyConformance):
    options: dict[str, Any] = {}

    @pytest.fixture
    def make_stores(self, make_http_stores: Any, nginx: Any) -> Any:
        def make(**overrides: Any) -> Any:
            return make_http_stores(**self.store_options(nginx), **overrides)
        return make

    def store_options(self, nginx: Any) -> dict[str, Any]:
        return {}

    def url(self, nginx: Any, image_id: str) -> str:
        return nginx.url(f"images/{image_id}")

    @pytest.fixture
    def seed_image(self, nginx: Any) -> Any:
        def seed(image_id: str, data: bytes) -> str:
            nginx.put(image_id, data)
            return self.url(nginx, image_id)
        return seed


class TestHttpsConformance(TestHttpConformance):
    def store_options(self, nginx: Any) -> dict[str, Any]:
        return {"https_ca_certificates_file": str(nginx.ca_file)}

    def url(self, nginx: Any, image_id: str) -> str:
        return nginx.url(f"images/{image_id}", https=True)


class TestHttpAuthRedirectConformance(TestHttpConformance):
    """Credentials in the URL, kept across a same-origin redirect to /private/."""

    def url(self, nginx: Any, image_id: str) -> str:
        return nginx.url(f"to-private/{image_id}", auth=True)
