"""Deployments with real kubectl on the one-node cluster (issue 7, acceptance 2, 4 and 5): the
Deployment and ReplicaSet controllers, the scheduler and the node agent together.

Pods run busybox with a TERM trap, so that a deleted pod goes at once rather than after the
30 s grace period; bounds are read from ``kubectl get -w`` streams while a rollout runs.
"""

from __future__ import annotations

import threading
from pathlib import Path

import harness
import nodes
from workloads import (
    BUSYBOX,
    SLEEP,
    deployment,
    get_json,
    is_ready,
    live_pods,
    wait_pods,
)

IMAGE_V1 = BUSYBOX
IMAGE_V2 = "docker.io/library/busybox:1.35"
BAD_IMAGE = "docker.io/library/doesnotexist:1"
SEED = Path(__file__).parent / "fixtures" / "seed" / "gitea-deployment.yaml"

def web(replicas=3, surge=1, unavailable=0, image=IMAGE_V1) -> str:
    return deployment("web", replicas=replicas, image=image, surge=surge, unavailable=unavailable)


def rollout_status(cluster, ns: str, name: str = "web", timeout: str = "120s"):
    return cluster.kubectl("rollout", "status", f"deployment/{name}", "-n", ns, f"--timeout={timeout}",
                           check=False, timeout=180)


def image_of(cluster, ns: str, name: str = "web") -> str:
    return get_json(cluster, "deployment", name, "-n", ns)["spec"]["template"]["spec"]["containers"][0]["image"]


