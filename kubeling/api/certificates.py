"""certificates.k8s.io helpers shared by the API server, the signers and the approver
(upstream ``pkg/apis/certificates/helpers.go`` and ``pkg/controller/certificates/authority``).

- `parse_csr`: a PEM ``CERTIFICATE REQUEST`` (what ``spec.request`` holds, base64-decoded) to a
  `cryptography` CSR, with upstream's errors; `check_signature` verifies its self-signature.
- `validate_kubelet_client_csr` / `validate_kubelet_serving_csr`: upstream's shape checks of
  node client and serving requests (subject, SANs, usages); None when fine, else the message.
- `validate_apiserver_client_usages`: the kube-apiserver-client signer's usage rule.
- `sign`: issue a certificate for a request from a CA, as upstream's ``PermissiveSigningPolicy``
  (usages → key usage / extended key usage, 5 minutes backdated, capped at the CA's expiry).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

GROUP = "certificates.k8s.io"
KUBE_APISERVER_CLIENT = "kubernetes.io/kube-apiserver-client"
KUBE_APISERVER_CLIENT_KUBELET = "kubernetes.io/kube-apiserver-client-kubelet"
KUBELET_SERVING = "kubernetes.io/kubelet-serving"
LEGACY_UNKNOWN = "kubernetes.io/legacy-unknown"

# usage -> (KeyUsage attribute | None, ExtendedKeyUsage OID | None)
_KEY_USAGES = {
    "signing": "digital_signature",
    "digital signature": "digital_signature",
    "content commitment": "content_commitment",
    "key encipherment": "key_encipherment",
    "key agreement": "key_agreement",
    "data encipherment": "data_encipherment",
    "cert sign": "key_cert_sign",
    "crl sign": "crl_sign",
    "encipher only": "encipher_only",
    "decipher only": "decipher_only",
}
_MS_SGC = x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.3")
_NS_SGC = x509.ObjectIdentifier("2.16.840.1.113730.4.1")
_EXT_USAGES = {
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "s/mime": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "ipsec end system": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
    "ipsec tunnel": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6"),
    "ipsec user": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.7"),
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "microsoft sgc": _MS_SGC,
    "netscape sgc": _NS_SGC,
}
ALL_USAGES = tuple(sorted(set(_KEY_USAGES) | set(_EXT_USAGES)))


class CSRError(ValueError):
    """A request that does not parse or verify; ``str()`` is upstream's message."""


