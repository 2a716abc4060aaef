"""Node join, server side: the join tokens and the endpoints an agent joins through (k3s's).

**Join tokens**, as k3s has them (`parse_token`; ``str(Token)`` gives one back)::

    K10<sha256 hex of the CA certificate PEM>::server:<secret>   the server's node token
    K10<sha256 hex of the CA certificate PEM>::<id>.<secret>     a bootstrap token (`kubeling token create`)
    <id>.<secret>                                                the same without CA pinning (the agent
                                                                 must then be given the CA: --ca-file)

A bootstrap token is a ``kube-system`` Secret (`kubeling.clusterbootstrap.token`); an agent
holding one gets its client certificate through a CertificateSigningRequest
(`kubeling.kubelet.bootstrap`), not from these endpoints.

**The node token** lives in ``<data-dir>/server/node-token`` (0600).

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
    GET /v1-kubeling/client-kube-proxy.crt
          -> the kube-proxy identity: CN=system:kube-proxy (k3s's client-kube-proxy.crt)
    GET /v1-kubeling/client-kubeling-controller.crt
          -> the agent's network-policy controller: CN=system:kubeling-controller
             (k3s's client-k3s-controller.crt)

Each takes the node token (Basic ``node:<secret>``), a valid bootstrap token (Bearer
``<id>.<secret>``, checked by the API server's bootstrap token authenticator) or, with no
Authorization header, the node's own client certificate (``system:node:<the name in
Kubeling-Node-Name>``: an agent restarting after its bootstrap token expired, as k3s allows) —
except client-kubelet.crt, which only the node token gets: the others file a CSR. The
two component certificates are issued once, kept in ``pki/``, and handed to every agent.

A missing or wrong secret is 401 Unauthorized; a bootstrap token asking for client-kubelet.crt is
403 Forbidden; a bad node name or IP is 400 BadRequest; all as ``metav1.Status``. The client certificate is kept in ``pki/node-<name>.crt`` (`PKI.issue_node`)
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
    write_kubeconfig,
)
from kubeling.apiserver.auth import user_from_cert
from kubeling.apiserver.datadir import DataDirError
from kubeling.apiserver.endpoints.response import status_response
from kubeling.clusterbootstrap import token as bt

TOKEN_PREFIX = "K10"
TOKEN_USER = "server"
JOIN_USER = "node"
PATH_PREFIX = "/v1-kubeling/"
CLIENT_CERT_PATH = PATH_PREFIX + "client-kubelet.crt"
SERVING_CERT_PATH = PATH_PREFIX + "serving-kubelet.crt"
KUBE_PROXY_CERT_PATH = PATH_PREFIX + "client-kube-proxy.crt"
CONTROLLER_CERT_PATH = PATH_PREFIX + "client-kubeling-controller.crt"
KUBE_PROXY_USER = "system:kube-proxy"                 # upstream's; bound to system:node-proxier
CONTROLLER_USER = "system:kubeling-controller"        # k3s's system:k3s-controller
# endpoint -> (user, file stem in pki/, kubeconfig name in the agent's directory)
COMPONENTS = {KUBE_PROXY_CERT_PATH: (KUBE_PROXY_USER, "client-kube-proxy", "kubeproxy.kubeconfig"),
              CONTROLLER_CERT_PATH: (CONTROLLER_USER, "client-kubeling-controller", "kubeling-controller.kubeconfig")}
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
    """A parsed join token; ``str()`` gives it back in k3s's format.

    ``username`` is ``server`` for the node token and "" for a bootstrap token, whose ``secret``
    is then the whole ``<id>.<secret>``; ``ca_hash`` is "" for a token without CA pinning."""
    ca_hash: str
    username: str
    secret: str

    @property
    def bootstrap(self) -> bool:
        return not self.username

    def __str__(self) -> str:
        creds = f"{self.username}:{self.secret}" if self.username else self.secret
        return f"{TOKEN_PREFIX}{self.ca_hash}::{creds}" if self.ca_hash else creds


def parse_token(text: str) -> Token:
    """One of the forms in the module docstring; ValueError saying what is wrong otherwise."""
    text = text.strip()
    if bt.parse(text):
        return Token("", "", text)
    if not text.startswith(TOKEN_PREFIX) or "::" not in text:
        raise ValueError("the token is not in the form K10<CA hash>::server:<secret> "
                         "(read it from the server's <data-dir>/server/node-token), "
                         "K10<CA hash>::<id>.<secret> or <id>.<secret> (`kubeling token create`)")
    digest, _, creds = text[len(TOKEN_PREFIX):].partition("::")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError("the token's CA hash is not 64 hexadecimal digits")
    if bt.parse(creds):
        return Token(digest, "", creds)
    user, sep, secret = creds.partition(":")
    if not sep or not user or not secret:
        raise ValueError("the token has no <user>:<secret> (node token) or <id>.<secret> (bootstrap "
                         "token) part after '::'")
    return Token(digest, user, secret)


def ensure_token(data_dir: str | os.PathLike, pki: PKI, secret: str = "") -> Token:
    """The cluster's node token, made on first use and kept (see the module docstring); a new
    one takes ``secret`` when given (k3s's ``--token``), a random one otherwise."""
    new_secret = secret
    path = token_path(data_dir)
    digest = ca_hash(pki.ca_cert.read_bytes())
    secret = ""
    if path.exists():
        try:
            parsed = parse_token(path.read_text())
            secret = "" if parsed.bootstrap else parsed.secret
        except ValueError:
            secret = ""   # a damaged file is replaced; agents holding the old token must re-join
    token = Token(digest, TOKEN_USER, secret or new_secret or secrets.token_hex(16))
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


def issue_component(pki: PKI, path: str) -> tuple[Path, Path]:
    """The shared client certificate of a node component (``COMPONENTS[path]``), issued once and
    kept in ``pki/<stem>.crt`` / ``.key``."""
    user, stem, _ = COMPONENTS[path]
    cert, key = pki.dir / f"{stem}.crt", pki.dir / f"{stem}.key"
    pki.issue_client_once(cert, key, user, [])  # agents joining at once share it: one issues
    return cert, key


def write_component_kubeconfigs(pki: PKI, server: str, agent_dir: str | os.PathLike) -> dict[str, Path]:
    """For the server's own agent: the kube-proxy and network-policy controller kubeconfigs in
    ``agent_dir``, as a joining agent writes them; {user: path}."""
    out = {}
    for path, (user, _, name) in COMPONENTS.items():
        cert, key = issue_component(pki, path)
        target = Path(agent_dir) / name
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_kubeconfig(target, server, pki, user=user, cert=cert, key=key)
        out[user] = target
    return out


def _bad_request(message: str) -> web.Response:
    return status_response(errors.StatusError(400, "BadRequest", message))


class JoinHandler:
    """Serves the join endpoints for one PKI and node secret (see the module docstring);
    ``bootstrap_tokens`` (an authenticator with ``async authenticate(token)``) lets bootstrap
    tokens in too."""

    def __init__(self, pki: PKI, token: Token, bootstrap_tokens=None) -> None:
        self.pki = pki
        self.token = token
        self.bootstrap_tokens = bootstrap_tokens

    def authorized(self, request: web.Request) -> bool:
        """The node token, as Basic ``node:<secret>``."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        # constant time: the secret is the only thing between a stranger and a node identity
        return user == JOIN_USER and hmac.compare_digest(password.encode(), self.token.secret.encode())

    async def caller(self, request: web.Request) -> str:
        """``node-token``, ``bootstrap`` (a valid bootstrap token as Bearer), ``node-cert`` (no
        Authorization header, and a client certificate of the CA for ``system:node:<the node
        named in the header>``: an agent restarting after its bootstrap token expired) or ""
        (refused)."""
        if self.authorized(request):
            return "node-token"
        header = request.headers.get("Authorization", "")
        if not header:
            peercert = request.transport.get_extra_info("peercert") if request.transport else None
            user = user_from_cert(peercert)
            name = request.headers.get(NODE_NAME_HEADER, "")
            if user is not None and name and user.name == NODE_USER_PREFIX + name and NODES_GROUP in user.groups:
                return "node-cert"
            return ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or self.bootstrap_tokens is None or not bt.parse(value.strip()):
            return ""
        try:
            user = await self.bootstrap_tokens.authenticate(value.strip())
        except Exception:  # noqa: BLE001 - any failure refuses (fail closed); the reason is not the caller's
            return ""
        return "bootstrap" if user is not None else ""

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        path = request.path
        if path == CACERTS_PATH and request.method in ("GET", "HEAD"):
            return web.Response(body=self.pki.ca_cert.read_bytes(), content_type="application/x-pem-file")
        if not path.startswith(PATH_PREFIX):
            return await handler(request)
        if request.method != "GET":
            return status_response(errors.method_not_allowed(request.method.lower(), ""))
        caller = await self.caller(request)
        if not caller:
            unauthorized = errors.unauthorized()
            resp = status_response(unauthorized)
            resp.headers["WWW-Authenticate"] = 'Basic realm="kubeling-node-join"'
            return resp
        if path in COMPONENTS:
            cert, key = await asyncio.to_thread(issue_component, self.pki, path)
            return web.Response(body=cert.read_bytes() + key.read_bytes(), content_type="application/x-pem-file")
        name = request.headers.get(NODE_NAME_HEADER, "")
        if not _NODE_NAME.match(name) or len(name) > 253:
            return _bad_request(f"header {NODE_NAME_HEADER}: {name!r} is not a valid node name "
                                "(a lowercase RFC 1123 subdomain)")
        if path == CLIENT_CERT_PATH:
            if caller != "node-token":
                return status_response(errors.StatusError(
                    403, "Forbidden", "only the node token gets a node client certificate here: file a "
                    "CertificateSigningRequest (signer kubernetes.io/kube-apiserver-client-kubelet)"))
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
