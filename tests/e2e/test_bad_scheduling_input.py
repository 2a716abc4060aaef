"""Issue 7 acceptance 12 (first half): invalid affinity, tolerations and topology spread
constraints are refused by the API server with their field paths, through real kubectl, and
nothing is stored; the same spec inside a Deployment's template is refused at its template path."""

from __future__ import annotations

import pytest

NODE_TERM = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"

CASES = [
    pytest.param("affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n"
                 "        nodeSelectorTerms:\n        - matchExpressions:\n"
                 "          - {key: disk, operator: Near, values: [ssd]}",
                 f'{NODE_TERM}.matchExpressions[0].operator: Invalid value: "Near": not a valid selector operator',
                 id="node-affinity-operator"),
    pytest.param("affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n"
                 "      - labelSelector: {matchLabels: {app: web}}",
                 "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: "
                 "Required value: can not be empty", id="anti-affinity-topology-key"),
    pytest.param("affinity:\n    podAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution:\n"
                 "      - weight: 300\n        podAffinityTerm: {topologyKey: kubernetes.io/hostname}",
                 "spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: "
                 "Invalid value: 300: must be in the range 1-100", id="affinity-weight"),
    pytest.param("tolerations:\n  - {key: dedicated, operator: Exists, value: gpu}",
                 "spec.tolerations[0].operator: Invalid value:", id="toleration-exists-with-value"),
    pytest.param("tolerations:\n  - {key: dedicated, value: gpu, effect: NoRun}",
                 'spec.tolerations[0].effect: Unsupported value: "NoRun"', id="toleration-effect"),
    pytest.param("topologySpreadConstraints:\n  - {maxSkew: 0, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}",
                 "spec.topologySpreadConstraints[0].maxSkew: Invalid value: 0: must be greater than zero",
                 id="spread-max-skew"),
]


@pytest.mark.parametrize("extra, message", CASES)
def test_invalid_scheduling_constraints_are_refused_with_their_field_path(kubectl, namespace, extra, message):
    manifest = (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n  namespace: {namespace}\nspec:\n"
                f"  containers:\n  - name: c\n    image: busybox\n  {extra}\n")
    out = kubectl("create", "-f", "-", input=manifest, check=False)
    assert out.returncode != 0
    assert 'The Pod "bad" is invalid: ' in out.stderr and message in out.stderr, out.stderr
    assert kubectl("get", "pod", "bad", "-n", namespace, check=False).returncode != 0


def test_invalid_affinity_in_a_template_is_refused_at_the_template_path(kubectl, namespace):
    manifest = f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: bad, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: bad}}}}
  template:
    metadata: {{labels: {{app: bad}}}}
    spec:
      containers: [{{name: c, image: busybox}}]
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: []}}
"""
    out = kubectl("create", "-f", "-", input=manifest, check=False)
    assert ("spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution."
            "nodeSelectorTerms: Required value: must have at least one node selector term") in out.stderr, out.stderr
