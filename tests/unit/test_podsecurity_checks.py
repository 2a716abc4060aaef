"""PodSecurity's checks, one by one, with upstream's check IDs and messages, and the evaluator's
choice of checks per level and version."""

from __future__ import annotations

import pytest

from kubeling.apiserver.admission.podsecurity import api
from kubeling.apiserver.admission.podsecurity.api import LATEST, LevelVersion, major_minor
from kubeling.apiserver.admission.podsecurity.config import ConfigError, load, parse_pod_security_configuration
from kubeling.apiserver.admission.podsecurity.policy import (
    check_allowPrivilegeEscalation, check_appArmorProfile, check_capabilities_baseline, check_capabilities_restricted,
    check_hostNamespaces, check_hostPathVolumes, check_hostPorts, check_hostProbesAndHostLifecycle, check_privileged,
    check_procMount, check_restrictedVolumes, check_runAsNonRoot, check_runAsUser, check_seccompProfile_baseline,
    check_seccompProfile_restricted, check_seLinuxOptions, check_sysctls, check_windowsHostProcess)
from kubeling.apiserver.admission.podsecurity.policy.checks import aggregate_check_results
from kubeling.apiserver.admission.podsecurity.policy.registry import Evaluator


def run_check(module, spec, meta=None, version=LATEST):
    """The result of ``module``'s check at ``version`` (its newest applicable version)."""
    v = api.server_version() if version.latest else version
    fn = None
    for vc in module.CHECK.versions:
        if not v.older(vc.minimum_version):
            fn = vc.check_pod
    assert fn is not None, f"{module.CHECK.id} has no version for {v}"
    return fn(meta or {}, spec)


def c(name="c", **sc):
    return {"name": name, "image": "busybox", **({"securityContext": sc} if sc else {})}


GOOD = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"}}


def fails(result, reason, detail):
    assert not result.allowed
    assert (result.forbidden_reason, result.forbidden_detail) == (reason, detail)


# -- baseline -------------------------------------------------------------------------------------

def test_privileged():
    assert run_check(check_privileged, {"containers": [c(privileged=False)]}).allowed
    fails(run_check(check_privileged, {"initContainers": [c("i", privileged=True)],
                                       "containers": [c("a", privileged=True), c("b")]}),
          "privileged", 'containers "i", "a" must not set securityContext.privileged=true')


def test_host_namespaces():
    assert run_check(check_hostNamespaces, {"hostNetwork": False, "containers": [c()]}).allowed
    fails(run_check(check_hostNamespaces, {"hostPID": True, "hostNetwork": True, "hostIPC": True, "containers": [c()]}),
          "host namespaces", "hostIPC, hostNetwork, hostPID")


def test_windows_host_process():
    spec = {"securityContext": {"windowsOptions": {"hostProcess": True}},
            "containers": [c("a", windowsOptions={"hostProcess": True})]}
    fails(run_check(check_windowsHostProcess, spec), "hostProcess",
          'pod and container "a" must not set securityContext.windowsOptions.hostProcess=true')
    assert run_check(check_windowsHostProcess, {"containers": [c(windowsOptions={"hostProcess": False})]}).allowed


def test_capabilities_baseline():
    ok = {"containers": [c(capabilities={"add": ["NET_BIND_SERVICE", "CHOWN", "KILL"]})]}
    assert run_check(check_capabilities_baseline, ok).allowed
    fails(run_check(check_capabilities_baseline, {"containers": [c("a", capabilities={"add": ["SYS_ADMIN", "NET_RAW"]}),
                                                                c("b", capabilities={"add": ["NET_ADMIN"]})]}),
          "non-default capabilities",
          'containers "a", "b" must not include "NET_ADMIN", "NET_RAW", "SYS_ADMIN" in securityContext.capabilities.add')


def test_host_path_volumes():
    spec = {"containers": [c()], "volumes": [{"name": "h", "hostPath": {"path": "/"}}, {"name": "e", "emptyDir": {}}]}
    fails(run_check(check_hostPathVolumes, spec), "hostPath volumes", 'volume "h"')


