"""What the Glance harness needs for the multistore adapter, proven with a
probe driver (glance_store's file driver under the type ``probefile``, see
probe_glance_driver.py) on the server's PYTHONPATH: Glance loads a
third-party driver from the ``glance_store.drivers`` entry points, and a
store's type switched from glance_store's driver to it and back, on the same
database, keeps every image. And two ways an installed driver stops Glance
from starting, which the adapter must avoid."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

harness = sys.modules["multistore_glance_harness"]     # loaded by conftest.py
PORT = 17302
FILE_TYPES = ("file", "probefile", "conflictingfile")
PROBE_MODULE = Path(__file__).resolve().parent / "probe_glance_driver.py"


def probe_driver_path(directory: Path, entry_points: dict[str, str]) -> Path:
    """A directory for a GlanceServer's ``python_path`` holding the probe
    driver module and a distribution whose ``glance_store.drivers`` entry
    points are ``entry_points`` (name -> ``probe_glance_driver:Class``):
    what an installed third-party driver looks like to stevedore."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROBE_MODULE, directory / PROBE_MODULE.name)
    dist = directory / "probe_glance_driver-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: probe-glance-driver\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[glance_store.drivers]\n"
        + "".join(f"{name} = {target}\n" for name, target in entry_points.items()))
    return directory


def test_a_store_switched_to_a_third_party_driver_and_back_keeps_its_images(
        tmp_path: Path) -> None:
    path = probe_driver_path(tmp_path / "pp", {"probefile": "probe_glance_driver:Store"})
    builtin = {"fast": ("file", {}), "cheap": ("file", {})}
    server = harness.GlanceServer(tmp_path / "glance", PORT, builtin, python_path=[path],
                                  file_types=FILE_TYPES)
    data = b"".join(harness.iter_bytes(3 * harness.MiB + 7, seed=3))
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    try:
        server.start()
        client = server.client()
        before = client.create_image(name="before")["id"]
        client.upload(before, data, store="cheap")

        server.restart(stores={**builtin, "cheap": ("probefile", {})})
        assert {s["id"]: s["description"] for s in client.stores()}["cheap"] == \
            "cheap (probefile)"
        assert client.download(before).md5 == md5
        assert client.download(before, byte_range="bytes=5-9", keep=True).body == data[5:10]
        during = client.create_image(name="during")["id"]
        client.upload(during, data, store="cheap")
        assert [loc["url"] for loc in client.locations(during)] == \
            [f"file://{server.store_dir('cheap')}/{during}"]
        client.copy_image(during, stores=["fast"])           # third-party -> built-in
        client.wait_stores(during, ["cheap", "fast"])
        other = client.create_image(name="other")["id"]
        client.upload(other, data, store="fast")
        client.copy_image(other, stores=["cheap"])           # built-in -> third-party
        client.wait_stores(other, ["fast", "cheap"])
        # Glance's stores/detail knows only built-in types (discovery.py).
        assert client.request("GET", "/v2/info/stores/detail")[0] == 500

        server.restart(stores=builtin)
        for image in (before, during, other):
            got = client.download(image)
            assert (got.status, got.md5) == (200, md5)
            client.delete(image)
        assert server.files("cheap") == server.files("fast") == []
    finally:
        server.stop()


@pytest.mark.parametrize("entry_points, error", [
    # The same name as a glance_store driver: stevedore finds two 'file'
    # drivers (MultipleMatches), glance_store disables both, and with them
    # the default store and the reserved staging store.
    ({"file": "probe_glance_driver:Store"}, "MultipleMatches"),
    # A name that contains a configured store type ('file' in
    # 'conflictingfile'): glance_store registers the driver's OPTIONS in
    # every 'file' store's group (multi_backend.register_store_opts tests
    # `type in entry_name`), and an option defined unlike glance_store's
    # own is a DuplicateOptError, though no store uses the driver.
    ({"conflictingfile": "probe_glance_driver:ConflictingStore"},
     "DuplicateOptError: duplicate option: filesystem_store_datadir"),
], ids=["same-name-as-builtin", "name-contains-a-type-and-options-differ"])
def test_an_installed_driver_that_stops_glance(tmp_path: Path, entry_points: dict[str, str],
                                               error: str) -> None:
    path = probe_driver_path(tmp_path / "pp", entry_points)
    server = harness.GlanceServer(tmp_path / "glance", PORT, {"fast": ("file", {})},
                                  python_path=[path])
    with pytest.raises(harness.GlanceError):
        server.start(timeout=60)
    logs: Any = (server.dir / "log" / "gunicorn.log").read_text() + server.log_text()
    assert error in logs
    assert not server.running()
