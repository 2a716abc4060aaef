"""Acceptance 8 (webhooks), with real kubectl against a real server and a real HTTPS webhook server
(aiohttp, started by the test, certificate from `cryptography`; tests/support/webhookserver.py).

- A ValidatingWebhookConfiguration refuses a pod labelled ``deny=true`` with the webhook's message
  (``admission webhook "..." denied the request: ...``, as kubectl prints it); an unlabelled pod
  is let in and the webhook's warning reaches kubectl.
- A MutatingWebhookConfiguration adds a label through a JSONPatch.
- failurePolicy with the webhook down (connection refused) or slow (timeoutSeconds exceeded):
  Fail refuses with upstream's 500 ``failed calling webhook``, Ignore lets the write through.
- What the webhook receives: AdmissionReview v1 with uid, kind/resource, requestKind/Resource,
  userInfo, options and dryRun; with matchPolicy Equivalent, a rule naming apps/v1beta1
  Deployments matches an apps/v1 write and the webhook gets the object as apps/v1beta1.
- namespaceSelector, objectSelector and matchConditions (CEL) limit what is sent; bad
  configurations (a CEL expression that does not compile among them) are refused with upstream's
  field paths.

Each case works in a namespace of its own, selected by the webhook's namespaceSelector, so that
the webhooks never see another case's writes.
"""

from __future__ import annotations

import asyncio
import json
import socket

import harness
import pytest
from tests.support.webhookserver import WebhookServer

DENY_MESSAGE = "pods labelled deny=true are not allowed here"


def _validate(req: dict) -> dict:
    labels = ((req.get("object") or {}).get("metadata") or {}).get("labels") or {}
    if labels.get("deny") == "true":
        return {"allowed": False, "status": {"code": 403, "reason": "Forbidden", "message": DENY_MESSAGE}}
    return {"allowed": True, "warnings": ["checked by the e2e validator"]}


def _mutate(req: dict) -> dict:
    obj = req.get("object") or {}
    ops = []
    if not (obj.get("metadata") or {}).get("labels"):
        ops.append({"op": "add", "path": "/metadata/labels", "value": {}})
    ops.append({"op": "add", "path": "/metadata/labels/mutated-by", "value": "webhook"})
    return {"allowed": True, "patch": ops}


async def _slow(req: dict) -> dict:
    await asyncio.sleep(4)
    return {"allowed": True}


def _allow(req: dict) -> dict:
    return {"allowed": True}


@pytest.fixture(scope="module")
def hooks():
    s = WebhookServer({"/validate": _validate, "/mutate": _mutate, "/slow": _slow, "/allow": _allow}).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def wc(tmp_path_factory):
    c = harness.started_cluster(tmp_path_factory.mktemp("webhooks"), extra_args=("--disable-scheduler",))
    yield c
    c.stop()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def namespace(c, name: str, pods: bool = False) -> str:
    c.kubectl("create", "namespace", name)
    c.kubectl("label", "namespace", name, f"webhook-test={name}")
    if pods:  # the ServiceAccount admission plugin wants the namespace's default ServiceAccount
        harness.eventually(lambda: c.kubectl("get", "serviceaccount", "default", "-n", name, check=False)
                           .returncode == 0, timeout=60, what=f"serviceaccount default in {name}")
    return name


def hook(name: str, url: str, ca: str, ns: str, *, resources=("pods",), groups=("",), versions=("v1",),
         operations=("CREATE",), **extra) -> dict:
    h = {"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
         "clientConfig": {"url": url, "caBundle": ca},
         "namespaceSelector": {"matchLabels": {"webhook-test": ns}},
         "rules": [{"operations": list(operations), "apiGroups": list(groups), "apiVersions": list(versions),
                    "resources": list(resources)}]}
    h.update(extra)
    return h


def install(c, kind: str, name: str, *webhooks: dict) -> None:
    c.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name},
        "webhooks": list(webhooks)}))


def pod(name: str, ns: str, labels: dict | None = None) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
                       "spec": {"containers": [{"name": "c", "image": "busybox"}]}})


