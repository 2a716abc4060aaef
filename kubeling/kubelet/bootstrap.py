"""Node join, agent side: ``kubeling agent --server URL --token TOKEN`` (k3s's agent bootstrap,
with upstream's kubelet TLS bootstrap), and the client certificate's rotation.

`join` turns a join token (`kubeling.apiserver.join.parse_token`) into the agent's credentials::

    GET <server>/cacerts, unverified ─▶ sha256(CA PEM) == the token's hash?  (else BootstrapError)
      (a short <id>.<secret> token pins nothing: the CA then comes from --ca-file)
    ─▶ the client certificate, system:node:<name> in system:nodes:
       node token (K10...::server:<secret>): GET /v1-kubeling/client-kubelet.crt (Basic node:<secret>)
       bootstrap token (K10...::<id>.<secret>): as system:bootstrap:<id>, a CertificateSigningRequest
         node-csr-<digest>, signer kubernetes.io/kube-apiserver-client-kubelet, usages digital
         signature + client auth (ECDSA P-256), then watch it until status.certificate is set
         (the controller manager's approver approves it; Denied or Failed is a BootstrapError)
       ─▶ <root>/kubelet.kubeconfig
    ─▶ GET /v1-kubeling/serving-kubelet.crt         ─▶ <root>/pki/kubelet.crt, kubelet.key (SAN: node IP)
    ─▶ GET /v1-kubeling/client-kube-proxy.crt        ─▶ <root>/kubeproxy.kubeconfig (system:kube-proxy)
    ─▶ GET /v1-kubeling/client-kubeling-controller.crt ─▶ <root>/kubeling-controller.kubeconfig

(`kubeling.apiserver.join` is the server side; the last three endpoints take either token.)
Every file is replaced atomically and is 0600 when it holds a key. The join runs at every
start, as k3s's agent does, so a re-issued CA or a new node IP is picked up; with a bootstrap
token, a kubeconfig already there whose certificate names this node, is signed by this CA and
has not expired is kept (upstream's kubelet does not bootstrap again), and that certificate,
not the token (which may have expired since), authenticates the other endpoints. A server that does not answer yet (connection refused, timeout, 5xx) is retried
until ``wait`` seconds have passed, while a refusal (CA hash mismatch, 401, 403, 400, a denied
CSR) is a `BootstrapError` at once, with one line saying what is wrong.

`CertificateManager` is upstream's kubelet client certificate manager: when 70–90 % (random,
upstream's jitter) of the certificate's lifetime has passed — or ``rotate_after`` seconds after
start and after each rotation, a test seam (``kubeling agent --rotate-certificates-after``) — it
files a CSR (``csr-`` generated name) authenticated by its current certificate (the
``selfnodeclient`` case of the approver), writes the new key and certificate into the
kubeconfig, and swaps them into the agent's live `RESTClient` (`swap_client_certificate`: the
TLS context takes the new pair and every connection is closed, as upstream does, so the next
requests authenticate with it). A failed rotation is retried with backoff; the agent keeps
running on its current certificate meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import random
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubeling.apiserver.join import (
    CACERTS_PATH,
    CLIENT_CERT_PATH,
    COMPONENTS,
    JOIN_USER,
    NODE_IP_HEADER,
    NODE_NAME_HEADER,
    SERVING_CERT_PATH,
    Token,
    parse_token,
)

log = logging.getLogger(__name__)

KUBECONFIG_NAME = "kubelet.kubeconfig"
KUBE_PROXY_KUBECONFIG = COMPONENTS["/v1-kubeling/client-kube-proxy.crt"][2]
CONTROLLER_KUBECONFIG = COMPONENTS["/v1-kubeling/client-kubeling-controller.crt"][2]
CSR_GROUP, CSR_VERSION, CSR_RESOURCE = "certificates.k8s.io", "v1", "certificatesigningrequests"
KUBELET_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
NODES_GROUP, NODE_USER_PREFIX = "system:nodes", "system:node:"
CSR_WAIT = 3600.0          # upstream's kubelet waits an hour for its bootstrap CSR


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
                raise BootstrapError(f"the server at {url} refused the token (401 Unauthorized): use the "
                                     "token in the server's <data-dir>/server/node-token, or a bootstrap token "
                                     "from `kubeling token create` that has not expired or been deleted")
            if resp.status != 200:
                raise BootstrapError(f"GET {url}: {resp.status} {resp.reason}: {body[:300].decode(errors='replace')}")
            return body
    except (TimeoutError, aiohttp.ClientConnectionError) as e:
        if isinstance(e, aiohttp.ClientConnectorCertificateError):
            raise BootstrapError(f"{url}: the server's certificate is not signed by the pinned CA: {e}") from None
        raise _Retry(f"{url}: {e or type(e).__name__}") from None


def kubeconfig_doc(server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, node_name: str = "", *,
                   user: str = "") -> dict:
    user = user or f"system:node:{node_name}"
    b64 = lambda data: base64.b64encode(data).decode()
    return {"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "kubeling", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
            "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem),
                                              "client-key-data": b64(key_pem)}}],
            "contexts": [{"name": "kubeling", "context": {"cluster": "kubeling", "user": user}}],
            "current-context": "kubeling", "preferences": {}}


def _current_user(doc: dict) -> dict:
    """The ``user`` mapping of a kubeconfig's current context (KeyError if there is none)."""
    ctx = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
    return next(u for u in doc["users"] if u["name"] == ctx["user"])["user"]


