"""Pod configuration on a real node (issue 6, acceptance 4 and 13).

- A ConfigMap and a Secret consumed as env (``valueFrom``, ``envFrom``) and as volumes
  (``items``, ``defaultMode``); an update reaches the mounted file within 2 s, measured from
  the ``kubectl apply`` to the new content read through ``kubectl exec``; a ``subPath`` mount
  keeps the content it started with, as upstream.
- downwardAPI and projected volumes, and the downward API in env.
- Bad specs get upstream's reasons and never disturb the agent or the other pods: a missing
  ConfigMap gives ``CreateContainerConfigError`` until it appears, a command that does not exist
  gives ``RunContainerError`` / ``CrashLoopBackOff`` with ``StartError`` and exit code 128.
"""

from __future__ import annotations

import time

import harness
import nodes

CONFIG = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  color: {color}
  size: large
  app.properties: |
    mode={color}
---
apiVersion: v1
kind: Secret
metadata:
  name: app-secret
type: Opaque
stringData:
  password: s3cret-{color}
  token: tok
"""

CONSUMER = """
apiVersion: v1
kind: Pod
metadata:
  name: consumer
spec:
  nodeName: kl-node
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "sleep 3600"]
    env:
    - name: COLOR
      valueFrom: {configMapKeyRef: {name: app-config, key: color}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: app-secret, key: password}}
    - name: GREETING
      value: "color is $(COLOR)"
    envFrom:
    - configMapRef: {name: app-config}
      prefix: CFG_
    - secretRef: {name: app-secret}
    volumeMounts:
    - {name: config, mountPath: /etc/config}
    - {name: secret, mountPath: /etc/secret, readOnly: true}
    - {name: whole, mountPath: /etc/color-at-start, subPath: color}
  volumes:
  - name: config
    configMap:
      name: app-config
      defaultMode: 0640
      items:
      - {key: color, path: colors/current}
      - {key: app.properties, path: app.properties, mode: 0600}
  - name: secret
    secret:
      secretName: app-secret
      defaultMode: 0400
  - name: whole
    configMap:
      name: app-config
