"""TLS material for nginx: checking ``kubernetes.io/tls`` Secrets, the PEM files nginx reads,
and the controller's default certificate.

- ``pem_from_secret(secret)`` returns the certificate chain followed by the key, or raises
  `InvalidCertificate` saying what is wrong (type, missing keys, bad PEM, a key that does not
  belong to the certificate) — nginx never sees material that would fail its config test.
- ``write_pem(path, pem)`` writes atomically with mode 0600.
- ``default_certificate(dir)`` makes (once) a self-signed certificate like ingress-nginx's
  "Kubernetes Ingress Controller Fake Certificate", for TLS requests no Ingress claims.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from base64 import b64decode
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SECRET_TYPE_TLS = "kubernetes.io/tls"
FAKE_CN = "Kubernetes Ingress Controller Fake Certificate"


class InvalidCertificate(ValueError):
    pass


def pem_from_secret(secret: dict) -> bytes:
    if secret.get("type") != SECRET_TYPE_TLS:
        raise InvalidCertificate(f"secret is of type {secret.get('type') or 'Opaque'!r}, not {SECRET_TYPE_TLS!r}")
    data = secret.get("data") or {}
    try:
        crt = b64decode(data.get("tls.crt") or "")
        key = b64decode(data.get("tls.key") or "")
    except (ValueError, TypeError):
        raise InvalidCertificate("tls.crt or tls.key is not base64")
    if not crt or not key:
        raise InvalidCertificate("secret has no tls.crt or no tls.key")
    try:
        certs = x509.load_pem_x509_certificates(crt)
    except ValueError as e:
        raise InvalidCertificate(f"tls.crt is not a PEM certificate: {e}")
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as e:
        raise InvalidCertificate(f"tls.key is not an unencrypted PEM private key: {e}")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (private.public_key().public_bytes(serialization.Encoding.DER, spki)
            != certs[0].public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise InvalidCertificate("tls.key does not match the certificate in tls.crt")
    return crt.rstrip(b"\n") + b"\n" + key.rstrip(b"\n") + b"\n"


def certificate_hosts(pem: bytes) -> list[str]:
    """The DNS names of the first certificate (its SANs, else its CN); [] if they do not parse."""
    try:
        cert = x509.load_pem_x509_certificates(pem)[0]
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = sans.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    except ValueError:
        return []
    return [str(n) for n in names] or [str(c) for c in cn]


def pem_file_name(namespace: str, name: str, pem: bytes) -> str:
    return f"{namespace}-{name}-{hashlib.sha256(pem).hexdigest()[:12]}.pem"


def write_pem(path: Path, pem: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def default_certificate(directory: Path) -> Path:
    path = directory / "default-fake-certificate.pem"
    if path.exists():
        return path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co"),
                      x509.NameAttribute(NameOID.COMMON_NAME, FAKE_CN)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("ingress.local")]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_pem(path, pem)
    return path
