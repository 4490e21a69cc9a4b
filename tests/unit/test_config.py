"""Loading operators' configuration files: layouts, validation, option views."""

import warnings

import pytest
from oslo_config import cfg

import multistore
from multistore import errors
from multistore.testing import make_conf

SEED_000 = """
[DEFAULT]
enabled_backends = shared:file, reliable:file
default_backend = shared

[shared]
filesystem_store_datadir = {root}/shared_images/
store_description = "Shared filesystem store"

[reliable]
filesystem_store_datadir = {root}/reliable
store_description = "Reliable filesystem backend"

[os_staging]
filesystem_store_datadir = {root}/os_staging/
store_description = "Filesystem store for staging purpose"
"""

SEED_003 = """
[glance_store]
stores = file, http
default_store = file
filesystem_store_datadir = {root}/images/
"""


def parse(tmp_path, text):
    path = tmp_path / "glance-api.conf"
    path.write_text(text.format(root=tmp_path))
    conf = cfg.ConfigOpts()
    multistore.register_opts(conf)
    conf(["--config-file", str(path)], project="glance", default_config_files=[])
    return conf


def layout(tmp_path, **sections):
    base = {"DEFAULT": {"enabled_backends": {"a": "file", "b": "file"}},
            "glance_store": {"default_backend": "a"},
            "a": {"filesystem_store_datadir": tmp_path / "a"},
            "b": {"filesystem_store_datadir": tmp_path / "b"}}
    for name, values in sections.items():
        if values is None:
            base.pop(name, None)
        else:
            base[name] = {**base.get(name, {}), **values}
    return make_conf(base, tmp_path)


def test_seed_000_loads_unchanged_with_a_deprecation_warning(tmp_path):
    conf = parse(tmp_path, SEED_000)
    with pytest.warns(DeprecationWarning, match=r"default_backend in \[DEFAULT\]"):
        stores = multistore.load(conf, reserved={"os_staging": "file"})
    assert stores.default == "shared"
    assert stores.info() == [
        {"id": "shared", "description": "Shared filesystem store", "default": True,
         "read-only": False},
        {"id": "reliable", "description": "Reliable filesystem backend", "default": False,
         "read-only": False},
    ]
    staging = stores.add("staged", b"abc", 3, store="os_staging")
    assert staging.location == f"file://{tmp_path}/os_staging/staged"
    assert (tmp_path / "shared_images").is_dir()


