"""The PodSecurity admission plugin in an in-process API server: enforce, warn and audit for
pods, warn/audit for pod controllers, namespace labels, exemptions and updates."""

from __future__ import annotations

import asyncio

import pytest

from kubeling.api import errors
from kubeling.apiserver import registry
from kubeling.apiserver.admission.podsecurity import PodSecurity
from kubeling.apiserver.admission.podsecurity.admission import is_significant_pod_update

from inprocess import api_server, ctx, default_service_accounts

GOOD_SC = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
           "seccompProfile": {"type": "RuntimeDefault"}}


def run(coro):
    return asyncio.run(coro)


def pod(name, ns, **sc):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": "busybox", **({"securityContext": sc} if sc else {})}]}}


async def namespace(api, name, **labels):
    await api.registry.create(api.lookup("", "v1", "namespaces"),
                              {"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": name,
                                            "labels": {f"pod-security.kubernetes.io/{k.replace('_', '-')}": v
                                                       for k, v in labels.items()}}}, ctx())
    await default_service_accounts(api, [name])


def plugin(api) -> PodSecurity:
    return next(p for p in api.admission.plugins if p.NAME == "PodSecurity")


def test_enforce_refuses_with_upstreams_message():
    async def main():
        api = await api_server()
        await namespace(api, "r", enforce="restricted")
        with pytest.raises(errors.StatusError) as e:
            await api.registry.create(api.lookup("", "v1", "pods"), pod("p", "r", privileged=True), ctx("r"))
        assert e.value.code == 403 and e.value.reason == "Forbidden"
        assert e.value.message.startswith(
            'pods "p" is forbidden: violates PodSecurity "restricted:latest": privileged (container "c" must not set '
            'securityContext.privileged=true), allowPrivilegeEscalation != false (container "c" must set '
            'securityContext.allowPrivilegeEscalation=false), ')
        c = ctx("r")
        await api.registry.create(api.lookup("", "v1", "pods"), pod("ok", "r", **GOOD_SC), c)
        assert c.warnings == []
        assert c.audit_annotations["pod-security.kubernetes.io/enforce-policy"] == "restricted:latest"
    run(main())


def test_warn_and_audit_modes_allow_with_warning_and_annotation():
    async def main():
        api = await api_server()
        await namespace(api, "w", enforce="baseline", warn="restricted", audit="restricted", audit_version="v1.30")
        c = ctx("w")
        await api.registry.create(api.lookup("", "v1", "pods"), pod("p", "w"), c)
        assert len(c.warnings) == 1
        assert c.warnings[0].startswith('would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != '
                                        'false (container "c" must set securityContext.allowPrivilegeEscalation=false)')
        assert c.audit_annotations["pod-security.kubernetes.io/audit-violations"].startswith(
            'would violate PodSecurity "restricted:v1.30": allowPrivilegeEscalation != false')
        # baseline enforce refuses a privileged pod, and a refused request carries no warning
        c = ctx("w")
        with pytest.raises(errors.StatusError, match='violates PodSecurity "baseline:latest": privileged'):
            await api.registry.create(api.lookup("", "v1", "pods"), pod("bad", "w", privileged=True), c)
        assert c.warnings == []
    run(main())


def test_default_is_privileged_everywhere():
    async def main():
        api = await api_server()
        c = ctx("default")
        await api.registry.create(api.lookup("", "v1", "pods"), pod("p", "default", privileged=True), c)
        assert c.warnings == []
    run(main())


def test_pod_controllers_get_warnings_not_enforcement():
    async def main():
        api = await api_server()
        await namespace(api, "r", enforce="restricted", warn="restricted")
        template = {"metadata": {"labels": {"app": "x"}}, "spec": pod("x", "r", privileged=True)["spec"]}
        c = ctx("r")
        await api.registry.create(api.lookup("apps", "v1", "deployments"), {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "r"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}}, c)
        assert c.warnings and c.warnings[0].startswith('would violate PodSecurity "restricted:latest": privileged')
        c = ctx("r")
        await api.registry.create(api.lookup("batch", "v1", "cronjobs"), {
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj", "namespace": "r"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {
                "spec": {**template["spec"], "restartPolicy": "Never"}}}}}}, c)
        assert c.warnings and "privileged" in c.warnings[0]
    run(main())


