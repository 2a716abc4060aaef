"""CEL admission policies with real kubectl (issue 9, acceptance 9).

- A ValidatingAdmissionPolicy limits ``spec.replicas <= 5`` on Deployments, bound in namespaces
  labelled ``environment: test``: ``kubectl create deployment --replicas=6`` is refused with
  upstream's message; 5 replicas are admitted; a namespace without the label is not checked.
- A policy with a ConfigMap as params, ``messageExpression`` and a Warn binding: kubectl prints the
  warning and the object is created.
- A policy whose expression does not compile is refused at create (422, field path).
- A MutatingAdmissionPolicy (v1alpha1, served always) adds a label with an ApplyConfiguration
  and an annotation with a JSONPatch.
"""

from __future__ import annotations

import json

import harness
import pytest

POLICY = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: demo-policy.example.com
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: ["apps"]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["deployments"]
  validations:
  - expression: "object.spec.replicas <= 5"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: demo-binding-test.example.com
spec:
  policyName: demo-policy.example.com
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        environment: test
"""

PARAM_POLICY = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: max-cm-keys
spec:
  paramKind:
    apiVersion: v1
    kind: ConfigMap
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
  matchConditions:
  - name: not-the-params
    expression: "object.metadata.name != 'limits'"
  variables:
  - name: keys
    expression: "has(object.data) ? object.data.size() : 0"
  validations:
  - expression: "variables.keys <= int(params.data.maxKeys)"
    messageExpression: "'configmap ' + object.metadata.name + ' has ' + string(variables.keys) + ' keys, at most ' + params.data.maxKeys + ' allowed'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: max-cm-keys-warn
spec:
  policyName: max-cm-keys
  validationActions: [Warn]
  paramRef:
    name: limits
    parameterNotFoundAction: Allow
  matchResources:
    namespaceSelector:
      matchLabels:
        environment: test
"""

