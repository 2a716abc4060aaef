"""The CSR signers (upstream ``pkg/controller/certificates/signer``, ``--controllers`` name
``csrsigning``): issue certificates from the cluster CA for approved requests of

- ``kubernetes.io/kube-apiserver-client``: usages ``client auth`` (required), ``digital
  signature`` and ``key encipherment`` only;
- ``kubernetes.io/kube-apiserver-client-kubelet``: CN ``system:node:<name>``, O exactly
  ``system:nodes``, no SANs, usages {digital signature, [key encipherment,] client auth};
- ``kubernetes.io/kubelet-serving``: the same subject, a DNS or IP SAN required, no email or URI
  SANs, usages {digital signature, [key encipherment,] server auth}.

Other signer names are left alone (``kubernetes.io/legacy-unknown`` cannot be created through
certificates.k8s.io/v1 and has no signer here). A request that breaks its signer's rules gets a
``Failed`` condition, reason ``SignerValidationFailure``, with upstream's message, and no
certificate.

The CA is ``--cluster-signing-cert-file`` / ``--cluster-signing-key-file`` (``kubeling server``
passes ``<data-dir>/pki/ca.crt`` and ``ca.key``), reread when the files change. Certificates are
valid for ``spec.expirationSeconds`` capped by ``--cluster-signing-duration`` (default 1 year;
at least 10 minutes), backdated 5 minutes, never past the CA's own expiry. Without a CA the
controller logs once and signs nothing.

Key: the CSR's name. The status is written through ``/status`` (the controller's identity needs
``sign`` on the signer, as upstream's ``system:controller:certificate-controller`` has).
"""

from __future__ import annotations

import base64
import copy
import logging
import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kubeling.api import certificates as certs
from kubeling.client import is_not_found
from kubeling.controllers.base import Controller, ControllerContext

log = logging.getLogger(__name__)

GROUP, VERSION, RESOURCE = certs.GROUP, "v1", "certificatesigningrequests"
MANAGER = "certificate-controller"
DEFAULT_DURATION = 365 * 24 * 3600.0
MIN_DURATION = 600.0


def request_problem(signer: str, req, usages: list[str]) -> str | None:
    """Why ``signer`` refuses this request (upstream's isRequestForSigner checks), or None."""
    if signer == certs.KUBELET_SERVING:
        return certs.validate_kubelet_serving_csr(req, usages)
    if signer == certs.KUBE_APISERVER_CLIENT_KUBELET:
        return certs.validate_kubelet_client_csr(req, usages)
    if signer == certs.KUBE_APISERVER_CLIENT:
        return certs.validate_apiserver_client_usages(usages)
    raise ValueError(f"unrecognized signerName: {signer!r}")


SIGNERS = (certs.KUBE_APISERVER_CLIENT, certs.KUBE_APISERVER_CLIENT_KUBELET, certs.KUBELET_SERVING)


def duration_for(expiration_seconds, max_ttl: float) -> float:
    """Upstream's ``signer.duration``: the requested duration, capped at ``max_ttl``, at least 10 minutes."""
    if expiration_seconds is None:
        return max_ttl
    requested = float(expiration_seconds)
    if requested > max_ttl:
        return max_ttl
    return max(requested, MIN_DURATION)


class CAProvider:
    """The signing CA from two files, reloaded when either changes."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self._stamp: tuple | None = None
        self._ca: tuple | None = None

    def current(self):
        """(certificate, private key); raises OSError/ValueError when they cannot be read."""
        stamp = (os.stat(self.cert_file).st_mtime_ns, os.stat(self.key_file).st_mtime_ns)
        if stamp != self._stamp or self._ca is None:
            with open(self.cert_file, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            with open(self.key_file, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), None)
            self._ca, self._stamp = (cert, key), stamp
        return self._ca


class CSRSigningController(Controller):
    NAME = "csrsigning"
    WORKERS = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.csrs = ctx.informers.informer_for(GROUP, VERSION, RESOURCE)
        self.handle(self.csrs, on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new))
        cert_file = getattr(ctx, "cluster_signing_cert_file", "") or ""
        key_file = getattr(ctx, "cluster_signing_key_file", "") or ""
        self.ca = CAProvider(cert_file, key_file) if cert_file and key_file else None
        self.max_ttl = float(getattr(ctx, "cluster_signing_duration", 0) or DEFAULT_DURATION)
        self._warned = False

    def _enqueue(self, obj: dict) -> None:
        if obj.get("spec", {}).get("signerName") in SIGNERS:
            self.queue.add(obj["metadata"]["name"])

    async def sync(self, name: str) -> None:
        csr = self.csrs.get(name)
        if csr is None or (csr.get("status") or {}).get("certificate"):
            return
        if not certs.is_approved(csr) or certs.has_true_condition(csr, "Failed"):
            return
        spec = csr.get("spec") or {}
        signer = spec.get("signerName")
        if signer not in SIGNERS:
            return
        if self.ca is None:
            if not self._warned:
                log.warning("%s: no --cluster-signing-cert-file/--cluster-signing-key-file: not signing", self.NAME)
                self._warned = True
            return
        try:
            req = certs.parse_csr(certs.decode_request(spec.get("request") or ""))
        except certs.CSRError as e:
            raise RuntimeError(f'unable to parse csr "{name}": {e}') from None
        usages = list(spec.get("usages") or ())
        problem = request_problem(signer, req, usages)
        updated = copy.deepcopy(csr)  # the cached object is shared: change a copy
        status = updated.setdefault("status", {})
        if problem is not None:
            status.setdefault("conditions", []).append({
                "type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": problem})
            await self._write(updated, f"refused: {problem}")
            return
        cert, key = self.ca.current()
        pem = certs.sign(cert, key, req, usages, duration_for(spec.get("expirationSeconds"), self.max_ttl))
        status["certificate"] = base64.b64encode(pem).decode()
        await self._write(updated, "issued")

    async def _write(self, csr: dict, what: str) -> None:
        try:
            await self.client.update(GROUP, VERSION, RESOURCE, csr, subresource="status", field_manager=MANAGER)
            log.info("%s: %s %s", self.NAME, csr["metadata"]["name"], what)
        except Exception as e:
            if is_not_found(e):
                return
            raise