def test_namespace_labels_are_validated():
    async def main():
        api = await api_server()
        with pytest.raises(errors.StatusError) as e:
            await namespace(api, "bad", enforce="strict")
        assert e.value.code == 422
        assert e.value.message == ('Namespace "bad" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: '
                                   'Invalid value: "strict": must be one of privileged, baseline, restricted')
        await namespace(api, "good")
        served = api.lookup("", "v1", "namespaces")
        ns = await api.registry.get_raw(served, None, "good")
        ns["metadata"]["labels"] = {"pod-security.kubernetes.io/warn-version": "1.30"}
        with pytest.raises(errors.StatusError, match=r'warn-version\]: Invalid value: "1.30": must be "latest" or '
                                                     r'"v1.x"'):
            await api.registry.update(served, None, ns["metadata"]["name"], ns, ctx())
    run(main())


def test_raising_enforce_warns_about_existing_pods():
    async def main():
        api = await api_server()
        await namespace(api, "x")
        pods = api.lookup("", "v1", "pods")
        for name in ("b", "a", "c"):
            await api.registry.create(pods, pod(name, "x", privileged=True), ctx("x"))
        await api.registry.create(pods, pod("host", "x") | {"spec": {"hostNetwork": True, "containers": [
            {"name": "c", "image": "busybox"}]}}, ctx("x"))
        await api.registry.create(pods, pod("fine", "x"), ctx("x"))
        served = api.lookup("", "v1", "namespaces")
        ns = await api.registry.get_raw(served, None, "x")
        ns["metadata"]["labels"] = {"pod-security.kubernetes.io/enforce": "baseline"}
        c = ctx()
        await api.registry.update(served, None, ns["metadata"]["name"], ns, c)
        assert c.warnings == [
            'existing pods in namespace "x" violate the new PodSecurity enforce level "baseline:latest"',
            "a (and 2 other pods): privileged",
            "host: host namespaces",
        ]
        # relaxing (same version) checks nothing
        ns = await api.registry.get_raw(served, None, "x")
        ns["metadata"]["labels"] = {"pod-security.kubernetes.io/enforce": "privileged"}
        c = ctx()
        await api.registry.update(served, None, ns["metadata"]["name"], ns, c)
        assert c.warnings == []
    run(main())


def test_exemptions():
    async def main():
        api = await api_server()
        await namespace(api, "r", enforce="restricted")
        from kubeling.apiserver.admission.podsecurity.config import PodSecurityConfiguration
        plugin(api).configuration = PodSecurityConfiguration(exempt_usernames=frozenset({"alice"}),
                                                             exempt_runtime_classes=frozenset({"kata"}))
        pods = api.lookup("", "v1", "pods")
        c = ctx("r", user="alice")
        await api.registry.create(pods, pod("by-alice", "r", privileged=True), c)
        assert c.audit_annotations == {"pod-security.kubernetes.io/exempt": "user"}
        p = pod("kata", "r", privileged=True)
        p["spec"]["runtimeClassName"] = "kata"
        c = ctx("r")
        await api.registry.create(pods, p, c)
        assert c.audit_annotations == {"pod-security.kubernetes.io/exempt": "runtimeClass"}
        plugin(api).configuration = PodSecurityConfiguration(exempt_namespaces=frozenset({"r"}))
        await api.registry.create(pods, pod("ns-exempt", "r", privileged=True), ctx("r"))
    run(main())


def test_updates_rechecked_only_when_significant():
    p = pod("p", "x")
    assert not is_significant_pod_update(p | {"metadata": {"name": "p", "labels": {"a": "b"}}}, p)
    changed = pod("p", "x")
    changed["spec"]["containers"][0]["image"] = "nginx"
    assert is_significant_pod_update(changed, p)
    ephemeral = pod("p", "x")
    ephemeral["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox"}]
    assert is_significant_pod_update(ephemeral, p)
    assert not is_significant_pod_update(ephemeral, ephemeral)

    async def main():
        api = await api_server()
        await namespace(api, "x")
        pods = api.lookup("", "v1", "pods")
        await api.registry.create(pods, pod("p", "x", privileged=True), ctx("x"))
        served = api.lookup("", "v1", "namespaces")
        ns = await api.registry.get_raw(served, None, "x")
        ns["metadata"]["labels"] = {"pod-security.kubernetes.io/enforce": "baseline"}
        await api.registry.update(served, None, ns["metadata"]["name"], ns, ctx())
        await asyncio.sleep(0)
        obj = await api.registry.get_raw(pods, "x", "p")
        obj["metadata"]["labels"] = {"touched": "yes"}
        await api.registry.update(pods, "x", "p", obj, ctx("x"))   # metadata only: allowed though the pod violates
        obj = await api.registry.get_raw(pods, "x", "p")
        obj["spec"]["containers"][0]["image"] = "nginx"
        with pytest.raises(errors.StatusError, match='violates PodSecurity "baseline:latest": privileged'):
            await api.registry.update(pods, "x", "p", obj, ctx("x"))
    run(main())