"""


def running(pod: dict) -> bool:
    return pod["status"].get("phase") == "Running" and all(
        "running" in s["state"] for s in pod["status"].get("containerStatuses") or [])


def exec_out(cluster, ns: str, pod: str, *argv: str) -> str:
    return cluster.kubectl("exec", "-n", ns, pod, "--", *argv).stdout


def waiting(pod: dict, name: str) -> dict:
    for s in (pod["status"].get("containerStatuses") or []) + (pod["status"].get("initContainerStatuses") or []):
        if s["name"] == name:
            return s["state"].get("waiting") or {}
    return {}


def test_configmap_and_secret_as_env_and_volumes_and_updates_within_2s(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("apply", "-n", ns, "-f", "-", input=CONFIG.format(color="blue"))
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=CONSUMER)
    node_cluster.wait_pod(ns, "consumer", running)

    env = dict(line.split("=", 1) for line in exec_out(node_cluster, ns, "consumer", "env").splitlines()
               if "=" in line)
    assert env["COLOR"] == "blue"
    assert env["PASSWORD"] == "s3cret-blue"
    assert env["GREETING"] == "color is blue"
    assert env["CFG_size"] == "large" and env["CFG_color"] == "blue"
    assert env["token"] == "tok" and env["password"] == "s3cret-blue"

    # items: only the listed keys, at their paths; defaultMode, and an item's own mode over it
    listing = exec_out(node_cluster, ns, "consumer", "sh", "-c",
                       "cd /etc/config && ls -A | xargs; cat colors/current; echo; "
                       "stat -L -c '%a %n' colors/current app.properties; "
                       "stat -L -c '%a %n' /etc/secret/password /etc/secret/token")
    lines = listing.splitlines()
    assert sorted(x for x in lines[0].split() if not x.startswith("..")) == ["app.properties", "colors"]
    assert lines[1] == "blue"
    assert lines[2:] == ["640 colors/current", "600 app.properties", "400 /etc/secret/password",
                         "400 /etc/secret/token"]
    assert exec_out(node_cluster, ns, "consumer", "cat", "/etc/secret/password") == "s3cret-blue"
    # a read-only volume mount is read-only in the container
    denied = node_cluster.kubectl("exec", "-n", ns, "consumer", "--", "touch", "/etc/secret/new", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    assert exec_out(node_cluster, ns, "consumer", "cat", "/etc/color-at-start") == "blue"

    # the update: from kubectl apply to the new content seen through kubectl exec
    t0 = time.monotonic()
    node_cluster.kubectl("apply", "-n", ns, "-f", "-", input=CONFIG.format(color="green"))

    def updated():
        got = node_cluster.kubectl("exec", "-n", ns, "consumer", "--", "sh", "-c",
                                   "cat /etc/config/colors/current /etc/secret/password").stdout
        return time.monotonic() if got == "greens3cret-green" else None
    seen = harness.eventually(updated, timeout=10, interval=0.05, what="the update in the mounted files")
    assert seen - t0 <= 2.0, f"the update took {seen - t0:.2f}s to reach the mounted files"
    # the atomic writer's layout: every key is a symlink into ..data, itself a symlink
    layout = exec_out(node_cluster, ns, "consumer", "sh", "-c",
                      "readlink /etc/config/colors; readlink /etc/config/..data")
    assert layout.splitlines()[0] == "..data/colors" and layout.splitlines()[1].startswith("..")
    # a subPath mount is a bind of the file as it was: it keeps the old content (as upstream);
    # env is fixed at container start
    assert exec_out(node_cluster, ns, "consumer", "cat", "/etc/color-at-start") == "blue"
    assert "COLOR=blue" in exec_out(node_cluster, ns, "consumer", "env").splitlines()


DOWNWARD = """
apiVersion: v1
kind: Pod
metadata:
  name: downward
  labels: {app: web, tier: front}
  annotations: {build: "17"}
spec:
  nodeName: kl-node
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "sleep 3600"]
    resources:
      requests: {memory: 32Mi, cpu: 100m}
      limits: {memory: 64Mi, cpu: 250m}
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: POD_NAMESPACE
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: NODE_NAME
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: SA
      valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}
    - name: TIER
      valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}
    - name: MEM_LIMIT_MI
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    - name: CPU_LIMIT_M
      valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}
    volumeMounts:
    - {name: podinfo, mountPath: /etc/podinfo}
    - {name: all-in-one, mountPath: /projected}
  volumes:
  - name: podinfo
    downwardAPI:
      items:
      - path: labels
        fieldRef: {fieldPath: metadata.labels}
      - path: annotations
        fieldRef: {fieldPath: metadata.annotations}
      - path: name
        fieldRef: {fieldPath: metadata.name}
      - path: cpu_request
        resourceFieldRef: {containerName: app, resource: requests.cpu, divisor: 1m}
  - name: all-in-one
    projected:
      defaultMode: 0444
      sources:
      - configMap:
          name: proj-config
          items: [{key: greeting, path: config/greeting}]
      - secret:
          name: proj-secret
      - downwardAPI:
          items:
          - path: meta/namespace
            fieldRef: {fieldPath: metadata.namespace}
      - serviceAccountToken:
          path: token
          expirationSeconds: 3600
