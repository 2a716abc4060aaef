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
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import harness
import pytest
from tests.support.webhookserver import make_certs

FIXTURES = Path(__file__).parent / "fixtures"
GROUP, PLURAL = "webhook.e2e.kubeling.dev", "widgets"
MANAGED = "widgets.kopf.e2e.kubeling.dev"
RUN_FOR = 150  # seconds: the operator is killed after this, whatever happens


@pytest.fixture(scope="module")
def kc(tmp_path_factory):
    d = tmp_path_factory.mktemp("webhook-kopf")
    c = harness.Cluster(d / "cluster", extra_args=("--disable-scheduler",))
    try:
        c.start()
    except harness.ServerNotReady as e:
        c.stop()
        pytest.fail(str(e), pytrace=False)
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


class Operator:
    """``kopf run`` as a child process (its own process group), output collected by a thread."""

    def __init__(self, cluster, namespace: str, port: int, cert: Path, key: Path):
        env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), KOPF_WEBHOOK_PORT=str(port),
                   KOPF_WEBHOOK_CERT=str(cert), KOPF_WEBHOOK_KEY=str(key))
        for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
            env.pop(proxy, None)
        kopf = Path(sys.executable).parent / "kopf"
        self.proc = subprocess.Popen(
            [str(kopf), "run", "--standalone", "--namespace", namespace, "--verbose",
             str(FIXTURES / "kopf_webhook_operator.py")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env,
            start_new_session=True)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._timer = threading.Timer(RUN_FOR, self.kill)
        self._timer.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        return "\n".join(self.lines)

    def wait(self, fn, what: str, timeout: float = 60):
        try:
            return harness.eventually(fn, timeout=timeout, interval=0.5, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- kopf's output ---\n{self.log()}") from None

    def problems(self) -> list[str]:
        return [line for line in self.lines if any(m in line for m in ("[WARNING", "[ERROR", "[CRITICAL",
                                                                       "Traceback"))]

    def kill(self) -> None:
        with self._lock:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()

    def close(self) -> None:
        self._timer.cancel()
        self.kill()
        self._reader.join(10)
        self.proc.stdout.close()


def widget(name: str, size: int) -> str:
    return json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "Widget",
                       "metadata": {"name": name, "namespace": "widgets"}, "spec": {"size": size}})


def test_webhook_kopf_validate_and_mutate(kc):
    ca, cert, key = make_certs(kc.tmp)
    cert.write_bytes(cert.read_bytes() + ca)  # kopf serves the chain and hands it out as the caBundle
    op = Operator(kc, "widgets", harness.free_port(), cert, key)
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
