"""Issue 14's probes, one test (or more) each: what a hostile user tried on
the file and memory stores, the configuration and the command line.

These use the public API only (and real files, real processes), so each runs
unchanged against older commits; the closing note of issue 14 lists which
commit each one first passes at.
"""

import io
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse

import pytest

import multistore
from multistore import errors
from multistore.drivers.memory import MemoryBackend, MemoryDriver
from multistore.testing import local_layout, make_conf

RESERVED = {"os_glance_staging_store": "file"}
EXE = os.path.join(os.path.dirname(sys.executable), "multistore")


@pytest.fixture
def stores(tmp_path):
    sections = local_layout(tmp_path, file_stores=("local", "backup", "archive"),
                            memory_stores=("memory",))
    with multistore.load(make_conf(sections, tmp_path), reserved=RESERVED) as s:
        yield s


def read(stores, location, **kwargs):
    with stores.get(location, **kwargs) as reader:
        return reader.read_all()


def file_url(path):
    return "file://" + "/".join(urllib.parse.quote(s, safe="-._~") for s in str(path).split("/"))


def regular_files(directory):
    """Every regular file under ``directory``, at any depth."""
    found = []
    for top, _, names in os.walk(directory):
        found += [os.path.join(top, n) for n in names
                  if stat.S_ISREG(os.lstat(os.path.join(top, n)).st_mode)]
    return sorted(found)


# -- 1. an image id cannot alias another image --------------------------------

@pytest.mark.parametrize("store", ["local", "memory"])
def test_probe01_an_id_that_looks_encoded_names_its_own_image(stores, store):
    a = stores.add("A", b"image A", 7, store=store)
    b = stores.add("%41", b"image %41", 9, store=store)
    assert a.location != b.location
    assert read(stores, b.location) == b"image %41"
    stores.delete(b.location)
    assert read(stores, a.location) == b"image A"


@pytest.mark.parametrize("store", ["local", "memory"])
def test_probe01_ids_with_url_syntax_are_readable_not_orphans(stores, store):
    for image_id in ("a#b", "a?b", "a%20b", "a b", "%", "%%41", "a;b=c"):
        data = image_id.encode()
        result = stores.add(image_id, data, len(data), store=store)
        assert read(stores, result.location) == data, image_id
        assert stores.get_size(result.location) == len(data)
        stores.delete(result.location)
        with pytest.raises(errors.NotFound):
            stores.get_size(result.location)


# -- 2. nothing outside the datadir, and nothing partial, is readable ----------

