"""Printers for the core/v1 kinds other than Pod (see `pod`).

LimitRange has no printer upstream: it falls back to the default NAME / CREATED AT
table, as `kubeling.api.printers.default_printer` does.
"""

from __future__ import annotations

from datetime import datetime

from kubeling.api.printers import pod
from kubeling.api.printers.common import (AGE, CONTAINERS, IMAGES, META, NAME, Column, Printer, age,
                                          container_cells, deleting, format_labels, g, join_host_port,
                                          name, replicated_cells, since)

_V1 = "io.k8s.api.core.v1."


def _doc(defn: str, prop: str) -> tuple[str, str]:
    return (_V1 + defn, prop)


# --- Namespace, Node ------------------------------------------------------------------------------

def _namespace(o: dict, now: datetime) -> list:
    return [name(o), g(o, "status", "phase", default=""), age(o, now)]


NAMESPACE = Printer((NAME, Column("Status", doc="The status of the namespace"), AGE), _namespace)


def _node_roles(o: dict) -> str:
    roles = set()
    for k, v in (g(o, "metadata", "labels", default={})).items():
        if k.startswith("node-role.kubernetes.io/") and k[len("node-role.kubernetes.io/"):]:
            roles.add(k[len("node-role.kubernetes.io/"):])
        elif k == "kubernetes.io/role" and v:
            roles.add(v)
    return ",".join(sorted(roles)) or "<none>"


def _node_address(o: dict, kind: str) -> str:
    for a in g(o, "status", "addresses", default=[]):
        if a.get("type") == kind:
            return a.get("address", "")
    return "<none>"


def _node(o: dict, now: datetime) -> list:
    status = []
    for c in g(o, "status", "conditions", default=[]):
        if c.get("type") == "Ready":
            status = ["Ready" if c.get("status") == "True" else "NotReady"]
    if not status:
        status = ["Unknown"]
    if g(o, "spec", "unschedulable"):
        status.append("SchedulingDisabled")
    info = g(o, "status", "nodeInfo", default={})
    return [name(o), ",".join(status), _node_roles(o), age(o, now), info.get("kubeletVersion", ""),
            _node_address(o, "InternalIP"), _node_address(o, "ExternalIP"),
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


NODE = Printer((
    NAME, Column("Status", doc="The status of the node"), Column("Roles", doc="The roles of the node"), AGE,
    Column("Version", doc=_doc("NodeSystemInfo", "kubeletVersion")),
    Column("Internal-IP", priority=1, doc=_doc("NodeStatus", "addresses")),
    Column("External-IP", priority=1, doc=_doc("NodeStatus", "addresses")),
    Column("OS-Image", priority=1, doc=_doc("NodeSystemInfo", "osImage")),
    Column("Kernel-Version", priority=1, doc=_doc("NodeSystemInfo", "kernelVersion")),
    Column("Container-Runtime", priority=1, doc=_doc("NodeSystemInfo", "containerRuntimeVersion")),
), _node)


# --- Service, Endpoints ---------------------------------------------------------------------------

def load_balancer_ingress(ingress: list | None) -> str:
    """IPs (or hostnames) of a load balancer status, comma-joined and de-duplicated."""
    seen: list[str] = []
    for i in ingress or []:
        v = i.get("ip") or i.get("hostname")
        if v and v not in seen:
            seen.append(v)
    return ",".join(seen)


def service_external_ip(svc: dict) -> str:
    spec = svc.get("spec") or {}
    ext = spec.get("externalIPs") or []
    t = spec.get("type", "ClusterIP")
    if t in ("ClusterIP", "NodePort"):
        return ",".join(ext) or "<none>"
    if t == "LoadBalancer":
        lb = load_balancer_ingress(g(svc, "status", "loadBalancer", "ingress"))
        if ext:
            return ",".join(([lb] if lb else []) + ext)
        return lb or "<pending>"
    if t == "ExternalName":
        return spec.get("externalName", "")
    return "<unknown>"


def service_ports(ports: list | None) -> str:
    """``80/TCP,443:30443/TCP``: port, node port when allocated, protocol."""
    out = []
    for p in ports or []:
        proto = p.get("protocol", "TCP")
        out.append(f"{p.get('port')}:{p['nodePort']}/{proto}" if p.get("nodePort") else f"{p.get('port')}/{proto}")
    return ",".join(out)


def _service(o: dict, now: datetime) -> list:
    spec = o.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [name(o), spec.get("type", ""), ips[0] if ips else "<none>", service_external_ip(o),
            service_ports(spec.get("ports")) or "<none>", age(o, now), format_labels(spec.get("selector"))]


SERVICE = Printer((
    NAME, Column("Type", doc=_doc("ServiceSpec", "type")), Column("Cluster-IP", doc=_doc("ServiceSpec", "clusterIP")),
    Column("External-IP", doc=_doc("ServiceSpec", "externalIPs")), Column("Port(s)", doc=_doc("ServiceSpec", "ports")),
    AGE, Column("Selector", priority=1, doc=_doc("ServiceSpec", "selector")),
), _service)


def format_endpoints(subsets: list | None) -> str:
    """Up to three ``ip:port`` endpoints, then ``+ N more...``; ``<none>`` without subsets."""
    if not subsets:
        return "<none>"
    items: list[str] = []
    count = 0
    for ss in subsets:
        addrs = ss.get("addresses") or []
        ports = ss.get("ports") or []
        if not ports:  # headless services may have no ports
            count += len(addrs)
            items += [a.get("ip", "") for a in addrs]
            continue
        for p in ports:
            count += len(addrs)
            items += [join_host_port(a.get("ip", ""), p.get("port")) for a in addrs]
    shown = ",".join(items[:3])
    return f"{shown} + {count - 3} more..." if len(items) > 3 else shown


ENDPOINTS = Printer((NAME, Column("Endpoints", doc=_doc("Endpoints", "subsets")), AGE),
                    lambda o, now: [name(o), format_endpoints(o.get("subsets")), age(o, now)])


# --- ConfigMap, Secret, ServiceAccount ------------------------------------------------------------

CONFIG_MAP = Printer(
    (NAME, Column("Data", doc=_doc("ConfigMap", "data")), AGE),
    lambda o, now: [name(o), len(o.get("data") or {}) + len(o.get("binaryData") or {}), age(o, now)])

SECRET = Printer(
    (NAME, Column("Type", doc=_doc("Secret", "type")), Column("Data", doc=_doc("Secret", "data")), AGE),
    lambda o, now: [name(o), o.get("type", ""), len(o.get("data") or {}), age(o, now)])

SERVICE_ACCOUNT = Printer(
    (NAME, Column("Secrets", doc=_doc("ServiceAccount", "secrets")), AGE),
    lambda o, now: [name(o), len(o.get("secrets") or []), age(o, now)])


# --- PersistentVolume, PersistentVolumeClaim ------------------------------------------------------

_STORAGE_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"


def access_modes(modes: list | None) -> str:
    """``RWO,ROX,RWX,RWOP`` in that fixed order, duplicates removed."""
    modes = set(modes or [])
    order = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"),
             ("ReadWriteOncePod", "RWOP"))
    return ",".join(short for full, short in order if full in modes)


