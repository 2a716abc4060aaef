"""Manifests, reads and waits shared by the workload e2e tests, on any cluster object with a
``kubectl`` method (`nodes.NodeCluster`, `multinode.MultiNodeCluster`).

- Pods run busybox ``sh`` with a TERM trap (`SLEEP`), so a deleted pod goes at once rather than
  after its grace period.
- Manifest builders return YAML for ``kubectl apply/create -f -``; the pods of a workload named
  ``name`` carry the label ``app: name``.
- Waits poll with ``harness.eventually`` and count *live* pods only (no deletionTimestamp): a pod
  being deleted is on its way out whatever its status says.
"""

from __future__ import annotations

import json

import harness

BUSYBOX = "docker.io/library/busybox:latest"
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


def get_json(cluster, *args) -> dict:
    """``kubectl get ARGS -o json``, parsed."""
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def live(pods: list[dict]) -> list[dict]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def live_pods(cluster, ns: str, selector: str) -> list[dict]:
    """The selector's pods that are not being deleted."""
    return live(get_json(cluster, "pods", "-n", ns, "-l", selector)["items"])


def is_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or ())


def wait_pods(cluster, ns: str, selector: str, count: int, *, ready: bool = True, timeout: float = 120) -> list[dict]:
    """Wait for exactly ``count`` live pods of ``selector``, every one Running (and Ready unless
    ``ready`` is False); returns them."""
    found: list[dict] = []

    def check() -> bool:
        found[:] = live_pods(cluster, ns, selector)
        return len(found) == count and all(p["status"].get("phase") == "Running" and (is_ready(p) or not ready)
                                           for p in found)
    state = "ready" if ready else "running"
    harness.eventually(check, timeout=timeout, interval=0.5, what=f"{count} {state} pods {selector} in {ns}")
    return found


def deployment(name: str, *, replicas: int = 3, image: str = BUSYBOX, command: list[str] = SLEEP, grace: int = 5,
               surge: int | str | None = None, unavailable: int | str | None = None) -> str:
    """A Deployment of ``replicas`` pods of one container ``app``; a RollingUpdate strategy with
    ``surge``/``unavailable`` when either is given (else the API's defaults)."""
    strategy = ""
    if surge is not None or unavailable is not None:
        bounds = {k: v for k, v in (("maxSurge", surge), ("maxUnavailable", unavailable)) if v is not None}
        strategy = f"""  strategy:
    type: RollingUpdate
    rollingUpdate: {json.dumps(bounds)}
"""
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
{strategy}  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: {grace}
      containers:
      - name: app
        image: {image}
        command: {json.dumps(command)}
"""


def daemonset(name: str = "agent", image: str = "k8s.gcr.io/busybox") -> str:
    """A DaemonSet of one ``sleep 3600`` container ``c`` (PID 1 ignores TERM: grace 1 s)."""
    return f"""
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
spec:
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: {image}
        command: [sleep, "3600"]
"""


def pdb(name: str, app: str, rule: str = "minAvailable: 2") -> str:
    """A PodDisruptionBudget over the pods ``app=APP``; ``rule`` is its minAvailable or
    maxUnavailable line."""
    return f"""
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {name}
spec:
  {rule}
  selector:
    matchLabels: {{app: {app}}}
"""