def client_certificate(kubeconfig: Path) -> tuple[bytes, bytes] | None:
    """(cert PEM, key PEM) embedded in a kubeconfig's current user; None if unreadable or not embedded."""
    try:
        user = _current_user(yaml.safe_load(kubeconfig.read_text()))
        return base64.b64decode(user["client-certificate-data"]), base64.b64decode(user["client-key-data"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError, StopIteration):
        return None


def _usable(kubeconfig: Path, ca_pem: bytes, node_name: str, margin: float = 60.0) -> bool:
    """A kubeconfig whose certificate is this node's, signed by this CA, and valid a while yet."""
    pair = client_certificate(kubeconfig)
    if pair is None:
        return False
    try:
        cert = x509.load_pem_x509_certificate(pair[0])
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    except (ValueError, TypeError, IndexError, Exception):  # noqa: BLE001 - any doubt: bootstrap again
        return False
    return cn == NODE_USER_PREFIX + node_name and cert.not_valid_after_utc.timestamp() > time.time() + margin


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def node_csr(key, node_name: str) -> bytes:
    """The PEM certificate request upstream's kubelet makes: O=system:nodes, CN=system:node:<name>."""
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
                         x509.NameAttribute(NameOID.COMMON_NAME, NODE_USER_PREFIX + node_name)])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256()) \
        .public_bytes(serialization.Encoding.PEM)


def csr_object(request_pem: bytes, *, name: str = "", expiration_seconds: int | None = None) -> dict:
    """A certificates.k8s.io/v1 CSR for the kubelet client signer (``generateName: csr-`` without ``name``)."""
    meta = {"name": name} if name else {"generateName": "csr-"}
    spec: dict[str, Any] = {"request": base64.b64encode(request_pem).decode(), "signerName": KUBELET_CLIENT_SIGNER,
                            "usages": ["digital signature", "client auth"]}
    if expiration_seconds:
        spec["expirationSeconds"] = int(expiration_seconds)
    return {"apiVersion": f"{CSR_GROUP}/{CSR_VERSION}", "kind": "CertificateSigningRequest", "metadata": meta,
            "spec": spec}


def digested_name(key, node_name: str) -> str:
    """``node-csr-<digest>`` of the public key and subject, as upstream's kubelet names its
    bootstrap CSR: a retry with the same key finds its earlier request."""
    pub = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.sha512(pub + f"|O={NODES_GROUP}|CN={NODE_USER_PREFIX}{node_name}|digital signature|client auth"
                            .encode()).digest()
    return "node-csr-" + base64.urlsafe_b64encode(digest).decode().rstrip("=")[:43]


