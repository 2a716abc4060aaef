"""The cluster's PKI, generated on first start as k3s does, and the admin kubeconfig.

Layout under ``<data-dir>/pki``::

    ca.crt, ca.key                 the cluster CA (10 years)
    apiserver.crt, apiserver.key   serving certificate for 127.0.0.1, localhost, the node's name,
                                   kubernetes.default.svc.* and the first service IP
    admin.crt, admin.key           client certificate: CN=kubernetes-admin, O=system:masters
    apiserver-kubelet-client.crt/.key   the API server's client certificate to node agents:
                                   CN=kube-apiserver-kubelet-client (bound to system:kubelet-api-admin;
                                   one from an older release with O=system:masters is reissued)
    <component>.crt, .key          the server's children (`PKI.issue_component`, `COMPONENTS`):
                                   scheduler CN=system:kube-scheduler, controller-manager
                                   CN=system:kube-controller-manager, dns CN=system:kubeling-dns,
                                   ingress CN=system:kubeling-ingress; no O: only admin is a master
    service-account.key, .pub      RSA 2048: signs service account tokens (serviceaccount.py)
    node-<name>.crt, .key          a node agent's client certificate (`PKI.issue_node`):
                                   CN=system:node:<name>, O=system:nodes

Files are written once and reused on every later start; a missing file is
regenerated from the CA that exists (a missing service account key is a new key: tokens
signed by the old one stop working, as with upstream's key rotation without the old key). Keys are EC P-256 (fast to generate and
handshake; upstream accepts them). ``pki/`` is 0700 and keys are 0600 (existing
ones are narrowed on every start).

Every file is written atomically (a temp file in the same directory, fsynced,
renamed): a crash or a full disk leaves the old file or the new one, never a
partial one, and no temp file. A failed write raises
:class:`~kubeling.apiserver.datadir.DataDirError` with one line.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import tempfile
import threading
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeling.apiserver.datadir import DataDirError

ADMIN_USER = "kubernetes-admin"
ADMIN_GROUP = "system:masters"
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"

# the server's children: file stem -> the user their client certificate names (no groups; the RBAC
# bootstrap binds each user to its role)
COMPONENTS = {
    "scheduler": "system:kube-scheduler",
    "controller-manager": "system:kube-controller-manager",
    "dns": "system:kubeling-dns",
    "ingress": "system:kubeling-ingress",
}


def cert_subject(path: Path) -> tuple[str, list[str]]:
    """The (CN, [O...]) of the certificate at ``path``."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return (str(cn[0]) if cn else ""), [str(o) for o in orgs]


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically; DataDirError (one line) if that fails."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o600 if private else 0o644)
            f.write(data)
            f.flush()
            os.fsync(fd)
        os.replace(tmp, path)
        tmp = None
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # make the rename itself durable
        finally:
            os.close(dfd)
    except OSError as e:
        raise DataDirError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject: x509.Name, issuer: x509.Name, pub, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days)))