def test_probe02_a_symlink_in_the_datadir_is_never_followed(stores, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside the store")
    datadir = tmp_path / "local"
    (datadir / "evil").symlink_to(secret)
    url = file_url(datadir / "evil")
    with pytest.raises(errors.NotFound, match="symbolic link"):
        read(stores, url)
    with pytest.raises(errors.NotFound):
        stores.get_size(url)
    with pytest.raises(errors.NotFound):
        stores.delete(url)
    assert (datadir / "evil").is_symlink() and secret.read_bytes() == b"outside the store"
    # A dangling link, and one to a directory, are not images either.
    (datadir / "dangling").symlink_to(tmp_path / "nowhere")
    (datadir / "dirlink").symlink_to(tmp_path)
    for name in ("dangling", "dirlink"):
        with pytest.raises(errors.NotFound):
            read(stores, file_url(datadir / name))
    # An add never writes through a link planted under the image's name.
    with pytest.raises(errors.Duplicate):
        stores.add("evil", b"overwrite", 9)
    assert secret.read_bytes() == b"outside the store"


def test_probe02_a_symlinked_directory_component_is_refused(stores, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "img").write_bytes(b"not an image of the store")
    datadir = tmp_path / "local"
    (datadir / "sub").symlink_to(outside)
    (datadir / "loop").symlink_to(datadir)
    stores.add("img", b"in the store", 12)
    for url in (file_url(datadir / "sub" / "img"), file_url(datadir / "loop" / "img")):
        with pytest.raises(errors.BadLocation):
            read(stores, url)
        with pytest.raises(errors.BadLocation):
            stores.delete(url)
    assert (outside / "img").exists() and (datadir / "img").exists()


def test_probe02_a_fifo_or_a_directory_in_the_datadir_is_refused_without_hanging(
        stores, tmp_path):
    datadir = tmp_path / "local"
    os.mkfifo(datadir / "fifo")
    (datadir / "subdir").mkdir()

    def alarm(*_):
        raise TimeoutError("get blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(5)
    try:
        for name in ("fifo", "subdir"):
            with pytest.raises(errors.NotFound, match="not a regular file|directory"):
                read(stores, file_url(datadir / name))
            with pytest.raises(errors.NotFound):
                stores.get_size(file_url(datadir / name))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_probe02_a_partial_file_is_never_readable_through_get(stores, tmp_path):
    """Mid-add, every file under the datadir is tried as a location."""
    datadir = tmp_path / "local"
    stores.add("done", b"committed", 9)
    seen = []

    def data():
        yield b"x" * 100_000
        for path in regular_files(datadir):
            if os.path.basename(path) == "done":
                continue
            url = file_url(path)
            try:
                seen.append((path, read(stores, url)))
            except errors.MultistoreError:
                seen.append((path, None))
        yield b"y" * 100_000

    stores.add("in-flight", data(), 200_000)
    assert seen, "the partial file was not found on disk"
    assert [p for p, got in seen if got is not None] == []


# -- 3. image permissions -------------------------------------------------------

@pytest.mark.parametrize("perm, match", [
    (-1, "octal digits"), (77777, "setuid"), (4640, "setuid"), (2640, "setuid"),
    (1640, "sticky"), (666, "world-writable"), (602, "world-writable"), (680, "octal digits"),
    (9, "octal digits"),
])
def test_probe03_dangerous_or_malformed_file_perm_is_a_config_error(tmp_path, perm, match):
    conf = make_conf({"DEFAULT": {"enabled_backends": {"disk": "file"}},
                      "glance_store": {"default_backend": "disk"},
                      "disk": {"filesystem_store_datadir": tmp_path / "d",
                               "filesystem_store_file_perm": perm}}, tmp_path)
    with pytest.raises(errors.ConfigError, match=f"filesystem_store_file_perm.*{match}"):
        multistore.load(conf)


def test_probe03_a_sound_file_perm_is_applied_exactly(tmp_path):
    conf = make_conf({"DEFAULT": {"enabled_backends": {"disk": "file"}},
                      "glance_store": {"default_backend": "disk"},
                      "disk": {"filesystem_store_datadir": tmp_path / "d",
                               "filesystem_store_file_perm": 604}}, tmp_path)
    with multistore.load(conf) as stores:
        stores.add("img", b"abc", 3)
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "img").st_mode) == 0o604


# -- 4. copy keeps the image in every target or in none ------------------------

def test_probe04_copy_whose_commit_fails_on_one_target_keeps_no_copy(stores, tmp_path):
    # From a memory store, so that the bytes stream (a file-to-file copy on
    # one filesystem is done by the kernel, with no progress to race on).
    data = os.urandom(3 * 1024 * 1024)
    src = stores.add("img", data, len(data), store="memory")

    class Racer(multistore.Callback):
        """Another process adds the same id to 'archive' while the copy runs."""

        def call(self):
            target = tmp_path / "archive" / "img"
            if self.value and not target.exists():
                target.write_bytes(b"added by someone else")

    with pytest.raises(errors.Duplicate) as info:
        stores.copy(src.location, to=["backup", "archive"], progress=Racer())
    assert info.value.store == "archive"
    assert not (tmp_path / "backup" / "img").exists()
    assert (tmp_path / "archive" / "img").read_bytes() == b"added by someone else"
    assert [f for f in regular_files(tmp_path / "backup")] == []


def test_probe04_copy_to_a_memory_store_racing_another_process(tmp_path):
    backend = MemoryBackend()
    sections = local_layout(tmp_path, file_stores=("local", "backup"), memory_stores=("ram",))
    drivers = {"memory": MemoryDriver.sharing(backend)}
    with multistore.load(make_conf(sections, tmp_path), drivers=drivers) as one, \
            multistore.load(make_conf(sections, tmp_path / "2"), drivers=drivers) as two:
        src = one.add("img", b"z" * 5_000_000, 5_000_000)

        class Racer(multistore.Callback):
            def call(self):
                if self.value and "img" not in backend.stores["ram"]:
                    two.add("img", b"theirs", 6, store="ram")

        with pytest.raises(errors.Duplicate):
            one.copy(src.location, to=["backup", "ram"], progress=Racer())
        assert not (tmp_path / "backup" / "img").exists()
        assert read(one, "memory://ram/img") == b"theirs"


