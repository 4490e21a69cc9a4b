"""The ``multistore`` command line.

::

    multistore [--config-file FILE ...] [--json] COMMAND ...

    stores [--detail]                       the store listing
    add FILE [--id ID] [--store S]          add an image (FILE '-' reads stdin)
    get LOCATION [LOCATION ...] [-o FILE] [--offset N] [--length N]
        [--locations-file FILE] [--checksum MD5]   the best copy, failing over
    delete LOCATION
    copy LOCATION (--to S [S ...] | --all-stores)
    sweep [--store S ...] [--grace SECONDS] [--dry-run]
                                            remove what killed writers left behind
    move --to S [S ...] [--records FILE] [--journal FILE] [--delete-source]
        [--parallel N] [--dry-run]              retire a store: copy, verify, delete
    check-config                            load every store, report problems
    demo [--size MIB]                       add, copy everywhere, read back, verify

With no ``--config-file`` it uses an embedded default: three file stores
under ``./multistore-data`` (or ``$MULTISTORE_HOME``), so a new user sees it
work at once. The reserved staging store (``os_glance_staging_store``) is
loaded only when the configuration has a group for it (the embedded default
has one).

Nothing it prints holds a credential: locations are shown with passwords
and signed-URL parameters masked (:func:`multistore.location.redact`).
Errors go to standard error, as ``{"error", "type", "store", "operation"}``
with ``--json``; the exit status is 2 for a configuration error, 1 for any
other.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any, TextIO

from oslo_config import cfg

import multistore
from multistore import config, errors
from multistore.location import redact
from multistore.progress import Callback, TextProgressBar
from multistore.sample import Generated

STAGING = "os_glance_staging_store"
RESERVED = {STAGING: "file"}


def embedded_config(root: str) -> str:
    """The default configuration: file stores under ``root``."""
    stores = {"local": "Files on this machine (default)",
              "archive": "A second directory, standing in for cheap storage",
              "backup": "A third directory, standing in for a remote site"}
    lines = ["[DEFAULT]", "enabled_backends = " + ", ".join(f"{s}:file" for s in stores),
             "", "[glance_store]", "default_backend = local", ""]
    for store_id, description in [*stores.items(), (STAGING, "staging")]:
        lines += [f"[{store_id}]", f"filesystem_store_datadir = {os.path.join(root, store_id)}",
                  f'store_description = "{description}"', ""]
    return "\n".join(lines)


def build_conf(config_files: Sequence[str], out: TextIO) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    multistore.register_opts(conf)
    if not config_files:
        root = os.path.abspath(os.environ.get("MULTISTORE_HOME", "multistore-data"))
        os.makedirs(root, exist_ok=True)
        path = os.path.join(root, "multistore.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(embedded_config(root))
        print(f"(no --config-file: using the embedded default, file stores under {root})",
              file=out)
        config_files = [path]
    args: list[str] = []
    for path in config_files:
        args += ["--config-file", path]
    try:
        conf(args, project="multistore", default_config_files=[])
    except cfg.Error as exc:   # a file missing, unreadable or malformed
        raise errors.ConfigError(redact(str(exc)), operation="load") from None
    return conf


def _global_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every command takes, before or after the command's name.

    The subcommands' copies default to SUPPRESS so that a value given
    before the command is not overwritten by the subparser's default.
    """
    p.add_argument("--config-file", action="append", metavar="FILE",
                   default=[] if defaults else argparse.SUPPRESS,
                   help="an oslo.config file (repeatable, later files win)")
    p.add_argument("--json", action="store_true",
                   default=False if defaults else argparse.SUPPRESS,
                   help="print JSON, for scripts")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="multistore", description=__doc__.split("\n\n")[0])
    _global_options(p, defaults=True)
    sub = p.add_subparsers(dest="command", required=True)
    add_parser = sub.add_parser

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        s = add_parser(name, **kwargs)
        _global_options(s, defaults=False)
        return s

    sub.add_parser = command  # type: ignore[method-assign]

    s = sub.add_parser("stores", help="list the stores")
    s.add_argument("--detail", action="store_true", help="type, weight and properties too")

    s = sub.add_parser("add", help="add an image")
    s.add_argument("file", help="the image file, or - for standard input")
    s.add_argument("--id", help="image id (default: a new UUID)")
    s.add_argument("--store", help="target store (default: the default store)")
    s.add_argument("--hashing-algo", default="sha512")
    s.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("get", help="read an image (from the best of several copies)")
    s.add_argument("location", nargs="*",
                   help="the image's location; several: the best copy is read and the "
                        "next one takes over if it fails")
    s.add_argument("--locations-file", metavar="FILE",
                   help="the image's location records, JSON ([{\"url\": ..., "
                        "\"metadata\": {\"store\": ...}}]), - for standard input")
    s.add_argument("--checksum", help="the image's md5, checked at the end of a whole read")
    s.add_argument("-o", "--output", help="file to write (default: standard output)")
    s.add_argument("--offset", type=int, default=0)
    s.add_argument("--length", type=int)
    s.add_argument("--store")

    s = sub.add_parser("delete", help="delete an image")
    s.add_argument("location")
    s.add_argument("--store")

    s = sub.add_parser("copy", help="copy an image to other stores")
    s.add_argument("location")
    target = s.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", nargs="+", metavar="STORE")
    target.add_argument("--all-stores", action="store_true")
    s.add_argument("--offload", action="store_true",
                   help="let a backend copy inside itself where it can (the copy is "
                        "read back to check it, unless --verify backend)")
    s.add_argument("--verify", choices=("read-back", "backend"), default="read-back",
                   help="how an offloaded copy is checked: read back (default), or by "
                        "the md5 the backend computed (swift's ETags), with --checksum "
                        "and --multihash the image's recorded digests")
    s.add_argument("--checksum", help="the md5 recorded for the image")
    s.add_argument("--multihash", help="the multihash (sha512) recorded for the image")
    s.add_argument("--store", help="the source store (default: found from the location)")
    s.add_argument("--id", help="the image id of the copies (default: the location's; "
                                "needed for a web URL whose last path segment is no valid id)")
    s.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("sweep", help="find and remove what killed writers left behind")
    s.add_argument("--store", action="extend", nargs="+", metavar="STORE",
                   help="only these stores (default: every store that writes)")
    s.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="only what was untouched this long (default 3600); what a live "
                        "writer holds is never removed")
    s.add_argument("--dry-run", action="store_true", help="report, remove nothing")

    s = sub.add_parser("move", help="copy images to other stores, verify, then "
                                    "optionally delete the source")
    s.add_argument("--to", nargs="+", required=True, metavar="STORE")
    s.add_argument("--records", default="-", metavar="FILE",
                   help="JSON lines (or a JSON list) of location records: {\"url\": ..., "
                        "\"image_id\": ..., \"metadata\": {\"store\": ...}, \"checksum\": ...}"
                        "; - (the default) reads standard input")
    s.add_argument("--journal", metavar="FILE",
                   help="record progress here; a rerun with the same journal resumes")
    s.add_argument("--delete-source", action="store_true",
                   help="delete each source once every copy of it verified")
    s.add_argument("--parallel", type=int, default=1, metavar="N")
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--offload", action="store_true",
                   help="let a backend copy inside itself where it can")
    s.add_argument("--no-progress", action="store_true")

    sub.add_parser("check-config", help="load every store and report problems")

    s = sub.add_parser("demo", help="add, copy to all stores, read back and verify")
    s.add_argument("--size", type=int, default=64, help="image size in MiB")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out, err = sys.stdout, sys.stderr
    try:
        conf = build_conf(args.config_file, err)
        # The staging store only where the configuration declares it.
        with multistore.load(conf, reserved=config.declared(conf, RESERVED)) as stores:
            result = COMMANDS[args.command](stores, args, err)
        if result is not None:
            result = redacted(result)
            if args.json:
                json.dump(result, out, indent=2)
                out.write("\n")
            else:
                print_human(result, out)
            out.flush()
    except BrokenPipeError:
        # The reader went away (``multistore get ... | head``): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (errors.MultistoreError, OSError) as exc:
        report_error(exc, args.json, err)
        return 2 if isinstance(exc, errors.ConfigError) else 1
    return 0


