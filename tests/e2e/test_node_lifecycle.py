"""Pod lifecycle on a real node (issue 6, acceptance 6, third bullet, and the lifecycle scope).

Init containers in order and a failing one blocking the app; a sidecar beside the app;
restartPolicy Never/OnFailure ending in ``Completed``/``Error``; ``activeDeadlineSeconds``;
CrashLoopBackOff's growing back-off; readiness driving READY; httpGet and tcpSocket probes
against the pod IP; the postStart hook. Everything is asserted as a user sees it: ``kubectl get``
columns, pod status and events.
"""

from __future__ import annotations

import itertools
import re

import harness
import pytest


def kubectl_row(cluster, ns: str, name: str) -> dict[str, str]:
    """``kubectl get pod`` as {NAME, READY, STATUS, RESTARTS, AGE}."""
    header, row = cluster.kubectl("get", "pod", name, "-n", ns).stdout.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "READY", "STATUS", "RESTARTS"], header
    # RESTARTS may read "2 (5s ago)": its first word is the count
    return dict(zip(("NAME", "READY", "STATUS", "RESTARTS"), row.split()))


def status_of(pod: dict, name: str) -> dict:
    for s in (pod["status"].get("initContainerStatuses") or []) + (pod["status"].get("containerStatuses") or []):
        if s["name"] == name:
            return s
    return {}


def condition(pod: dict, ctype: str) -> dict:
    return next((c for c in pod["status"].get("conditions") or [] if c["type"] == ctype), {})


def events_of(cluster, ns: str, name: str) -> str:
    return cluster.kubectl("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}").stdout


INIT_ORDER = """
apiVersion: v1
kind: Pod
metadata:
  name: ordered
spec:
  nodeName: kl-node
  volumes: [{name: work, emptyDir: {}}]
  initContainers:
  - name: first
    image: busybox
    command: ["sh", "-c", "sleep 1; echo first >> /scratch/order"]
    volumeMounts: [{name: work, mountPath: /scratch}]
  - name: second
    image: busybox
    command: ["sh", "-c", "echo second >> /scratch/order"]
    volumeMounts: [{name: work, mountPath: /scratch}]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo app >> /scratch/order; cat /scratch/order; sleep 3600"]
    volumeMounts: [{name: work, mountPath: /scratch}]
"""


def test_init_containers_run_in_order_before_the_app(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=INIT_ORDER)
    pod = node_cluster.wait_pod(ns, "ordered", lambda p: "running" in status_of(p, "app").get("state", {}))
    for name in ("first", "second"):
        term = status_of(pod, name)["state"]["terminated"]
        assert (term["exitCode"], term["reason"]) == (0, "Completed")
    assert condition(pod, "Initialized")["status"] == "True"
    got = harness.eventually(lambda: node_cluster.kubectl("logs", "-n", ns, "ordered", check=False).stdout,
                             timeout=10, what="the app's log")
    assert got.split() == ["first", "second", "app"]
    assert kubectl_row(node_cluster, ns, "ordered")["STATUS"] == "Running"


FAILING_INIT = """
apiVersion: v1
kind: Pod
metadata:
  name: blocked
spec:
  nodeName: kl-node
  restartPolicy: {policy}
  initContainers:
  - name: setup
    image: busybox
    command: ["sh", "-c", "echo setup failed; exit 3"]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "sleep 3600"]
"""


