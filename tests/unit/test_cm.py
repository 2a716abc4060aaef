"""The container manager's QoS class, cgroup parents and cgroup values, against upstream's rules."""

import pytest

from kubeling.kubelet import cm
from kubeling.kubelet.runtime import LinuxResources

GI = 1024 ** 3


def ctr(name="c", requests=None, limits=None, restart_policy=None):
    c = {"name": name, "image": "busybox", "resources": {}}
    if requests is not None:
        c["resources"]["requests"] = requests
    if limits is not None:
        c["resources"]["limits"] = limits
    if restart_policy:
        c["restartPolicy"] = restart_policy
    return c


def pod(*containers, init=(), uid="u1", **spec):
    return {"metadata": {"name": "p", "namespace": "ns", "uid": uid},
            "spec": {"containers": list(containers), "initContainers": list(init), **spec}}


FULL = {"cpu": "500m", "memory": "256Mi"}


@pytest.mark.parametrize("p,want", [
    pytest.param(pod(ctr()), cm.BEST_EFFORT, id="no-resources"),
    pytest.param(pod(ctr(requests={"cpu": "0"}, limits={"memory": "0"})), cm.BEST_EFFORT, id="zero-values"),
    pytest.param(pod(ctr(requests={"ephemeral-storage": "1Gi"})), cm.BEST_EFFORT, id="only-non-qos-resource"),
    pytest.param(pod(ctr(requests=FULL, limits=FULL)), cm.GUARANTEED, id="requests-equal-limits"),
    pytest.param(pod(ctr(requests={"cpu": "0.5", "memory": "256Mi"}, limits={"cpu": "500m", "memory": "0.25Gi"})),
                 cm.GUARANTEED, id="equal-in-other-spelling"),
    pytest.param(pod(ctr(requests={"cpu": "100m"})), cm.BURSTABLE, id="request-only"),
    pytest.param(pod(ctr(requests=FULL, limits={"cpu": "1", "memory": "256Mi"})), cm.BURSTABLE,
                 id="limit-above-request"),
    pytest.param(pod(ctr(limits={"cpu": "1"}, requests={"cpu": "1"})), cm.BURSTABLE, id="memory-limit-missing"),
    pytest.param(pod(ctr(requests=FULL, limits=FULL), ctr("b")), cm.BURSTABLE, id="second-container-empty"),
    pytest.param(pod(ctr(requests=FULL, limits=FULL), init=[ctr("i", requests=FULL, limits=FULL)]),
                 cm.GUARANTEED, id="init-container-guaranteed"),
    pytest.param(pod(ctr(requests=FULL, limits=FULL), init=[ctr("i")]), cm.BURSTABLE,
                 id="init-container-without-limits"),
    pytest.param(pod(ctr(), init=[ctr("i", requests={"memory": "1Mi"})]), cm.BURSTABLE,
                 id="init-container-request-counts"),
])
def test_compute_qos(p, want):
    assert cm.compute_qos(p) == want


def test_pod_qos_prefers_status():
    p = pod(ctr())
    p["status"] = {"qosClass": cm.BURSTABLE}
    assert cm.pod_qos(p) == cm.BURSTABLE
    assert cm.compute_qos(p) == cm.BEST_EFFORT


@pytest.mark.parametrize("p,want", [
    pytest.param(pod(ctr(requests=FULL, limits=FULL), uid="g"), "kubepods/podg", id="guaranteed"),
    pytest.param(pod(ctr(requests={"cpu": "1m"}), uid="b"), "kubepods/burstable/podb", id="burstable"),
    pytest.param(pod(ctr(), uid="e"), "kubepods/besteffort/pode", id="besteffort"),
])
def test_cgroup_parent(p, want):
    assert cm.cgroup_parent(p) == want


@pytest.mark.parametrize("milli,shares,quota", [
    pytest.param(0, 2, 0, id="zero"),
    pytest.param(1, 2, 1000, id="one-milli-clamped"),
    pytest.param(10, 10, 1000, id="ten-milli"),
    pytest.param(200, 204, 20000, id="200m"),
    pytest.param(1000, 1024, 100000, id="one-cpu"),
    pytest.param(2500, 2560, 250000, id="2.5-cpu"),
    pytest.param(300_000, 262144, 30_000_000, id="shares-capped"),
])
def test_cpu_conversions(milli, shares, quota):
    assert cm.milli_cpu_to_shares(milli) == shares
    assert cm.milli_cpu_to_quota(milli) == quota


