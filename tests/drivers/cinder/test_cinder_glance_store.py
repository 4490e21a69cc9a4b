"""multistore's cinder driver inside glance_store (``multistore_cinder``), and
glance_store 5.7's own cinder driver, on one Cinder and one project.

Each step is a process of the glance_store venv of ``scripts/deps/cinder.sh``
(glance_store 5.7.0 with its cinder extra) with this checkout built onto its
path, loading one store ``netapp`` through glance_store's multi-store API,
as Glance does, with a Glance-like request context (the user's project and
a noauth token; no service credentials). The store is switched between
glance_store's ``cinder`` and ``multistore_cinder`` between steps: each
driver reads and deletes what the other wrote, and the adapter answers
Glance's two cinder questions (the URL prefix, and whether a legacy
``cinder://<volume id>`` is this store's).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[3]
GS_VENV = Path(os.environ.get("MULTISTORE_GLANCE_STORE_CINDER_VENV",
                              "/opt/multistore-cinder/glance_store-5.7.0"))

STEP = r'''
import hashlib, io, json, os, sys
import os_brick.privileged
from os_brick.initiator.connectors import rbd
from oslo_config import cfg
from oslo_context import context as oslo_context
from glance_store import multi_backend

kind, api, project, keyring, tmp, action = sys.argv[1:7]
arg = sys.argv[7] if len(sys.argv) > 7 else ""
# As the tests run os-brick: privileged calls in process (root), and the
# keyring os-brick cannot get from Cinder named in its temporary ceph.conf
# (multistore's cinder_rbd_keyring_file does the same for its own).
os_brick.privileged.default.set_client_mode(False)
original = rbd.RBDConnector._get_rbd_handle
def handle(self, props, read_only=False):
    return original(self, {**props, "keyring": "keyring = " + keyring}, read_only)
rbd.RBDConnector._get_rbd_handle = handle

options = {"cinder_endpoint_template": api + "/v3/%(project_id)s"}
if kind == "multistore_cinder":
    options.update(cinder_volume_type="netapp", cinder_rbd_keyring_file=keyring)
conf_file = os.path.join(tmp, kind + ".conf")
with open(conf_file, "w") as f:
    f.write("[DEFAULT]\nenabled_backends = netapp:%s\n[glance_store]\n"
            "default_backend = netapp\n[oslo_concurrency]\nlock_path = %s\n[netapp]\n"
            % (kind, tmp) + "".join("%s = %s\n" % kv for kv in options.items()))
conf = cfg.CONF
conf.register_opt(cfg.DictOpt("enabled_backends"))
conf(args=[], default_config_files=[conf_file])
multi_backend.register_store_opts(conf)
multi_backend.create_multi_stores(conf)
multi_backend.verify_store()
if kind == "cinder":
    # after configure: glance_store 5.7's configure_add fails with a volume
    # type and no service credentials (get_cinderclient() without a context)
    conf.set_override("cinder_volume_type", "netapp", group="netapp")
context = oslo_context.RequestContext(user_id="glance", project_id=project)
context.service_catalog = []
store = multi_backend.get_store_from_store_identifier("netapp")
out = {"url_prefix": store.url_prefix}
data = (hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 1))[:3 * 1024 * 1024 + 5]
if action == "add":
    url, size, md5, multihash, meta = multi_backend.add_with_multihash(
        conf, "image-" + kind, io.BytesIO(data), len(data), "netapp", "sha512",
        context=context)
    out.update(url=url, size=size, md5=md5, meta=meta)
elif action == "read":
    chunks, size = multi_backend.get(arg, "netapp", context=context)
    body = b"".join(chunks)
    ranged = b"".join(multi_backend.get(arg, "netapp", offset=MIB, chunk_size=10,
                                        context=context)[0])
    out.update(size=size, ok=body == data, ranged=ranged == data[MIB:MIB + 10],
               get_size=multi_backend.get_size_from_uri_and_backend(arg, "netapp",
                                                                    context=context))
    volume_id = arg.rsplit("/", 1)[-1]
    out["associated"] = store.is_image_associated_with_store(context, volume_id)
elif action == "delete":
    multi_backend.delete(arg, "netapp", context=context)
print("RESULT " + json.dumps(out))
'''.replace("MIB", str(MiB))


def _build(tmp_path: Path) -> Path:
    name = "multistore_glance_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "tests" / "backends" / "glance.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return Path(sys.modules[name].build_multistore(tmp_path / "build", venv=GS_VENV))


def test_glance_store_and_multistore_read_each_others_volumes(
        cinder_deployment: Any, cinder_project: tuple[str, Any], tmp_path: Path) -> None:
    project, client = cinder_project
    build = _build(tmp_path)

    def step(kind: str, action: str, arg: str = "") -> dict[str, Any]:
        done = subprocess.run(
            [str(GS_VENV / "bin" / "python"), "-c", STEP, kind, cinder_deployment.api_url,
             project, cinder_deployment.keyring_path, str(tmp_path), action, arg],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "PYTHONPATH": str(build)})
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        assert done.returncode == 0 and lines, done.stderr[-4000:]
        result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
        return result

    theirs = step("cinder", "add")
    ours = step("multistore_cinder", "add")
    # The same URLs, the same prefix, the same volume names and metadata.
    assert theirs["url"].startswith("cinder://netapp/")
    assert ours["url"].startswith("cinder://netapp/")
    assert theirs["url_prefix"] == ours["url_prefix"] == "cinder://netapp"
    assert ours["md5"] == theirs["md5"] and ours["size"] == theirs["size"]
    assert ours["meta"] == theirs["meta"] == {"store": "netapp"}
    volumes = {v["id"]: v for v in cinder_deployment.volumes(project)}
    for kind, added in (("cinder", theirs), ("multistore_cinder", ours)):
        volume = volumes[added["url"].rsplit("/", 1)[-1]]
        assert volume["name"] == f"image-image-{kind}"
        assert volume["volume_type"] == "netapp"
        assert {k: v for k, v in volume["metadata"].items() if k != "readonly"} == {
            "glance_image_id": f"image-{kind}", "image_size": str(theirs["size"]),
            "image_owner": project}
    # Each reads the other's (and multistore ranges it), and knows it is its own.
    read = step("multistore_cinder", "read", theirs["url"])
    assert read["ok"] and read["ranged"] and read["get_size"] == theirs["size"]
    assert read["associated"] is True
    read = step("cinder", "read", ours["url"])
    assert read["ok"] and read["ranged"] and read["get_size"] == ours["size"]
    assert read["associated"] is True
    # And deletes it.
    step("multistore_cinder", "delete", theirs["url"])
    step("cinder", "delete", ours["url"])
    client_left = [v["id"] for v in cinder_deployment.volumes(project)
                   if v["status"] != "deleting"]
    assert client_left == []
