"""A throw-away certificate authority for the test servers, made with the
``openssl`` command line: ``ca.pem`` (what clients trust) and ``server.pem`` /
``server.key`` (what the server presents: 127.0.0.1 and localhost). Keys are
EC P-256, or RSA-2048 for the server with ``server_key="rsa"`` (vcsim)."""

from __future__ import annotations

import subprocess
from pathlib import Path

SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


KEYS = {"ec": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
        "rsa": ["-newkey", "rsa:2048", "-nodes"]}


def make_certificates(directory: Path, server_key: str = "ec") -> None:
    """Write ca.pem, ca.key, server.pem and server.key into ``directory``."""
    d = Path(directory)
    ext = d / "server.ext"
    ext.write_text(SERVER_EXTENSIONS)
    _openssl("req", "-x509", *KEYS["ec"], "-keyout", d / "ca.key", "-out", d / "ca.pem",
             "-days", "3", "-subj", "/CN=multistore test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", *KEYS[server_key], "-keyout", d / "server.key", "-out", d / "server.csr",
             "-subj", "/CN=127.0.0.1")
    _openssl("x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.pem",
             "-CAkey", d / "ca.key", "-CAcreateserial", "-out", d / "server.pem",
             "-days", "3", "-extfile", ext)


def _openssl(*args: object) -> None:
    command = ["openssl", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