# -- 5. a hash without a fixed digest size -------------------------------------

@pytest.mark.parametrize("store", ["local", "memory"])
@pytest.mark.parametrize("algo", ["shake_128", "shake_256"])
def test_probe05_shake_hashing_is_refused_and_nothing_stored(stores, store, algo):
    with pytest.raises(errors.UnknownHashingAlgo):
        stores.add("img", b"data", 4, store=store, hashing_algo=algo)
    result = stores.add("img", b"data", 4, store=store)   # nothing was left
    assert read(stores, result.location) == b"data"


# -- 6. layouts that load but cannot work --------------------------------------

def two_stores(tmp_path, **changes):
    sections = {"DEFAULT": {"enabled_backends": {"fast": "file", "slow": "file"}},
                "glance_store": {"default_backend": "fast"},
                "fast": {"filesystem_store_datadir": tmp_path / "fast"},
                "slow": {"filesystem_store_datadir": tmp_path / "slow"},
                "os_glance_staging_store": {"filesystem_store_datadir": tmp_path / "staging"}}
    for name, values in changes.items():
        merged = {**sections.get(name, {}), **values}
        sections[name] = {k: v for k, v in merged.items() if v is not None}
    return make_conf(sections, tmp_path)


@pytest.mark.parametrize("changes, reserved, match", [
    ({"DEFAULT": {"enabled_backends": {"fast": "file", "slow": "memory"}}},
     {"slow": "file"}, r"store 'slow'.*reserved"),
    ({"DEFAULT": {"enabled_backends": {"fast": "file", "OS_Glance_Staging_Store": "file"}}},
     RESERVED, r"reserved"),
    ({"DEFAULT": {"enabled_backends": {"fast": "file", "Fast": "memory"}}},
     RESERVED, r"'fast' and 'Fast' differ only in case"),
    ({"slow": {"filesystem_store_datadir": "{root}/fast"}}, RESERVED,
     r"stores 'fast' and 'slow' both use directory .*/fast"),
    ({"os_glance_staging_store": {"filesystem_store_datadir": "{root}/slow/"}}, RESERVED,
     r"stores 'slow' and 'os_glance_staging_store' both use directory"),
    ({"slow": {"filesystem_store_datadir": ""}}, RESERVED,
     r"store 'slow'.*filesystem_store_datadir.*empty"),
    ({"os_glance_staging_store": {"filesystem_store_datadir": "  "}}, RESERVED,
     r"store 'os_glance_staging_store'.*filesystem_store_datadir.*empty"),
    ({"slow": {"filesystem_store_datadir": None, "filesystem_store_datadirs": [""]}},
     RESERVED, r"store 'slow'.*filesystem_store_datadirs.*no directory"),
])
def test_probe06_ambiguous_layouts_are_config_errors(tmp_path, changes, reserved, match):
    changes = {g: {k: (v.format(root=tmp_path) if isinstance(v, str) else v)
                   for k, v in values.items()} for g, values in changes.items()}
    conf = two_stores(tmp_path, **changes)
    with pytest.raises(errors.ConfigError, match=match):
        multistore.load(conf, reserved=reserved)


def test_probe06_the_default_store_is_never_hidden_by_a_reserved_one(tmp_path):
    conf = two_stores(tmp_path)
    with pytest.raises(errors.ConfigError, match="reserved"):
        multistore.load(conf, reserved={"fast": "memory"})


# -- 7. the longest ids ---------------------------------------------------------

@pytest.mark.parametrize("length", [236, 237, 250, 255])
@pytest.mark.parametrize("store", ["local", "memory"])
def test_probe07_ids_up_to_255_bytes_are_stored(stores, length, store):
    image_id = f"{length:04d}" + "x" * (length - 4)
    result = stores.add(image_id, b"long", 4, store=store)
    assert stores.store_for(result.location).id == store
    assert read(stores, result.location) == b"long"
    stores.delete(result.location)
    with pytest.raises(errors.BadLocation, match="longer than 255 bytes"):
        stores.add("y" * 256, b"long", 4, store=store)
    with pytest.raises(errors.BadLocation, match="longer than 255 bytes"):
        stores.add("\u00e9" * 128, b"long", 4, store=store)   # 256 bytes of UTF-8


# -- 8. a non-blocking source with no data ready --------------------------------