@pytest.mark.parametrize("policy, final_status, phase", [
    pytest.param("Always", "Init:CrashLoopBackOff", "Pending", id="always-restarts-the-init-container"),
    pytest.param("Never", "Init:Error", "Failed", id="never-fails-the-pod"),
])
def test_a_failing_init_container_blocks_the_app(node_cluster, node_namespace, policy, final_status, phase):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=FAILING_INIT.format(policy=policy))
    seen: set[str] = set()

    def settled(p: dict) -> bool:
        seen.add(kubectl_row(node_cluster, ns, "blocked")["STATUS"])
        state = status_of(p, "setup").get("state", {})
        at_rest = "waiting" in state if policy == "Always" else "terminated" in state
        return final_status in seen and p["status"].get("phase") == phase and at_rest
    pod = node_cluster.wait_pod(ns, "blocked", settled, timeout=45, what=f"{final_status} and phase {phase}")
    assert seen <= {"Pending", "Init:0/1", "Init:Error", "Init:CrashLoopBackOff"}, seen
    setup = status_of(pod, "setup")
    term = setup["state"].get("terminated") or setup["lastState"].get("terminated")
    assert term, setup
    assert (term["exitCode"], term["reason"]) == (3, "Error")
    app = status_of(pod, "app")
    assert app["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert app["restartCount"] == 0 and not app.get("containerID")
    assert condition(pod, "Initialized")["status"] == "False"
    assert condition(pod, "Initialized")["reason"] == "ContainersNotInitialized"
    assert "setup failed" in node_cluster.kubectl("logs", "-n", ns, "blocked", "-c", "setup").stdout
    if policy == "Always":
        assert setup["restartCount"] >= 1
        assert setup["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    else:
        assert setup["restartCount"] == 0
    assert "Started container app" not in events_of(node_cluster, ns, "blocked")


SIDECAR = """
apiVersion: v1
kind: Pod
metadata:
  name: with-sidecar
spec:
  nodeName: kl-node
  volumes: [{name: www, emptyDir: {}}]
  initContainers:
  - name: proxy
    image: busybox
    restartPolicy: Always
    command: ["sh", "-c", "echo from-sidecar > /www/index.html; exec httpd -f -p 8081 -h /www"]
    volumeMounts: [{name: www, mountPath: /www}]
    startupProbe:
      tcpSocket: {port: 8081}
      periodSeconds: 1
  - name: wait-for-proxy
    image: busybox
    command: ["sh", "-c", "wget -qO- http://127.0.0.1:8081/"]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "sleep 3600"]
"""


def test_a_sidecar_runs_beside_the_app(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=SIDECAR)
    pod = node_cluster.wait_pod(ns, "with-sidecar", lambda p: p["status"].get("phase") == "Running" and all(
        s.get("ready") for s in p["status"].get("containerStatuses") or []), what="app running")
    proxy = status_of(pod, "proxy")
    assert "running" in proxy["state"] and proxy["started"] is True and proxy["restartCount"] == 0
    # the init container after the sidecar ran with the sidecar already serving
    waited = status_of(pod, "wait-for-proxy")["state"]["terminated"]
    assert (waited["exitCode"], waited["reason"]) == (0, "Completed")
    assert node_cluster.kubectl("logs", "-n", ns, "with-sidecar", "-c", "wait-for-proxy").stdout.strip() == \
        "from-sidecar"
    got = node_cluster.kubectl("exec", "-n", ns, "with-sidecar", "-c", "app", "--",
                               "wget", "-qO-", "http://127.0.0.1:8081/").stdout
    assert got.strip() == "from-sidecar"
    # kubectl counts a sidecar among the ready containers
    row = kubectl_row(node_cluster, ns, "with-sidecar")
    assert (row["READY"], row["STATUS"]) == ("2/2", "Running")


ONE_SHOT = """
apiVersion: v1
kind: Pod
metadata:
  name: one-shot
spec:
  nodeName: kl-node
  restartPolicy: {policy}
  containers:
  - name: job
    image: busybox
    command: ["sh", "-c", "sleep 1; exit {code}"]
"""


@pytest.mark.parametrize("policy, code, phase, status", [
    pytest.param("Never", 0, "Succeeded", "Completed", id="never-success"),
    pytest.param("Never", 2, "Failed", "Error", id="never-failure"),
    pytest.param("OnFailure", 0, "Succeeded", "Completed", id="onfailure-success"),
])
def test_restart_policy_ends_the_pod(node_cluster, node_namespace, policy, code, phase, status):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=ONE_SHOT.format(policy=policy, code=code))
    pod = node_cluster.wait_pod(ns, "one-shot", lambda p: p["status"].get("phase") == phase, what=phase)
    job = status_of(pod, "job")
    assert job["state"]["terminated"]["exitCode"] == code
    assert job["state"]["terminated"]["reason"] == status
    assert job["restartCount"] == 0
    row = kubectl_row(node_cluster, ns, "one-shot")
    assert (row["READY"], row["STATUS"], row["RESTARTS"]) == ("0/1", status, "0")
    assert condition(pod, "Ready")["status"] == "False"
    assert condition(pod, "Ready")["reason"] == "PodCompleted"


def test_restart_policy_on_failure_restarts_a_failed_container(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=ONE_SHOT.format(policy="OnFailure", code=4))
    pod = node_cluster.wait_pod(ns, "one-shot", lambda p: status_of(p, "job").get("restartCount", 0) >= 1,
                                what="a restart")
    assert pod["status"]["phase"] == "Running"
    assert status_of(pod, "job")["lastState"]["terminated"]["exitCode"] == 4


DEADLINE = """
apiVersion: v1
kind: Pod
metadata:
  name: deadline
spec:
  nodeName: kl-node
  activeDeadlineSeconds: 4
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "sleep 3600"]
"""


def test_active_deadline_seconds_fails_the_pod(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=DEADLINE)
    node_cluster.wait_pod(ns, "deadline", lambda p: p["status"].get("phase") == "Running")
    pod = node_cluster.wait_pod(ns, "deadline", lambda p: p["status"].get("phase") == "Failed" and
                                "terminated" in status_of(p, "app").get("state", {}), timeout=30,
                                what="Failed with its container stopped")
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert pod["status"]["message"] == "Pod was active on the node longer than the specified deadline"
    assert status_of(pod, "app")["state"]["terminated"]["exitCode"] == 137
    # as upstream since its containers are reported terminated (kubernetes#98718): kubectl get
    # shows the killed container's reason, kubectl describe the pod's
    assert kubectl_row(node_cluster, ns, "deadline")["STATUS"] == "Error"
    describe = node_cluster.kubectl("describe", "pod", "deadline", "-n", ns).stdout
    assert re.search(r"^Reason:\s+DeadlineExceeded$", describe, re.MULTILINE), describe
    assert re.search(r"^Message:\s+Pod was active on the node longer than the specified deadline$", describe, re.MULTILINE)
    assert "DeadlineExceeded" in events_of(node_cluster, ns, "deadline")


CRASHER = """
apiVersion: v1
kind: Pod
metadata:
  name: crasher
spec:
  nodeName: kl-node
  volumes: [{name: log, emptyDir: {}}]
  containers:
  - name: crash
    image: busybox
    # the host's monotonic uptime (no time namespace): sub-second start times across restarts
    command: ["sh", "-c", "cut -d' ' -f1 /proc/uptime >> /log/starts; exit 1"]
    volumeMounts: [{name: log, mountPath: /log}]
  - name: watcher
    image: busybox
    command: ["sh", "-c", "sleep 3600"]
    volumeMounts: [{name: log, mountPath: /log}]
"""


def test_crash_loop_back_off_grows(node_cluster, node_namespace):
    """As upstream: the first restart comes at once, then 10 s, then 20 s (10 s doubling)."""
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=CRASHER)

    def starts() -> list[float]:
        out = node_cluster.kubectl("exec", "-n", ns, "crasher", "-c", "watcher", "--", "cat", "/log/starts",
                                   check=False).stdout
        got = [float(x) for x in out.split()]
        return got if len(got) >= 4 else []
    times = harness.eventually(starts, timeout=90, interval=1.0, what="four starts of the crashing container")
    gaps = [b - a for a, b in itertools.pairwise(times)][:3]
    assert gaps[0] < 8, gaps
    assert 8 <= gaps[1] <= 16, gaps
    assert 17 <= gaps[2] <= 30 and gaps[2] > 1.5 * gaps[1], gaps

    pod = node_cluster.wait_pod(ns, "crasher", lambda p: status_of(p, "crash").get("state", {}).get(
        "waiting", {}).get("reason") == "CrashLoopBackOff", what="CrashLoopBackOff")
    crash = status_of(pod, "crash")
    assert crash["state"]["waiting"]["message"].startswith("back-off 40s restarting failed container=crash pod=")
    assert crash["lastState"]["terminated"]["exitCode"] == 1
    row = kubectl_row(node_cluster, ns, "crasher")
    assert (row["READY"], row["STATUS"]) == ("1/2", "CrashLoopBackOff")
    assert int(row["RESTARTS"]) >= 3
    assert "Back-off restarting failed container crash in pod crasher_" in events_of(node_cluster, ns, "crasher")