def test_host_ports():
    spec = {"containers": [c("a") | {"ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 90}]},
                           c("b") | {"ports": [{"containerPort": 443, "hostPort": 443}]}]}
    fails(run_check(check_hostPorts, spec), "hostPort", 'containers "a", "b" use hostPorts 443, 8080')
    assert run_check(check_hostPorts, {"containers": [c() | {"ports": [{"containerPort": 80}]}]}).allowed


def test_app_armor_profile():
    assert run_check(check_appArmorProfile, {"containers": [c(appArmorProfile={"type": "RuntimeDefault"})]}).allowed
    spec = {"securityContext": {"appArmorProfile": {"type": "Unconfined"}}, "containers": [c()]}
    fails(run_check(check_appArmorProfile, spec), "forbidden AppArmor profile",
          'pod must not set AppArmor profile type to "Unconfined"')
    meta = {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}}
    fails(run_check(check_appArmorProfile, {"containers": [c()]}, meta), "forbidden AppArmor profile",
          'annotation must not set AppArmor profile type to '
          '"container.apparmor.security.beta.kubernetes.io/c=\\"unconfined\\""')
    ok_meta = {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "localhost/mine"}}
    assert run_check(check_appArmorProfile, {"containers": [c()]}, ok_meta).allowed


def test_se_linux_options():
    assert run_check(check_seLinuxOptions, {"containers": [c(seLinuxOptions={"type": "container_t", "level": "s0"})]}).allowed
    fails(run_check(check_seLinuxOptions, {"securityContext": {"seLinuxOptions": {"user": "bad", "role": "r"}},
                                           "containers": [c()]}),
          "seLinuxOptions", "pod set forbidden securityContext.seLinuxOptions: user may not be set; role may not be set")
    fails(run_check(check_seLinuxOptions, {"containers": [c("a", seLinuxOptions={"type": "spc_t"})]}),
          "seLinuxOptions", 'container "a" set forbidden securityContext.seLinuxOptions: type "spc_t"')


def test_proc_mount():
    assert run_check(check_procMount, {"containers": [c(procMount="Default")]}).allowed
    fails(run_check(check_procMount, {"containers": [c(procMount="Unmasked")]}), "procMount",
          'container "c" must not set securityContext.procMount to "Unmasked"')


def test_seccomp_baseline_by_version():
    spec = {"securityContext": {"seccompProfile": {"type": "Unconfined"}},
            "containers": [c("a", seccompProfile={"type": "Unconfined"}), c("b", seccompProfile={"type": "Localhost"})]}
    fails(run_check(check_seccompProfile_baseline, spec), "seccompProfile",
          'pod and container "a" must not set securityContext.seccompProfile.type to "Unconfined"')
    meta = {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}}
    fails(run_check(check_seccompProfile_baseline, {"containers": [c()]}, meta, version=major_minor(1, 18)),
          "seccompProfile", 'forbidden annotation seccomp.security.alpha.kubernetes.io/pod="unconfined"')
    assert run_check(check_seccompProfile_baseline, {"containers": [c()]}, meta).allowed  # 1.19+: fields only


def test_sysctls_safe_set_grows_with_versions():
    spec = {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_keepalive_time", "value": "1"},
                                            {"name": "kernel.msgmax", "value": "1"},
                                            {"name": "kernel.shm_rmid_forced", "value": "1"}]},
            "containers": [c()]}
    fails(run_check(check_sysctls, spec), "forbidden sysctls", "kernel.msgmax")
    fails(run_check(check_sysctls, spec, version=major_minor(1, 28)), "forbidden sysctls",
          "net.ipv4.tcp_keepalive_time, kernel.msgmax")
    rmem = {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "1 2 3"}]}, "containers": [c()]}
    assert run_check(check_sysctls, rmem).allowed
    assert not run_check(check_sysctls, rmem, version=major_minor(1, 31)).allowed


def test_host_probes_and_host_lifecycle():
    spec = {"containers": [c("a") | {"livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}},
                                     "lifecycle": {"preStop": {"tcpSocket": {"host": "evil", "port": 1}}}}]}
    fails(run_check(check_hostProbesAndHostLifecycle, spec, version=major_minor(1, 34)), "probe or lifecycle host",
          'container "a" uses probe or lifecycle hosts "10.0.0.1", "evil"')


# -- restricted -----------------------------------------------------------------------------------