def _storage_class(o: dict) -> str:
    ann = g(o, "metadata", "annotations", default={})
    if _STORAGE_CLASS_ANNOTATION in ann:
        return ann[_STORAGE_CLASS_ANNOTATION]
    return g(o, "spec", "storageClassName", default="")


def _pv(o: dict, now: datetime) -> list:
    spec = o.get("spec") or {}
    claim = spec.get("claimRef")
    claim_cell = f"{claim.get('namespace', '')}/{claim.get('name', '')}" if claim else ""
    phase = "Terminating" if deleting(o) else g(o, "status", "phase", default="")
    return [name(o), str(g(spec, "capacity", "storage", default="0")), access_modes(spec.get("accessModes")),
            spec.get("persistentVolumeReclaimPolicy", ""), phase, claim_cell, _storage_class(o),
            spec.get("volumeAttributesClassName") or "<unset>", g(o, "status", "reason", default=""),
            age(o, now), spec.get("volumeMode") or "<unset>"]


PERSISTENT_VOLUME = Printer((
    NAME, Column("Capacity", doc=_doc("PersistentVolumeSpec", "capacity")),
    Column("Access Modes", doc=_doc("PersistentVolumeSpec", "accessModes")),
    Column("Reclaim Policy", doc=_doc("PersistentVolumeSpec", "persistentVolumeReclaimPolicy")),
    Column("Status", doc=_doc("PersistentVolumeStatus", "phase")),
    Column("Claim", doc=_doc("PersistentVolumeSpec", "claimRef")),
    Column("StorageClass", doc="StorageClass of the pv"),
    Column("VolumeAttributesClass", doc="VolumeAttributesClass of the pv"),
    Column("Reason", doc=_doc("PersistentVolumeStatus", "reason")), AGE,
    Column("VolumeMode", priority=1, doc=_doc("PersistentVolumeSpec", "volumeMode")),
), _pv)


def _pvc(o: dict, now: datetime) -> list:
    spec = o.get("spec") or {}
    phase = "Terminating" if deleting(o) else g(o, "status", "phase", default="")
    capacity = modes = ""
    if spec.get("volumeName"):
        modes = access_modes(g(o, "status", "accessModes"))
        capacity = str(g(o, "status", "capacity", "storage", default="0"))
    return [name(o), phase, spec.get("volumeName", ""), capacity, modes, _storage_class(o),
            spec.get("volumeAttributesClassName") or "<unset>", age(o, now), spec.get("volumeMode") or "<unset>"]


PERSISTENT_VOLUME_CLAIM = Printer((
    NAME, Column("Status", doc=_doc("PersistentVolumeClaimStatus", "phase")),
    Column("Volume", doc=_doc("PersistentVolumeClaimSpec", "volumeName")),
    Column("Capacity", doc=_doc("PersistentVolumeClaimStatus", "capacity")),
    Column("Access Modes", doc=_doc("PersistentVolumeClaimStatus", "accessModes")),
    Column("StorageClass", doc="StorageClass of the pvc"),
    Column("VolumeAttributesClass", doc="VolumeAttributesClass of the pvc"), AGE,
    Column("VolumeMode", priority=1, doc=_doc("PersistentVolumeClaimSpec", "volumeMode")),
), _pvc)


