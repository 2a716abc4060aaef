"""Pods that really run: the seed's examples on a node agent (issue 6, acceptance 1-3).

Every pod here is bound by ``spec.nodeName`` (no scheduler yet) and runs as runc containers
from images pulled through the docker.io / k8s.gcr.io mirror (the registry of `node_cluster`).
"""

from __future__ import annotations

import harness
import nodes

LIVENESS = """
apiVersion: v1
kind: Pod
metadata:
  labels:
    test: liveness
  name: liveness-exec
spec:
  nodeName: kl-node
  containers:
  - name: liveness
    image: k8s.gcr.io/busybox
    imagePullPolicy: {policy}
    args:
    - /bin/sh
    - -c
    - touch /tmp/healthy; sleep {healthy}; rm -rf /tmp/healthy; sleep 600
    livenessProbe:
      exec:
        command:
        - cat
        - /tmp/healthy
      initialDelaySeconds: 5
      periodSeconds: 5
"""


def restarts(pod: dict) -> int:
    return sum(s.get("restartCount", 0) for s in (pod.get("status") or {}).get("containerStatuses") or [])


def test_seed_liveness_pod_restarts_after_its_probe_fails(node_cluster, node_namespace):
    """The seed's liveness-probe.yml (its 30 s of health shortened to 10 s)."""
    node_cluster.kubectl("create", "-n", node_namespace, "-f", "-",
                         input=LIVENESS.format(policy="Always", healthy=10))
    pod = node_cluster.wait_pod(node_namespace, "liveness-exec", lambda p: restarts(p) >= 1, timeout=90,
                                what="a restart after the liveness probe failed")
    assert pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 137
    describe = node_cluster.kubectl("describe", "pod", "liveness-exec", "-n", node_namespace).stdout
    assert "Unhealthy" in describe
    assert "Liveness probe failed: cat: can't open '/tmp/healthy': No such file or directory" in describe
    assert "failed liveness probe, will be restarted" in describe
    count = next(line for line in describe.splitlines() if "Restart Count:" in line)
    assert int(count.split(":")[1]) >= 1


def test_imported_image_runs_with_no_registry(node_cluster, node_namespace, images_dir, tmp_path):
    """`kubeling images import` + IfNotPresent: the image name points at no registry at all."""
    node_cluster.kubeling("images", "import", "--data-dir", str(node_cluster.data_dir),
                          str(images_dir / "busybox.docker.tar"))
    listed = node_cluster.kubeling("images", "ls", "--data-dir", str(node_cluster.data_dir)).stdout
    assert "busybox" in listed
    manifest = LIVENESS.format(policy="IfNotPresent", healthy=600).replace(
        "k8s.gcr.io/busybox", "docker.io/library/busybox:latest").replace("liveness-exec", "imported")
    # registries.yaml maps docker.io to the test registry: stop it from being asked at all
    node_cluster.registry.stop()
    try:
        node_cluster.kubectl("create", "-n", node_namespace, "-f", "-", input=manifest)
        pod = node_cluster.wait_pod(node_namespace, "imported", lambda p: p["status"].get("phase") == "Running")
        events = node_cluster.kubectl("get", "events", "-n", node_namespace).stdout
        assert "already present on machine" in events
        assert restarts(pod) == 0
    finally:
        node_cluster.registry._start()


REDIS = """
apiVersion: v1
kind: Pod
metadata:
  name: redis
spec:
  nodeName: kl-node
  containers:
  - name: redis
    image: redis
    volumeMounts:
    - name: redis-storage
      mountPath: /data/redis
  volumes:
  - name: redis-storage
    emptyDir: {}
"""


def test_seed_redis_pod_keeps_its_emptydir_across_a_container_restart(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=REDIS)
    node_cluster.wait_pod(ns, "redis", lambda p: p["status"].get("phase") == "Running")
    node_cluster.kubectl("exec", "-n", ns, "redis", "--", "sh", "-c", "echo kept > /data/redis/test-file")
    # kill the redis process: the container exits and the kubelet restarts it (restartPolicy Always)
    node_cluster.kubectl("exec", "-n", ns, "redis", "--", "sh", "-c", "kill 1", check=False)
    node_cluster.wait_pod(ns, "redis", lambda p: restarts(p) >= 1 and p["status"]["containerStatuses"][0]
                          ["state"].get("running"), what="redis restarted")
    out = node_cluster.kubectl("exec", "-n", ns, "redis", "--", "cat", "/data/redis/test-file").stdout
    assert out.strip() == "kept"


TWO_CONTAINERS = """
apiVersion: v1
kind: Pod
metadata:
  name: two
spec:
  nodeName: kl-node
  volumes:
  - name: shared
    emptyDir: {}
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "echo served-by-web > /www/index.html; httpd -f -p 8080 -h /www"]
    volumeMounts: [{name: shared, mountPath: /www}]
  - name: client
    image: busybox
    command: ["sh", "-c", "sleep 3600"]
    volumeMounts: [{name: shared, mountPath: /from-web}]
"""


def test_two_containers_talk_over_localhost_and_share_an_emptydir(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=TWO_CONTAINERS)
    node_cluster.wait_pod(ns, "two", lambda p: p["status"].get("phase") == "Running" and all(
        s.get("ready") for s in p["status"].get("containerStatuses") or []))
    got = harness.eventually(lambda: node_cluster.kubectl(
        "exec", "-n", ns, "two", "-c", "client", "--", "wget", "-qO-", "http://127.0.0.1:8080/",
        check=False).stdout.strip(), timeout=20, what="web answering on localhost")
    assert got == "served-by-web"
    shared = node_cluster.kubectl("exec", "-n", ns, "two", "-c", "client", "--", "cat",
                                  "/from-web/index.html").stdout
    assert shared.strip() == "served-by-web"


def test_node_is_registered_ready_with_capacity(node_cluster):
    node = nodes.json_of(node_cluster.kubectl("get", "node", nodes.NODE_NAME, "-o", "json").stdout)
    status = node["status"]
    assert {"cpu", "memory", "pods", "ephemeral-storage"} <= set(status["capacity"])
    assert status["capacity"]["pods"] == "110"
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types == {"Ready": "True", "MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False"}
    assert node["spec"]["podCIDR"].endswith("/24")
    lease = nodes.json_of(node_cluster.kubectl("get", "lease", nodes.NODE_NAME, "-n", "kube-node-lease",
                                               "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == nodes.NODE_NAME
    assert lease["spec"]["leaseDurationSeconds"] == 40