def test_allow_privilege_escalation():
    fails(run_check(check_allowPrivilegeEscalation, {"containers": [c("a"), c("b", allowPrivilegeEscalation=True),
                                                                    c("ok", allowPrivilegeEscalation=False)]}),
          "allowPrivilegeEscalation != false", 'containers "a", "b" must set securityContext.allowPrivilegeEscalation=false')
    windows = {"os": {"name": "windows"}, "containers": [c()]}
    assert run_check(check_allowPrivilegeEscalation, windows).allowed
    assert not run_check(check_allowPrivilegeEscalation, windows, version=major_minor(1, 24)).allowed


def test_capabilities_restricted():
    fails(run_check(check_capabilities_restricted, {"containers": [c("a"), c("b", capabilities={"drop": ["ALL"],
                                                                                                "add": ["NET_RAW"]})]}),
          "unrestricted capabilities",
          'container "a" must set securityContext.capabilities.drop=["ALL"]; '
          'container "b" must not include "NET_RAW" in securityContext.capabilities.add')
    assert run_check(check_capabilities_restricted, {"containers": [c(capabilities={"drop": ["ALL"],
                                                                                    "add": ["NET_BIND_SERVICE"]})]}).allowed


def test_restricted_volumes():
    spec = {"containers": [c()], "volumes": [{"name": "a", "hostPath": {"path": "/"}}, {"name": "b", "nfs": {}},
                                             {"name": "s", "secret": {"secretName": "x"}},
                                             {"name": "p", "persistentVolumeClaim": {"claimName": "x"}}]}
    fails(run_check(check_restrictedVolumes, spec), "restricted volume types",
          'volumes "a", "b" use restricted volume types "hostPath", "nfs"')


def test_run_as_non_root():
    fails(run_check(check_runAsNonRoot, {"containers": [c("a"), c("b", runAsNonRoot=True)]}),
          "runAsNonRoot != true", 'pod or container "a" must set securityContext.runAsNonRoot=true')
    fails(run_check(check_runAsNonRoot, {"securityContext": {"runAsNonRoot": True},
                                         "containers": [c("a", runAsNonRoot=False)]}),
          "runAsNonRoot != true", 'container "a" must not set securityContext.runAsNonRoot=false')
    assert run_check(check_runAsNonRoot, {"securityContext": {"runAsNonRoot": True}, "containers": [c()]}).allowed


def test_run_as_user():
    fails(run_check(check_runAsUser, {"securityContext": {"runAsUser": 0}, "containers": [c("a", runAsUser=0)]}),
          "runAsUser=0", 'pod and container "a" must not set runAsUser=0')
    assert run_check(check_runAsUser, {"containers": [c(runAsUser=1000)]}).allowed


