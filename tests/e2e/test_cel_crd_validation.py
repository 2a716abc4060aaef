"""CRD ``x-kubernetes-validations`` with real kubectl (issue 9, acceptance 9).

A Widget CRD carries CEL rules at the root, on ``spec`` and on a property:

- ``self.replicas <= self.maxReplicas`` (message) refuses ``replicas: 6, maxReplicas: 5`` on
  create with upstream's message (``The Widget "w" is invalid: spec: Invalid value: "object":
  ...``);
- transition rules: ``self == oldSelf`` makes ``spec.size`` immutable (reason
  FieldValueForbidden), ``self >= oldSelf`` with a messageExpression; they pass on create (no
  old value) and refuse the invalid change on ``kubectl apply`` / ``patch``;
- ``fieldPath`` puts the error on a child; the Python client gets the 422 cause;
- a CRD whose rule does not compile is refused at create with the field path and
  ``compilation failed``.
"""

from __future__ import annotations

import json

import harness
import pytest

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.cel.kubeling.dev
spec:
  group: cel.kubeling.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-validations:
        - rule: "self.metadata.name.startsWith('w')"
          message: "widget names start with w"
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "self.replicas <= self.maxReplicas"
              message: "replicas must not exceed maxReplicas"
            - rule: "!has(self.minReplicas) || self.minReplicas <= self.replicas"
              message: "minReplicas must not exceed replicas"
              fieldPath: ".minReplicas"
            properties:
              replicas: {type: integer}
              maxReplicas: {type: integer}
              minReplicas: {type: integer}
              size:
                type: string
                x-kubernetes-validations:
                - rule: "self == oldSelf"
                  message: "size is immutable"
                  reason: FieldValueForbidden
              generation:
                type: integer
                x-kubernetes-validations:
                - rule: "self >= oldSelf"
                  messageExpression: "'generation may not go back from ' + string(oldSelf) + ' to ' + string(self)"
"""


def widget(name: str, **spec) -> str:
    return json.dumps({"apiVersion": "cel.kubeling.dev/v1", "kind": "Widget", "metadata": {"name": name},
                       "spec": spec})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = harness.started_cluster(tmp_path_factory.mktemp("celcrd") / "cluster",
                                extra_args=("--controllers", "", "--disable-scheduler"))
    c.kubectl("apply", "-f", "-", input=CRD)
    harness.eventually(lambda: c.kubectl("get", "widgets", check=False).returncode == 0, timeout=30,
                       what="the widgets CRD served")
    yield c
    c.stop()


def test_rule_refuses_create_with_upstreams_message(cluster):
    c = cluster
    p = c.kubectl("apply", "-f", "-", input=widget("w1", replicas=6, maxReplicas=5, size="s"), check=False)
    assert p.returncode != 0
    assert p.stderr.strip().endswith(
        'The Widget "w1" is invalid: spec: Invalid value: "object": replicas must not exceed maxReplicas'), p.stderr
    p = c.kubectl("apply", "-f", "-", input=widget("x1", replicas=1, maxReplicas=5), check=False)
    assert 'The Widget "x1" is invalid: <nil>: Invalid value: "object": widget names start with w' in p.stderr
    # fieldPath: the error names the child
    p = c.kubectl("apply", "-f", "-", input=widget("w2", replicas=2, maxReplicas=5, minReplicas=3), check=False)
    assert 'spec.minReplicas: Invalid value: "object": minReplicas must not exceed replicas' in p.stderr
    c.kubectl("apply", "-f", "-", input=widget("w3", replicas=5, maxReplicas=5, size="small", generation=1))


def test_transition_rules_refuse_invalid_changes(cluster):
    c = cluster
    c.kubectl("apply", "-f", "-", input=widget("wt", replicas=1, maxReplicas=5, size="small", generation=2))
    # oldSelf: the size may not change
    p = c.kubectl("patch", "widget", "wt", "--type=merge", "-p", '{"spec":{"size":"large"}}', check=False)
    assert p.returncode != 0
    assert 'The Widget "wt" is invalid: spec.size: Forbidden: size is immutable' in p.stderr, p.stderr
    # messageExpression with oldSelf
    p = c.kubectl("apply", "-f", "-", input=widget("wt", replicas=1, maxReplicas=5, size="small", generation=1),
                  check=False)
    assert 'spec.generation: Invalid value: "integer": generation may not go back from 2 to 1' in p.stderr, p.stderr
    # allowed changes go through; the stored object is unchanged by the refused ones
    c.kubectl("patch", "widget", "wt", "--type=merge", "-p", '{"spec":{"replicas":3,"generation":3}}')
    got = json.loads(c.kubectl("get", "widget", "wt", "-o", "json").stdout)["spec"]
    assert got == {"replicas": 3, "maxReplicas": 5, "size": "small", "generation": 3}
    # a rule over the whole spec still applies on update
    p = c.kubectl("patch", "widget", "wt", "--type=merge", "-p", '{"spec":{"replicas":9}}', check=False)
    assert 'spec: Invalid value: "object": replicas must not exceed maxReplicas' in p.stderr


def test_status_cause_for_python_client(cluster):
    c = cluster
    body = widget("wp", replicas=7, maxReplicas=1).encode()
    status, data = c.request("POST", "/apis/cel.kubeling.dev/v1/namespaces/default/widgets", body,
                             headers={"Content-Type": "application/json"})
    st = json.loads(data)
    assert status == 422 and st["reason"] == "Invalid"
    assert st["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec",
                                        "message": 'Invalid value: "object": replicas must not exceed maxReplicas'}]


def test_crd_with_a_rule_that_does_not_compile_is_refused(cluster):
    bad = CRD.replace("widgets.cel", "gadgets.cel").replace("plural: widgets, singular: widget, kind: Widget",
                                                            "plural: gadgets, singular: gadget, kind: Gadget") \
        .replace("self.replicas <= self.maxReplicas", "self.replicas <=")
    p = cluster.kubectl("apply", "-f", "-", input=bad, check=False)
    assert p.returncode != 0
    assert ('spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: '
            'Invalid value: apiextensions.ValidationRule{Rule:"self.replicas <=", Message:"replicas must not exceed '
            'maxReplicas"') in p.stderr, p.stderr
    assert "compilation failed: ERROR: <input>:1:" in p.stderr
    assert cluster.kubectl("get", "crd", "gadgets.cel.kubeling.dev", check=False).returncode != 0
