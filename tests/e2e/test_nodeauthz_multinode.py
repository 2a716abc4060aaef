"""The Node authorizer and NodeRestriction with real kubectl on a 3-node cluster (issue 9,
acceptance 6): a node agent's own credentials (its ``kubelet.kubeconfig``, ``system:node:<name>``)

- read a Secret that a pod bound to it uses (and the agent mounts it: the pod runs), but not a
  Secret used only by a pod on another node (upstream's ``no relationship found between node
  'a' and this object``), nor list Secrets;
- may label its own Node, but not patch another Node (``node "a" is not allowed to modify node
  "b"``), nor change its own taints, nor set a restricted label.
"""

from __future__ import annotations

import subprocess

import harness
import pytest
import yaml
from multinode import BRIDGE_IP, running_and_ready

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: nodeauthz}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  volumes:
  - name: creds
    secret: {{secretName: {secret}}}
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["/bin/sh", "-c", "echo password=$(cat /creds/password); sleep 3600"]
    volumeMounts: [{{name: creds, mountPath: /creds}}]
"""


def node_kubeconfig(c, node: str):
    """The agent's own kubeconfig, pointed at the server as the host reaches it."""
    found = sorted((c.cluster_dir / "nodes" / node).rglob("kubelet.kubeconfig"))
    assert found, f"no kubelet.kubeconfig for {node}"
    cfg = yaml.safe_load(found[0].read_text())
    for cl in cfg["clusters"]:
        cl["cluster"]["server"] = c.url
        cl["cluster"]["tls-server-name"] = BRIDGE_IP
    out = c.data_dir / f"{node}.kubeconfig"
    out.write_text(yaml.safe_dump(cfg))
    out.chmod(0o600)
    return out


def as_node(c, cfg, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([harness.kubectl_binary("1.33"), f"--kubeconfig={cfg}", *args], input=input,
                          capture_output=True, text=True, timeout=60, env=c._env({"KUBECONFIG": str(cfg)}))


@pytest.fixture(scope="module")
def two_nodes(multinode_cluster):
    c = multinode_cluster
    c.wait_nodes_ready()
    a, b = c.node_names()[:2]
    return c, a, b, node_kubeconfig(c, a)


def test_agent_reads_only_secrets_of_its_own_pods(two_nodes, multinode_namespace):
    c, a, b, cfg = two_nodes
    ns = multinode_namespace
    for name in ("secret-a", "secret-b"):
        c.kubectl("create", "secret", "generic", name, "-n", ns, f"--from-literal=password=pw-{name}")
    c.kubectl("create", "-n", ns, "-f", "-", input=POD.format(name="on-a", node=a, secret="secret-a"))
    c.kubectl("create", "-n", ns, "-f", "-", input=POD.format(name="on-b", node=b, secret="secret-b"))
    # the agents still mount their pods' secrets under the Node authorizer
    c.wait_pods(ns, "app=nodeauthz", lambda pods: len(pods) == 2 and all(running_and_ready(p) for p in pods),
                what="both pods running with their secret volumes")
    harness.eventually(lambda: "password=pw-secret-a" in c.kubectl("logs", "on-a", "-n", ns).stdout, timeout=30)
    whoami = as_node(c, cfg, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.stdout == f"system:node:{a}", whoami.stderr
    got = as_node(c, cfg, "get", "secret", "secret-a", "-n", ns, "-o", "jsonpath={.metadata.name}")
    assert got.returncode == 0 and got.stdout == "secret-a", got.stderr
    other = as_node(c, cfg, "get", "secret", "secret-b", "-n", ns)
    assert other.returncode != 0
    assert (f'secrets "secret-b" is forbidden: User "system:node:{a}" cannot get resource "secrets" in API group "" '
            f'in the namespace "{ns}": no relationship found between node \'{a}\' and this object') in other.stderr
    listed = as_node(c, cfg, "get", "secrets", "-n", ns)
    assert listed.returncode != 0 and "forbidden" in listed.stderr
    # a watch of the one related Secret (the agent's own object cache does this) is allowed
    one = as_node(c, cfg, "get", "secrets", "-n", ns, "--field-selector", "metadata.name=secret-a", "-o", "name")
    assert one.returncode == 0 and one.stdout.strip() == "secret/secret-a", one.stderr


def test_agent_patches_only_its_own_node(two_nodes):
    c, a, b, cfg = two_nodes
    own = as_node(c, cfg, "label", "node", a, "example.com/nodeauthz=yes", "--overwrite")
    assert own.returncode == 0, own.stderr
    other = as_node(c, cfg, "label", "node", b, "example.com/nodeauthz=yes", "--overwrite")
    assert other.returncode != 0
    assert f'nodes "{b}" is forbidden: node "{a}" is not allowed to modify node "{b}"' in other.stderr
    patched = as_node(c, cfg, "patch", "node", b, "--type", "merge", "-p", '{"spec":{"unschedulable":true}}')
    assert patched.returncode != 0 and "is not allowed to modify node" in patched.stderr
    taint = as_node(c, cfg, "taint", "node", a, "nodeauthz=x:NoSchedule")
    assert taint.returncode != 0 and f'node "{a}" is not allowed to modify taints' in taint.stderr
    label = as_node(c, cfg, "label", "node", a, "node-restriction.kubernetes.io/x=y")
    assert label.returncode != 0 and "is not allowed to modify labels: node-restriction.kubernetes.io/x" in label.stderr
    assert c.kubectl("get", "node", b, "-o", "jsonpath={.spec.unschedulable}").stdout == ""
    c.kubectl("label", "node", a, "example.com/nodeauthz-")