"""


def test_downward_api_in_env_and_volumes_and_a_projected_volume(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "configmap", "proj-config", "--from-literal=greeting=hello")
    node_cluster.kubectl("create", "-n", ns, "secret", "generic", "proj-secret", "--from-literal=user=admin")
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=DOWNWARD)
    pod = node_cluster.wait_pod(ns, "downward", running)

    env = dict(line.split("=", 1) for line in exec_out(node_cluster, ns, "downward", "env").splitlines()
               if "=" in line)
    assert env["POD_NAME"] == "downward"
    assert env["POD_NAMESPACE"] == ns
    assert env["POD_IP"] == pod["status"]["podIP"] and env["POD_IP"]
    assert env["NODE_NAME"] == nodes.NODE_NAME
    assert env["SA"] == "default"
    assert env["TIER"] == "front"
    assert env["MEM_LIMIT_MI"] == "64"
    assert env["CPU_LIMIT_M"] == "250"

    files = exec_out(node_cluster, ns, "downward", "sh", "-c",
                     "cat /etc/podinfo/labels; echo; echo ---; cat /etc/podinfo/annotations; echo; echo ---; "
                     "cat /etc/podinfo/name; echo; cat /etc/podinfo/cpu_request")
    labels, annotations, rest = files.split("---\n")
    assert labels.split() == ['app="web"', 'tier="front"']
    assert 'build="17"' in annotations.split()
    assert rest.split() == ["downward", "100"]

    projected = exec_out(node_cluster, ns, "downward", "sh", "-c",
                         "cd /projected; cat config/greeting; echo; cat user; echo; cat meta/namespace; echo; "
                         "stat -L -c %a config/greeting user token; head -c 3 token")
    greeting, user, namespace, m1, m2, m3, token_head = projected.split()
    assert (greeting, user, namespace) == ("hello", "admin", ns)
    assert (m1, m2, m3) == ("444", "444", "444")
    assert token_head == "eyJ"   # a JWT

    # labels are live in a downwardAPI volume (env is fixed at start)
    t0 = time.monotonic()
    node_cluster.kubectl("label", "-n", ns, "pod", "downward", "tier=back", "--overwrite")
    harness.eventually(lambda: 'tier="back"' in exec_out(node_cluster, ns, "downward", "cat", "/etc/podinfo/labels"),
                       timeout=15, what="the new label in the downwardAPI volume")
    assert time.monotonic() - t0 < 10
    assert "TIER=front" in exec_out(node_cluster, ns, "downward", "env").splitlines()


NEEDS_CONFIG = """
apiVersion: v1
kind: Pod
metadata:
  name: needs-config
spec:
  nodeName: kl-node
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo started with $MODE; sleep 3600"]
    env:
    - name: MODE
      valueFrom: {configMapKeyRef: {name: late-config, key: mode}}
"""

BYSTANDER = """
apiVersion: v1
kind: Pod
metadata:
  name: bystander
spec:
  nodeName: kl-node
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "sleep 3600"]
"""

BAD_COMMAND = """
apiVersion: v1
kind: Pod
metadata:
  name: bad-command
spec:
  nodeName: kl-node
  containers:
  - name: app
    image: busybox
    command: ["/nonexistent"]
