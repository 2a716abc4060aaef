"""computePodActions, the sandbox config and the command/env rules, as table tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeling.kubelet import kuberuntime
from kubeling.kubelet.runtime import ContainerState, ContainerStatus, PodSandboxStatus, SandboxState

UID = "u1"


def pod(containers=("app",), init=(), policy="Always", **spec):
    return {"metadata": {"name": "p", "namespace": "ns", "uid": UID},
            "spec": {"restartPolicy": policy,
                     "containers": [{"name": n, "image": "busybox"} for n in containers],
                     "initContainers": [dict(name=n, image="busybox", **extra) for n, extra in init],
                     **spec}}


def sandbox(sid="s1", attempt=0, ready=True, ip="10.42.0.5"):
    return PodSandboxStatus(id=sid, uid=UID, name="p", namespace="ns", attempt=attempt,
                            state=SandboxState.READY if ready else SandboxState.NOTREADY, created_at=1.0, ip=ip)


def ctr(name, state, exit_code=0, attempt=0, sid="s1", cid=None, image="busybox"):
    return ContainerStatus(id=cid or f"{name}-{attempt}", sandbox_id=sid, name=name, attempt=attempt,
                           state=ContainerState(state), exit_code=exit_code,
                           annotations={kuberuntime.CONTAINER_HASH: kuberuntime.container_hash({"image": image})})


def names(actions):
    return [c["name"] for c in actions.start]


@pytest.mark.parametrize("p, sandboxes, containers, start, kill, create", [
    pytest.param(pod(), [], [], ["app"], [], True, id="new-pod"),
    pytest.param(pod(), [sandbox()], [ctr("app", "running")], [], [], False, id="steady"),
    pytest.param(pod(), [sandbox()], [ctr("app", "exited", 1)], ["app"], [], False, id="always-restarts"),
    pytest.param(pod(policy="OnFailure"), [sandbox()], [ctr("app", "exited", 0)], [], [], False,
                 id="onfailure-success-stays"),
    pytest.param(pod(policy="OnFailure"), [sandbox()], [ctr("app", "exited", 2)], ["app"], [], False,
                 id="onfailure-failure-restarts"),
    pytest.param(pod(policy="Never"), [sandbox()], [ctr("app", "exited", 2)], [], [], False, id="never"),
    pytest.param(pod(), [sandbox(ready=False)], [ctr("app", "running")], ["app"], ["app-0"], True,
                 id="dead-sandbox-recreated"),
    pytest.param(pod(policy="Never"), [sandbox(ready=False)], [ctr("app", "exited", 0)], [], [], False,
                 id="finished-pod-no-new-sandbox"),
    pytest.param(pod(init=[("i1", {}), ("i2", {})]), [sandbox()], [], ["i1"], [], False, id="first-init"),
    pytest.param(pod(init=[("i1", {}), ("i2", {})]), [sandbox()], [ctr("i1", "exited", 0)], ["i2"], [], False,
                 id="second-init"),
    pytest.param(pod(init=[("i1", {})]), [sandbox()], [ctr("i1", "running")], [], [], False,
                 id="init-running-blocks"),
    pytest.param(pod(init=[("i1", {})]), [sandbox()], [ctr("i1", "exited", 1)], ["i1"], [], False,
                 id="failed-init-restarts"),
    pytest.param(pod(init=[("i1", {})]), [sandbox()], [ctr("i1", "exited", 0)], ["app"], [], False,
                 id="apps-after-init"),
    pytest.param(pod(init=[("side", {"restartPolicy": "Always"}), ("i2", {})]), [sandbox()],
                 [ctr("side", "running")], ["i2"], [], False, id="sidecar-started-lets-next-go"),
    pytest.param(pod(init=[("side", {"restartPolicy": "Always"})]), [sandbox()],
                 [ctr("side", "exited", 0), ctr("app", "running")], ["side"], [], False, id="sidecar-restarts"),
])
def test_compute_pod_actions(p, sandboxes, containers, start, kill, create):
    actions = kuberuntime.compute_pod_actions(p, sandboxes, containers)
    assert names(actions) == start
    assert sorted(actions.kill) == sorted(kill)
    assert actions.create_sandbox is create


def test_failed_init_with_policy_never_fails_the_pod():
    actions = kuberuntime.compute_pod_actions(pod(init=[("i1", {})], policy="Never"), [sandbox()],
                                              [ctr("i1", "exited", 3)])
    assert actions.init_failed == "i1"
    assert actions.start == []


def test_liveness_failure_kills_and_restarts():
    actions = kuberuntime.compute_pod_actions(pod(), [sandbox()], [ctr("app", "running")],
                                              liveness_failed={"app"})
    assert actions.kill == {"app-0": "Container app failed liveness probe, will be restarted"}
    assert names(actions) == ["app"] and "app" in actions.restart


def test_image_change_restarts():
    p = pod()
    p["spec"]["containers"][0]["image"] = "busybox:1.36"
    actions = kuberuntime.compute_pod_actions(p, [sandbox()], [ctr("app", "running")])
    assert list(actions.kill.values()) == ["Container app definition changed, will be restarted"]


def test_new_sandbox_attempt_follows_the_old_one():
    actions = kuberuntime.compute_pod_actions(pod(), [sandbox(attempt=2, ready=False)], [])
    assert actions.create_sandbox and actions.sandbox_attempt == 3 and actions.kill_pod


@pytest.mark.parametrize("container, image, argv", [
    pytest.param({}, {"Entrypoint": ["/e"], "Cmd": ["c"]}, ["/e", "c"], id="image-only"),
    pytest.param({"args": ["a"]}, {"Entrypoint": ["/e"], "Cmd": ["c"]}, ["/e", "a"], id="args-replace-cmd"),
    pytest.param({"command": ["/x"]}, {"Entrypoint": ["/e"], "Cmd": ["c"]}, ["/x"], id="command-drops-cmd"),
    pytest.param({"command": ["/x"], "args": ["a"]}, {"Cmd": ["c"]}, ["/x", "a"], id="command-and-args"),
])
def test_container_command(container, image, argv):
    assert kuberuntime.container_command(container, image) == argv


def test_merged_env_container_overrides_image():
    env = kuberuntime.merged_env({"Env": ["PATH=/bin", "A=1"]}, [("A", "2"), ("B", "3")])
    assert env == [("PATH", "/bin"), ("A", "2"), ("B", "3")]


def test_cluster_first_dns(tmp_path: Path):
    cfg = kuberuntime.dns_config(pod(), cluster_dns=["10.43.0.10"], cluster_domain="cluster.local",
                                 host_resolv=tmp_path / "none")
    assert cfg.servers == ["10.43.0.10"]
    assert cfg.searches == ["ns.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert cfg.options == ["ndots:5"]


def test_host_network_uses_the_host_resolv_conf(tmp_path: Path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.1\nsearch example.test\n")
    cfg = kuberuntime.dns_config(pod(hostNetwork=True), cluster_dns=["10.43.0.10"], cluster_domain="cluster.local",
                                 host_resolv=resolv)
    assert cfg.servers == ["192.0.2.1"] and cfg.searches == ["example.test"]


def test_sandbox_config_hostports_and_labels():
    p = pod()
    p["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    cfg = kuberuntime.sandbox_config(p, 0, cgroup_parent="kubepods/besteffort/podu1", cluster_dns=[],
                                     cluster_domain="cluster.local")
    assert [(m.container_port, m.host_port, m.protocol) for m in cfg.port_mappings] == [(80, 8080, "TCP")]
    assert cfg.labels[kuberuntime.POD_UID] == UID and cfg.hostname == "p"


def test_security_context_merges_pod_and_container():
    p = pod(securityContext={"runAsUser": 1000, "runAsGroup": 3000})
    c = {"name": "app", "securityContext": {"runAsUser": 2000, "readOnlyRootFilesystem": True,
                                            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
    sc = kuberuntime.security_context(p, c)
    assert (sc.run_as_user, sc.run_as_group, sc.readonly_rootfs, sc.no_new_privs) == (2000, 3000, True, True)
    assert sc.capabilities_drop == ["ALL"]


def test_ephemeral_container_starts_once():
    p = pod()
    p["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox"}]
    running = [ctr("app", "running")]
    assert names(kuberuntime.compute_pod_actions(p, [sandbox()], running)) == ["debugger"]
    done = running + [ctr("debugger", "exited", 0)]
    assert names(kuberuntime.compute_pod_actions(p, [sandbox()], done)) == []
