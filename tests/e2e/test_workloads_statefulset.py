"""StatefulSets with real kubectl on the one-node cluster (issue 7, acceptance 7).

- ``web`` with 3 replicas and a readiness probe: a watch sees web-0, web-1, web-2 created strictly
  in order, each only after its predecessor turned Ready; ``kubectl delete pod web-1`` brings
  web-1 back under the same name; ``kubectl scale --replicas=1`` removes web-2, then web-1.
- ``rollout status``, ``set image``, ``rollout history`` and ``rollout undo`` (client-side, over
  the set's ControllerRevisions).
- Claims are checked on the API objects only (there is no volume provisioner yet): one PVC per
  ordinal, and the retention policy's ownerReferences.

The watches are ``kubectl get -w --output-watch-events``: events come in resourceVersion order,
so "created after Ready" is an ordering of events, not of timestamps.
"""

from __future__ import annotations

import json

import harness

IMAGE = "k8s.gcr.io/busybox"
OTHER_IMAGE = "docker.io/library/busybox:latest"
WATCH_FORMAT = ("jsonpath={.type} {.object.metadata.name} "
                "ready={.object.status.conditions[?(@.type==\"Ready\")].status} "
                "deleting={.object.metadata.deletionTimestamp}{\"\\n\"}")


def web(replicas: int = 3, name: str = "web", claims: bool = False, retention: str = "") -> str:
    doc = f"""
apiVersion: v1
kind: Service
metadata:
  name: {name}-svc
spec:
  clusterIP: None
  selector: {{app: {name}}}
  ports: [{{port: 80}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  serviceName: {name}-svc
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: {IMAGE}
        command: [sh, -c, "sleep 1; touch /tmp/ready; exec sleep 3600"]
        readinessProbe:
          exec: {{command: [cat, /tmp/ready]}}
          periodSeconds: 1
"""
    if retention:
        doc += f"  persistentVolumeClaimRetentionPolicy: {retention}\n"
    if claims:
        doc += """  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Mi}}
"""
    return doc


def watch(cluster, ns: str, selector: str):
    return cluster.kubectl_stream("get", "pods", "-n", ns, "-l", selector, "-w", "--output-watch-events",
                                  "-o", WATCH_FORMAT)


def first_index(lines: list[str], pred) -> int:
    return next((i for i, line in enumerate(lines) if pred(line.split())), len(lines))


def pod_json(cluster, ns: str, name: str) -> dict | None:
    out = cluster.kubectl("get", "pod", name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def test_ordered_creation_recreation_and_reverse_scale_down(node_cluster, node_namespace):
    ns = node_namespace
    with watch(node_cluster, ns, "app=web") as w:
        node_cluster.kubectl("create", "-n", ns, "-f", "-", input=web())
        w.wait_for(r"^MODIFIED web-2 ready=True", timeout=180)
        lines = list(w.lines)
    for prev, nxt in (("web-0", "web-1"), ("web-1", "web-2")):
        ready = first_index(lines, lambda f, p=prev: f[1] == p and f[2] == "ready=True")
        added = first_index(lines, lambda f, n=nxt: f[0] == "ADDED" and f[1] == n)
        assert ready < added < len(lines), f"{nxt} created before {prev} was Ready:\n" + "\n".join(lines)
    pod = pod_json(node_cluster, ns, "web-1")
    assert pod["spec"]["hostname"] == "web-1" and pod["spec"]["subdomain"] == "web-svc"
    assert pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == "web-1"
    assert pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == "1"
    done = node_cluster.kubectl("rollout", "status", "sts/web", "-n", ns, "--timeout=60s", timeout=70)
    # apps/v1 defaults rollingUpdate.partition to 0, so kubectl takes its partitioned branch, as upstream
    assert "partitioned roll out complete: 3 new pods have been updated" in done.stdout

    # a deleted pod comes back with its name
    old_uid = pod["metadata"]["uid"]
    node_cluster.kubectl("delete", "pod", "web-1", "-n", ns, "--wait=false")
    harness.eventually(lambda: (p := pod_json(node_cluster, ns, "web-1")) is not None
                       and p["metadata"]["uid"] != old_uid and p["status"].get("phase") == "Running",
                       timeout=90, interval=0.5, what="web-1 back with a new uid")
    node_cluster.kubectl("rollout", "status", "sts/web", "-n", ns, "--timeout=60s", timeout=70)

    # scale-down: web-2 goes first, web-1 only once web-2 is gone
    with watch(node_cluster, ns, "app=web") as w:
        node_cluster.kubectl("scale", "sts", "web", "-n", ns, "--replicas=1")
        w.wait_for(r"^DELETED web-1 ", timeout=120)
        lines = list(w.lines)
    web2_gone = first_index(lines, lambda f: f[0] == "DELETED" and f[1] == "web-2")
    web1_going = first_index(lines, lambda f: f[1] == "web-1" and (f[0] == "DELETED" or f[-1] != "deleting="))
    assert web2_gone < web1_going, "web-1 went before web-2 was gone:\n" + "\n".join(lines)
    names = node_cluster.kubectl("get", "pods", "-n", ns, "-l", "app=web", "-o", "name").stdout.split()
    assert names == ["pod/web-0"]
    events = node_cluster.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.kind=StatefulSet",
                                  "-o", "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}").stdout
    assert "SuccessfulCreate: create Pod web-0 in StatefulSet web successful" in events
    assert "SuccessfulDelete: delete Pod web-2 in StatefulSet web successful" in events