@pytest.mark.parametrize("p,idx,want", [
    pytest.param(pod(ctr(requests=FULL, limits=FULL)), 0,
                 LinuxResources(cpu_period=100000, cpu_quota=50000, cpu_shares=512,
                                memory_limit_bytes=256 * 2 ** 20, oom_score_adj=-997), id="guaranteed"),
    pytest.param(pod(ctr()), 0,
                 LinuxResources(cpu_period=100000, cpu_quota=0, cpu_shares=2, oom_score_adj=1000), id="besteffort"),
    pytest.param(pod(ctr(limits={"cpu": "200m"})), 0,
                 LinuxResources(cpu_period=100000, cpu_quota=20000, cpu_shares=204, oom_score_adj=999),
                 id="limit-only-stands-for-request"),
    pytest.param(pod(ctr(requests={"cpu": "250m", "memory": "1Gi"}, limits={"memory": "2Gi"})), 0,
                 LinuxResources(cpu_period=100000, cpu_quota=0, cpu_shares=256, memory_limit_bytes=2 * GI,
                                oom_score_adj=1000 - 1000 * GI // (4 * GI)), id="burstable-memory-share"),
    pytest.param(pod(ctr(requests={"memory": "4Gi"}, limits={"memory": "8Gi"})), 0,
                 LinuxResources(cpu_period=100000, cpu_shares=2, memory_limit_bytes=8 * GI, oom_score_adj=3),
                 id="burstable-whole-node-clamped-to-3"),
    pytest.param(pod(ctr(requests={"memory": "1Gi"}), ctr("b", requests={"memory": "2Gi"}),
                     init=[ctr("side", requests={"memory": "1Mi"}, restart_policy="Always")]),
                 ("init", 0),
                 LinuxResources(cpu_period=100000, cpu_shares=2, oom_score_adj=750), id="sidecar-follows-min-regular"),
])
def test_container_resources(p, idx, want):
    c = p["spec"]["initContainers"][idx[1]] if isinstance(idx, tuple) else p["spec"]["containers"][idx]
    assert cm.container_resources(p, c, 4 * GI) == want


def test_container_resources_without_cfs_quota():
    p = pod(ctr(limits={"cpu": "1"}))
    r = cm.container_resources(p, p["spec"]["containers"][0], GI, cfs_quota=False)
    assert (r.cpu_period, r.cpu_quota, r.cpu_shares) == (0, 0, 1024)


def critical(annotations=None, **spec):
    p = pod(ctr(), **spec)
    p["metadata"]["annotations"] = annotations or {}
    return p


@pytest.mark.parametrize("p,want", [
    pytest.param(critical(), False, id="plain"),
    pytest.param(critical({"kubernetes.io/config.mirror": "abc"}), True, id="mirror-pod"),
    pytest.param(critical({"kubernetes.io/config.source": "file"}), True, id="static-pod"),
    pytest.param(critical({"kubernetes.io/config.source": "api"}), False, id="api-source"),
    pytest.param(critical(priority=2_000_000_000), True, id="system-critical-priority"),
    pytest.param(critical(priority=1_999_999_999), False, id="below-critical-priority"),
])
def test_is_critical(p, want):
    assert cm.is_critical(p) is want


def test_oom_score_adj_node_critical_pod():
    p = pod(ctr(), priority=2_000_001_000, priorityClassName="system-node-critical")
    assert cm.oom_score_adj(p, p["spec"]["containers"][0], GI) == -997
    p["spec"]["priorityClassName"] = "system-cluster-critical"
    assert cm.oom_score_adj(p, p["spec"]["containers"][0], GI) == 1000


@pytest.mark.parametrize("p,requests,limits", [
    pytest.param(pod(ctr(requests={"cpu": "1"}), ctr("b", requests={"cpu": "500m"})),
                 {"cpu": 1.5}, {}, id="regular-sum"),
    pytest.param(pod(ctr(requests={"cpu": "1"}), init=[ctr("i", requests={"cpu": "3"})]),
                 {"cpu": 3}, {}, id="init-peak-wins"),
    pytest.param(pod(ctr(requests={"cpu": "1"}),
                     init=[ctr("s", requests={"cpu": "1"}, limits={"cpu": "2"}, restart_policy="Always"),
                           ctr("i", requests={"cpu": "1500m"})]),
                 {"cpu": 2.5}, {"cpu": 2}, id="sidecar-runs-beside-later-init"),
    pytest.param(pod(ctr(requests={"cpu": "1"}, limits={"cpu": "1"}), overhead={"cpu": "250m", "memory": "10Mi"}),
                 {"cpu": 1.25, "memory": 10 * 2 ** 20}, {"cpu": 1.25}, id="overhead-only-on-declared-limits"),
])
def test_pod_requests_and_limits(p, requests, limits):
    assert {k: float(v) for k, v in cm.pod_requests(p).items()} == requests
    assert {k: float(v) for k, v in cm.pod_limits(p).items()} == limits


@pytest.mark.parametrize("p,want", [
    pytest.param(pod(ctr()), LinuxResources(cpu_shares=2), id="besteffort-min-shares"),
    pytest.param(pod(ctr(requests=FULL, limits=FULL), ctr("b", requests=FULL, limits=FULL)),
                 LinuxResources(cpu_period=100000, cpu_quota=100000, cpu_shares=1024, memory_limit_bytes=512 * 2 ** 20),
                 id="guaranteed-everything"),
    pytest.param(pod(ctr(requests={"cpu": "100m"}, limits={"cpu": "200m"}), ctr("b", requests={"cpu": "100m"})),
                 LinuxResources(cpu_shares=204), id="burstable-undeclared-cpu-limit-no-quota"),
    pytest.param(pod(ctr(requests={"cpu": "100m"}, limits={"cpu": "200m", "memory": "64Mi"})),
                 LinuxResources(cpu_period=100000, cpu_quota=20000, cpu_shares=102, memory_limit_bytes=64 * 2 ** 20),
                 id="burstable-all-declared"),
])
def test_pod_resources(p, want):
    assert cm.pod_resources(p) == want
