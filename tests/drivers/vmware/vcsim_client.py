"""oslo.vmware and requests against a vcsim, the way a datastore driver uses them.

What glance_store's vmware driver does, in small functions the tests share:
log in (TLS verified with the test CA, the WSDL from the server), find a
datacenter by its inventory path and its datastores by the datacenter's
``datastore`` property (never a recursive property traversal: it crashes
vcsim when the inventory has VMs), the session cookie header for ``/folder``
(whose URLs the harness builds: ``Vcsim.folder_url``), and the datastore
browser's and file manager's tasks.
"""

from __future__ import annotations

import warnings
from typing import Any

with warnings.catch_warnings():     # eventlet's deprecation, on import
    warnings.simplefilter("ignore")
    from oslo_vmware import api, vim_util
    from oslo_vmware.objects import datastore as ds_obj

IMAGE_DIR = "openstack_glance"


def open_session(sim: Any, *, retry_count: int = 2, poll_interval: float = 0.05,
                 **options: Any) -> api.VMwareAPISession:
    """A logged-in session, as glance_store opens it, plus the port (vcsim is not on 443)."""
    kw: dict[str, Any] = {"port": sim.port, "cacert": sim.ca_file, "insecure": False}
    kw.update(options)
    return api.VMwareAPISession(sim.host, sim.username, sim.password, retry_count,
                                poll_interval, **kw)


def cookie_header(session: api.VMwareAPISession) -> str:
    """``vmware_soap_session=...``: what the driver sends on ``/folder``."""
    return "; ".join(f"{c.name}={c.value}" for c in session.vim.client.cookiejar)


def find_datacenter(session: api.VMwareAPISession, path: str) -> Any:
    """The datacenter's reference, or None (FindByInventoryPath on the search index)."""
    vim = session.vim
    return session.invoke_api(vim, "FindByInventoryPath", vim.service_content.searchIndex,
                              inventoryPath=path)


def datastores(session: api.VMwareAPISession, dc_ref: Any) -> dict[str, ds_obj.Datastore]:
    """The datacenter's datastores by name, with capacity and free space."""
    refs = session.invoke_api(vim_util, "get_object_property", session.vim, dc_ref,
                              "datastore")
    found = {}
    for ref in refs.ManagedObjectReference:
        store = ds_obj.get_datastore_by_ref(session, ref)
        found[store.name] = store
    return found


def free_space(session: api.VMwareAPISession, ds_ref: Any) -> int:
    return int(session.invoke_api(vim_util, "get_object_property", session.vim, ds_ref,
                                  "summary.freeSpace"))


def file_size(session: api.VMwareAPISession, store: ds_obj.Datastore, folder: str,
              name: str) -> int | None:
    """A file's size by the datastore browser (SearchDatastore_Task), None if absent."""
    vim = session.vim
    browser = session.invoke_api(vim_util, "get_object_property", vim, store.ref, "browser")
    factory = vim.client.factory
    spec = factory.create("ns0:HostDatastoreBrowserSearchSpec")
    spec.matchPattern = [name]
    spec.details = factory.create("ns0:FileQueryFlags")
    spec.details.fileSize = True
    spec.details.fileType = False
    spec.details.modification = False
    spec.details.fileOwner = False
    task = session.invoke_api(vim, "SearchDatastore_Task", browser,
                              datastorePath=f"[{store.name}] {folder}", searchSpec=spec)
    result = session.wait_for_task(task).result
    files = [f for f in getattr(result, "file", []) if f.path == name]
    return int(files[0].fileSize) if files else None


def delete_file(session: api.VMwareAPISession, dc_ref: Any, ds_path: str) -> Any:
    """DeleteDatastoreFile_Task on ``[ds] path``, waited for; returns the task info."""
    vim = session.vim
    task = session.invoke_api(vim, "DeleteDatastoreFile_Task", vim.service_content.fileManager,
                              name=ds_path, datacenter=dc_ref)
    return session.wait_for_task(task)


def make_directory(session: api.VMwareAPISession, dc_ref: Any, ds_path: str,
                   parents: bool = True) -> None:
    vim = session.vim
    session.invoke_api(vim, "MakeDirectory", vim.service_content.fileManager, name=ds_path,
                       datacenter=dc_ref, createParentDirectories=parents)