class PKI:
    """Loads or creates the cluster's certificates under ``<data_dir>/pki``."""

    def __init__(self, data_dir: str | os.PathLike, *, hosts: list[str] | None = None) -> None:
        self.dir = Path(data_dir) / "pki"
        self.hosts = hosts or []
        # issuing writes a key and a certificate as two files: joins served on worker threads at
        # once (several agents joining) must not interleave them
        self._issuing = threading.Lock()

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def kubelet_client_cert(self) -> Path:
        return self.dir / "apiserver-kubelet-client.crt"

    @property
    def kubelet_client_key(self) -> Path:
        return self.dir / "apiserver-kubelet-client.key"

    @property
    def service_account_key(self) -> Path:
        return self.dir / "service-account.key"

    @property
    def service_account_pub(self) -> Path:
        return self.dir / "service-account.pub"

    def kubelet_client(self) -> tuple[Path, Path]:
        """The API server's client certificate and key for calls to node agents (upstream's
        ``--kubelet-client-certificate``); issued by `ensure`."""
        return self.kubelet_client_cert, self.kubelet_client_key

    def ensure(self) -> None:
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)  # older releases made it 0755
            for key in self.dir.glob("*.key"):
                os.chmod(key, 0o600)
        except OSError as e:
            raise DataDirError(f"cannot prepare {self.dir}: {e.strerror or e}") from None
        if not self.ca_cert.exists() or not (self.dir / "ca.key").exists():
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kubeling-ca@{int(dt.datetime.now().timestamp())}")])
            cert = (_builder(name, name, key.public_key(), 3650)
                    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                    .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
                    .sign(key, hashes.SHA256()))
            _write(self.dir / "ca.key", _key_pem(key), private=True)
            _write(self.ca_cert, _cert_pem(cert))
            for p in (self.serving_cert, self.admin_cert, self.kubelet_client_cert, *self.dir.glob("node-*.crt"),
                      *(self.dir / f"{n}.crt" for n in COMPONENTS)):
                p.unlink(missing_ok=True)
        if not self.serving_cert.exists():
            self._issue(self.serving_cert, self.serving_key, "kube-apiserver", [], server=True)
        if not self.admin_cert.exists():
            self._issue(self.admin_cert, self.admin_key, ADMIN_USER, [ADMIN_GROUP], server=False)
        if not self._has_subject(self.kubelet_client_cert, KUBELET_CLIENT_USER, []):
            self._issue(self.kubelet_client_cert, self.kubelet_client_key, KUBELET_CLIENT_USER, [], server=False)
        self._ensure_service_account_key()

    def _ensure_service_account_key(self) -> None:
        if not self.service_account_key.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write(self.service_account_key, _key_pem(key), private=True)
            self.service_account_pub.unlink(missing_ok=True)
        if not self.service_account_pub.exists():
            key = serialization.load_pem_private_key(self.service_account_key.read_bytes(), None)
            _write(self.service_account_pub, key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def issue_node(self, name: str) -> tuple[Path, Path]:
        """A node agent's client certificate (``CN=system:node:<name>``, ``O=system:nodes``), kept in
        ``pki/node-<name>.crt`` / ``.key``: issued once, reused after."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid node name {name!r}")
        cert, key = self.dir / f"node-{name}.crt", self.dir / f"node-{name}.key"
        with self._issuing:
            if not (cert.exists() and key.exists()):
                self._issue(cert, key, NODE_USER_PREFIX + name, [NODES_GROUP], server=False)
        return cert, key

    def _has_subject(self, cert: Path, cn: str, orgs: list[str]) -> bool:
        if not cert.exists() or not cert.with_suffix(".key").exists():
            return False
        try:
            return cert_subject(cert) == (cn, orgs)
        except (OSError, ValueError):
            return False

    def issue_component(self, name: str) -> tuple[Path, Path]:
        """The client certificate of the child ``name`` (a key of `COMPONENTS`), ``pki/<name>.crt``
        / ``.key``: issued once (again if its subject is not the one wanted), reused after."""
        cert, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        with self._issuing:
            if not self._has_subject(cert, COMPONENTS[name], []):
                self._issue(cert, key, COMPONENTS[name], [], server=False)
        return cert, key

    def write_component_kubeconfig(self, name: str, server: str, path: str | os.PathLike | None = None) -> Path:
        """The kubeconfig of the child ``name`` with its own identity: ``<data-dir>/<name>.kubeconfig``
        unless ``path`` is given, 0600."""
        cert, key = self.issue_component(name)
        target = Path(path) if path else self.dir.parent / f"{name}.kubeconfig"
        write_kubeconfig(target, server, self, user=COMPONENTS[name], cert=cert, key=key)
        return target

    def write_node_kubeconfig(self, name: str, server: str, path: str | os.PathLike | None = None) -> Path:
        """The kubeconfig an agent uses (its own identity): ``<data-dir>/agent/kubelet.kubeconfig``
        unless ``path`` is given. The directory is made 0700, the file 0600."""
        cert, key = self.issue_node(name)
        target = Path(path) if path else self.dir.parent / "agent" / "kubelet.kubeconfig"
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise DataDirError(f"cannot prepare {target.parent}: {e.strerror or e}") from None
        write_kubeconfig(target, server, self, user=NODE_USER_PREFIX + name, cert=cert, key=key)
        return target

    def issue_client_once(self, cert_path: Path, key_path: Path, user: str, groups: list[str]) -> None:
        """`issue_client` unless both files exist, as one step among concurrent callers."""
        with self._issuing:
            if not (cert_path.exists() and key_path.exists()):
                self._issue(cert_path, key_path, user, groups, server=False)

    def issue_client(self, cert_path: Path, key_path: Path, user: str, groups: list[str]) -> None:
        """A client certificate for a component or user (e.g. a node agent), signed by the CA."""
        self._issue(cert_path, key_path, user, groups, server=False)

    def _issue(self, cert_path: Path, key_path: Path, cn: str, orgs: list[str], server: bool) -> None:
        ca_key = serialization.load_pem_private_key((self.dir / "ca.key").read_bytes(), None)
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        b = _builder(x509.Name(attrs), ca.subject, key.public_key(), 365 * 5)
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        b = b.add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        if server:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            names: list[x509.GeneralName] = []
            dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local"]
            ips = ["127.0.0.1", "::1", "10.43.0.1"]
            for h in self.hosts:
                try:
                    ipaddress.ip_address(h)
                    ips.append(h)
                except ValueError:
                    dns.append(h)
            names += [x509.DNSName(d) for d in dict.fromkeys(dns)]
            names += [x509.IPAddress(ipaddress.ip_address(i)) for i in dict.fromkeys(ips)]
            b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        _write(key_path, _key_pem(key), private=True)
        _write(cert_path, _cert_pem(cert))


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: str | os.PathLike, server: str, pki: PKI, *, cluster: str = "kubeling",
                     user: str = "admin", cert: Path | None = None, key: Path | None = None) -> None:
    """A kubeconfig with the CA and a client certificate embedded, so it works from any directory."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server,
                                                   "certificate-authority-data": _b64(pki.ca_cert)}}],
        "users": [{"name": user, "user": {"client-certificate-data": _b64(cert or pki.admin_cert),
                                          "client-key-data": _b64(key or pki.admin_key)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }
    _write(Path(path), yaml.safe_dump(cfg, sort_keys=False).encode(), private=True)