def test_default_backend_in_glance_store_group_needs_no_warning(tmp_path):
    conf = layout(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert multistore.load(conf).default == "a"


def test_legacy_single_store_form(tmp_path):
    conf = parse(tmp_path, SEED_003)
    stores = multistore.load(conf)
    assert [s.id for s in stores] == ["file", "http"]
    assert stores["http"].read_only
    assert stores.default == "file"
    result = stores.add("img", b"data", 4)
    assert result.location == f"file://{tmp_path}/images/img"
    assert result.metadata == {"store": "file"}


def test_legacy_aliases_and_scheme_names(tmp_path):
    conf = make_conf({"glance_store": {
        "stores": "glance.store.filesystem.Store", "default_store": "filesystem",
        "filesystem_store_datadir": tmp_path / "x"}}, tmp_path)
    stores = multistore.load(conf)
    assert stores.default == "file"
    assert stores["file"].type == "file"


def test_glance_store_alias_in_enabled_backends(tmp_path):
    conf = layout(tmp_path, DEFAULT={"enabled_backends": {
        "a": "glance.store.filesystem.Store", "b": "file"}})
    assert multistore.load(conf)["a"].type == "file"


@pytest.mark.parametrize("sections, match", [
    ({"glance_store": {"default_backend": "nope"}}, r"default_backend.*'nope' is not one of"),
    ({"glance_store": None}, r"default_backend.*not set"),
    ({"DEFAULT": {"enabled_backends": {"a": "nosuchdriver", "b": "file"}}},
     r"store 'a'.*unknown driver type 'nosuchdriver'"),
    ({"DEFAULT": {"enabled_backends": "a:file, b:file, a:memory"}}, r"Duplicate key a"),
    ({"DEFAULT": {"enabled_backends": {"a": "file", "os_glance_mine": "file"}}},
     r"store 'os_glance_mine'.*reserved"),
    ({"a": {"weight": "heavy"}}, r"store 'a'.*option 'weight'"),
    ({"a": {"filesystem_store_chunk_size": "0"}}, r"store 'a'.*filesystem_store_chunk_size"),
    ({"a": {"filesystem_store_file_perm": "200"}}, r"store 'a'.*owner read"),
    ({"a": {"filesystem_store_datadirs": ["/x:1"]}}, r"store 'a'.*either"),
])
def test_bad_configuration_names_store_and_option(tmp_path, sections, match):
    conf = layout(tmp_path, **sections)
    with pytest.raises(errors.ConfigError, match=match):
        multistore.load(conf)


def test_backend_defaults_apply_unless_the_store_overrides(tmp_path):
    conf = layout(tmp_path, backend_defaults={"filesystem_store_chunk_size": 1000},
                  b={"filesystem_store_chunk_size": 2000})
    stores = multistore.load(conf)
    assert stores["a"].driver.chunk_size == 1000
    assert stores["b"].driver.chunk_size == 2000


def test_two_stores_of_one_type_are_independent(tmp_path):
    stores = multistore.load(layout(tmp_path, b={"read_only": True, "weight": 5}))
    a = stores.add("same-id", b"one", 3, store="a")
    with pytest.raises(errors.AddNotSupported):
        stores.add("same-id", b"two", 3, store="b")
    assert stores.weight("a") == 0 and stores.weight("b") == 5
    assert stores.store_for(a.location).id == "a"
    with pytest.raises(errors.BadLocation, match="does not belong"):
        stores.get(a.location, store="b")


def test_two_configurations_in_one_process(tmp_path):
    one = multistore.load(layout(tmp_path / "1"))
    two = multistore.load(layout(tmp_path / "2", glance_store={"default_backend": "b"}))
    assert (one.default, two.default) == ("a", "b")
    r1 = one.add("img", b"1", 1)
    r2 = two.add("img", b"2", 1)
    assert r1.location != r2.location
    with pytest.raises(errors.BadLocation):
        one.get(r2.location)


def test_reserved_stores_are_hidden_but_work(tmp_path):
    conf = layout(tmp_path, os_glance_staging_store={
        "filesystem_store_datadir": tmp_path / "staging"})
    stores = multistore.load(conf, reserved={"os_glance_staging_store": "file",
                                             "os_glance_tasks_store": "memory"})
    assert [e["id"] for e in stores.info()] == ["a", "b"]
    assert stores.ids(hidden=True)[-2:] == ["os_glance_staging_store", "os_glance_tasks_store"]
    res = stores.add("x", b"x", 1, store="os_glance_staging_store")
    assert res.location == f"file://{tmp_path}/staging/x"
    assert stores.copy(res.location, to="all")[0].store == "a"


def test_reserved_file_store_defaults_to_its_own_directory(tmp_path):
    from multistore.drivers.file import FileDriver
    assert FileDriver.option_defaults("os_glance_tasks_store", True) == {
        "filesystem_store_datadir": "/var/lib/glance/os_glance_tasks_store"}
    assert FileDriver.option_defaults("fast", False) == {}


def test_register_opts_after_parsing_and_twice(tmp_path):
    path = tmp_path / "c.conf"
    path.write_text("[DEFAULT]\nenabled_backends = m:memory\n"
                    "[glance_store]\ndefault_backend = m\n")
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)], default_config_files=[])
    multistore.register_opts(conf)
    multistore.register_opts(conf)
    first = multistore.load(conf)
    second = multistore.load(conf)
    first.add("i", b"1", 1)
    with pytest.raises(errors.NotFound):
        second.get_size("memory://m/i")


def test_store_conf_repr_shows_no_values(tmp_path):
    stores = multistore.load(layout(tmp_path))
    text = repr(stores["a"].conf) + repr(stores["a"].driver) + repr(stores["a"]) + repr(stores)
    assert str(tmp_path) not in text


def test_sample_config_lists_every_option():
    from multistore.config import list_opts
    groups = dict((g, {o.dest for o in opts}) for g, opts in list_opts())
    assert "enabled_backends" in groups[None]
    assert {"default_backend", "stores", "default_store"} <= groups["glance_store"]
    assert {"filesystem_store_datadir", "filesystem_store_fsync", "store_description",
            "weight", "read_only"} <= groups["file"]
    assert "filesystem_store_fsync" in groups["backend_defaults"]


def test_oslo_config_generator_prints_a_complete_sample(tmp_path):
    import os
    import subprocess
    import sys
    exe = os.path.join(os.path.dirname(sys.executable), "oslo-config-generator")
    out = subprocess.run([exe, "--namespace", "multistore"], capture_output=True, text=True,
                         check=True).stdout
    for option in ("#enabled_backends", "#default_backend", "#filesystem_store_fsync",
                   "#store_description", "#weight", "#read_only", "#memory_store_capacity",
                   "[backend_defaults]", "[file]"):
        assert option in out