def report_error(exc: Exception, as_json: bool, err: TextIO) -> None:
    """One error on standard error: a line of text, or a JSON object."""
    if isinstance(exc, errors.MultistoreError):
        stores = list(exc.stores)
        store: str | list[str] | None = stores[0] if len(stores) == 1 else stores or None
        entry = {"error": redact(exc.message), "type": type(exc).__name__,
                 "store": store, "operation": exc.operation}
        text = f"{'configuration error' if isinstance(exc, errors.ConfigError) else 'error'}" \
               f": {redact(str(exc))}"
    else:
        entry = {"error": redact(str(exc)), "type": type(exc).__name__,
                 "store": None, "operation": None}
        text = f"error: {redact(str(exc))}"
    if as_json:
        json.dump(entry, err)
        err.write("\n")
    else:
        print(text, file=err)
    err.flush()


def redacted(result: Any) -> Any:
    """``result`` with every string passed through :func:`redact`."""
    if isinstance(result, str):
        return redact(result)
    if isinstance(result, dict):
        return {key: redacted(value) for key, value in result.items()}
    if isinstance(result, (list, tuple)):
        return [redacted(value) for value in result]
    return result


def print_human(result: Any, out: TextIO) -> None:
    if isinstance(result, list):
        for index, item in enumerate(result):
            if index:
                out.write("\n")
            print_human(item, out)
    elif isinstance(result, dict):
        width = max(map(len, result), default=0)
        for key, value in result.items():
            shown = json.dumps(value) if isinstance(value, (dict, list)) else value
            out.write(f"{key:<{width}}  {shown}\n")
    else:
        out.write(f"{result}\n")