READINESS = """
apiVersion: v1
kind: Pod
metadata:
  name: readiness
spec:
  nodeName: kl-node
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "sleep 5; touch /tmp/ready; sleep 3600"]
    readinessProbe:
      exec:
        command: ["cat", "/tmp/ready"]
      periodSeconds: 1
      failureThreshold: 1
"""


def test_readiness_probe_drives_the_ready_condition(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=READINESS)
    pod = node_cluster.wait_pod(ns, "readiness", lambda p: p["status"].get("phase") == "Running")
    assert kubectl_row(node_cluster, ns, "readiness")["READY"] == "0/1"
    assert condition(pod, "Ready")["status"] == "False"
    assert condition(pod, "Ready")["reason"] == "ContainersNotReady"
    pod = node_cluster.wait_pod(ns, "readiness", lambda p: condition(p, "Ready").get("status") == "True",
                                timeout=30, what="Ready")
    assert condition(pod, "ContainersReady")["status"] == "True"
    assert kubectl_row(node_cluster, ns, "readiness")["READY"] == "1/1"

    node_cluster.kubectl("exec", "-n", ns, "readiness", "--", "rm", "/tmp/ready")
    pod = node_cluster.wait_pod(ns, "readiness", lambda p: condition(p, "Ready").get("status") == "False",
                                timeout=20, what="not Ready again")
    assert kubectl_row(node_cluster, ns, "readiness")["READY"] == "0/1"
    # readiness never restarts a container
    assert status_of(pod, "app")["restartCount"] == 0
    assert "Readiness probe failed: cat: can't open '/tmp/ready': No such file or directory" in \
        events_of(node_cluster, ns, "readiness")