MUTATING = """
apiVersion: admissionregistration.k8s.io/v1alpha1
kind: MutatingAdmissionPolicy
metadata:
  name: add-team
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["secrets"]
  reinvocationPolicy: Never
  mutations:
  - patchType: ApplyConfiguration
    applyConfiguration:
      expression: >
        Object{metadata: Object.metadata{labels: {"team": "platform"}}}
  - patchType: JSONPatch
    jsonPatch:
      expression: >
        [JSONPatch{op: "add", path: "/metadata/annotations", value: {}},
         JSONPatch{op: "add", path: "/metadata/annotations/" + jsonpatch.escapeKey("example.com/by"),
                   value: request.userInfo.username}]
---
apiVersion: admissionregistration.k8s.io/v1alpha1
kind: MutatingAdmissionPolicyBinding
metadata:
  name: add-team
spec:
  policyName: add-team
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = harness.started_cluster(tmp_path_factory.mktemp("vap") / "cluster",
                                extra_args=("--controllers", "", "--disable-scheduler"))
    c.kubectl("create", "namespace", "vap-test")
    c.kubectl("label", "namespace", "vap-test", "environment=test")
    c.kubectl("create", "namespace", "vap-other")
    yield c
    c.stop()


def test_replicas_limit_denied_with_upstreams_message(cluster):
    c = cluster
    c.kubectl("apply", "-f", "-", input=POLICY)
    # the policy cache follows by watch: wait until a 6-replica deployment is refused
    def refused():
        p = c.kubectl("create", "deployment", "probe", "--image=nginx", "--replicas=6", "-n", "vap-test",
                      check=False)
        if p.returncode == 0:
            c.kubectl("delete", "deployment", "probe", "-n", "vap-test")
            return False
        return p
    p = harness.eventually(refused, timeout=30, what="the policy to refuse a 6-replica deployment")
    assert p.stderr.strip() == (
        'error: failed to create deployment: deployments.apps "probe" is forbidden: ValidatingAdmissionPolicy '
        "'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression: "
        "object.spec.replicas <= 5")
    c.kubectl("create", "deployment", "ok", "--image=nginx", "--replicas=5", "-n", "vap-test")
    # an UPDATE over the limit is refused too
    p = c.kubectl("patch", "deployment", "ok", "-n", "vap-test", "-p", '{"spec":{"replicas":7}}', check=False)
    assert p.returncode != 0
    assert "denied request: failed expression: object.spec.replicas <= 5" in p.stderr
    # a namespace without the label is not bound
    c.kubectl("create", "deployment", "big", "--image=nginx", "--replicas=6", "-n", "vap-other")
    # the Status as a client sees it: 422 Invalid
    body = json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "raw"},
                       "spec": {"replicas": 9, "selector": {"matchLabels": {"a": "b"}},
                                "template": {"metadata": {"labels": {"a": "b"}},
                                             "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    status, data = c.request("POST", "/apis/apps/v1/namespaces/vap-test/deployments", body.encode(),
                             headers={"Content-Type": "application/json"})
    st = json.loads(data)
    assert status == 422 and st["reason"] == "Invalid", st
    assert st["details"]["causes"][0]["message"].startswith("ValidatingAdmissionPolicy 'demo-policy.example.com'")
    # kubectl lists them with upstream's columns
    out = c.kubectl("get", "validatingadmissionpolicies").stdout
    assert out.split("\n")[0].split() == ["NAME", "VALIDATIONS", "PARAMKIND", "AGE"]
    assert "demo-policy.example.com" in out and "<unset>" in out
    harness.eventually(lambda: c.kubectl("get", "validatingadmissionpolicy", "demo-policy.example.com", "-o",
                                         "jsonpath={.status.observedGeneration}").stdout == "1",
                       timeout=30, what="the policy's status.observedGeneration")
    out = c.kubectl("explain", "validatingadmissionpolicy.spec.validations").stdout
    assert "messageExpression" in out and "expression" in out
    # the Python client reads them back with its typed models
    from kubernetes import client
    api = c.python_client()
    try:
        pols = client.AdmissionregistrationV1Api(api).list_validating_admission_policy().items
        pol = next(p for p in pols if p.metadata.name == "demo-policy.example.com")
        assert pol.spec.validations[0].expression == "object.spec.replicas <= 5"
        assert pol.spec.failure_policy == "Fail" and pol.status.observed_generation == 1
        b = client.AdmissionregistrationV1Api(api).read_validating_admission_policy_binding(
            "demo-binding-test.example.com")
        assert b.spec.validation_actions == ["Deny"]
    finally:
        api.close()


def test_params_message_expression_and_warn(cluster):
    c = cluster
    c.kubectl("create", "configmap", "limits", "-n", "vap-test", "--from-literal=maxKeys=2")
    c.kubectl("apply", "-f", "-", input=PARAM_POLICY)

    def warned():
        p = c.kubectl("create", "configmap", "probe", "-n", "vap-test", "--from-literal=a=1", "--from-literal=b=2",
                      "--from-literal=c=3")
        c.kubectl("delete", "configmap", "probe", "-n", "vap-test")
        return "Warning:" in p.stderr and p
    p = harness.eventually(warned, timeout=30, what="the Warn binding")
    assert ("Warning: Validation failed for ValidatingAdmissionPolicy 'max-cm-keys' with binding 'max-cm-keys-warn': "
            "configmap probe has 3 keys, at most 2 allowed") in p.stderr
    p = c.kubectl("create", "configmap", "small", "-n", "vap-test", "--from-literal=a=1")
    assert "Warning" not in p.stderr


def test_expression_that_does_not_compile_is_refused(cluster):
    c = cluster
    bad = POLICY.split("---")[0].replace("demo-policy.example.com", "bad").replace(
        "object.spec.replicas <= 5", "object.spec.replicas <=")
    p = c.kubectl("apply", "-f", "-", input=bad, check=False)
    assert p.returncode != 0
    assert 'ValidatingAdmissionPolicy "bad" is invalid' in p.stderr
    assert "spec.validations[0].expression: Invalid value: \"object.spec.replicas <=\": compilation failed: " \
           "ERROR: <input>:1:" in p.stderr
    p = c.kubectl("apply", "-f", "-", input=bad.replace("object.spec.replicas <=", "objects.spec.replicas < 1"),
                  check=False)
    assert "undeclared reference to 'objects" in p.stderr
    binding = POLICY.split("---")[1].replace("[Deny]", "[Deny, Warn]")
    p = c.kubectl("apply", "-f", "-", input=binding, check=False)
    assert "spec.validationActions: Invalid value" in p.stderr and "must not contain both Deny and Warn" in p.stderr


def test_mutating_admission_policy(cluster):
    c = cluster
    c.kubectl("apply", "-f", "-", input=MUTATING)

    def mutated():
        c.kubectl("delete", "secret", "s1", "-n", "vap-other", "--ignore-not-found")
        c.kubectl("create", "secret", "generic", "s1", "-n", "vap-other", "--from-literal=a=b")
        s = json.loads(c.kubectl("get", "secret", "s1", "-n", "vap-other", "-o", "json").stdout)
        return s if (s["metadata"].get("labels") or {}).get("team") == "platform" else None
    s = harness.eventually(mutated, timeout=30, what="the mutating policy to label a secret")
    me = c.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout.strip()
    assert me and s["metadata"]["annotations"]["example.com/by"] == me
    out = c.kubectl("get", "mutatingadmissionpolicies").stdout
    assert "add-team" in out
    versions = c.kubectl("api-versions").stdout.split()
    assert "admissionregistration.k8s.io/v1alpha1" in versions and "admissionregistration.k8s.io/v1" in versions
