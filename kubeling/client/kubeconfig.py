"""Kubeconfig files: which server, which credentials, which namespace.

``load(path=None, context=None) -> Config`` follows kubectl's rules:

- the files are ``path`` if given, else every file in ``$KUBECONFIG``
  (``os.pathsep``-separated, missing files skipped), else ``~/.kube/config``;
- several files merge: for each named cluster/user/context, and for
  ``current-context``, the first file that sets it wins;
- ``context`` (or ``current-context``) picks a context, which names a cluster
  and a user;
- relative file paths (``certificate-authority``, ``client-certificate``,
  ``client-key``, ``tokenFile``) are relative to the file that contains them.

Every referenced file is read once at load time, so a `Config` carries bytes,
not paths. `Config.ssl_context` builds the TLS context: with a CA given only
that CA is trusted (as kubectl does), otherwise the system store.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any

import yaml

from kubeling.client.exceptions import ConfigError


@dataclass
class Config:
    server: str
    certificate_authority_data: bytes | None = None
    client_certificate_data: bytes | None = None
    client_key_data: bytes | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    namespace: str = "default"
    context: str = ""
    cluster: str = ""
    user: str = ""

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``server`` (None for plain ``http://``)."""
        if not self.server.startswith("https://"):
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.insecure_skip_tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.certificate_authority_data:
            try:
                ctx.load_verify_locations(cadata=self.certificate_authority_data.decode())
            except (ssl.SSLError, ValueError, UnicodeDecodeError) as e:
                raise ConfigError(f"invalid certificate authority data: {e}") from e
        else:
            ctx.load_default_certs()
        if self.client_certificate_data or self.client_key_data:
            if not (self.client_certificate_data and self.client_key_data):
                raise ConfigError("client-certificate and client-key must be given together")
            load_cert_chain_from_memory(ctx, self.client_certificate_data, self.client_key_data)
        return ctx

    def auth_headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.username is not None and self.password is not None:
            raw = f"{self.username}:{self.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}


def load_cert_chain_from_memory(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load a client certificate and key that exist only as bytes.

    `ssl.SSLContext.load_cert_chain` only reads files. Where the platform has
    anonymous memory files (Linux ``memfd``) the PEM never touches a disk;
    elsewhere it goes to a 0600 file in a private (0700) temporary directory that
    is removed as soon as OpenSSL has read it.
    """
    try:
        if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
            fds = []
            try:
                for data in (cert_pem, key_pem):
                    fd = os.memfd_create("kubeling-tls", getattr(os, "MFD_CLOEXEC", 0))
                    fds.append(fd)
                    os.write(fd, data)
                ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
            finally:
                for fd in fds:
                    os.close(fd)
            return
        with tempfile.TemporaryDirectory(prefix="kubeling-tls-") as d:
            paths = []
            for name, data in (("cert.pem", cert_pem), ("key.pem", key_pem)):
                p = os.path.join(d, name)
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                paths.append(p)
            ctx.load_cert_chain(paths[0], paths[1])
    except ssl.SSLError as e:
        raise ConfigError(f"invalid client certificate or key: {e}") from e


def default_paths() -> list[str]:
    env = os.environ.get("KUBECONFIG")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    return [os.path.join(os.path.expanduser("~"), ".kube", "config")]


def load(path: str | None = None, context: str | None = None) -> Config:
    """Load the kubeconfig at ``path`` (or kubectl's default files) and resolve ``context``."""
    paths = [path] if path else default_paths()
    docs = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        except FileNotFoundError:
            if path:
                raise ConfigError(f"kubeconfig {p} does not exist") from None
            continue
        except yaml.YAMLError as e:
            raise ConfigError(f"kubeconfig {p} is not valid YAML: {e}") from e
        if not isinstance(doc, dict):
            raise ConfigError(f"kubeconfig {p} is not a mapping")
        docs.append((doc, os.path.dirname(os.path.abspath(p))))
    if not docs:
        raise ConfigError(f"no kubeconfig found (looked at {', '.join(paths)})")
    return from_dicts(docs, context)


def from_dict(doc: dict, context: str | None = None, base_dir: str = ".") -> Config:
    """Resolve ``context`` in one already-parsed kubeconfig document."""
    return from_dicts([(doc, base_dir)], context)


def from_dicts(docs: list[tuple[dict, str]], context: str | None = None) -> Config:
    """Merge parsed kubeconfigs (first wins) and resolve ``context``."""
    named: dict[str, dict[str, tuple[dict, str]]] = {"clusters": {}, "users": {}, "contexts": {}}
    current = ""
    for doc, base in docs:
        current = current or doc.get("current-context") or ""
        for section, field in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for entry in doc.get(section) or []:
                name = entry.get("name")
                if isinstance(name, str) and name not in named[section]:
                    named[section][name] = (entry.get(field) or {}, base)
    ctx_name = context or current
    if not ctx_name:
        raise ConfigError("no context given and current-context is not set")
    if ctx_name not in named["contexts"]:
        raise ConfigError(f'context "{ctx_name}" does not exist')
    ctx, _ = named["contexts"][ctx_name]
    cluster_name, user_name = ctx.get("cluster", ""), ctx.get("user", "")
    if cluster_name not in named["clusters"]:
        raise ConfigError(f'cluster "{cluster_name}" (context "{ctx_name}") does not exist')
    cluster, cbase = named["clusters"][cluster_name]
    user, ubase = named["users"].get(user_name, ({}, "."))
    server = cluster.get("server")
    if not server:
        raise ConfigError(f'cluster "{cluster_name}" has no server')
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = _read(user["tokenFile"], ubase).decode().strip()
    return Config(
        server=server.rstrip("/"),
        certificate_authority_data=_data_or_file(cluster, "certificate-authority", cbase),
        client_certificate_data=_data_or_file(user, "client-certificate", ubase),
        client_key_data=_data_or_file(user, "client-key", ubase),
        token=token or None,
        username=user.get("username"),
        password=user.get("password"),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=cluster.get("tls-server-name") or None,
        namespace=ctx.get("namespace") or "default",
        context=ctx_name,
        cluster=cluster_name,
        user=user_name,
    )


def _data_or_file(section: dict[str, Any], key: str, base: str) -> bytes | None:
    """``<key>-data`` (base64) wins over ``<key>`` (a file path), as in client-go."""
    data = section.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(data, validate=False)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{key}-data is not valid base64") from e
    path = section.get(key)
    return _read(path, base) if path else None


def _read(path: str, base: str) -> bytes:
    full = path if os.path.isabs(path) else os.path.join(base, os.path.expanduser(path))
    try:
        with open(full, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {full}: {e.strerror}") from e