def test_rollout_status_set_image_history_and_undo(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=web(replicas=2))
    node_cluster.kubectl("rollout", "status", "sts/web", "-n", ns, "--timeout=120s", timeout=130)
    before = json.loads(node_cluster.kubectl("get", "sts", "web", "-n", ns, "-o", "json").stdout)["status"]

    node_cluster.kubectl("set", "image", "sts/web", f"c={OTHER_IMAGE}", "-n", ns)
    done = node_cluster.kubectl("rollout", "status", "sts/web", "-n", ns, "--timeout=120s", timeout=130)
    assert "partitioned roll out complete: 2 new pods have been updated" in done.stdout
    after = json.loads(node_cluster.kubectl("get", "sts", "web", "-n", ns, "-o", "json").stdout)["status"]
    assert after["currentRevision"] == after["updateRevision"] != before["currentRevision"]
    for name in ("web-0", "web-1"):
        pod = pod_json(node_cluster, ns, name)
        assert pod["spec"]["containers"][0]["image"] == OTHER_IMAGE
        assert pod["metadata"]["labels"]["controller-revision-hash"] == after["updateRevision"]

    history = node_cluster.kubectl("rollout", "history", "sts/web", "-n", ns).stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    # the undo and its status with the other supported kubectl: both read ControllerRevisions
    node_cluster.kubectl("rollout", "undo", "sts/web", "-n", ns, version="1.32")
    node_cluster.kubectl("rollout", "status", "sts/web", "-n", ns, "--timeout=120s", timeout=130, version="1.32")
    undone = json.loads(node_cluster.kubectl("get", "sts", "web", "-n", ns, "-o", "json").stdout)
    assert undone["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    assert undone["status"]["currentRevision"] == before["currentRevision"]  # the old revision, renumbered
    assert all(pod_json(node_cluster, ns, n)["spec"]["containers"][0]["image"] == IMAGE for n in ("web-0", "web-1"))
    revisions = json.loads(node_cluster.kubectl("get", "controllerrevisions", "-n", ns, "-o", "json").stdout)
    assert sorted(r["revision"] for r in revisions["items"]) == [2, 3]


def test_claims_per_ordinal_and_their_retention_owners(node_cluster, node_namespace):
    """No provisioner yet: the pod stays Pending; the claim is what is checked."""
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-",
                         input=web(replicas=1, name="db", claims=True,
                                   retention="{whenDeleted: Delete, whenScaled: Retain}"))

    def claim():
        out = node_cluster.kubectl("get", "pvc", "www-db-0", "-n", ns, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None
    pvc = harness.eventually(claim, timeout=30, what="claim www-db-0")
    assert pvc["metadata"]["labels"] == {"app": "db"}
    refs = pvc["metadata"].get("ownerReferences") or []
    assert [(r["kind"], r["name"], r.get("controller")) for r in refs] == [("StatefulSet", "db", True)]
    pod = harness.eventually(lambda: pod_json(node_cluster, ns, "db-0"), timeout=30, what="pod db-0")
    assert {"name": "www", "persistentVolumeClaim": {"claimName": "www-db-0"}} in pod["spec"]["volumes"]