class NonBlocking(io.RawIOBase):
    """A pipe in O_NONBLOCK mode: ``readinto`` returns None when nothing is ready."""

    def __init__(self, data):
        self.data = data
        self.calls = 0

    def readable(self):
        return True

    def readinto(self, buf):
        self.calls += 1
        if self.calls == 2:
            return None
        n = min(len(buf), len(self.data), 1000)
        buf[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


@pytest.mark.parametrize("store", ["local", "memory"])
@pytest.mark.parametrize("size", [None, 5000])
def test_probe08_readinto_none_is_an_error_not_the_end(stores, tmp_path, store, size):
    with pytest.raises(errors.DataMismatch, match="non-blocking"):
        stores.add("img", NonBlocking(b"d" * 5000), size, store=store)
    result = stores.add("img", b"d" * 5000, 5000, store=store)   # nothing was kept
    assert stores.get_size(result.location) == 5000


def test_probe08_a_real_non_blocking_pipe_is_refused(stores):
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.write(w, b"first part")
    with open(r, "rb", buffering=0) as source, pytest.raises(errors.DataMismatch):
        stores.add("img", source, None)
    os.close(w)
    with pytest.raises(errors.NotFound):
        stores.get_size(stores["local"].driver.location_for("img").format())


# -- 9. kill -9 mid-add: nothing under the final name, reclaimed later ----------

def kill_an_add_midway(tmp_path, conf_file, image_id, store="local"):
    """Run ``multistore add`` reading a pipe; kill -9 it once it has written."""
    proc = subprocess.Popen([EXE, "--config-file", str(conf_file), "add", "-", "--id",
                             image_id, "--store", store, "--no-progress"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        datadir = tmp_path / store
        while time.monotonic() < deadline:
            proc.stdin.write(os.urandom(1024 * 1024))
            proc.stdin.flush()
            if any(os.path.getsize(p) > 0 for p in regular_files(datadir)):
                break
        else:
            raise AssertionError("the add never wrote a byte")
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdin.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def write_conf(tmp_path, **file_options):
    sections = local_layout(tmp_path, file_stores=("local",), memory_stores=())
    sections["local"].update(file_options)
    path = tmp_path / "glance-api.conf"
    from multistore.testing import render_ini
    path.write_text(render_ini(sections))
    return path


def test_probe09_the_file_store_reclaims_partial_files_of_killed_adds_at_load(tmp_path):
    conf_file = write_conf(tmp_path)
    for n in range(3):
        kill_an_add_midway(tmp_path, conf_file, f"killed-{n}")
    left = regular_files(tmp_path / "local")
    assert len(left) == 3
    assert not any(os.path.basename(p).startswith("killed-") for p in left)
    # Younger than the grace period: kept (a slow writer might be behind it).
    multistore.load(make_conf(local_layout(tmp_path, ("local",), ()), tmp_path / "c1")).close()
    assert regular_files(tmp_path / "local") == left
    old = time.time() - 7200
    for path in left:
        os.utime(path, (old, old))
    multistore.load(make_conf(local_layout(tmp_path, ("local",), ()), tmp_path / "c2")).close()
    assert regular_files(tmp_path / "local") == []


def test_probe09_the_sweep_command_reclaims_them_without_waiting(tmp_path):
    conf_file = write_conf(tmp_path, filesystem_store_leftover_grace=-1)
    kill_an_add_midway(tmp_path, conf_file, "killed")
    (left,) = regular_files(tmp_path / "local")
    size = os.path.getsize(left)
    base = [EXE, "--config-file", str(conf_file), "--json", "sweep"]
    # (--store takes several ids, or is repeated)
    dry = subprocess.run([*base, "--grace", "0", "--dry-run"], capture_output=True,
                         text=True, check=True)
    assert [(e["store"], e["size"], e["removed"]) for e in json.loads(dry.stdout)] == [
        ("local", size, False)]
    assert regular_files(tmp_path / "local") == [left]
    kept = subprocess.run([*base, "--store", "local"], capture_output=True, text=True,
                          check=True)
    assert json.loads(kept.stdout) == []            # younger than the default hour
    done = subprocess.run([*base, "--grace", "0", "--store", "local"], capture_output=True,
                          text=True, check=True)
    assert [(e["store"], e["name"], e["removed"]) for e in json.loads(done.stdout)] == [
        ("local", left, True)]
    assert regular_files(tmp_path / "local") == []
    human = subprocess.run([EXE, "--config-file", str(conf_file), "sweep", "--grace", "0"],
                           capture_output=True, text=True, check=True)
    assert "0 leftover(s)" in human.stderr


# -- 10. the datadir removed after load -----------------------------------------

def test_probe10_a_removed_datadir_is_named_in_every_error(stores, tmp_path):
    kept = stores.add("img", b"abc", 3)
    datadir = tmp_path / "local"
    for path in regular_files(datadir):
        os.unlink(path)
    for top, dirs, _ in os.walk(datadir, topdown=False):
        for d in dirs:
            os.rmdir(os.path.join(top, d))
    os.rmdir(datadir)
    with pytest.raises(errors.MultistoreError, match=f"{datadir}.*(does not exist|missing)"
                       ) as info:
        stores.add("new", b"abc", 3)
    assert (info.value.store, info.value.operation) == ("local", "add")
    assert not datadir.exists()                      # never created again behind the admin
    for call in (lambda: read(stores, kept.location), lambda: stores.get_size(kept.location),
                 lambda: stores.delete(kept.location)):
        with pytest.raises(errors.NotFound, match=str(datadir)):
            call()


# -- 11. the command line -------------------------------------------------------

def run_cli(*argv, env=None, **kwargs):
    return subprocess.run([EXE, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, **kwargs)


@pytest.mark.parametrize("as_json", [False, True])
def test_probe11_a_missing_or_malformed_config_file_is_a_configuration_error(
        tmp_path, as_json):
    malformed = tmp_path / "malformed.conf"
    malformed.write_text("[DEFAULT\nenabled_backends = a:file\n")
    for path in (tmp_path / "missing.conf", malformed):
        done = run_cli("--config-file", str(path), *(["--json"] if as_json else []),
                       "check-config")
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        if as_json:
            error = json.loads(done.stderr)
            assert error["type"] == "ConfigError" and str(path.name) in error["error"]
            assert set(error) == {"error", "type", "store", "operation"}
        else:
            assert done.stderr.startswith("configuration error: ") and path.name in done.stderr


def test_probe11_json_errors_are_json_naming_store_and_operation(tmp_path):
    conf_file = write_conf(tmp_path)
    done = run_cli("--config-file", str(conf_file), "--json", "delete",
                   file_url(tmp_path / "local" / "nothing"))
    assert done.returncode == 1
    assert json.loads(done.stderr) == {
        "error": f"no image at {tmp_path}/local/nothing", "type": "NotFound",
        "store": "local", "operation": "delete"}
    done = run_cli("--config-file", str(conf_file), "--json", "get", "nosuch://x/y")
    assert done.returncode == 1 and json.loads(done.stderr)["type"] == "BadLocation"


VAULT_PLUGIN = '''
import dataclasses

from oslo_config import cfg

from multistore.drivers import file
from multistore.location import split_url


@dataclasses.dataclass(frozen=True)
class VaultLocation(file.FileLocation):
    """A file location written with the store's credentials in it, as
    legacy swift locations are: vault://admin:<password>@vault/<dir>/<id>."""

    password: str = dataclasses.field(default="", compare=False)

    @classmethod
    def parse(cls, url):
        parts = split_url(url, ("vault",))
        inner = file.FileLocation.parse("file://" + parts.path)
        return cls(inner.directory, inner.image_id, parts.password or "")

    def format(self):
        path = file.FileLocation(self.directory, self.image_id).format()[len("file://"):]
        return f"vault://admin:{self.password}@vault{path}"


class VaultDriver(file.FileDriver):
    schemes = ("vault",)
    location_type = VaultLocation
    options = [*file.OPTIONS, cfg.StrOpt("vault_password", secret=True)]

    def location_in(self, datadir, image_id):
        return VaultLocation(datadir, image_id, self.conf.vault_password)
'''


def test_probe11_outputs_never_print_credentials(tmp_path):
    """A store whose locations carry a password (as legacy swift ones do):
    add, get, copy, delete and stores print them masked."""
    site = tmp_path / "site"
    info = site / "vault_driver-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vault-driver\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[multistore.drivers]\nvault = vault_plugin:VaultDriver\n")
    (site / "vault_plugin.py").write_text(textwrap.dedent(VAULT_PLUGIN))
    password = "hunter2-vault-password"
    conf_file = tmp_path / "vault.conf"
    conf_file.write_text(
        f"[DEFAULT]\nenabled_backends = safe:vault, plain:file\n"
        f"[glance_store]\ndefault_backend = safe\n"
        f"[safe]\nfilesystem_store_datadir = {tmp_path}/safe\nvault_password = {password}\n"
        f"[plain]\nfilesystem_store_datadir = {tmp_path}/plain\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site),
                                                       os.environ.get("PYTHONPATH")])),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    image = tmp_path / "disk.img"
    image.write_bytes(b"secret-free bytes")
    outputs = []

    def cli(*argv):
        done = run_cli("--config-file", str(conf_file), *argv, env=env)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr
        return done.stdout

    added = json.loads(cli("--json", "add", str(image), "--id", "img"))
    assert added["location"] == f"vault://admin:***@vault{tmp_path}/safe/img"
    # The real location (what an image service keeps) works; only output is masked.
    location = f"vault://admin:{password}@vault{tmp_path}/safe/img"
    cli("get", location, "-o", str(tmp_path / "back"))
    cli("--json", "get", location, "-o", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == b"secret-free bytes"
    copied = json.loads(cli("--json", "copy", location, "--all-stores"))
    assert [c["store"] for c in copied] == ["plain"]
    cli("stores", "--detail")
    cli("--json", "stores", "--detail")
    cli("delete", location)
    done = run_cli("--config-file", str(conf_file), "delete", location, env=env)
    outputs.append(done.stdout + done.stderr)
    assert done.returncode == 1
    done = run_cli("--config-file", str(conf_file), "--json", "delete", location, env=env)
    outputs.append(done.stdout + done.stderr)
    for text in outputs:
        assert password not in text


def test_probe11_a_memory_only_configuration_never_touches_var_lib_glance(tmp_path):
    """Run as an unprivileged user (nobody, when the tests run as root): the
    staging store of a configuration that does not declare it is not loaded."""
    work = tempfile.mkdtemp(prefix="multistore-nobody-")
    try:
        os.chmod(work, 0o777)
        conf_file = os.path.join(work, "memory.conf")
        with open(conf_file, "w") as f:
            f.write("[DEFAULT]\nenabled_backends = ram:memory\n"
                    "[glance_store]\ndefault_backend = ram\n")
        os.chmod(conf_file, 0o644)
        drop = (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
                if os.geteuid() == 0 else [])
        env = {"HOME": work, "XDG_CACHE_HOME": os.path.join(work, "cache")}
        for argv in (["check-config"], ["--json", "stores"]):
            done = run_cli("--config-file", conf_file, *argv, env=env, cwd=work) if not drop \
                else subprocess.run([*drop, EXE, "--config-file", conf_file, *argv],
                                    capture_output=True, text=True, timeout=120, cwd=work,
                                    env={**os.environ, **env})
            assert done.returncode == 0, done.stderr
            assert "glance" not in done.stderr
    finally:
        subprocess.run(["rm", "-rf", work], check=True)


def test_probe11_the_staging_store_loads_when_the_configuration_declares_it(tmp_path,
                                                                            capsys):
    from multistore import cli
    conf_file = tmp_path / "c.conf"
    conf_file.write_text(f"[DEFAULT]\nenabled_backends = ram:memory\n"
                         f"[glance_store]\ndefault_backend = ram\n"
                         f"[os_glance_staging_store]\n"
                         f"filesystem_store_datadir = {tmp_path}/staging\n")
    image = tmp_path / "disk.img"
    image.write_bytes(b"staged")
    code = cli.main(["--config-file", str(conf_file), "--json", "add", str(image),
                     "--store", "os_glance_staging_store", "--id", "s"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["location"] == f"file://{tmp_path}/staging/s"


def test_probe11_the_tests_never_create_var_lib_glance():
    """The consumer fixtures and the command's tests, run as root in a mount
    namespace of their own whose /var/lib is an empty tmpfs: nothing appears
    there (a memory-only layout used to create the staging store's default
    directory, /var/lib/glance/os_glance_staging_store)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = textwrap.dedent(f"""
        set -e
        mount -t tmpfs -o size=16m tmpfs /var/lib
        {sys.executable} -m pytest -q -p no:cacheprovider tests/unit/test_fixtures.py \\
            tests/unit/test_cli.py -k 'not demo'
        echo "== /var/lib holds:"
        ls -A /var/lib
    """)
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           script], capture_output=True, text=True, timeout=600, cwd=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.split("== /var/lib holds:")[1].split() == []