# --- Event ----------------------------------------------------------------------------------------

def _event_source(o: dict) -> str:
    src = o.get("source") or {}
    component = src.get("component") or o.get("reportingComponent") or o.get("reportingController") or ""
    host = src.get("host") or o.get("reportingInstance") or ""
    return f"{component}, {host}" if host else component


def _event(o: dict, now: datetime) -> list:
    first = since(o["firstTimestamp"], now) if o.get("firstTimestamp") else since(o.get("eventTime"), now)
    last = since(o["lastTimestamp"], now) if o.get("lastTimestamp") else first
    count = o.get("count") or 0
    if o.get("series"):
        last = since(o["series"].get("lastObservedTime"), now)
        count = o["series"].get("count", 0)
    elif count == 0:
        count = 1  # singleton events of the new API carry no count
    inv = o.get("involvedObject") or {}
    kind = (inv.get("kind") or "").lower()
    target = f"{kind}/{inv['name']}" if inv.get("name") else kind
    return [last, o.get("type", ""), o.get("reason", ""), target, inv.get("fieldPath", ""), _event_source(o),
            (o.get("message") or "").strip(), first, count, name(o)]


EVENT = Printer((
    Column("Last Seen", doc=_doc("Event", "lastTimestamp")), Column("Type", doc=_doc("Event", "type")),
    Column("Reason", doc=_doc("Event", "reason")), Column("Object", doc=_doc("Event", "involvedObject")),
    Column("Subobject", priority=1, doc=_doc("ObjectReference", "fieldPath")),
    Column("Source", priority=1, doc=_doc("Event", "source")), Column("Message", doc=_doc("Event", "message")),
    Column("First Seen", priority=1, doc=_doc("Event", "firstTimestamp")),
    Column("Count", priority=1, doc=_doc("Event", "count")),
    Column("Name", priority=1, format="name", doc=(META, "name")),
), _event)


# --- ResourceQuota, ReplicationController, PodTemplate --------------------------------------------

def _resource_quota(o: dict, now: datetime) -> list:
    hard = g(o, "status", "hard", default={})
    used = g(o, "status", "used", default={})
    requests, limits = [], []
    for res in sorted(hard):
        column = limits if res.split(".")[0] == "limits" and "." in res else requests
        column.append(f"{res}: {used.get(res, '0')}/{hard[res]}")
    return [name(o), age(o, now), ", ".join(requests), ", ".join(limits)]


RESOURCE_QUOTA = Printer((
    NAME, AGE,
    Column("Request", doc="Request represents a minimum amount of cpu/memory that a container may consume."),
    Column("Limit", doc="Limits control the maximum amount of cpu/memory that a container may use independent of "
                        "contention on the node."),
), _resource_quota)


def _replication_controller(o: dict, now: datetime) -> list:
    return replicated_cells(o, now, format_labels(g(o, "spec", "selector")))


REPLICATION_CONTROLLER = Printer((
    NAME, Column("Desired", "integer", _doc("ReplicationControllerSpec", "replicas")),
    Column("Current", "integer", _doc("ReplicationControllerStatus", "replicas")),
    Column("Ready", "integer", _doc("ReplicationControllerStatus", "readyReplicas")), AGE, CONTAINERS, IMAGES,
    Column("Selector", priority=1, doc=_doc("ReplicationControllerSpec", "selector")),
), _replication_controller)


def _pod_template(o: dict, now: datetime) -> list:
    names, images = container_cells(g(o, "template", "spec"))
    return [name(o), names, images, format_labels(g(o, "template", "metadata", "labels"))]


POD_TEMPLATE = Printer((
    NAME, Column("Containers", doc="Names of each container in the template."),
    Column("Images", doc="Images referenced by each container in the template."),
    Column("Pod Labels", doc="The labels for the pod template."),
), _pod_template)


PRINTERS: dict[tuple[str, str], Printer] = {
    ("", "Pod"): pod.PRINTER,
    ("", "Namespace"): NAMESPACE,
    ("", "Node"): NODE,
    ("", "Service"): SERVICE,
    ("", "Endpoints"): ENDPOINTS,
    ("", "ConfigMap"): CONFIG_MAP,
    ("", "Secret"): SECRET,
    ("", "ServiceAccount"): SERVICE_ACCOUNT,
    ("", "PersistentVolume"): PERSISTENT_VOLUME,
    ("", "PersistentVolumeClaim"): PERSISTENT_VOLUME_CLAIM,
    ("", "Event"): EVENT,
    ("", "ResourceQuota"): RESOURCE_QUOTA,
    ("", "ReplicationController"): REPLICATION_CONTROLLER,
    ("", "PodTemplate"): POD_TEMPLATE,
}