def test_seccomp_restricted():
    fails(run_check(check_seccompProfile_restricted, {"containers": [c("a")]}), "seccompProfile",
          'pod or container "a" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
    fails(run_check(check_seccompProfile_restricted, {"containers": [c("a", seccompProfile={"type": "Unconfined"})]}),
          "seccompProfile", 'container "a" must not set securityContext.seccompProfile.type to "Unconfined"')
    assert run_check(check_seccompProfile_restricted, {"securityContext": {"seccompProfile": {"type": "Localhost"}},
                                                       "containers": [c()]}).allowed


# -- the evaluator ----------------------------------------------------------------------------------

def evaluate(level, spec, version=LATEST, meta=None, evaluator=None):
    return aggregate_check_results((evaluator or Evaluator()).evaluate_pod(LevelVersion(level, version), meta or {}, spec))


def test_restricted_message_in_upstream_order():
    r = evaluate("restricted", {"containers": [c(privileged=True)]})
    assert r.forbidden_detail() == (
        'privileged (container "c" must not set securityContext.privileged=true), '
        'allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), '
        'unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), '
        'runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), '
        'seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or '
        '"Localhost")')
    assert r.forbidden_reason() == "privileged, allowPrivilegeEscalation != false, unrestricted capabilities, " \
                                   "runAsNonRoot != true, seccompProfile"


def test_levels():
    spec = {"containers": [c(**GOOD)]}
    assert evaluate("restricted", spec).allowed
    assert evaluate("privileged", {"hostNetwork": True, "containers": [c(privileged=True)]}).allowed
    assert evaluate("baseline", {"containers": [c()]}).allowed
    assert not evaluate("baseline", {"hostNetwork": True, "containers": [c()]}).allowed


def test_restricted_overrides_baseline_checks():
    # capabilities_restricted replaces capabilities_baseline from 1.22; restrictedVolumes replaces hostPathVolumes
    spec = {"containers": [c(**{**GOOD, "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}})],
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}
    r = evaluate("restricted", spec)
    assert r.forbidden_reasons == ("unrestricted capabilities", "restricted volume types")
    old = evaluate("restricted", spec, version=major_minor(1, 21))
    assert old.forbidden_reasons == ("non-default capabilities", "restricted volume types")


def test_versions_pick_checks():
    spec = {"securityContext": {"runAsUser": 0, "runAsNonRoot": True},
            "containers": [c(**{k: v for k, v in GOOD.items() if k != "runAsNonRoot"})]}
    assert evaluate("restricted", spec).forbidden_reasons == ("runAsUser=0",)
    assert evaluate("restricted", spec, version=major_minor(1, 22)).allowed   # runAsUser is 1.23+
    # a version newer than the server means the server's own
    assert evaluate("restricted", spec, version=major_minor(1, 99)).forbidden_reasons == ("runAsUser=0",)
    probe = {"containers": [c() | {"readinessProbe": {"tcpSocket": {"host": "x", "port": 1}}}]}
    assert evaluate("baseline", probe, version=major_minor(1, 34)).allowed == \
        api.server_version().older(major_minor(1, 34))
    assert not evaluate("baseline", probe, evaluator=Evaluator(max_version=major_minor(1, 34))).allowed


# -- labels and configuration ---------------------------------------------------------------------------

def test_policy_from_labels():
    p, errs = api.policy_to_evaluate({"pod-security.kubernetes.io/enforce": "baseline",
                                      "pod-security.kubernetes.io/enforce-version": "v1.25",
                                      "pod-security.kubernetes.io/warn": "restricted"})
    assert not errs
    assert (str(p.enforce), str(p.warn), str(p.audit)) == ("baseline:v1.25", "restricted:latest", "privileged:latest")
    p, errs = api.policy_to_evaluate({"pod-security.kubernetes.io/enforce": "strict",
                                      "pod-security.kubernetes.io/warn": "nope",
                                      "pod-security.kubernetes.io/audit-version": "1.25"})
    assert str(p.enforce) == "restricted:latest" and p.warn.level == "privileged"   # fail closed / open as upstream
    assert [str(e) for e in errs] == [
        'metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "strict": must be one of privileged, '
        'baseline, restricted',
        'metadata.labels[pod-security.kubernetes.io/audit-version]: Invalid value: "1.25": must be "latest" or "v1.x"',
        'metadata.labels[pod-security.kubernetes.io/warn]: Invalid value: "nope": must be one of privileged, '
        'baseline, restricted']


def test_configuration_file(tmp_path):
    assert load(None).defaults == api.DEFAULT_POLICY
    f = tmp_path / "admission.yaml"
    f.write_text("""
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  path: psa.yaml
""")
    (tmp_path / "psa.yaml").write_text("""
apiVersion: pod-security.admission.config.k8s.io/v1
kind: PodSecurityConfiguration
defaults:
  enforce: baseline
  warn: restricted
  warn-version: v1.30
exemptions:
  usernames: [alice]
  namespaces: [kube-system]
  runtimeClasses: [kata]
""")
    conf = load(str(f))
    assert str(conf.defaults.enforce) == "baseline:latest" and str(conf.defaults.warn) == "restricted:v1.30"
    assert conf.exempt_usernames == {"alice"} and conf.exempt_namespaces == {"kube-system"}
    assert conf.exempt_runtime_classes == {"kata"}


def test_bad_configuration_is_refused():
    with pytest.raises(ConfigError, match=r'defaults.enforce: Invalid value: "strict"'):
        parse_pod_security_configuration({"apiVersion": "pod-security.admission.config.k8s.io/v1",
                                          "kind": "PodSecurityConfiguration", "defaults": {"enforce": "strict"}})
    with pytest.raises(ConfigError, match="exemptions.namespaces"):
        parse_pod_security_configuration({"apiVersion": "pod-security.admission.config.k8s.io/v1",
                                          "kind": "PodSecurityConfiguration",
                                          "exemptions": {"namespaces": ["Not_A_Name"]}})
