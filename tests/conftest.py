"""Every test runs under the secrets guard (multistore.testing.secrets): a
configured password, key, token or ``user:password@`` URL that shows in any
log record fails the test."""

import pytest
from hypothesis import settings

# ceph_clusters: the Ceph clusters (ceph_a, ceph_b) of the rbd tests and of
# the sheepdog migration test, defined once so one session starts each once.
pytest_plugins = ["pytester", "ceph_clusters"]

# Property tests: no example database in the work tree, and no deadline on a
# shared two-core machine (an example is slow when another process runs).
settings.register_profile("multistore", database=None, deadline=None)
settings.load_profile("multistore")


@pytest.fixture(autouse=True)
def _no_secret_leaks(multistore_secrets):
    return multistore_secrets