WEB_PROBED = """
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: kl-node
  containers:
  - name: httpd
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www"]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /healthz, port: http, httpHeaders: [{name: X-Probe, value: kubeling}]}
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: deaf
spec:
  nodeName: kl-node
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "sleep 3600"]
    livenessProbe:
      tcpSocket: {port: 9999}
      periodSeconds: 1
      failureThreshold: 2
"""


def test_http_get_and_tcp_socket_probes_against_the_pod_ip(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=WEB_PROBED)
    pod = node_cluster.wait_pod(ns, "web", lambda p: condition(p, "Ready").get("status") == "True", timeout=40,
                                what="web Ready through its httpGet probe")
    ip = pod["status"]["podIP"]
    assert kubectl_row(node_cluster, ns, "web")["READY"] == "1/1"

    # a tcpSocket liveness probe to a port nobody listens on restarts the container
    deaf = node_cluster.wait_pod(ns, "deaf", lambda p: status_of(p, "app").get("restartCount", 0) >= 1,
                                 timeout=40, what="deaf restarted by its tcpSocket liveness probe")
    deaf_ip = deaf["status"]["podIP"]
    assert f"Liveness probe failed: dial tcp {deaf_ip}:9999: connect: connection refused" in \
        events_of(node_cluster, ns, "deaf")

    # the httpGet probe reads the status code: 404 makes the pod unready
    node_cluster.kubectl("exec", "-n", ns, "web", "--", "rm", "/www/healthz")
    pod = node_cluster.wait_pod(ns, "web", lambda p: condition(p, "Ready").get("status") == "False", timeout=20,
                                what="web unready after its health file went")
    assert "Readiness probe failed: HTTP probe failed with statuscode: 404" in events_of(node_cluster, ns, "web")
    # the tcpSocket liveness probe still passes: no restart
    assert status_of(pod, "httpd")["restartCount"] == 0
    assert pod["status"]["podIP"] == ip


POST_START = """
apiVersion: v1
kind: Pod
metadata:
  name: hooked
spec:
  nodeName: kl-node
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "sleep 3600"]
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "echo ran-after-start > /tmp/post-start"]
"""


def test_post_start_hook_runs(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=POST_START)
    node_cluster.wait_pod(ns, "hooked", lambda p: p["status"].get("phase") == "Running")
    out = node_cluster.kubectl("exec", "-n", ns, "hooked", "--", "cat", "/tmp/post-start").stdout
    assert out.strip() == "ran-after-start"
    assert "FailedPostStartHook" not in events_of(node_cluster, ns, "hooked")
