"""The server's children's identities (`PKI.issue_component`, `write_component_kubeconfig`)."""

from __future__ import annotations

import base64
import os
import stat

import yaml
from cryptography import x509

from kubeling.apiserver.certs import COMPONENTS, PKI, cert_subject


def test_ident_component_certificates_name_their_user_and_no_group(tmp_path):
    pki = PKI(tmp_path)
    pki.ensure()
    assert COMPONENTS == {"scheduler": "system:kube-scheduler",
                          "controller-manager": "system:kube-controller-manager",
                          "dns": "system:kubeling-dns", "ingress": "system:kubeling-ingress"}
    for name, user in COMPONENTS.items():
        cert, key = pki.issue_component(name)
        assert cert_subject(cert) == (user, [])
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        again = pki.issue_component(name)
        assert again == (cert, key) and cert.read_bytes() == again[0].read_bytes()   # issued once
        path = pki.write_component_kubeconfig(name, "https://127.0.0.1:6443")
        assert path == tmp_path / f"{name}.kubeconfig"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        cfg = yaml.safe_load(path.read_text())
        assert cfg["users"][0]["name"] == user
        pem = base64.b64decode(cfg["users"][0]["user"]["client-certificate-data"])
        assert pem == cert.read_bytes()
        ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        assert x509.load_pem_x509_certificate(pem).issuer == ca.subject


def test_ident_component_certificate_with_another_subject_is_reissued(tmp_path):
    pki = PKI(tmp_path)
    pki.ensure()
    cert, key = pki.dir / "scheduler.crt", pki.dir / "scheduler.key"
    pki.issue_client(cert, key, "system:kube-scheduler", ["system:masters"])   # e.g. hand-made
    pki.issue_component("scheduler")
    assert cert_subject(cert) == ("system:kube-scheduler", [])


def test_ident_new_ca_reissues_component_certificates(tmp_path):
    pki = PKI(tmp_path)
    pki.ensure()
    cert, _ = pki.issue_component("dns")
    (pki.dir / "ca.key").unlink()
    pki.ensure()   # a new CA: every certificate it did not sign goes
    assert not cert.exists()
    cert, _ = pki.issue_component("dns")
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    assert x509.load_pem_x509_certificate(cert.read_bytes()).issuer == ca.subject
