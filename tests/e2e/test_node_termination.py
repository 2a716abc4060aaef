"""Graceful termination of pods on a node (issue 6, acceptance 8).

- The preStop hook runs before the container is signalled: it writes to a hostPath directory
  that the test reads after the pod is gone.
- SIGTERM first, SIGKILL after the grace period, measured with ``kubectl delete`` (which waits
  for the pod to be gone): a container that traps TERM and keeps running goes at about
  ``terminationGracePeriodSeconds`` (or ``--grace-period=N``) and saw the TERM; one that exits on
  TERM goes at once even with a long grace period.
- A second ``kubectl delete --grace-period=N`` with a shorter grace reaches the kill already in
  flight: the pod goes after the shorter one, not after the first.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nodes

SLACK = 4.0   # API round trips, the kubelet's final delete and volume teardown, on a busy machine


def wait_pod(cluster: nodes.NodeCluster, ns: str, name: str, predicate, timeout: float = 60, what: str = "") -> dict:
    """`NodeCluster.wait_pod`, with what the user would look at next when it times out."""
    try:
        return cluster.wait_pod(ns, name, predicate, timeout=timeout, what=what)
    except AssertionError as e:
        describe = cluster.kubectl("describe", "pod", name, "-n", ns, check=False).stdout
        raise AssertionError(f"{e}\n--- kubectl describe ---\n{describe}\n--- server log ---\n"
                             f"{cluster.log_tail(40)}") from None


def running(pod: dict) -> bool:
    statuses = pod["status"].get("containerStatuses") or []
    return bool(statuses) and all(s.get("ready") for s in statuses)


def pod_manifest(name: str, out: Path, script: str, *, grace: int, pre_stop: str = "") -> str:
    lifecycle = ""
    if pre_stop:
        lifecycle = f"""
    lifecycle:
      preStop:
        exec:
          command: ["sh", "-c", {json.dumps(pre_stop)}]"""
    return f"""
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: {grace}
  volumes:
  - name: out
    hostPath: {{path: {out}, type: DirectoryOrCreate}}
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", {json.dumps(script)}]
    volumeMounts: [{{name: out, mountPath: /out}}]
    readinessProbe:
      exec: {{command: ["test", "-e", "/out/ready"]}}
      periodSeconds: 1{lifecycle}
"""


# pid 1 of the container: a trap is what lets it be signalled at all (the kernel drops signals to
# a namespace's init that has no handler), and `wait` returns as soon as a trapped signal arrives.
STUBBORN = "trap 'echo TERM >> /out/signals' TERM; touch /out/ready; while :; do sleep 1 & wait $!; done"
POLITE = "trap 'echo TERM >> /out/signals; exit 0' TERM; touch /out/ready; while :; do sleep 3600 & wait $!; done"


def _delete(cluster: nodes.NodeCluster, ns: str, name: str, *args: str) -> float:
    """Seconds ``kubectl delete pod`` takes to see the pod gone."""
    start = time.monotonic()
    cluster.kubectl("delete", "pod", name, "-n", ns, "--wait=true", "--timeout=90s", *args)
    return time.monotonic() - start


def _killing_events(cluster: nodes.NodeCluster, ns: str, name: str) -> list[str]:
    items = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json",
                                       "--field-selector", f"involvedObject.name={name}").stdout)["items"]
    return [e["message"] for e in items if e["reason"] == "Killing"]


def test_the_prestop_hook_runs_before_the_container_is_stopped(node_cluster, node_namespace, tmp_path):
    ns, out = node_namespace, tmp_path / "prestop"
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=pod_manifest(
        "hooked", out, POLITE, grace=30, pre_stop="echo prestop-ran > /out/prestop; echo PRESTOP >> /out/signals"))
    wait_pod(node_cluster, ns, "hooked", running)
    took = _delete(node_cluster, ns, "hooked")
    assert (out / "prestop").read_text() == "prestop-ran\n"
    # the hook finished before the TERM came
    assert (out / "signals").read_text().split() == ["PRESTOP", "TERM"]
    assert took < 30, f"a container that exits on TERM took {took:.1f}s"
    assert _killing_events(node_cluster, ns, "hooked") == ["Stopping container main"]


def test_a_container_ignoring_sigterm_is_killed_after_the_grace_period(node_cluster, node_namespace, tmp_path):
    ns, out, grace = node_namespace, tmp_path / "stubborn", 4
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=pod_manifest("stubborn", out, STUBBORN, grace=grace))
    wait_pod(node_cluster, ns, "stubborn", running)
    took = _delete(node_cluster, ns, "stubborn")
    assert (out / "signals").read_text().split() == ["TERM"], "the container never saw SIGTERM"
    assert grace - 0.5 <= took <= grace + SLACK, f"killed {took:.1f}s after the delete; grace period {grace}s"


def test_delete_grace_period_overrides_the_pod_spec(node_cluster, node_namespace, tmp_path):
    ns, out = node_namespace, tmp_path / "override"
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=pod_manifest("override", out, STUBBORN, grace=60))
    wait_pod(node_cluster, ns, "override", running)
    took = _delete(node_cluster, ns, "override", "--grace-period=2")
    assert (out / "signals").read_text().split() == ["TERM"]
    assert 1.5 <= took <= 2 + SLACK, f"killed {took:.1f}s after delete --grace-period=2"


def test_a_container_that_exits_on_sigterm_goes_at_once(node_cluster, node_namespace, tmp_path):
    ns, out = node_namespace, tmp_path / "polite"
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=pod_manifest("polite", out, POLITE, grace=60))
    wait_pod(node_cluster, ns, "polite", running)
    took = _delete(node_cluster, ns, "polite")
    assert (out / "signals").read_text().split() == ["TERM"]
    assert took <= SLACK, f"a container that exits on TERM took {took:.1f}s with a 60s grace period"


def test_a_second_delete_with_a_shorter_grace_period_cuts_the_kill_in_flight(node_cluster, node_namespace, tmp_path):
    ns, out = node_namespace, tmp_path / "shortened"
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=pod_manifest("shortened", out, STUBBORN, grace=300))
    wait_pod(node_cluster, ns, "shortened", running)
    node_cluster.kubectl("delete", "pod", "shortened", "-n", ns, "--wait=false")
    signals = out / "signals"
    deadline = time.monotonic() + 60
    while not (signals.exists() and "TERM" in signals.read_text()):   # the 300 s kill is under way
        assert time.monotonic() < deadline, "the container never saw SIGTERM"
        time.sleep(0.2)
    took = _delete(node_cluster, ns, "shortened", "--grace-period=2")
    assert took <= 2 + SLACK, f"gone {took:.1f}s after delete --grace-period=2 (the first delete gave 300s)"
