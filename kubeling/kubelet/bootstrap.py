"""Node join, agent side: ``kubeling agent --server URL --token TOKEN`` (k3s's agent bootstrap).

`join` turns a node token into the agent's credentials, in three steps::

    GET <server>/cacerts, unverified ─▶ sha256(CA PEM) == the token's hash?  (else BootstrapError)
    ─▶ over TLS verified with that CA, as Basic node:<secret>:
       GET /v1-kubeling/client-kubelet.crt   ─▶ <root>/kubelet.kubeconfig (system:node:<name>)
       GET /v1-kubeling/serving-kubelet.crt  ─▶ <root>/pki/kubelet.crt, kubelet.key (SAN: node IP)

(`kubeling.apiserver.join` is the server side.) Every file is replaced atomically and is 0600
when it holds a key. The join runs at every start, as k3s's agent does, so a re-issued CA or a
new node IP is picked up; a server that does not answer yet (connection refused, timeout, 5xx)
is retried until ``wait`` seconds have passed, while a refusal (CA hash mismatch, 401, 400) is a
`BootstrapError` at once, with one line saying what is wrong.

Issue 9 replaces the two certificate endpoints with bootstrap tokens and CSRs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import ssl
import tempfile
from pathlib import Path

import aiohttp
import yaml

from kubeling.apiserver.join import (
    CACERTS_PATH,
    CLIENT_CERT_PATH,
    JOIN_USER,
    NODE_IP_HEADER,
    NODE_NAME_HEADER,
    SERVING_CERT_PATH,
    parse_token,
)

log = logging.getLogger(__name__)

KUBECONFIG_NAME = "kubelet.kubeconfig"


class BootstrapError(RuntimeError):
    """The join was refused or cannot work; ``str()`` is one line for the user."""


class _Retry(Exception):
    """The server is not answering yet."""


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o600 if private else 0o644)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def split_pem(bundle: bytes) -> tuple[bytes, bytes]:
    """A certificate-then-key PEM bundle, as the join endpoints answer, split in two."""
    marker = bundle.find(b"-----BEGIN PRIVATE KEY-----")
    if marker <= 0 or b"-----BEGIN CERTIFICATE-----" not in bundle[:marker]:
        raise BootstrapError("the server's answer is not a PEM certificate followed by a key")
    return bundle[:marker], bundle[marker:]


async def _get(session: aiohttp.ClientSession, url: str, *, ssl_ctx, headers=None) -> bytes:
    try:
        async with session.get(url, ssl=ssl_ctx, headers=headers) as resp:
            body = await resp.read()
            if resp.status >= 500:
                raise _Retry(f"{url}: {resp.status} {resp.reason}")
            if resp.status == 401:
                raise BootstrapError(f"the server at {url} refused the token's secret (401 Unauthorized): "
                                     "use the token in the server's <data-dir>/server/node-token")
            if resp.status != 200:
                raise BootstrapError(f"GET {url}: {resp.status} {resp.reason}: {body[:300].decode(errors='replace')}")
            return body
    except (TimeoutError, aiohttp.ClientConnectionError) as e:
        if isinstance(e, aiohttp.ClientConnectorCertificateError):
            raise BootstrapError(f"{url}: the server's certificate is not signed by the pinned CA: {e}") from None
        raise _Retry(f"{url}: {e or type(e).__name__}") from None


def kubeconfig_doc(server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, node_name: str) -> dict:
    user = f"system:node:{node_name}"
    b64 = lambda data: base64.b64encode(data).decode()
    return {"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "kubeling", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
            "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem),
                                              "client-key-data": b64(key_pem)}}],
            "contexts": [{"name": "kubeling", "context": {"cluster": "kubeling", "user": user}}],
            "current-context": "kubeling", "preferences": {}}


async def _join_once(session: aiohttp.ClientSession, server: str, token: str, root: Path, node_name: str,
                     node_ip: str) -> Path:
    parsed = parse_token(token)
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE   # only for /cacerts, whose answer is pinned by the token's hash
    ca_pem = await _get(session, server + CACERTS_PATH, ssl_ctx=insecure)
    got = hashlib.sha256(ca_pem).hexdigest()
    if got != parsed.ca_hash:
        raise BootstrapError(f"the CA certificate served by {server} has sha256 {got}, but the token expects "
                             f"{parsed.ca_hash}: a token of another cluster, or not the server you meant")
    verified = ssl.create_default_context(cadata=ca_pem.decode())
    basic = base64.b64encode(f"{JOIN_USER}:{parsed.secret}".encode()).decode()
    headers = {NODE_NAME_HEADER: node_name, NODE_IP_HEADER: node_ip, "Authorization": f"Basic {basic}"}
    client = await _get(session, server + CLIENT_CERT_PATH, ssl_ctx=verified, headers=headers)
    serving = await _get(session, server + SERVING_CERT_PATH, ssl_ctx=verified, headers=headers)
    client_cert, client_key = split_pem(client)
    serving_cert, serving_key = split_pem(serving)
    kubeconfig = root / KUBECONFIG_NAME
    _write(kubeconfig, yaml.safe_dump(kubeconfig_doc(server, ca_pem, client_cert, client_key, node_name),
                                      sort_keys=False).encode(), private=True)
    # where the agent's HTTPS server looks for its serving certificate (kubelet.server.auth)
    _write(root / "pki" / "kubelet.key", serving_key, private=True)
    _write(root / "pki" / "kubelet.crt", serving_cert, private=False)
    return kubeconfig


async def join(server: str, token: str, root: str | os.PathLike, node_name: str, node_ip: str, *,
               wait: float = 120.0, interval: float = 2.0) -> Path:
    """Join the cluster at ``server`` (``https://host:port``); the kubeconfig path written.

    Raises `BootstrapError` on a refusal, or when the server has not answered within ``wait``."""
    server = server.rstrip("/")
    if not server.startswith("https://"):
        raise BootstrapError(f"--server {server!r}: expected https://<host>:<port>")
    try:
        parse_token(token)
    except ValueError as e:
        raise BootstrapError(f"--token: {e}") from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    timeout = aiohttp.ClientTimeout(total=15, sock_connect=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                path = await _join_once(session, server, token, Path(root), node_name, node_ip)
                log.info("joined %s as node %s (%s)", server, node_name, node_ip)
                return path
            except _Retry as e:
                if loop.time() >= deadline:
                    raise BootstrapError(f"the server did not answer within {wait:.0f}s: {e}") from None
                log.info("waiting for the server to answer: %s", e)
                await asyncio.sleep(interval)
