"""Acceptance 8, kopf's part: ``@kopf.on.validate`` and ``@kopf.on.mutate`` end to end.

kopf (fixtures/kopf_webhook_operator.py, run unchanged with ``kopf run --standalone``) serves its
admission webhooks over HTTPS on 127.0.0.1 with a self-signed certificate made here with
`cryptography`, and itself creates the ValidatingWebhookConfiguration and
MutatingWebhookConfiguration (``settings.admission.managed``) with the rules of its handlers for
the Widget CRD. Then, with real kubectl:

- a Widget above size 10 is refused with the handler's message, as ``admission webhook
  "size-check..." denied the request: ...``;
- a Widget of size 7 is created with the handler's warning printed by kubectl, and carries the
  label the mutating handler added;
- kopf logged no warnings or errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import harness
import pytest
from test_kopf import Operator
from tests.support.webhookserver import make_certs

FIXTURES = Path(__file__).parent / "fixtures"
GROUP, PLURAL = "webhook.e2e.kubeling.dev", "widgets"
MANAGED = "widgets.kopf.e2e.kubeling.dev"
RUN_FOR = 150  # seconds: the operator is killed after this, whatever happens


@pytest.fixture(scope="module")
def kc(tmp_path_factory):
    d = tmp_path_factory.mktemp("webhook-kopf")
    c = harness.started_cluster(d / "cluster", extra_args=("--disable-scheduler",))
    c.tmp = d
    c.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]}}))
    c.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=30s")
    c.kubectl("create", "namespace", "widgets")
    yield c
    c.stop()


def widget(name: str, size: int) -> str:
    return json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "Widget",
                       "metadata": {"name": name, "namespace": "widgets"}, "spec": {"size": size}})


def test_webhook_kopf_validate_and_mutate(kc):
    ca, cert, key = make_certs(kc.tmp)
    cert.write_bytes(cert.read_bytes() + ca)  # kopf serves the chain and hands it out as the caBundle
    op = Operator(kc, "widgets", "kopf_webhook_operator.py", {"KOPF_WEBHOOK_PORT": str(harness.free_port()),
                                                              "KOPF_WEBHOOK_CERT": str(cert), "KOPF_WEBHOOK_KEY": str(key)}, run_for=RUN_FOR)
    try:
        def configured():
            assert op.proc.poll() is None, "kopf exited:\n" + op.log()
            found = []
            for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
                p = kc.kubectl("get", kind, MANAGED, "-o", "json", check=False)
                if p.returncode != 0:
                    return None
                hooks = json.loads(p.stdout).get("webhooks") or []
                if not hooks or not all(h.get("rules") for h in hooks):
                    return None
                found.append(hooks[0])
            return found
        validating, mutating = op.wait(configured, "kopf created its webhook configurations", timeout=90)
        assert validating["clientConfig"]["url"].startswith("https://127.0.0.1:")
        assert validating["clientConfig"]["caBundle"]
        assert validating["rules"][0]["apiGroups"] == [GROUP] and validating["rules"][0]["resources"] == [PLURAL]
        assert validating["sideEffects"] == "None" and validating["timeoutSeconds"] == 30

        def refused():
            p = kc.kubectl("apply", "-f", "-", input=widget("huge", 20), check=False)
            if p.returncode == 0:  # applied before the server's cache saw the configuration
                kc.kubectl("delete", "widget", "huge", "-n", "widgets")
                return None
            return p
        p = op.wait(refused, "kopf's validating webhook refuses the huge widget")
        assert 'admission webhook "size-check.' in p.stderr
        assert "denied the request: a widget may not be larger than 10, not 20" in p.stderr
        assert kc.kubectl("get", "widget", "huge", "-n", "widgets", check=False).returncode != 0

        ok = kc.kubectl("apply", "-f", "-", input=widget("big", 7))
        assert "widget.webhook.e2e.kubeling.dev/big created" in ok.stdout
        assert "Warning: a widget of size 7 is large" in ok.stderr
        labels = json.loads(kc.kubectl("get", "widget", "big", "-n", "widgets", "-o",
                                       "jsonpath={.metadata.labels}").stdout)
        assert labels == {"kopf-mutated": "yes"}
        assert op.proc.poll() is None, "kopf exited:\n" + op.log()
    finally:
        op.close()
    # kopf logs the refusal it answered as an error of the handler; anything else is a problem
    expected = "Webhook 'size-check' failed permanently: a widget may not be larger than 10, not 20"
    assert [line for line in op.problems() if expected not in line] == [], op.log()
