"""Objects the endpoints-controller unit tests share: Services, Pods and Nodes as the API
server stores them (uids, creation times, Ready conditions)."""

from __future__ import annotations

import datetime as dt

from kubeling.client.clock import FakeClock

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def ts(seconds: float = 0) -> str:
    return (START + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def clock() -> FakeClock:
    return FakeClock(wall=START)


def service(name="web", *, selector=None, ports=(("http", 80, "http"),), labels=None, cluster_ip="10.43.0.20",
            publish_not_ready=False, type_="ClusterIP", created=0, **spec_extra) -> dict:
    spec = {"type": type_, "clusterIP": cluster_ip, "ports": [
        {"name": n, "port": p, "protocol": "TCP", "targetPort": t} for n, p, t in ports]}
    if selector is not False:
        spec["selector"] = selector or {"app": name}
    if publish_not_ready:
        spec["publishNotReadyAddresses"] = True
    spec.update(spec_extra)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-svc-{name}", "labels": labels or {},
                         "creationTimestamp": ts(created)},
            "spec": spec, "status": {"loadBalancer": {}}}


def pod(name, ip, *, node="n1", ready=True, labels=None, ports=(("http", 8080),), deleting=False,
        phase="Running", hostname=None, subdomain=None, since=1) -> dict:
    spec = {"nodeName": node, "containers": [{"name": "c", "image": "busybox", "ports": [
        {"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports]}]}
    if hostname:
        spec["hostname"] = hostname
    if subdomain:
        spec["subdomain"] = subdomain
    meta = {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": labels or {"app": "web"},
            "creationTimestamp": ts(0)}
    if deleting:
        meta |= {"deletionTimestamp": ts(5), "finalizers": ["example.com/hold"]}
    status = {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": ts(since)}]}
    if ip:
        status |= {"podIP": ip, "podIPs": [{"ip": ip}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def node(name, *, ready=True, internal=None, external=None, labels=None) -> dict:
    addrs = [{"type": "InternalIP", "address": a} for a in ([internal] if isinstance(internal, str) else internal or [])]
    addrs += [{"type": "ExternalIP", "address": a} for a in ([external] if isinstance(external, str) else external or [])]
    addrs.append({"type": "Hostname", "address": name})
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels or {}},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}], "addresses": addrs}}