def test_registry_config_carries_the_file(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n"
                 "- name: PodSecurity\n  configuration:\n    apiVersion: pod-security.admission.config.k8s.io/v1\n"
                 "    kind: PodSecurityConfiguration\n    defaults:\n      enforce: baseline\n")

    async def main():
        api = await api_server(config=registry.Config(admission_control_config_file=str(f)))
        assert str(plugin(api).configuration.defaults.enforce) == "baseline:latest"
        with pytest.raises(errors.StatusError, match='violates PodSecurity "baseline:latest"'):
            await api.registry.create(api.lookup("", "v1", "pods"), pod("p", "default", privileged=True), ctx("default"))
    run(main())


def test_ephemeral_containers_are_checked():
    async def main():
        api = await api_server()
        await namespace(api, "r", enforce="restricted")
        pods = api.lookup("", "v1", "pods")
        await api.registry.create(pods, pod("p", "r", **GOOD_SC), ctx("r"))

        async def add_debug(current):
            new = {**current, "spec": {**current["spec"], "ephemeralContainers": [
                {"name": "debug", "image": "busybox", "targetContainerName": "c"}]}}
            return new
        with pytest.raises(errors.StatusError) as e:
            await api.registry.guaranteed_update(pods, "r", "p", add_debug, ctx("r", subresource="ephemeralcontainers"))
        assert e.value.code == 403
        assert e.value.message.startswith('pods "p" is forbidden: violates PodSecurity "restricted:latest": '
                                          'allowPrivilegeEscalation != false (container "debug" must set '
                                          'securityContext.allowPrivilegeEscalation=false)')
    run(main())


def test_metrics():
    from prometheus_client import CollectorRegistry

    async def main():
        api = await api_server()
        reg = CollectorRegistry()
        plugin(api).register_metrics(reg)
        await namespace(api, "r", enforce="restricted", warn="baseline")
        pods = api.lookup("", "v1", "pods")
        with pytest.raises(errors.StatusError):
            await api.registry.create(pods, pod("p", "r", privileged=True), ctx("r"))
        await api.registry.create(pods, pod("ok", "r", **GOOD_SC), ctx("r"))
        labels = {"policy_level": "restricted", "policy_version": "latest", "mode": "enforce",
                  "request_operation": "create", "resource": "pod", "subresource": ""}
        assert reg.get_sample_value("pod_security_evaluations_total", {**labels, "decision": "deny"}) == 1
        assert reg.get_sample_value("pod_security_evaluations_total", {**labels, "decision": "allow"}) == 1
    run(main())


def test_a_failing_check_fails_closed_for_pods_and_open_for_controllers():
    from kubeling.apiserver.admission.podsecurity.policy.checks import Check, VersionedCheck
    from kubeling.apiserver.admission.podsecurity.policy.registry import Evaluator
    from kubeling.apiserver.admission.podsecurity.api import BASELINE, major_minor

    def broken(meta, spec):
        raise RuntimeError("bug")

    async def main():
        api = await api_server()
        plugin(api).evaluator = Evaluator((Check("broken", BASELINE, (VersionedCheck(major_minor(1, 0), broken),)),))
        await namespace(api, "b", enforce="baseline", warn="baseline")
        with pytest.raises(errors.StatusError) as e:
            await api.registry.create(api.lookup("", "v1", "pods"), pod("p", "b"), ctx("b"))
        assert e.value.code == 500
        c = ctx("b")
        await api.registry.create(api.lookup("apps", "v1", "deployments"), {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "b"},
            "spec": {"selector": {"matchLabels": {"app": "x"}},
                     "template": {"metadata": {"labels": {"app": "x"}}, "spec": pod("x", "b")["spec"]}}}, c)
        assert c.audit_annotations["pod-security.kubernetes.io/error"].startswith("failed to evaluate")
    run(main())
