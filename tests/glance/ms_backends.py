"""Looking into the backends of a Glance's stores directly, not through Glance:
whether an image's bytes are there, what else is there (partial data a
failed write left), and the URL glance_store's own driver writes for an
image in a store. Loaded by conftest.py as ``multistore_glance_backends``;
not a test module.

A store's kind is its type without the ``multistore_`` prefix: a store of
type ``multistore_file`` and one of type ``file`` on the same directory are
looked at, and named in URLs, the same way.
"""

from __future__ import annotations

import hashlib
from typing import Any


def kind(glance: Any, store: str) -> str:
    """``file``, ``rbd``, ``swift``: the backend of a store of either driver."""
    return glance.stores[store][0].removeprefix("multistore_")


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class Backends:
    """The backends of one GlanceServer's stores: its file stores' data
    directories, a Ceph cluster (``ceph``, a CephCluster), a Swift
    (``swift``: a callable returning a swiftclient Connection) and a
    Sheepdog cluster (``sheepdog``, a SheepdogCluster)."""

    def __init__(self, glance: Any, ceph: Any = None, swift: Any = None,
                 sheepdog: Any = None) -> None:
        self.glance = glance
        self.ceph = ceph
        self.swift = swift
        self.sheepdog = sheepdog

    def options(self, store: str) -> dict[str, Any]:
        return self.glance.store_options(store)

    def expected_url(self, store: str, image_id: str) -> str:
        """The location glance_store's driver of this kind writes for the image."""
        k = kind(self.glance, store)
        if k == "file":
            return f"file://{self.glance.store_dir(store)}/{image_id}"
        if k == "rbd":
            return f"rbd://{self.ceph.fsid}/{self.options(store)['rbd_store_pool']}/" \
                   f"{image_id}/snap"
        if k == "swift":
            ref = self.options(store).get("default_swift_reference", "ref1")
            return f"swift+config://{ref}/{self.container(store, image_id)}/{image_id}"
        if k == "sheepdog":
            return f"sheepdog://127.0.0.1:{self.sheepdog.port}:{image_id}"
        raise AssertionError(f"no URL form known for {k}")

    def container(self, store: str, image_id: str) -> str:
        """The Swift container of an image (one container per store here, or
        ``<container>_<first N chars of the id>`` with multiple containers)."""
        opts = self.options(store)
        name = opts.get("swift_store_container", "glance")
        seed = int(opts.get("swift_store_multiple_containers_seed", 0))
        return f"{name}_{image_id[:seed]}" if seed else name

    def names(self, store: str) -> list[str]:
        """Every name in the store's backend: files of the data directory,
        images of the store's pool, objects of the store's containers (those
        whose names start with its ``swift_store_container``)."""
        k = kind(self.glance, store)
        if k == "file":
            return self.glance.files(store)
        if k == "rbd":
            import rados  # type: ignore[import-not-found]
            import rbd  # type: ignore[import-not-found]
            pool = self.options(store)["rbd_store_pool"]
            with rados.Rados(conffile=self.ceph.conf_path, rados_id=self.ceph.user) as cluster, \
                    cluster.open_ioctx(pool) as ioctx:
                return sorted(rbd.RBD().list(ioctx))
        if k == "swift":
            prefix = self.options(store).get("swift_store_container", "glance")
            conn = self.swift()
            try:
                names = []
                for container in conn.get_account(prefix=prefix, full_listing=True)[1]:
                    _, objects = conn.get_container(container["name"], full_listing=True)
                    names += [o["name"] for o in objects]
                return sorted(names)
            finally:
                conn.close()
        if k == "sheepdog":
            return sorted(self.sheepdog.vdis())
        raise AssertionError(f"no backend check for {k}")

    def holds(self, store: str, image_id: str) -> bool:
        """Whether the image is in the backend under its own name."""
        return image_id in self.names(store)

    def leftovers(self, store: str, image_ids: set[str] | frozenset[str] = frozenset()
                  ) -> list[str]:
        """Names in the backend that are not whole images of ``image_ids``:
        partial files, temporary rbd images, orphan segments. Swift segments
        of a whole image count as the image's."""
        swift = kind(self.glance, store) == "swift"
        rest = []
        for name in self.names(store):
            if name in image_ids:
                continue
            # Segments: multistore's <id>/<upload>/<n> (SLO), glance_store's <id>-<n> (DLO).
            if swift and (name.split("/", 1)[0] in image_ids
                          or name.rsplit("-", 1)[0] in image_ids):
                continue
            rest.append(name)
        return rest

    def read(self, store: str, image_id: str) -> bytes:
        """The image's bytes, read from the backend itself."""
        k = kind(self.glance, store)
        if k == "file":
            return (self.glance.store_dir(store) / image_id).read_bytes()
        if k == "rbd":
            import rados  # type: ignore[import-not-found]
            import rbd  # type: ignore[import-not-found]
            pool = self.options(store)["rbd_store_pool"]
            with rados.Rados(conffile=self.ceph.conf_path, rados_id=self.ceph.user) as cluster, \
                    cluster.open_ioctx(pool) as ioctx, \
                    rbd.Image(ioctx, image_id, snapshot="snap", read_only=True) as img:
                return img.read(0, img.size())
        if k == "swift":
            conn = self.swift()
            try:
                return conn.get_object(self.container(store, image_id), image_id)[1]
            finally:
                conn.close()
        if k == "sheepdog":
            data: bytes = self.sheepdog.dog("vdi", "read", image_id).stdout
            return data
        raise AssertionError(f"no backend read for {k}")


def add_pool(cluster: Any, pool: str) -> None:
    """Create another rbd pool in a test cluster (as its admin) and let the
    cluster's client user use it as it uses the first."""
    import subprocess
    pools = f"profile rbd pool={cluster.pool}, profile rbd pool={pool}"
    for args in (["osd", "pool", "create", pool, "8", "8"],
                 ["osd", "pool", "application", "enable", pool, "rbd"],
                 ["auth", "caps", f"client.{cluster.user}", "mon", "profile rbd",
                  "osd", pools, "mgr", pools]):
        subprocess.run(["ceph", "--conf", cluster.conf_path, "--name", "client.admin",
                        "--keyring", cluster.admin_keyring_path, *args],
                       check=True, capture_output=True, timeout=60)