async def request_certificate(client, request_pem: bytes, *, name: str = "", expiration_seconds: int | None = None,
                              wait: float = CSR_WAIT) -> bytes:
    """File a kubelet client CSR with ``client`` (a `RESTClient`) and wait (watch) for its certificate.

    An existing CSR of the same ``name`` and request is waited for rather than re-filed. Denied or
    Failed is a `BootstrapError`; so is no certificate within ``wait`` seconds."""
    from kubeling.client import is_already_exists
    obj = csr_object(request_pem, name=name, expiration_seconds=expiration_seconds)
    try:
        created = await client.create(CSR_GROUP, CSR_VERSION, CSR_RESOURCE, obj)
    except Exception as e:
        if not (name and is_already_exists(e)):
            raise
        created = await client.get(CSR_GROUP, CSR_VERSION, CSR_RESOURCE, name)
        if created.get("spec", {}).get("request") != obj["spec"]["request"]:
            raise BootstrapError(f"a CertificateSigningRequest {name} for another key exists") from None
    name = created["metadata"]["name"]
    log.info("filed CertificateSigningRequest %s; waiting for its certificate", name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    next_note = loop.time() + 30
    obj = created
    while True:
        cert = _issued(obj, name)
        if cert is not None:
            return cert
        left = deadline - loop.time()
        if left <= 0:
            raise BootstrapError(f"CertificateSigningRequest {name} got no certificate within {wait:.0f}s "
                                 f"(is it approved? kubectl certificate approve {name})")
        if loop.time() > next_note:
            log.info("still waiting for CertificateSigningRequest %s to be approved and signed", name)
            next_note = loop.time() + 30
        try:
            async with client.watch(CSR_GROUP, CSR_VERSION, CSR_RESOURCE, name=name,
                                    timeout_seconds=max(1, int(min(left, 60)))) as w:
                async for typ, event_obj in w:
                    if typ == "DELETED":
                        raise BootstrapError(f"CertificateSigningRequest {name} was deleted before it was signed")
                    if typ in ("ADDED", "MODIFIED"):
                        obj = event_obj
                        if _issued(obj, name) is not None:
                            break
        except BootstrapError:
            raise
        except Exception as e:  # noqa: BLE001 - a broken watch: look again
            log.info("watching CertificateSigningRequest %s: %s", name, e)
            await asyncio.sleep(1.0)
            try:
                obj = await client.get(CSR_GROUP, CSR_VERSION, CSR_RESOURCE, name)
            except Exception as e2:  # noqa: BLE001
                log.info("reading CertificateSigningRequest %s: %s", name, e2)


def _issued(obj: dict, name: str) -> bytes | None:
    status = obj.get("status") or {}
    for c in status.get("conditions") or ():
        if c.get("type") in ("Denied", "Failed") and c.get("status", "True") == "True":
            why = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
            raise BootstrapError(f"CertificateSigningRequest {name} was {c['type'].lower()}" + (f" ({why})" if why
                                                                                                  else ""))
    cert = status.get("certificate")
    return base64.b64decode(cert) if cert else None


def _client(server: str, ca_pem: bytes, **creds):
    from kubeling.client import kubeconfig as kc
    from kubeling.client.rest import RESTClient
    cfg = kc.Config(server=server, certificate_authority_data=ca_pem, **creds)
    return RESTClient.from_config(cfg, component="kubelet-bootstrap", qps=5, burst=10, max_retries=3, timeout=30)


async def _bootstrap_client_cert(server: str, ca_pem: bytes, token: Token, root: Path, node_name: str,
                                 wait: float, expiration_seconds: int | None = None) -> tuple[bytes, bytes]:
    """The node's client certificate through a CSR, as system:bootstrap:<id>."""
    from kubeling.client import StatusError, TransportError
    tmp_key = root / "pki" / "kubelet-client.key.tmp"      # kept across retries, as upstream's kubelet
    try:
        key = serialization.load_pem_private_key(tmp_key.read_bytes(), None)
    except (OSError, ValueError):
        key = new_key()
        _write(tmp_key, key_pem(key), private=True)
    client = _client(server, ca_pem, token=token.secret)
    try:
        cert = await request_certificate(client, node_csr(key, node_name), name=digested_name(key, node_name),
                                         expiration_seconds=expiration_seconds, wait=wait)
    except StatusError as e:
        if e.code == 401:
            raise BootstrapError(f"the server at {server} refused the bootstrap token (401 Unauthorized): "
                                 "it expired or was deleted (`kubeling token list`)") from None
        if e.code >= 500 or e.code == 429:
            raise _Retry(f"creating the CertificateSigningRequest: {e}") from None
        raise BootstrapError(f"creating the CertificateSigningRequest: {e}") from None
    except TransportError as e:
        raise _Retry(str(e)) from None
    finally:
        await client.close()
    issued = x509.load_pem_x509_certificate(cert)
    if issued.public_key().public_numbers() != key.public_key().public_numbers():
        raise BootstrapError("the signed certificate is not for the key the agent sent")
    pem = key_pem(key)
    tmp_key.unlink(missing_ok=True)
    return cert, pem


async def _join_once(session: aiohttp.ClientSession, server: str, token: str, root: Path, node_name: str,
                     node_ip: str, ca_file: str | None = None, csr_wait: float = CSR_WAIT,
                     expiration_seconds: int | None = None) -> Path:
    parsed = parse_token(token)
    if parsed.ca_hash:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE   # only for /cacerts, whose answer is pinned by the token's hash
        ca_pem = await _get(session, server + CACERTS_PATH, ssl_ctx=insecure)
        got = hashlib.sha256(ca_pem).hexdigest()
        if got != parsed.ca_hash:
            raise BootstrapError(f"the CA certificate served by {server} has sha256 {got}, but the token expects "
                                 f"{parsed.ca_hash}: a token of another cluster, or not the server you meant")
    elif ca_file:
        ca_pem = Path(ca_file).read_bytes()
    else:
        raise BootstrapError("a token without a CA hash (<id>.<secret>) needs --ca-file: use the K10<CA hash>::"
                             "<id>.<secret> form that `kubeling token create` prints, or give the CA")
    verified = ssl.create_default_context(cadata=ca_pem.decode())
    kubeconfig = root / KUBECONFIG_NAME
    write_kubeconfig = lambda cert, key: _write(kubeconfig, yaml.safe_dump(
        kubeconfig_doc(server, ca_pem, cert, key, node_name), sort_keys=False).encode(), private=True)
    headers = {NODE_NAME_HEADER: node_name, NODE_IP_HEADER: node_ip}
    joined = parsed.bootstrap and _usable(kubeconfig, ca_pem, node_name)
    if joined:
        # a node that joined already keeps its certificate and authenticates with it, since the
        # token may have expired since
        from kubeling.client.kubeconfig import load_cert_chain_from_memory
        client_cert, client_key = client_certificate(kubeconfig)
        load_cert_chain_from_memory(verified, client_cert, client_key)
        write_kubeconfig(client_cert, client_key)       # the server's URL may have changed
        log.info("keeping the client certificate in %s", kubeconfig)
    elif parsed.bootstrap:
        headers["Authorization"] = f"Bearer {parsed.secret}"
    else:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{JOIN_USER}:{parsed.secret}".encode()).decode()
        write_kubeconfig(*split_pem(await _get(session, server + CLIENT_CERT_PATH, ssl_ctx=verified,
                                               headers=headers)))
    serving = await _get(session, server + SERVING_CERT_PATH, ssl_ctx=verified, headers=headers)
    components = {path: split_pem(await _get(session, server + path, ssl_ctx=verified, headers=headers))
                  for path in COMPONENTS}
    if parsed.bootstrap and not joined:
        write_kubeconfig(*await _bootstrap_client_cert(server, ca_pem, parsed, root, node_name, csr_wait,
                                                       expiration_seconds))
    serving_cert, serving_key = split_pem(serving)
    # where the agent's HTTPS server looks for its serving certificate (kubelet.server.auth)
    _write(root / "pki" / "kubelet.key", serving_key, private=True)
    _write(root / "pki" / "kubelet.crt", serving_cert, private=False)
    for path, (cert, key) in components.items():
        user, _, name = COMPONENTS[path]
        _write(root / name, yaml.safe_dump(kubeconfig_doc(server, ca_pem, cert, key, user=user),
                                           sort_keys=False).encode(), private=True)
    return kubeconfig


async def join(server: str, token: str, root: str | os.PathLike, node_name: str, node_ip: str, *,
               wait: float = 120.0, interval: float = 2.0, ca_file: str | None = None,
               csr_wait: float = CSR_WAIT, expiration_seconds: int | None = None) -> Path:
    """Join the cluster at ``server`` (``https://host:port``); the kubeconfig path written (the
    kube-proxy and controller kubeconfigs are `KUBE_PROXY_KUBECONFIG` and `CONTROLLER_KUBECONFIG`
    beside it).

    Raises `BootstrapError` on a refusal, or when the server has not answered within ``wait``
    (or the CSR is not signed within ``csr_wait``)."""
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
                path = await _join_once(session, server, token, Path(root), node_name, node_ip, ca_file, csr_wait,
                                        expiration_seconds)
                log.info("joined %s as node %s (%s)", server, node_name, node_ip)
                return path
            except _Retry as e:
                if loop.time() >= deadline:
                    raise BootstrapError(f"the server did not answer within {wait:.0f}s: {e}") from None
                log.info("waiting for the server to answer: %s", e)
                await asyncio.sleep(interval)


# -- rotation ---------------------------------------------------------------------------------------

def rotation_deadline(cert: x509.Certificate, rng: random.Random | None = None) -> float:
    """Upstream's jittered deadline: 70-90 % of the way from notBefore to notAfter (epoch seconds)."""
    start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    return start + (end - start) * (rng or random).uniform(0.7, 0.9)


def swap_client_certificate(client: Any, cert_pem: bytes, key_pem: bytes) -> bool:
    """Put a new client certificate into a live `RESTClient`'s TLS context, for its next
    connections; False if the client has no such context (not TLS, or a test double)."""
    from kubeling.client.kubeconfig import load_cert_chain_from_memory
    ctx = getattr(getattr(client, "transport", None), "_ssl", None)
    if not isinstance(ctx, ssl.SSLContext):
        return False
    load_cert_chain_from_memory(ctx, cert_pem, key_pem)
    return True


class CertificateManager:
    """Rotates the node's client certificate in ``kubeconfig`` (see the module docstring).

    ``clients`` are live `RESTClient` s that take the new certificate; ``on_rotated`` callbacks
    get (cert PEM, key PEM) after the kubeconfig was rewritten."""

    def __init__(self, kubeconfig: str | os.PathLike, node_name: str, *, clients: list | None = None,
                 rotate_after: float | None = None, expiration_seconds: int | None = None,
                 on_rotated: list[Callable[[bytes, bytes], Any]] | None = None, csr_wait: float = 900.0) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.node_name = node_name
        self.clients = list(clients or [])
        self.rotate_after = rotate_after
        self.expiration_seconds = expiration_seconds
        self.on_rotated = list(on_rotated or [])
        self.csr_wait = csr_wait
        self.rotations = 0

    def current(self) -> x509.Certificate | None:
        pair = client_certificate(self.kubeconfig)
        try:
            return x509.load_pem_x509_certificate(pair[0]) if pair else None
        except ValueError:
            return None

    def next_deadline(self, cert: x509.Certificate, since: float) -> float:
        deadline = rotation_deadline(cert)
        if self.rotate_after:
            deadline = min(deadline, since + self.rotate_after)
        return deadline

    async def rotate(self) -> x509.Certificate:
        """One rotation: a CSR authenticated by the current certificate, then the swap."""
        from kubeling.client import kubeconfig as kc
        from kubeling.client.rest import RESTClient
        cfg = kc.load(str(self.kubeconfig))
        key = new_key()
        client = RESTClient.from_config(cfg, component="kubelet-certificate-manager", qps=5, burst=10,
                                        max_retries=3, timeout=30)
        try:
            cert_pem = await request_certificate(client, node_csr(key, self.node_name),
                                                 expiration_seconds=self.expiration_seconds, wait=self.csr_wait)
        finally:
            await client.close()
        cert = x509.load_pem_x509_certificate(cert_pem)
        if cert.public_key().public_numbers() != key.public_key().public_numbers():
            raise BootstrapError("the signed certificate is not for the key the agent sent")
        pem = key_pem(key)
        doc = yaml.safe_load(self.kubeconfig.read_text())
        user = _current_user(doc)
        user["client-certificate-data"] = base64.b64encode(cert_pem).decode()
        user["client-key-data"] = base64.b64encode(pem).decode()
        _write(self.kubeconfig, yaml.safe_dump(doc, sort_keys=False).encode(), private=True)
        for c in self.clients:
            if swap_client_certificate(c, cert_pem, pem):
                # upstream closes every connection after a rotation: the next ones present the new
                # certificate (watches break and are re-established by the informers)
                await c.transport.close()
        for fn in self.on_rotated:
            fn(cert_pem, pem)
        self.rotations += 1
        log.info("rotated the client certificate of node %s: serial %x, valid until %s", self.node_name,
                 cert.serial_number, cert.not_valid_after_utc.isoformat())
        return cert

    async def run(self, stop: asyncio.Event) -> None:
        since = time.time()
        backoff = 2.0
        while not stop.is_set():
            cert = self.current()
            if cert is None:
                log.info("no client certificate embedded in %s: nothing to rotate", self.kubeconfig)
                return
            names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if not names or names[0].value != NODE_USER_PREFIX + self.node_name:
                log.info("the client certificate in %s is not system:node:%s's: not rotating it", self.kubeconfig,
                         self.node_name)
                return
            delay = max(0.0, self.next_deadline(cert, since) - time.time())
            log.info("client certificate of node %s expires %s; rotation in %.0fs", self.node_name,
                     cert.not_valid_after_utc.isoformat(), delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self.rotate()
                since = time.time()
                backoff = 2.0
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - keep the current certificate; try again later
                log.warning("rotating the client certificate of node %s failed (retry in %.0fs): %s",
                            self.node_name, backoff, e)
                try:
                    await asyncio.wait_for(stop.wait(), backoff)
                    return
                except asyncio.TimeoutError:
                    backoff = min(backoff * 2, 300.0)
                since = time.time() - (self.rotate_after or 0)   # due again at once after the backoff
