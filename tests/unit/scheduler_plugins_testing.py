"""Builders for scheduler plugin tests: nodes, pods and NodeInfos as plain API dicts."""

from __future__ import annotations

from kubeling.scheduler.framework.interface import CycleState, Status
from kubeling.scheduler.framework.types import NodeInfo


def make_node(name: str = "n1", *, cpu: str = "4", memory: str = "8Gi", pods: str = "110",
              labels: dict | None = None, taints: list | None = None, unschedulable: bool = False,
              extra: dict | None = None, images: list | None = None) -> dict:
    alloc = {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "10Gi", **(extra or {})}
    spec: dict = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    status: dict = {"allocatable": alloc, "capacity": alloc}
    if images:
        status["images"] = images
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}},
            "spec": spec, "status": status}


def container(name: str = "c", *, requests: dict | None = None, image: str = "busybox:1.36",
              ports: list | None = None, restart_policy: str | None = None) -> dict:
    c: dict = {"name": name, "image": image}
    if requests is not None:
        c["resources"] = {"requests": requests}
    if ports:
        c["ports"] = ports
    if restart_policy:
        c["restartPolicy"] = restart_policy
    return c


def make_pod(name: str = "p", *, requests: dict | None = None, containers: list | None = None,
             init_containers: list | None = None, node_name: str = "", uid: str | None = None,
             namespace: str = "default", **spec) -> dict:
    s = {"containers": containers if containers is not None else [container(requests=requests)], **spec}
    if init_containers:
        s["initContainers"] = init_containers
    if node_name:
        s["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}"}, "spec": s}


def node_info(node: dict, *pods: dict) -> NodeInfo:
    ni = NodeInfo(node)
    for p in pods:
        ni.add_pod(p)
    return ni


def run_filter(plugin, pod: dict, ni: NodeInfo, state: CycleState | None = None) -> Status | None:
    """PreFilter (if the plugin has it) then Filter, as the framework runs them; a PreFilter
    Skip answers None (Filter would not be called), a PreFilter rejection is returned."""
    state = state or CycleState()
    if hasattr(plugin, "pre_filter"):
        _, st = plugin.pre_filter(state, pod, [ni])
        if st is not None and st.is_skip():
            return None
        if st is not None:
            return st
    return plugin.filter(state, pod, ni)


def reasons(status: Status | None) -> list[str]:
    return [] if status is None else status.reasons
