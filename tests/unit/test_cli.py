"""The command line, run in-process and as a real command."""

import json
import os
import subprocess
import sys

import pytest

from multistore import cli


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTISTORE_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_on_the_embedded_default(home, capsys):
    code, out, err = run(capsys, "--json", "demo", "--size", "3")
    assert code == 0, err
    report = json.loads(out)
    assert [loc["store"] for loc in report["locations"]] == ["local", "archive", "backup"]
    assert all(loc["verified"] for loc in report["locations"])
    for loc in report["locations"]:
        assert os.path.getsize(loc["location"][len("file://"):]) == 3 * 1024 * 1024


def test_stores_listing(home, capsys):
    code, out, _ = run(capsys, "--json", "stores", "--detail")
    listing = json.loads(out)
    assert [s["id"] for s in listing] == ["local", "archive", "backup"]
    assert listing[0]["default"] is True and listing[0]["type"] == "file"


def test_add_get_copy_delete(home, capsys):
    image = home / "disk.img"
    image.write_bytes(os.urandom(100_000))
    code, out, err = run(capsys, "--json", "add", str(image), "--id", "i1", "--store", "archive")
    assert code == 0, err
    added = json.loads(out)
    assert added["metadata"] == {"store": "archive"}
    code, out, _ = run(capsys, "--json", "get", added["location"], "-o", str(home / "back"),
                       "--offset", "10", "--length", "100")
    assert (home / "back").read_bytes() == image.read_bytes()[10:110]
    code, out, _ = run(capsys, "--json", "copy", added["location"], "--all-stores")
    assert [c["store"] for c in json.loads(out)] == ["local", "backup"]
    assert run(capsys, "delete", added["location"])[0] == 0
    code, _, err = run(capsys, "delete", added["location"])
    assert code == 1 and "[store 'archive', delete]" in err


def test_bad_config_exits_2_naming_the_problem(tmp_path, capsys):
    conf = tmp_path / "bad.conf"
    conf.write_text("[DEFAULT]\nenabled_backends = a:file\n[glance_store]\ndefault_backend = b\n")
    code, _, err = run(capsys, "--config-file", str(conf), "check-config")
    assert code == 2 and "default_backend" in err and "'b'" in err


def test_check_config_ok(tmp_path, capsys):
    conf = tmp_path / "ok.conf"
    conf.write_text(f"[DEFAULT]\nenabled_backends = a:file\n[glance_store]\ndefault_backend = a\n"
                    f"[a]\nfilesystem_store_datadir = {tmp_path}/a\n")
    code, out, _ = run(capsys, "--config-file", str(conf), "--json", "check-config")
    assert json.loads(out) == {"status": "ok", "default": "a", "stores": {"a": "file"}}


def test_installed_command_pipes_images_through_stdin_and_stdout(home):
    env = {**os.environ, "MULTISTORE_HOME": str(home / "data")}
    exe = os.path.join(os.path.dirname(sys.executable), "multistore")
    data = os.urandom(300_000)
    added = subprocess.run([exe, "--json", "add", "-", "--id", "piped"], input=data,
                           capture_output=True, env=env, check=True)
    location = json.loads(added.stdout)["location"]
    got = subprocess.run([exe, "get", location], capture_output=True, env=env, check=True)
    assert got.stdout == data


def test_global_options_go_before_or_after_the_command(home, capsys, tmp_path):
    conf = tmp_path / "one.conf"
    conf.write_text(cli.embedded_config(str(tmp_path / "elsewhere")))
    before = run(capsys, "--json", "--config-file", str(conf), "stores", "--detail")
    after = run(capsys, "stores", "--detail", "--json", "--config-file", str(conf))
    mixed = run(capsys, "--config-file", str(conf), "stores", "--json", "--detail")
    assert before[0] == after[0] == mixed[0] == 0
    assert json.loads(before[1]) == json.loads(after[1]) == json.loads(mixed[1])
    datadirs = [s["properties"]["datadir"] for s in json.loads(after[1])]
    assert datadirs == [str(tmp_path / "elsewhere" / s) for s in ("local", "archive", "backup")]


def test_move_prints_a_json_line_per_image_and_resumes(home, capsys, tmp_path, monkeypatch):
    import io

    code, out, _ = run(capsys, "--json", "add", str(__file__), "--id", "one")
    first = json.loads(out)["location"]
    code, out, _ = run(capsys, "--json", "add", str(__file__), "--id", "two")
    second = json.loads(out)["location"]
    records = "\n".join(json.dumps({"url": u, "metadata": {"store": "local"}})
                        for u in (first, second))
    journal = str(tmp_path / "journal")
    monkeypatch.setattr("sys.stdin", io.StringIO(records))
    code, out, err = run(capsys, "move", "--to", "archive", "backup", "--journal", journal,
                         "--delete-source", "--no-progress")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["image_id"], line["verified"], line["source_deleted"]) for line in lines] == [
        ("one", True, True), ("two", True, True)]
    assert [n["metadata"]["store"] for n in lines[0]["new"]] == ["archive", "backup"]
    assert not os.path.exists(first[len("file://"):])
    # Again, with the same journal: nothing to copy, nothing to delete.
    monkeypatch.setattr("sys.stdin", io.StringIO(records))
    code, out, err = run(capsys, "move", "--to", "archive", "backup", "--journal", journal,
                         "--delete-source")
    assert code == 0, err
    assert [json.loads(line)["copied"] for line in out.splitlines()] == [[], []]


def test_get_reads_the_best_of_several_copies(home, capsys, tmp_path):
    code, out, _ = run(capsys, "--json", "add", str(__file__), "--id", "img")
    added = json.loads(out)
    code, out, _ = run(capsys, "--json", "copy", added["location"], "--to", "backup")
    copy = json.loads(out)[0]["location"]
    os.unlink(added["location"][len("file://"):])        # the first copy is lost
    target = tmp_path / "back"
    code, out, err = run(capsys, "--json", "get", added["location"], copy, "-o", str(target),
                         "--checksum", added["checksum"])
    assert code == 0, err
    assert target.read_bytes() == open(__file__, "rb").read()
    assert json.loads(out)["switches"] == 1
