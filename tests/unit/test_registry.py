"""Drivers found through entry points: third-party plugins, conflicts, aliases."""

import os
import subprocess
import sys
import textwrap

import pytest

import multistore
from multistore import errors
from multistore.testing import make_conf
from multistore.registry import Registry

PLUGIN = '''
import dataclasses

from multistore.drivers.memory import MemoryDriver, MemoryLocation


@dataclasses.dataclass(frozen=True)
class PluginLocation(MemoryLocation):
    scheme = "plugin"


class PluginDriver(MemoryDriver):
    schemes = ("plugin",)
    location_type = PluginLocation
'''


def install_dist(root, name, entry_points, module=None):
    """A minimal installed distribution: what pip leaves in site-packages."""
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[multistore.drivers]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    if module:
        (root / f"{module[0]}.py").write_text(textwrap.dedent(module[1]))


def run_python(site, code, tmp_path):
    """Run ``code`` in a fresh interpreter that sees the distributions in ``site``
    (as after ``pip install``), with an empty entry point cache."""
    env = {**os.environ, "PYTHONPATH": str(site), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    return done.returncode, done.stdout + done.stderr


LOAD = """
    import multistore
    from multistore.registry import Registry
    try:
        Registry().load({name!r}, store="s")
    except multistore.DriverLoadError as exc:
        print("DriverLoadError:", exc)
"""


def test_a_third_party_driver_needs_only_an_entry_point(tmp_path):
    install_dist(tmp_path / "site", "thirdparty-driver",
                 {"plugin": "thirdparty_plugin:PluginDriver"}, ("thirdparty_plugin", PLUGIN))
    code, out = run_python(tmp_path / "site", """
        import multistore
        from multistore.testing import make_conf
        conf = make_conf({"DEFAULT": {"enabled_backends": {"p": "plugin"}},
                          "glance_store": {"default_backend": "p"}})
        stores = multistore.load(conf)
        print(stores.add("img", b"abc", 3).location, stores.info(detail=True)[0]["type"])
    """, tmp_path)
    assert (code, out.strip()) == (0, "plugin://p/img plugin")


def test_two_packages_claiming_one_name_is_an_error(tmp_path):
    site = tmp_path / "site"
    install_dist(site, "thirdparty-a", {"clash": "multistore.drivers.memory:MemoryDriver"})
    install_dist(site, "thirdparty-b", {"clash": "multistore.drivers.file:FileDriver"})
    code, out = run_python(site, LOAD.format(name="clash"), tmp_path)
    assert "DriverLoadError: [store 's', load] several installed packages declare" in out


def test_an_entry_point_that_is_not_a_driver_is_refused(tmp_path):
    install_dist(tmp_path / "site", "thirdparty-bad", {"bad": "multistore.errors:NotFound"})
    code, out = run_python(tmp_path / "site", LOAD.format(name="bad"), tmp_path)
    assert "not a multistore.driver.Driver subclass" in out


def test_a_driver_that_fails_to_import_says_so(tmp_path):
    install_dist(tmp_path / "site", "thirdparty-broken",
                 {"broken": "thirdparty_missing_module:Driver"})
    code, out = run_python(tmp_path / "site", LOAD.format(name="broken"), tmp_path)
    assert "DriverLoadError: [store 's', load] driver 'broken' could not be imported" in out


def test_glance_store_aliases():
    registry = Registry()
    assert registry.canonical("glance.store.filesystem.Store") == "file"
    assert registry.canonical("filesystem") == "file"
    with pytest.raises(errors.DriverLoadError, match="unknown driver type"):
        registry.canonical("glance.store.nosuch.Store")


def test_loading_a_store_imports_only_its_own_driver(tmp_path):
    code, out = run_python(tmp_path, """
        import sys
        import multistore
        from multistore.testing import make_conf
        multistore.load(make_conf({"DEFAULT": {"enabled_backends": {"m": "memory"}},
                                   "glance_store": {"default_backend": "m"}}))
        print(sorted(m for m in sys.modules
                     if m.startswith(("multistore.drivers.", "swiftclient", "rados"))))
    """, tmp_path)
    assert (code, out.strip()) == (0, "['multistore.drivers.memory']")


def test_declared_capabilities_must_match_the_methods(tmp_path):
    import dataclasses

    from multistore.driver import check_driver_class
    from multistore.drivers.memory import MemoryLocation

    class NoWriter(multistore.Driver):
        schemes = ("nw",)
        location_type = MemoryLocation
        capabilities = multistore.Capabilities(read=True, write=True)

        def open_reader(self, location, offset, length, context=None): ...
        def get_size(self, location, context=None): ...

    with pytest.raises(multistore.DriverLoadError, match="declare write but it does not "
                                                         "implement open_writer"):
        check_driver_class(NoWriter)

    @dataclasses.dataclass(frozen=True)
    class Untyped(multistore.Location):
        image_id: str

    class NoParse(NoWriter):
        location_type = Untyped
        capabilities = multistore.Capabilities(read=True)

    with pytest.raises(multistore.DriverLoadError, match="does not implement parse"):
        check_driver_class(NoParse)
    conf = make_conf({"DEFAULT": {"enabled_backends": {"x": "nw"}},
                      "glance_store": {"default_backend": "x"}}, tmp_path)
    with pytest.raises(multistore.DriverLoadError, match=r"\[store 'x', load\]"):
        multistore.load(conf, drivers={"nw": NoWriter})