class Bounds:
    """Watches (``kubectl get -w``) of the pods and ReplicaSets of ``app=web`` during a rollout:
    the available pods (Ready, not being deleted) and the ReplicaSets' summed ``spec.replicas``
    after every event. The surge bound is on ReplicaSet sizes, which is what the controller
    promises: a pod of a ReplicaSet scaled down can still be shutting down while its
    replacement starts, in upstream as here."""

    def __init__(self, cluster, ns: str):
        self.pods = cluster.kubectl_stream(
            "get", "pods", "-n", ns, "-l", "app=web", "-w", "-o",
            'jsonpath={.metadata.name} {.metadata.deletionTimestamp} '
            '{.status.conditions[?(@.type=="Ready")].status}{"\\n"}')
        self.rss = cluster.kubectl_stream("get", "rs", "-n", ns, "-l", "app=web", "-w", "-o",
                                          'jsonpath={.metadata.name} {.spec.replicas}{"\\n"}')
        self.available: list[int] = []
        self.total: list[int] = []
        self._pod_state: dict[str, bool] = {}
        self._rs_size: dict[str, int] = {}
        self._threads = [threading.Thread(target=self._follow, args=(self.pods, self._pod), daemon=True),
                         threading.Thread(target=self._follow, args=(self.rss, self._rs), daemon=True)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _follow(stream, fn) -> None:
        while True:
            try:
                line = stream.wait_for(".", timeout=3600)
            except AssertionError:
                return  # the stream ended (closed)
            fn(line.split())

    def _pod(self, fields: list[str]) -> None:
        name = fields[0]
        terminating = len(fields) == 3 or (len(fields) == 2 and fields[1] not in ("True", "False"))
        ready = fields[-1] == "True" and not terminating
        self._pod_state[name] = ready
        self.available.append(sum(self._pod_state.values()))

    def _rs(self, fields: list[str]) -> None:
        self._rs_size[fields[0]] = int(fields[1])
        self.total.append(sum(self._rs_size.values()))

    def listed(self, ready: int) -> None:
        """Wait until the watch has listed ``ready`` available pods; later events are the rollout."""
        harness.eventually(lambda: self.available and self.available[-1] == ready, timeout=30,
                           what=f"the pod watch listing {ready} ready pods")
        self.start = len(self.available)

    def during(self) -> list[int]:
        """Available pods after each event since `listed`."""
        return self.available[self.start:]

    def close(self) -> None:
        self.pods.close()
        self.rss.close()
        for t in self._threads:
            t.join(timeout=10)


def test_create_deployment_replaces_a_deleted_pod_and_scales(node_cluster, node_namespace):
    ns, k = node_namespace, node_cluster.kubectl
    k("create", "deployment", "web", "-n", ns, f"--image={IMAGE_V1}", "--replicas=3", "--", *SLEEP)
    pods = wait_pods(node_cluster, ns, "app=web", 3)
    assert all(p["spec"]["nodeName"] == nodes.NODE_NAME for p in pods)
    done = rollout_status(node_cluster, ns)
    assert done.returncode == 0 and 'deployment "web" successfully rolled out' in done.stdout
    wide = k("get", "pods", "-n", ns, "-o", "wide").stdout.splitlines()
    assert len(wide) == 4 and all(nodes.NODE_NAME in line and "Running" in line for line in wide[1:])

    victim = pods[0]["metadata"]["name"]
    k("delete", "pod", victim, "-n", ns, "--wait=false")
    pods = wait_pods(node_cluster, ns, "app=web", 3)
    assert victim not in {p["metadata"]["name"] for p in pods}

    k("scale", "deployment", "web", "-n", ns, "--replicas=5")
    wait_pods(node_cluster, ns, "app=web", 5)
    k("scale", "deployment", "web", "-n", ns, "--replicas=2")
    wait_pods(node_cluster, ns, "app=web", 2)
    (rs,) = get_json(node_cluster, "rs", "-n", ns, "-l", "app=web")["items"]
    h = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{h}"
    harness.eventually(lambda: get_json(node_cluster, "deployment", "web", "-n", ns)["status"].get(
        "availableReplicas") == 2, what="status availableReplicas 2")
    row = k("get", "deployment", "web", "-n", ns).stdout.splitlines()[1].split()
    assert row[1:4] == ["2/2", "2", "2"]  # READY UP-TO-DATE AVAILABLE

    describe = k("describe", "deployment", "web", "-n", ns).stdout
    assert "ScalingReplicaSet" in describe
    assert f"Scaled up replica set web-{h} to 3" in describe
    assert f"Scaled up replica set web-{h} to 5 from 3" in describe
    assert f"Scaled down replica set web-{h} to 2 from 5" in describe
    assert f"NewReplicaSet:   web-{h} (2/2 replicas created)" in describe
    rs_describe = k("describe", "rs", f"web-{h}", "-n", ns).stdout
    assert "SuccessfulCreate" in rs_describe and "SuccessfulDelete" in rs_describe


def test_kubectl_run_makes_a_bare_pod(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("run", "single", "-n", ns, f"--image={IMAGE_V1}", "--restart=Never", "--command", "--",
                         *SLEEP)
    pod = node_cluster.wait_pod(ns, "single", lambda p: p["status"].get("phase") == "Running", timeout=90)
    assert not pod["metadata"].get("ownerReferences")
    assert get_json(node_cluster, "rs", "-n", ns)["items"] == []


def test_seed_extensions_v1beta1_deployment_applies_and_runs(node_cluster, node_namespace):
    """The seed's gitea Deployment as written (extensions/v1beta1); only its image is one the
    test registry serves."""
    ns = node_namespace
    manifest = SEED.read_text().replace("gitea/gitea:1.4", "docker.io/library/nginx:latest")
    assert "apiVersion: extensions/v1beta1" in manifest
    out = node_cluster.kubectl("apply", "-n", ns, "-f", "-", input=manifest).stdout
    assert "deployment.extensions/gitea-deployment created" in out or "gitea-deployment created" in out
    (pod,) = wait_pods(node_cluster, ns, "app=gitea", 1)
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    assert rollout_status(node_cluster, ns, "gitea-deployment").returncode == 0
    d = get_json(node_cluster, "deployment", "gitea-deployment", "-n", ns)
    assert d["apiVersion"] == "apps/v1"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    # applied again with a change, through the same legacy version: a rolling update
    node_cluster.kubectl("apply", "-n", ns, "-f", "-", input=manifest.replace("replicas: 1", "replicas: 2"))
    wait_pods(node_cluster, ns, "app=gitea", 2)


def test_rolling_update_history_undo_pause_resume(node_cluster, node_namespace):
    ns, k = node_namespace, node_cluster.kubectl
    k("apply", "-n", ns, "-f", "-", input=web(replicas=3, surge=1, unavailable=0))
    wait_pods(node_cluster, ns, "app=web", 3)
    assert rollout_status(node_cluster, ns).returncode == 0

    bounds = Bounds(node_cluster, ns)
    try:
        bounds.listed(3)
        k("set", "image", "deployment/web", "-n", ns, f"app={IMAGE_V2}")
        done = rollout_status(node_cluster, ns)
        assert done.returncode == 0, done.stdout + done.stderr
        assert 'deployment "web" successfully rolled out' in done.stdout
    finally:
        bounds.close()
    assert bounds.total and max(bounds.total) <= 3 + 1, bounds.total
    assert bounds.during() and min(bounds.during()) >= 3 - 0, bounds.available
    wait_pods(node_cluster, ns, "app=web", 3)

    history = k("rollout", "history", "deployment/web", "-n", ns).stdout
    revisions = [line.split()[0] for line in history.splitlines() if line[:1].isdigit()]
    assert revisions == ["1", "2"], history
    assert k("rollout", "history", "deployment/web", "-n", ns, "--revision=1").stdout.count(IMAGE_V1) == 1

    k("rollout", "undo", "deployment/web", "-n", ns)
    assert rollout_status(node_cluster, ns).returncode == 0
    assert image_of(node_cluster, ns) == IMAGE_V1
    pods = wait_pods(node_cluster, ns, "app=web", 3)
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {IMAGE_V1}
    history = k("rollout", "history", "deployment/web", "-n", ns).stdout
    assert [line.split()[0] for line in history.splitlines() if line[:1].isdigit()] == ["2", "3"], history

    k("rollout", "pause", "deployment/web", "-n", ns)
    k("set", "image", "deployment/web", "-n", ns, f"app={IMAGE_V2}")

    def paused() -> bool:
        d = get_json(node_cluster, "deployment", "web", "-n", ns)
        cond = next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")
        return d["status"].get("observedGeneration") == d["metadata"]["generation"] and \
            cond["reason"] == "DeploymentPaused"
    harness.eventually(paused, what="the paused Deployment observed")
    assert {p["spec"]["containers"][0]["image"] for p in live_pods(node_cluster, ns, "app=web")} == {IMAGE_V1}
    k("rollout", "resume", "deployment/web", "-n", ns)
    assert rollout_status(node_cluster, ns).returncode == 0
    pods = wait_pods(node_cluster, ns, "app=web", 3)
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {IMAGE_V2}


def test_rolling_update_with_unavailability_and_no_surge(node_cluster, node_namespace):
    ns, k = node_namespace, node_cluster.kubectl
    k("apply", "-n", ns, "-f", "-", input=web(replicas=4, surge=0, unavailable=2))
    wait_pods(node_cluster, ns, "app=web", 4)
    bounds = Bounds(node_cluster, ns)
    try:
        bounds.listed(4)
        k("set", "image", "deployment/web", "-n", ns, f"app={IMAGE_V2}")
        assert rollout_status(node_cluster, ns).returncode == 0
    finally:
        bounds.close()
    assert bounds.total and max(bounds.total) <= 4, bounds.total
    assert bounds.during() and min(bounds.during()) >= 4 - 2, bounds.available
    assert min(bounds.during()) < 4  # it did use its unavailability budget


def test_bad_image_exceeds_the_progress_deadline(node_cluster, node_namespace):
    ns, k = node_namespace, node_cluster.kubectl
    k("apply", "-n", ns, "-f", "-", input=web(replicas=2, surge=1, unavailable=0))
    wait_pods(node_cluster, ns, "app=web", 2)
    k("patch", "deployment", "web", "-n", ns, "-p", '{"spec":{"progressDeadlineSeconds":10}}')
    k("set", "image", "deployment/web", "-n", ns, f"app={BAD_IMAGE}")
    done = rollout_status(node_cluster, ns, timeout="90s")
    assert done.returncode != 0
    assert 'error: deployment "web" exceeded its progress deadline' in done.stderr, done.stdout + done.stderr
    d = get_json(node_cluster, "deployment", "web", "-n", ns)
    cond = next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")
    assert (cond["status"], cond["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert cond["message"].endswith("has timed out progressing.")
    # the old pods keep serving: maxUnavailable 0
    assert sum(is_ready(p) for p in live_pods(node_cluster, ns, "app=web")) == 2
    describe = k("describe", "deployment", "web", "-n", ns).stdout
    assert "ProgressDeadlineExceeded" in describe
