"""Helpers the swift tests share (a module of its own: test modules that
import from ``conftest`` get whichever driver's conftest came first)."""

import swiftclient

MB = 1000 * 1024    # glance_store's "MB"


def read(stores, location, **kwargs):
    with stores.get(location, **kwargs) as reader:
        return reader.read_all()


def names(conn, container, prefix=""):
    """Object names in a container ([] if there is no such container)."""
    try:
        return [o["name"] for o in conn.get_container(container, prefix=prefix,
                                                      full_listing=True)[1]]
    except swiftclient.ClientException as exc:
        if exc.http_status == 404:
            return []
        raise


def write_refs(path, refs):
    """A glance ``swift_store_config_file`` from {name: {key: value}}."""
    lines = []
    for name, values in refs.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {v}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def tempauth_ref(server, user="test:tester", **extra):
    return {"auth_address": server.auth_url, "user": user,
            "key": server.users[user], "auth_version": "1", **extra}