"""


def test_missing_configmap_gives_create_container_config_error_until_it_exists(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=BYSTANDER)
    node_cluster.wait_pod(ns, "bystander", running)
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=NEEDS_CONFIG)
    pod = node_cluster.wait_pod(ns, "needs-config",
                                lambda p: waiting(p, "app").get("reason") == "CreateContainerConfigError")
    assert waiting(pod, "app")["message"] == 'configmap "late-config" not found'
    assert pod["status"]["phase"] == "Pending"
    listed = node_cluster.kubectl("get", "pod", "needs-config", "-n", ns, "--no-headers").stdout
    assert "CreateContainerConfigError" in listed
    events = node_cluster.kubectl("get", "events", "-n", ns, "--field-selector",
                                  "involvedObject.name=needs-config").stdout
    assert 'Error: configmap "late-config" not found' in events

    node_cluster.kubectl("create", "-n", ns, "configmap", "late-config", "--from-literal=mode=fast")
    node_cluster.wait_pod(ns, "needs-config", running, what="the pod starting once its ConfigMap exists")
    harness.eventually(lambda: "started with fast" in node_cluster.kubectl(
        "logs", "-n", ns, "needs-config", check=False).stdout, timeout=10, what="the container's log")
    bystander = node_cluster.pod(ns, "bystander")
    assert running(bystander) and bystander["status"]["containerStatuses"][0]["restartCount"] == 0


def test_a_command_that_does_not_exist_gives_start_error_128_and_crash_loop(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=BYSTANDER)
    node_cluster.wait_pod(ns, "bystander", running)
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=BAD_COMMAND)

    def failed_once(p: dict) -> bool:
        s = (p["status"].get("containerStatuses") or [{}])[0]
        return "terminated" in (s.get("lastState") or {}) or "terminated" in (s.get("state") or {})
    pod = node_cluster.wait_pod(ns, "bad-command", failed_once, what="the failed start in the status")
    status = pod["status"]["containerStatuses"][0]
    term = (status.get("lastState") or {}).get("terminated") or status["state"]["terminated"]
    assert term["exitCode"] == 128
    assert term["reason"] == "StartError"
    assert "/nonexistent" in term["message"] and "no such file or directory" in term["message"]
    assert status["ready"] is False

    # then the back-off: RunContainerError on the first failure, CrashLoopBackOff after
    pod = node_cluster.wait_pod(ns, "bad-command",
                                lambda p: waiting(p, "app").get("reason") == "CrashLoopBackOff",
                                what="CrashLoopBackOff")
    assert "back-off" in waiting(pod, "app")["message"]
    listed = node_cluster.kubectl("get", "pod", "bad-command", "-n", ns, "--no-headers").stdout.split()
    assert listed[2] in ("CrashLoopBackOff", "RunContainerError")
    events = node_cluster.kubectl("get", "events", "-n", ns, "--field-selector",
                                  "involvedObject.name=bad-command").stdout
    assert "/nonexistent" in events and "BackOff" in events

    # the agent is unharmed: the node stays Ready and the other pod never restarted
    node_cluster.wait_node_ready(timeout=5)
    bystander = node_cluster.pod(ns, "bystander")
    assert running(bystander) and bystander["status"]["containerStatuses"][0]["restartCount"] == 0


OPTIONAL = """
apiVersion: v1
kind: Pod
metadata:
  name: optional
spec:
  nodeName: kl-node
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo flag=[$FLAG]; sleep 3600"]
    env:
    - name: FLAG
      valueFrom: {configMapKeyRef: {name: maybe-config, key: flag, optional: true}}
    volumeMounts:
    - {name: maybe, mountPath: /etc/maybe}
    - {name: maybe-secret, mountPath: /etc/maybe-secret}
  volumes:
  - name: maybe
    configMap: {name: maybe-config, optional: true}
  - name: maybe-secret
    secret: {secretName: maybe-secret, optional: true}
"""


def test_optional_configmap_and_secret_may_be_missing_and_appear_later(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=OPTIONAL)
    node_cluster.wait_pod(ns, "optional", running)
    assert "flag=[]" in node_cluster.kubectl("logs", "-n", ns, "optional").stdout
    empty = exec_out(node_cluster, ns, "optional", "sh", "-c", "ls /etc/maybe /etc/maybe-secret | grep -v '^\\.\\.'")
    assert empty.split() == ["/etc/maybe:", "/etc/maybe-secret:"]
    # once the objects exist, their keys show in the volumes (env stays as it started)
    node_cluster.kubectl("create", "-n", ns, "configmap", "maybe-config", "--from-literal=flag=on")
    node_cluster.kubectl("create", "-n", ns, "secret", "generic", "maybe-secret", "--from-literal=key=k1")
    harness.eventually(lambda: exec_out(node_cluster, ns, "optional", "sh", "-c",
                                        "cat /etc/maybe/flag /etc/maybe-secret/key 2>/dev/null || true") == "onk1",
                       timeout=10, what="the optional objects' keys in the volumes")
    # an optional key that was missing at start is not set at all (as upstream), and stays unset
    names = [line.split("=", 1)[0] for line in exec_out(node_cluster, ns, "optional", "env").splitlines()]
    assert "FLAG" not in names and "HOSTNAME" in names