def _progress(args: argparse.Namespace, label: str, err: TextIO) -> Callback:
    if args.json or getattr(args, "no_progress", False) or not err.isatty():
        return Callback()
    return TextProgressBar(label, err)


def _result(r: multistore.AddResult) -> dict[str, Any]:
    return {"location": r.location, "store": r.store, "size": r.size,
            "checksum": r.checksum, "multihash": r.multihash,
            "hashing_algo": r.hashing_algo, "metadata": dict(r.metadata)}


def cmd_stores(stores: multistore.StoreSet, args: argparse.Namespace, err: TextIO) -> Any:
    return stores.info(detail=args.detail)


def cmd_add(stores: multistore.StoreSet, args: argparse.Namespace, err: TextIO) -> Any:
    image_id = args.id or str(uuid.uuid4())
    bar = _progress(args, f"add {image_id}", err)
    if args.file == "-":
        result = stores.add(image_id, sys.stdin.buffer, None, store=args.store,
                            hashing_algo=args.hashing_algo, progress=bar)
    else:
        with open(args.file, "rb") as f:
            result = stores.add(image_id, f, os.fstat(f.fileno()).st_size, store=args.store,
                                hashing_algo=args.hashing_algo, progress=bar)
    bar.close()
    return _result(result)


def _json_records(path: str) -> list[Any]:
    """A JSON list, or JSON lines, from a file or standard input."""
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    try:
        loaded = json.loads(text)
        return loaded if isinstance(loaded, list) else [loaded]
    except ValueError:
        pass
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise errors.BadLocation(f"{path}: not JSON nor JSON lines: {exc}") from None


def cmd_get(stores: multistore.StoreSet, args: argparse.Namespace, err: TextIO) -> Any:
    locations: list[Any] = list(args.location)
    if args.locations_file:
        locations += _json_records(args.locations_file)
    if not locations:
        raise errors.BadLocation("give a location, or --locations-file", operation="get")
    if len(locations) == 1 and isinstance(locations[0], str) and not args.checksum:
        opened: Any = stores.get(locations[0], store=args.store, offset=args.offset,
                                 length=args.length)
    else:
        opened = stores.open_best(locations, offset=args.offset, length=args.length,
                                  checksum=args.checksum)
    with opened as reader:
        if args.output:
            with open(args.output, "wb") as f:
                for chunk in reader:
                    f.write(chunk)
        else:
            for chunk in reader:
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return None
    shown = [redact(loc if isinstance(loc, str) else loc.get("url", "")) for loc in locations]
    return {"location": shown[0] if len(shown) == 1 else shown, "written": args.output,
            "size": reader.size, "switches": len(getattr(reader, "switches", ()))}


