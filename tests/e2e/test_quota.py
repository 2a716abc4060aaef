"""ResourceQuota and LimitRange through real kubectl: charges, refusals, recounts, defaults."""

from __future__ import annotations

import harness


def pod_yaml(name: str, namespace: str, cpu: str | None = None) -> str:
    res = f"\n    resources:\n      requests:\n        cpu: {cpu}\n        memory: 16Mi" if cpu else ""
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n"
            f"  containers:\n  - name: app\n    image: busybox{res}\n")


def test_quota_refuses_over_limit_and_gives_back_on_delete(kubectl, namespace):
    kubectl("create", "quota", "q", "-n", namespace, "--hard=pods=2,requests.cpu=1,requests.memory=1Gi")
    kubectl("create", "-f", "-", input=pod_yaml("a", namespace, cpu="400m"))
    kubectl("create", "-f", "-", input=pod_yaml("b", namespace, cpu="400m"))
    refused = kubectl("create", "-f", "-", input=pod_yaml("c", namespace, cpu="100m"), check=False)
    assert refused.returncode != 0
    assert ('Error from server (Forbidden): error when creating "STDIN": pods "c" is forbidden: exceeded quota: q, '
            'requested: pods=1, used: pods=2, limited: pods=2') in refused.stderr
    bare = kubectl("create", "-f", "-", input=pod_yaml("bare", namespace), check=False)
    assert 'failed quota: q: must specify requests.cpu for: app; requests.memory for: app' in bare.stderr

    def used(pods: str):
        q = kubectl.json("get", "quota", "q", "-n", namespace)
        return q["status"]["used"] if q.get("status", {}).get("used", {}).get("pods") == pods else None
    assert harness.eventually(lambda: used("2"), what="quota charged") == \
        {"pods": "2", "requests.cpu": "800m", "requests.memory": "32Mi"}
    rows = [line.split() for line in kubectl("describe", "quota", "q", "-n", namespace).stdout.splitlines()]
    assert ["Resource", "Used", "Hard"] in rows and ["requests.cpu", "800m", "1"] in rows and ["pods", "2", "2"] in rows
    kubectl("delete", "pod", "a", "-n", namespace, "--wait=false")
    # the ResourceQuota controller gives the pod's share back once it is gone
    kubectl("delete", "pod", "a", "-n", namespace, "--force", "--grace-period=0", check=False)
    harness.eventually(lambda: used("1"), timeout=60, what="quota recounted after delete")
    kubectl("create", "-f", "-", input=pod_yaml("c", namespace, cpu="100m"))


def test_limit_range_defaults_and_bounds(kubectl, namespace):
    kubectl("create", "-f", "-", input=f"""apiVersion: v1
kind: LimitRange
metadata:
  name: limits
  namespace: {namespace}
spec:
  limits:
  - type: Container
    default: {{cpu: 300m, memory: 64Mi}}
    defaultRequest: {{cpu: 100m, memory: 32Mi}}
    max: {{cpu: "1"}}
""")
    kubectl("create", "-f", "-", input=pod_yaml("defaulted", namespace))
    res = kubectl.json("get", "pod", "defaulted", "-n", namespace)["spec"]["containers"][0]["resources"]
    assert res == {"limits": {"cpu": "300m", "memory": "64Mi"}, "requests": {"cpu": "100m", "memory": "32Mi"}}
    big = pod_yaml("big", namespace).replace("    image: busybox\n",
                                             "    image: busybox\n    resources:\n      limits:\n        cpu: \"2\"\n")
    refused = kubectl("create", "-f", "-", input=big, check=False)
    assert 'pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2' in refused.stderr
    described = kubectl("describe", "limitrange", "limits", "-n", namespace).stdout
    assert "Container" in described and "300m" in described