def decode_request(value) -> bytes:
    """``spec.request`` as stored (base64 text) → PEM bytes; raises `CSRError`."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise CSRError("PEM block type must be CERTIFICATE REQUEST")
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, TypeError) as e:
        raise CSRError(f"illegal base64 data: {e}") from None


def _pem_blocks(data: bytes) -> list[tuple[str, bytes, bool]]:
    """(type, DER, has headers) for each PEM block in ``data`` (text around them ignored)."""
    out = []
    text = data.decode("latin-1")
    pos = 0
    while True:
        start = text.find("-----BEGIN ", pos)
        if start < 0:
            return out
        eol = text.find("-----", start + 11)
        if eol < 0:
            return out
        label = text[start + 11:eol]
        end_marker = f"-----END {label}-----"
        end = text.find(end_marker, eol + 5)
        if end < 0:
            return out
        body = text[eol + 5:end]
        lines = [ln.strip() for ln in body.strip().splitlines()]
        headers = any(":" in ln for ln in lines)
        b64 = "".join(ln for ln in lines if ln and ":" not in ln)
        try:
            der = base64.b64decode(b64, validate=True)
        except ValueError:
            pos = end + len(end_marker)
            continue
        out.append((label, der, headers))
        pos = end + len(end_marker)


def parse_csr(pem: bytes) -> x509.CertificateSigningRequest:
    """The first PEM block of ``pem`` as a certificate request (upstream's ``ParseCSR``)."""
    blocks = _pem_blocks(pem)
    if not blocks or blocks[0][0] != "CERTIFICATE REQUEST":
        raise CSRError("PEM block type must be CERTIFICATE REQUEST")
    try:
        return x509.load_der_x509_csr(blocks[0][1])
    except ValueError as e:
        raise CSRError(f"x509: malformed certificate request: {e}") from None


def check_signature(req: x509.CertificateSigningRequest) -> None:
    try:
        ok = req.is_signature_valid
    except Exception as e:  # noqa: BLE001 - an unsupported algorithm is an invalid request, not a 500
        raise CSRError(f"x509: cannot verify signature: {e}") from None
    if not ok:
        raise CSRError("x509: signature verification failure")


def validate_certificate_pem(data: bytes) -> str | None:
    """Upstream's ``validateCertificate`` for ``status.certificate``: None when fine."""
    if not data:
        return None
    blocks = _pem_blocks(data)
    if not blocks:
        return "must contain at least one CERTIFICATE PEM block"
    for label, der, headers in blocks:
        if label != "CERTIFICATE":
            return f'only CERTIFICATE PEM blocks are allowed, found "{label}"'
        if headers:
            return "no PEM block headers are permitted"
        try:
            x509.load_der_x509_certificate(der)
        except ValueError as e:
            return f"x509: malformed certificate: {e}"
    return None


def organizations(req: x509.CertificateSigningRequest) -> list[str]:
    return [a.value for a in req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def common_name(req: x509.CertificateSigningRequest) -> str:
    cns = req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return cns[0].value if cns else ""


def _sans(req: x509.CertificateSigningRequest) -> x509.SubjectAlternativeName | None:
    try:
        return req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def san_lists(req) -> tuple[list, list, list, list]:
    """DNS names, IP addresses, email addresses and URIs the request asks for."""
    san = _sans(req)
    if san is None:
        return [], [], [], []
    return (san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress),
            san.get_values_for_type(x509.RFC822Name), san.get_values_for_type(x509.UniformResourceIdentifier))


KUBELET_SERVING_USAGES = {"digital signature", "key encipherment", "server auth"}
KUBELET_SERVING_USAGES_NO_RSA = {"digital signature", "server auth"}
KUBELET_CLIENT_USAGES = {"digital signature", "key encipherment", "client auth"}
KUBELET_CLIENT_USAGES_NO_RSA = {"digital signature", "client auth"}


def validate_kubelet_serving_csr(req, usages) -> str | None:
    """Upstream's ``ValidateKubeletServingCSR``."""
    if organizations(req) != ["system:nodes"]:
        return "subject organization is not system:nodes"
    dns, ips, emails, uris = san_lists(req)
    if not dns and not ips:
        return "DNS or IP subjectAltName is required"
    if emails:
        return "Email subjectAltNames are not allowed"
    if uris:
        return "URI subjectAltNames are not allowed"
    got = set(usages or ())
    if got != KUBELET_SERVING_USAGES and got != KUBELET_SERVING_USAGES_NO_RSA:
        return "usages did not match [" + " ".join(sorted(KUBELET_SERVING_USAGES)) + "]"
    if not common_name(req).startswith("system:node:"):
        return "subject common name does not begin with system:node:"
    return None


def validate_kubelet_client_csr(req, usages) -> str | None:
    """Upstream's ``ValidateKubeletClientCSR``."""
    if organizations(req) != ["system:nodes"]:
        return "subject organization is not system:nodes"
    dns, ips, emails, uris = san_lists(req)
    if dns:
        return "DNS subjectAltNames are not allowed"
    if emails:
        return "Email subjectAltNames are not allowed"
    if ips:
        return "IP subjectAltNames are not allowed"
    if uris:
        return "URI subjectAltNames are not allowed"
    if not common_name(req).startswith("system:node:"):
        return "subject common name does not begin with system:node:"
    got = set(usages or ())
    if got != KUBELET_CLIENT_USAGES and got != KUBELET_CLIENT_USAGES_NO_RSA:
        return "usages did not match [" + " ".join(sorted(KUBELET_CLIENT_USAGES)) + "]"
    return None


def validate_apiserver_client_usages(usages) -> str | None:
    """The kube-apiserver-client signer's rule: ``client auth`` required, only digital signature
    and key encipherment besides."""
    has_client_auth = False
    for u in usages or ():
        if u in ("digital signature", "key encipherment"):
            continue
        if u == "client auth":
            has_client_auth = True
            continue
        return f"invalid usage for client certificate: {u}"
    if not has_client_auth:
        return "missing required usage for client certificate: client auth"
    return None


def _key_usage(names: set[str]) -> x509.KeyUsage:
    flags = {v: False for v in set(_KEY_USAGES.values())}
    for n in names:
        flags[_KEY_USAGES[n]] = True
    if not flags["key_agreement"]:  # cryptography allows these only with key agreement
        flags["encipher_only"] = flags["decipher_only"] = False
    return x509.KeyUsage(**flags)


def sign(ca_cert: x509.Certificate, ca_key, req: x509.CertificateSigningRequest, usages: list[str],
         ttl: float, *, backdate: float = 300.0, short: float = 8 * 3600.0,
         now: dt.datetime | None = None) -> bytes:
    """A PEM certificate for ``req`` signed by ``ca_cert``/``ca_key``, valid ``ttl`` seconds
    (upstream's ``PermissiveSigningPolicy`` with a 5 minute backdate); raises ValueError for an
    unknown usage or an expired CA."""
    now = now or dt.datetime.now(dt.timezone.utc)
    unknown = [u for u in usages if u not in _KEY_USAGES and u not in _EXT_USAGES]
    if unknown:
        raise ValueError(f"unrecognized usage: {unknown[0]}")
    ca_not_after = ca_cert.not_valid_after_utc
    if now >= ca_not_after:
        raise ValueError("refusing to sign a certificate that expired in the past")
    not_before = now - dt.timedelta(seconds=backdate)
    not_after = now + dt.timedelta(seconds=ttl) if ttl < short else not_before + dt.timedelta(seconds=ttl)
    not_after = min(not_after, ca_not_after)
    b = (x509.CertificateBuilder()
         .subject_name(req.subject)
         .issuer_name(ca_cert.subject)
         .public_key(req.public_key())
         .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1)
         .not_valid_before(not_before)
         .not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    key_names = {u for u in usages if u in _KEY_USAGES}
    if key_names:
        b = b.add_extension(_key_usage(key_names), critical=True)
    ext = []
    for u in usages:
        if u in _EXT_USAGES and _EXT_USAGES[u] not in ext:
            ext.append(_EXT_USAGES[u])
    if ext:
        b = b.add_extension(x509.ExtendedKeyUsage(ext), critical=False)
    dns, ips, emails, uris = san_lists(req)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns] + [x509.IPAddress(i) for i in ips] + \
        [x509.RFC822Name(e) for e in emails] + [x509.UniformResourceIdentifier(u) for u in uris]
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    try:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    except (TypeError, ValueError):
        pass
    cert = b.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def is_rsa(req: x509.CertificateSigningRequest) -> bool:
    return isinstance(req.public_key(), rsa.RSAPublicKey)


# -- conditions ------------------------------------------------------------------------------

def has_true_condition(csr: dict, ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status") == "True"
               for c in (csr.get("status") or {}).get("conditions") or ())


def approval_state(csr: dict) -> tuple[bool, bool]:
    """(approved, denied), as upstream's ``GetCertApprovalCondition``."""
    approved = denied = False
    for c in (csr.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Approved":
            approved = True
        elif c.get("type") == "Denied":
            denied = True
    return approved, denied


def is_approved(csr: dict) -> bool:
    approved, denied = approval_state(csr)
    return approved and not denied
