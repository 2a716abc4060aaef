"""TLS and access control of the agent's HTTPS endpoint (upstream: the kubelet's ``--tls-*``
flags, ``--client-ca-file`` x509 authentication and its authorizer).

Serving certificate: if the given cert/key files do not exist, the agent makes a self-signed one
there, as upstream's kubelet does (CN ``<node>@<unix time>``, SANs the node name, localhost and
the given addresses). The API server does not verify it by default (upstream's
``--kubelet-certificate-authority`` is unset), but one may be passed instead.

Authentication: a client certificate signed by ``client_ca`` (the cluster CA) names the user
(CN) and its groups (O). No certificate: 401. Authorization is deliberately narrow until the
Node/webhook authorizers exist: the groups ``system:masters`` and the user
``kube-apiserver-kubelet-client`` (the API server's identity towards agents) may do everything;
anyone else is 403 with upstream's message shape ``Forbidden (user=..., verb=..., resource=nodes,
subresource=...)``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

APISERVER_CLIENT_USER = "kube-apiserver-kubelet-client"
ALLOWED_GROUPS = frozenset({"system:masters"})
ALLOWED_USERS = frozenset({APISERVER_CLIENT_USER})
USER = web.RequestKey("agent_user", object)

# Path prefixes -> the nodes subresource upstream's kubelet authorizes them as.
_SUBRESOURCES = (("/stats", "stats"), ("/metrics", "metrics"), ("/logs", "log"), ("/spec", "spec"),
                 ("/checkpoint", "checkpoint"), ("/pods", "proxy"), ("/healthz", "proxy"))


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]


def ensure_self_signed(cert: Path, key: Path, node_name: str, addresses: list[str]) -> None:
    """Write a self-signed serving certificate to ``cert``/``key`` unless both exist."""
    if cert.exists() and key.exists():
        return
    cert.parent.mkdir(parents=True, exist_ok=True)
    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{node_name}@{int(time.time())}")])
    dns, ips = {"localhost", node_name}, {"127.0.0.1", "::1"}
    for a in addresses:
        try:
            ipaddress.ip_address(a)
            ips.add(a)
        except ValueError:
            if a:
                dns.add(a)
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, True, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in sorted(dns)]
                                                   + [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(ips)]),
                       critical=False)
        .sign(pkey, hashes.SHA256()))
    _write(key, pkey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), 0o600)
    _write(cert, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def server_ssl_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(str(client_ca))
    ctx.verify_mode = ssl.CERT_OPTIONAL   # no certificate is a 401 answer, not a failed handshake
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def user_of(request: web.Request) -> User | None:
    """The user named by the verified client certificate, if any."""
    if request.transport is None:
        return None
    sslobj = request.transport.get_extra_info("ssl_object")
    peer = sslobj.getpeercert() if sslobj is not None else None
    if not peer:
        return None
    cn, orgs = "", []
    for rdn in peer.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                cn = v
            elif k == "organizationName":
                orgs.append(v)
    return User(cn, tuple(orgs)) if cn else None


def attributes(request: web.Request) -> tuple[str, str]:
    """(verb, nodes subresource) the request is authorized as, as upstream's kubelet maps them."""
    verb = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete"}.get(request.method, request.method.lower())
    for prefix, sub in _SUBRESOURCES:
        if request.path.startswith(prefix):
            return verb, sub
    return verb, "proxy"


def allowed(user: User) -> bool:
    return user.name in ALLOWED_USERS or bool(ALLOWED_GROUPS.intersection(user.groups))


@web.middleware
async def middleware(request: web.Request, handler):
    user = user_of(request)
    if user is None:
        return web.Response(status=401, text="Unauthorized")
    if not allowed(user):
        verb, sub = attributes(request)
        return web.Response(status=403, text=f"Forbidden (user={user.name}, verb={verb}, resource=nodes, "
                                             f"subresource={sub})")
    request[USER] = user
    return await handler(request)
