"""Node join, server side: the node token and the endpoints an agent joins through (k3s's).

Issue 9 replaces this with bootstrap tokens and CertificateSigningRequests; until then the
pieces are kept small and separate (token, endpoints, issuing).

**The node token** lives in ``<data-dir>/server/node-token`` (0600), in k3s's format::

    K10<sha256 hex of the CA certificate PEM>::server:<secret>

The hash pins the cluster CA: an agent that fetched ``/cacerts`` over an unverified connection
checks it against the token before trusting it. The secret (random, 128 bits) is the password
of the join endpoints, which agents present as user ``node`` (as k3s's agents do). It is made on the first start and kept; if the CA is regenerated the file
is rewritten with the new hash and the same secret.

**Endpoints**, answered before authentication (`JoinHandler.middleware`; everything else goes on
to the normal filter chain)::

    GET /cacerts                            the CA certificate PEM; no authentication
    GET /v1-kubeling/client-kubelet.crt     Basic node:<secret>, header Kubeling-Node-Name
          -> PEM certificate + PEM key: CN=system:node:<name>, O=system:nodes
    GET /v1-kubeling/serving-kubelet.crt    the same, plus header Kubeling-Node-IP
          -> PEM certificate + PEM key for the agent's HTTPS port, SANs <name>, <ip>, localhost

A missing or wrong secret is 401 Unauthorized; a bad node name or IP is 400 BadRequest; both as
``metav1.Status``. The client certificate is kept in ``pki/node-<name>.crt`` (`PKI.issue_node`)
and handed out again on a later join; the serving certificate is signed afresh each time, since
the node's IP may have changed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeling.api import errors
from kubeling.apiserver.certs import (
    NODE_USER_PREFIX,
    NODES_GROUP,
    PKI,
    _builder,
    _cert_pem,
    _key_pem,
    _write,
)
from kubeling.apiserver.datadir import DataDirError
from kubeling.apiserver.endpoints.response import status_response

TOKEN_PREFIX = "K10"
TOKEN_USER = "server"
JOIN_USER = "node"
PATH_PREFIX = "/v1-kubeling/"
CLIENT_CERT_PATH = PATH_PREFIX + "client-kubelet.crt"
SERVING_CERT_PATH = PATH_PREFIX + "serving-kubelet.crt"
CACERTS_PATH = "/cacerts"
NODE_NAME_HEADER = "Kubeling-Node-Name"
NODE_IP_HEADER = "Kubeling-Node-IP"
# RFC 1123 DNS subdomain, as Node names must be
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def token_path(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "server" / "node-token"


def ca_hash(ca_pem: bytes) -> str:
    return hashlib.sha256(ca_pem).hexdigest()


@dataclass(frozen=True)
class Token:
    """A parsed node token; ``str()`` gives it back in k3s's format."""
    ca_hash: str
    username: str
    secret: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}{self.ca_hash}::{self.username}:{self.secret}"


def parse_token(text: str) -> Token:
    """``K10<64 hex>::<user>:<secret>``; ValueError saying what is wrong otherwise."""
    text = text.strip()
    if not text.startswith(TOKEN_PREFIX) or "::" not in text:
        raise ValueError("the token is not in the form K10<CA hash>::server:<secret> "
                         "(read it from the server's <data-dir>/server/node-token)")
    digest, _, creds = text[len(TOKEN_PREFIX):].partition("::")
    user, sep, secret = creds.partition(":")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError("the token's CA hash is not 64 hexadecimal digits")
    if not sep or not user or not secret:
        raise ValueError("the token has no <user>:<secret> part after '::'")
    return Token(digest, user, secret)


def ensure_token(data_dir: str | os.PathLike, pki: PKI) -> Token:
    """The cluster's node token, made on first use and kept (see the module docstring)."""
    path = token_path(data_dir)
    digest = ca_hash(pki.ca_cert.read_bytes())
    secret = ""
    if path.exists():
        try:
            secret = parse_token(path.read_text()).secret
        except ValueError:
            secret = ""   # a damaged file is replaced; agents holding the old token must re-join
    token = Token(digest, TOKEN_USER, secret or secrets.token_hex(16))
    if not path.exists() or path.read_text().strip() != str(token):
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise DataDirError(f"cannot prepare {path.parent}: {e.strerror or e}") from None
        _write(path, f"{token}\n".encode(), private=True)
    return token


def sign_serving_cert(pki: PKI, node_name: str, node_ip: str) -> tuple[bytes, bytes]:
    """A kubelet serving certificate signed by the cluster CA: (cert PEM, key PEM)."""
    ca_key = serialization.load_pem_private_key((pki.dir / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
                         x509.NameAttribute(NameOID.COMMON_NAME, NODE_USER_PREFIX + node_name)])
    ips = dict.fromkeys([node_ip, "127.0.0.1"])
    sans = [x509.DNSName(node_name), x509.DNSName("localhost"),
            *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips)]
    cert = (_builder(subject, ca.subject, key.public_key(), 365)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _cert_pem(cert), _key_pem(key)


def _bad_request(message: str) -> web.Response:
    return status_response(errors.StatusError(400, "BadRequest", message))


class JoinHandler:
    """Serves the join endpoints for one PKI and node secret (see the module docstring)."""

    def __init__(self, pki: PKI, token: Token) -> None:
        self.pki = pki
        self.token = token

    def authorized(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        # constant time: the secret is the only thing between a stranger and a node identity
        return user == JOIN_USER and hmac.compare_digest(password.encode(), self.token.secret.encode())

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        path = request.path
        if path == CACERTS_PATH and request.method in ("GET", "HEAD"):
            return web.Response(body=self.pki.ca_cert.read_bytes(), content_type="application/x-pem-file")
        if not path.startswith(PATH_PREFIX):
            return await handler(request)
        if request.method != "GET":
            return status_response(errors.method_not_allowed(request.method.lower(), ""))
        if not self.authorized(request):
            unauthorized = errors.unauthorized()
            resp = status_response(unauthorized)
            resp.headers["WWW-Authenticate"] = 'Basic realm="kubeling-node-join"'
            return resp
        name = request.headers.get(NODE_NAME_HEADER, "")
        if not _NODE_NAME.match(name) or len(name) > 253:
            return _bad_request(f"header {NODE_NAME_HEADER}: {name!r} is not a valid node name "
                                "(a lowercase RFC 1123 subdomain)")
        if path == CLIENT_CERT_PATH:
            cert, key = await asyncio.to_thread(self.pki.issue_node, name)
            return web.Response(body=cert.read_bytes() + key.read_bytes(), content_type="application/x-pem-file")
        if path == SERVING_CERT_PATH:
            ip = request.headers.get(NODE_IP_HEADER, "")
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                return _bad_request(f"header {NODE_IP_HEADER}: {ip!r} is not an IP address")
            cert, key = await asyncio.to_thread(sign_serving_cert, self.pki, name, ip)
            return web.Response(body=cert + key, content_type="application/x-pem-file")
        return status_response(errors.StatusError(404, "NotFound", "the server could not find the requested "
                                                  "resource"))