def test_webhook_validating_refuses_labelled_pod(wc, hooks):
    ns = namespace(wc, "wh-validate", pods=True)
    install(wc, "ValidatingWebhookConfiguration", "deny-labelled",
            hook("deny.webhooks.kubeling.test", hooks.url("/validate"), hooks.ca_bundle, ns))

    def refused():
        p = wc.kubectl("apply", "-f", "-", input=pod("bad", ns, {"deny": "true"}), check=False)
        if p.returncode == 0:
            wc.kubectl("delete", "pod", "bad", "-n", ns, "--wait=false")
            return None
        return p
    p = harness.eventually(refused, timeout=20, interval=0.5, what="the labelled pod refused")
    assert f'admission webhook "deny.webhooks.kubeling.test" denied the request: {DENY_MESSAGE}' in p.stderr
    assert "Error from server (Forbidden)" in p.stderr  # the webhook's reason and code are kept
    assert wc.kubectl("get", "pod", "bad", "-n", ns, check=False).returncode != 0
    p = wc.kubectl("apply", "-f", "-", input=pod("bad", ns, {"deny": "true"}), check=False, version="1.32")
    assert p.returncode != 0 and f'denied the request: {DENY_MESSAGE}' in p.stderr

    ok = wc.kubectl("apply", "-f", "-", input=pod("good", ns, {"deny": "false"}))
    assert "pod/good created" in ok.stdout
    assert "Warning: checked by the e2e validator" in ok.stderr

    req = next(r for r in reversed(hooks.reviews["/validate"]) if r["name"] == "good")
    assert req["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert req["resource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert req["requestKind"] == req["kind"] and req["requestResource"] == req["resource"]
    assert req["operation"] == "CREATE" and req["namespace"] == ns and req["dryRun"] is False
    assert req["userInfo"]["username"] == "kubernetes-admin" or "system:masters" in req["userInfo"]["groups"]
    assert req["options"]["kind"] == "CreateOptions" and req["options"]["apiVersion"] == "meta.k8s.io/v1"
    assert req["object"]["metadata"]["name"] == "good" and req["oldObject"] is None

    # a server-side dry run is sent with dryRun true (sideEffects None allows it)
    p = wc.kubectl("apply", "--dry-run=server", "-f", "-", input=pod("dry", ns, {"deny": "true"}), check=False)
    assert p.returncode != 0 and DENY_MESSAGE in p.stderr
    assert hooks.reviews["/validate"][-1]["dryRun"] is True


def test_webhook_mutating_adds_label(wc, hooks):
    ns = namespace(wc, "wh-mutate", pods=True)
    install(wc, "MutatingWebhookConfiguration", "add-label",
            hook("label.webhooks.kubeling.test", hooks.url("/mutate"), hooks.ca_bundle, ns))

    def mutated():
        wc.kubectl("apply", "-f", "-", input=pod("p", ns))
        labels = wc.kubectl("get", "pod", "p", "-n", ns, "-o", "jsonpath={.metadata.labels}").stdout
        if "mutated-by" in labels:
            return labels
        wc.kubectl("delete", "pod", "p", "-n", ns, "--grace-period=0", "--force", check=False)
        return None
    labels = harness.eventually(mutated, timeout=30, interval=0.5, what="the pod labelled by the webhook")
    assert json.loads(labels)["mutated-by"] == "webhook"
    # an object selector that does not match: the webhook is not called
    install(wc, "MutatingWebhookConfiguration", "add-label",
            hook("label.webhooks.kubeling.test", hooks.url("/mutate"), hooks.ca_bundle, ns,
                 objectSelector={"matchLabels": {"mutate": "yes"}}))

    def selected():
        wc.kubectl("apply", "-f", "-", input=pod("q", ns))
        labels = json.loads(wc.kubectl("get", "pod", "q", "-n", ns, "-o", "jsonpath={.metadata.labels}").stdout
                            or "{}")
        wc.kubectl("delete", "pod", "q", "-n", ns, "--grace-period=0", "--force", check=False)
        return "mutated-by" not in labels
    harness.eventually(selected, timeout=30, interval=0.5, what="the objectSelector honoured")
    wc.kubectl("apply", "-f", "-", input=pod("r", ns, {"mutate": "yes"}))
    assert "mutated-by" in wc.kubectl("get", "pod", "r", "-n", ns, "-o", "jsonpath={.metadata.labels}").stdout


@pytest.mark.parametrize("case", ["down", "slow"])
def test_webhook_failure_policy(wc, hooks, case):
    ns = namespace(wc, f"wh-{case}")
    url = f"https://127.0.0.1:{closed_port()}/validate" if case == "down" else hooks.url("/slow")
    name = f"{case}.webhooks.kubeling.test"
    install(wc, "ValidatingWebhookConfiguration", f"{case}-policy",
            hook(name, url, hooks.ca_bundle, ns, resources=("configmaps",), failurePolicy="Fail",
                 timeoutSeconds=1))

    def refused():
        p = wc.kubectl("create", "configmap", "cm", "-n", ns, check=False)
        if p.returncode == 0:
            wc.kubectl("delete", "configmap", "cm", "-n", ns)
            return None
        return p
    p = harness.eventually(refused, timeout=30, interval=0.5, what="the write refused by failurePolicy Fail")
    why = "connect: connection refused" if case == "down" else "context deadline exceeded"
    # kubectl create prints "error: failed to create configmap: <message>" (a 500 InternalError)
    assert f'Internal error occurred: failed calling webhook "{name}": failed to call webhook: Post "{url}' \
           f'?timeout=1s": ' in p.stderr
    assert why in p.stderr

    install(wc, "ValidatingWebhookConfiguration", f"{case}-policy",
            hook(name, url, hooks.ca_bundle, ns, resources=("configmaps",), failurePolicy="Ignore",
                 timeoutSeconds=1))
    harness.eventually(lambda: wc.kubectl("create", "configmap", "cm2", "-n", ns, check=False).returncode == 0,
                       timeout=30, interval=0.5, what="the write let through by failurePolicy Ignore")
    if case == "slow":
        assert any(r["name"] == "cm2" for r in hooks.reviews["/slow"])  # it was called, and timed out


def test_webhook_match_policy_equivalent(wc, hooks):
    ns = namespace(wc, "wh-equivalent")
    install(wc, "ValidatingWebhookConfiguration", "equivalent",
            hook("v1beta1.webhooks.kubeling.test", hooks.url("/allow"), hooks.ca_bundle, ns,
                 groups=("apps",), versions=("v1beta1",), resources=("deployments",)),
            hook("exact.webhooks.kubeling.test", hooks.url("/validate"), hooks.ca_bundle, ns,
                 groups=("apps",), versions=("v1beta1",), resources=("deployments",), matchPolicy="Exact"))
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": ns},
              "spec": {"selector": {"matchLabels": {"app": "x"}},
                       "template": {"metadata": {"labels": {"app": "x"}},
                                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}

    def seen():
        n = f"d{len(hooks.reviews['/allow'])}-{id(seen) % 1000}"
        deploy["metadata"]["name"] = n
        wc.kubectl("apply", "-f", "-", input=json.dumps(deploy))
        return any(r["name"] == n for r in hooks.reviews["/allow"])
    harness.eventually(seen, timeout=30, interval=0.5, what="the v1beta1 rule matching an apps/v1 write")
    req = hooks.reviews["/allow"][-1]
    assert req["kind"] == {"group": "apps", "version": "v1beta1", "kind": "Deployment"}
    assert req["resource"] == {"group": "apps", "version": "v1beta1", "resource": "deployments"}
    assert req["requestKind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert req["requestResource"] == {"group": "apps", "version": "v1", "resource": "deployments"}
    assert req["object"]["apiVersion"] == "apps/v1beta1"
    # matchPolicy Exact: the same rule does not match an apps/v1 write
    assert not any(r.get("requestKind", {}).get("group") == "apps" for r in hooks.reviews["/validate"])


def test_webhook_configuration_validation(wc, hooks):
    bad = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
           "metadata": {"name": "bad"},
           "webhooks": [{"name": "short", "admissionReviewVersions": ["v1"],
                         "clientConfig": {"url": "http://127.0.0.1/x?a=b"}, "timeoutSeconds": 31,
                         "rules": [{"operations": ["CREATE", "*"], "apiGroups": [""], "apiVersions": ["v1"],
                                    "resources": ["pods"]}]}]}
    p = wc.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert p.returncode != 0
    err = p.stderr
    assert 'The ValidatingWebhookConfiguration "bad" is invalid' in err
    assert 'webhooks[0].name: Invalid value: "short": should be a domain with at least three segments ' \
           'separated by dots' in err
    assert "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun" in err
    assert "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds" in err
    assert "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme" in err
    assert 'webhooks[0].clientConfig.url: Invalid value: "a=b": query parameters are not permitted in the URL' in err
    assert "webhooks[0].rules[0].operations: Invalid value:" in err and \
           "if '*' is present, must not specify other operations" in err

    # the defaults, as upstream's v1 defaulting
    install(wc, "MutatingWebhookConfiguration", "defaults",
            {"name": "defaults.webhooks.kubeling.test", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "clientConfig": {"service": {"namespace": "default", "name": "nothing"}},
             "rules": [{"operations": ["CREATE"], "apiGroups": ["nothing.example"], "apiVersions": ["v1"],
                        "resources": ["things"]}]})
    got = json.loads(wc.kubectl("get", "mutatingwebhookconfiguration", "defaults", "-o", "json").stdout)
    h = got["webhooks"][0]
    assert (h["failurePolicy"], h["matchPolicy"], h["timeoutSeconds"], h["reinvocationPolicy"]) == \
           ("Fail", "Equivalent", 10, "Never")
    assert h["namespaceSelector"] == {} and h["objectSelector"] == {}
    assert h["rules"][0]["scope"] == "*" and h["clientConfig"]["service"]["port"] == 443
    table = wc.kubectl("get", "mutatingwebhookconfigurations", "defaults").stdout
    assert table.split("\n")[0].split() == ["NAME", "WEBHOOKS", "AGE"] and " 1 " in table.split("\n")[1]
    wc.kubectl("delete", "mutatingwebhookconfiguration", "defaults")


def test_webhook_match_conditions(wc, hooks):
    ns = namespace(wc, "wh-conditions")
    install(wc, "ValidatingWebhookConfiguration", "conditions",
            hook("conditions.webhooks.kubeling.test", hooks.url("/validate"), hooks.ca_bundle, ns,
                 resources=("configmaps",),
                 matchConditions=[{"name": "not-skipped", "expression":
                                   "!has(object.metadata.labels) || !('skip' in object.metadata.labels)"}]))
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns, "labels": {"deny": "true"}}}

    def refused():
        cm["metadata"]["name"] = "denied"
        p = wc.kubectl("apply", "-f", "-", input=json.dumps(cm), check=False)
        if p.returncode == 0:
            wc.kubectl("delete", "configmap", "denied", "-n", ns)
            return None
        return p
    p = harness.eventually(refused, timeout=30, interval=0.5, what="the webhook refusing deny=true")
    assert f'admission webhook "conditions.webhooks.kubeling.test" denied the request: {DENY_MESSAGE}' in p.stderr
    # the match condition is false: the webhook is not called, and the write goes through
    cm["metadata"].update(name="skipped", labels={"deny": "true", "skip": "yes"})
    assert "configmap/skipped created" in wc.kubectl("apply", "-f", "-", input=json.dumps(cm)).stdout
    assert not any(r["name"] == "skipped" for r in hooks.reviews["/validate"])
    # a condition that does not compile is refused when the configuration is written
    bad = hook("bad-cel.webhooks.kubeling.test", hooks.url("/validate"), hooks.ca_bundle, ns,
               matchConditions=[{"name": "broken", "expression": "object.metadata.("}])
    p = wc.kubectl("apply", "-f", "-", check=False, input=json.dumps({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "bad-cel"}, "webhooks": [bad]}))
    assert p.returncode != 0
    assert 'webhooks[0].matchConditions[0].expression: Invalid value: "object.metadata.(": compilation failed: ' \
        in p.stderr