def cmd_move(stores: multistore.StoreSet, args: argparse.Namespace, err: TextIO) -> Any:
    """One JSON line per image on standard output, as each finishes."""
    records = _json_records(args.records)
    overall = _progress(args, f"move {len(records)} images", err)
    overall.set_size(len(records))
    quiet = args.parallel > 1 or args.json or args.no_progress
    failed = 0
    for result in stores.move(records, args.to, delete_source=args.delete_source,
                              journal=args.journal, parallel=args.parallel,
                              dry_run=args.dry_run, offload=args.offload,
                              progress=None if quiet else
                              (lambda image_id: _progress(args, f"  {image_id}", err))):
        line = result.as_json()
        line["old"] = redact(line["old"])
        for new in line["new"]:
            new["url"] = redact(new["url"])
        print(json.dumps(line), flush=True)
        failed += result.error is not None
        overall.relative_update(1)
    overall.close()
    if failed:
        raise errors.MultistoreError(f"{failed} of {len(records)} images were not moved "
                                     "(see their 'error'); their sources are kept",
                                     operation="move")
    return None


def cmd_delete(stores: multistore.StoreSet, args: argparse.Namespace, err: TextIO) -> Any:
    stores.delete(args.location, store=args.store)
    return {"deleted": args.location}


def cmd_copy(stores: multistore.StoreSet, args: argparse.Namespace, err: TextIO) -> Any:
    bar = _progress(args, "copy", err)
    results = stores.copy(args.location, "all" if args.all_stores else args.to,
                          store=args.store, image_id=args.id, progress=bar,
                          offload=args.offload, verify=args.verify,
                          checksum=args.checksum, multihash=args.multihash)
    bar.close()
    return [_result(r) for r in results]


def cmd_sweep(stores: multistore.StoreSet, args: argparse.Namespace, err: TextIO) -> Any:
    swept = stores.sweep(args.store, grace=args.grace, remove=not args.dry_run)
    if not args.json:
        removed = sum(s.removed for s in swept)
        print(f"{len(swept)} leftover(s) of dead writers found, {removed} removed",
              file=err)
    return [{"store": s.store, "name": s.name, "size": s.size, "age": round(s.age, 1),
             "removed": s.removed} for s in swept]


def cmd_check_config(stores: multistore.StoreSet, args: argparse.Namespace,
                     err: TextIO) -> Any:
    return {"status": "ok", "default": stores.default,
            "stores": {s.id: s.type for s in stores if not s.reserved}}


def cmd_demo(stores: multistore.StoreSet, args: argparse.Namespace, err: TextIO) -> Any:
    """The main job end to end: add, copy to every store, read back, verify."""
    source = Generated(args.size * 1024 * 1024, seed=int(time.time()))
    image_id = str(uuid.uuid4())
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=err))
    say(f"1. adding a {args.size} MiB image {image_id} to the default store "
        f"{stores.default!r}")
    bar = _progress(args, "   add ", err)
    started = time.monotonic()
    added = stores.add(image_id, source, source.size, progress=bar)
    bar.close()
    add_seconds = time.monotonic() - started
    say(f"   {redact(added.location)}  md5 {added.checksum}")
    say("2. copying it to every other store, reading the source once")
    started = time.monotonic()
    copies = stores.copy(added.location, "all")
    copy_seconds = time.monotonic() - started
    locations = [added, *copies]
    say("3. reading every copy back and checking md5 and sha512")
    checks = []
    for result in locations:
        md5, sha = hashlib.md5(), hashlib.sha512()
        with stores.get(result.location) as reader:
            for chunk in reader:
                md5.update(chunk)
                sha.update(chunk)
        ok = (md5.hexdigest(), sha.hexdigest()) == (added.checksum, added.multihash)
        checks.append({"store": result.store, "location": result.location, "verified": ok})
        say(f"   {'ok ' if ok else 'BAD'} {result.store:<10} {redact(result.location)}")
    if not all(c["verified"] for c in checks):
        raise errors.ChecksumMismatch("a copy does not match the image", operation="demo")
    size_mb = source.size / 1e6
    say(f"done: add {size_mb / add_seconds:.0f} MB/s, copy to {len(copies)} stores "
        f"{size_mb / copy_seconds:.0f} MB/s")
    return {"image_id": image_id, "size": source.size, "checksum": added.checksum,
            "multihash": added.multihash, "locations": checks} if args.json else None


COMMANDS = {
    "stores": cmd_stores, "add": cmd_add, "get": cmd_get, "delete": cmd_delete,
    "copy": cmd_copy, "move": cmd_move, "sweep": cmd_sweep,
    "check-config": cmd_check_config, "demo": cmd_demo,
}

if __name__ == "__main__":
    sys.exit(main())
