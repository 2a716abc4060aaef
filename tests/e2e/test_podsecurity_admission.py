"""PodSecurity admission with real kubectl (issue 9, acceptance 10).

- A namespace labelled ``enforce=restricted`` refuses a privileged pod with upstream's message
  (``pods "p" is forbidden: violates PodSecurity "restricted:latest": privileged (...), ...``),
  also on ``--dry-run=server``, and admits a pod that meets the restricted standard; ``kubectl
  debug`` is refused an ephemeral container unless it uses the restricted profile.
- ``warn`` mode admits the pod and kubectl prints upstream's ``Warning: would violate
  PodSecurity ...``; a Deployment gets the warning for its template but is never refused.
- Labelling a namespace with a stricter enforce level warns about the existing pods that violate
  it; an invalid level is refused with 422.
- ``--admission-control-config-file`` (an AdmissionConfiguration with a PodSecurityConfiguration):
  its defaults apply to unlabelled namespaces and its exempt namespace admits anything.

Pods need not run: the cluster has no agent and no scheduler.
"""

from __future__ import annotations

import json

import harness
import pytest

ADMISSION_CONFIG = """\
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults:
      enforce: privileged
      warn: baseline
      warn-version: latest
    exemptions:
      namespaces: [psa-exempt]
"""

GOOD_SC = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
           "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}


def pod(name: str, ns: str, **sc) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                       "spec": {"containers": [{"name": "c", "image": "busybox",
                                                **({"securityContext": sc} if sc else {})}]}})


@pytest.fixture(scope="module")
def psa_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("psa")
    (d / "admission.yaml").write_text(ADMISSION_CONFIG)
    c = harness.started_cluster(d / "cluster", extra_args=("--admission-control-config-file", str(d / "admission.yaml"),
                                                           "--disable-scheduler"))
    for ns in ("psa-r", "psa-w", "psa-x", "psa-exempt"):
        c.kubectl("create", "namespace", ns)
    for ns in ("psa-r", "psa-w", "psa-x", "psa-exempt", "default"):
        # the ServiceAccount admission plugin wants the default account the controller makes
        harness.eventually(lambda ns=ns: c.kubectl("get", "serviceaccount", "default", "-n", ns,
                                                   check=False).returncode == 0,
                           timeout=60, what=f"the default service account in {ns}")
    yield c
    c.stop()


def test_restricted_namespace_refuses_privileged_pod(psa_cluster):
    c = psa_cluster
    c.kubectl("label", "namespace", "psa-r", "pod-security.kubernetes.io/enforce=restricted")
    for extra in (("--dry-run=server",), ()):
        r = c.kubectl("apply", *extra, "-f", "-", input=pod("p", "psa-r", privileged=True), check=False)
        assert r.returncode != 0
        assert ('Error from server (Forbidden): error when creating "STDIN": pods "p" is forbidden: violates '
                'PodSecurity "restricted:latest": privileged (container "c" must not set '
                'securityContext.privileged=true), allowPrivilegeEscalation != false (container "c" must set '
                'securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "c" must set '
                'securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "c" must set '
                'securityContext.runAsNonRoot=true), seccompProfile (pod or container "c" must set '
                'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")') in r.stderr, r.stderr
    assert c.kubectl("get", "pod", "p", "-n", "psa-r", check=False).returncode != 0
    r = c.kubectl("apply", "-f", "-", input=pod("ok", "psa-r", **GOOD_SC))
    assert "pod/ok created" in r.stdout and "Warning" not in r.stderr

    # kubectl debug adds an ephemeral container: checked too; its restricted profile passes
    r = c.kubectl("debug", "ok", "-n", "psa-r", "--image=busybox", "--profile=general", check=False)
    assert r.returncode != 0
    assert 'pods "ok" is forbidden: violates PodSecurity "restricted:latest": ' in r.stderr, r.stderr
    r = c.kubectl("debug", "ok", "-n", "psa-r", "--image=busybox", "--profile=restricted", "--container=dbg")
    ephemeral = c.kubectl("get", "pod", "ok", "-n", "psa-r", "-o",
                          "jsonpath={.spec.ephemeralContainers[*].name}").stdout
    assert ephemeral == "dbg"


def test_warn_mode_warnings_printed_by_kubectl(psa_cluster):
    c = psa_cluster
    c.kubectl("label", "namespace", "psa-w", "pod-security.kubernetes.io/warn=restricted",
              "pod-security.kubernetes.io/warn-version=v1.33")
    r = c.kubectl("apply", "-f", "-", input=pod("w", "psa-w"))
    assert "pod/w created" in r.stdout
    assert ('Warning: would violate PodSecurity "restricted:v1.33": allowPrivilegeEscalation != false (container "c" '
            'must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "c" must '
            'set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "c" must set '
            'securityContext.runAsNonRoot=true), seccompProfile (pod or container "c" must set '
            'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")') in r.stderr, r.stderr
    # the older kubectl prints them too
    r = c.kubectl("apply", "-f", "-", input=pod("w132", "psa-w"), version="1.32")
    assert "pod/w132 created" in r.stdout
    assert 'Warning: would violate PodSecurity "restricted:v1.33": allowPrivilegeEscalation != false' in r.stderr
    # a pod controller: warned for its template, never refused (enforce is for the pods it makes)
    c.kubectl("label", "namespace", "psa-w", "pod-security.kubernetes.io/enforce=restricted")
    r = c.kubectl("create", "deployment", "d", "-n", "psa-w", "--image=busybox")
    assert "deployment.apps/d created" in r.stdout
    assert 'Warning: would violate PodSecurity "restricted:v1.33": allowPrivilegeEscalation != false' in r.stderr


def test_enforce_label_warns_about_existing_pods_and_invalid_levels_are_refused(psa_cluster):
    c = psa_cluster
    c.kubectl("apply", "-f", "-", input=pod("priv", "psa-x", privileged=True))
    r = c.kubectl("label", "namespace", "psa-x", "pod-security.kubernetes.io/enforce=baseline")
    assert "namespace/psa-x labeled" in r.stdout
    assert 'Warning: existing pods in namespace "psa-x" violate the new PodSecurity enforce level "baseline:latest"' \
        in r.stderr, r.stderr
    assert "Warning: priv: privileged" in r.stderr
    r = c.kubectl("label", "--overwrite", "namespace", "psa-x", "pod-security.kubernetes.io/enforce=strict",
                  check=False)
    assert r.returncode != 0
    assert ('The Namespace "psa-x" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: '
            '"strict": must be one of privileged, baseline, restricted') in r.stderr, r.stderr
    assert c.kubectl("get", "namespace", "psa-x", "-o",
                     "jsonpath={.metadata.labels.pod-security\\.kubernetes\\.io/enforce}").stdout == "baseline"


def test_configuration_file_defaults_and_exemptions(psa_cluster):
    c = psa_cluster
    # the configured default warn=baseline applies to an unlabelled namespace
    r = c.kubectl("apply", "-f", "-", input=pod("d-priv", "default", privileged=True))
    assert "pod/d-priv created" in r.stdout
    assert ('Warning: would violate PodSecurity "baseline:latest": privileged (container "c" must not set '
            'securityContext.privileged=true)') in r.stderr, r.stderr
    # an exempt namespace admits anything whatever its labels say
    c.kubectl("label", "namespace", "psa-exempt", "pod-security.kubernetes.io/enforce=restricted")
    r = c.kubectl("apply", "-f", "-", input=pod("e-priv", "psa-exempt", privileged=True))
    assert "pod/e-priv created" in r.stdout and "Warning" not in r.stderr
