"""Printers for the smaller groups: autoscaling, networking, storage, policy, rbac,
coordination, discovery, events.k8s.io and scheduling.

Role and ClusterRole (like LimitRange and CustomResourceDefinition) have no
printer upstream and use the default NAME / CREATED AT table.
"""

from __future__ import annotations

from datetime import datetime

from kubeling.api.printers import core
from kubeling.api.printers.common import (AGE, NAME, Column, Printer, age, format_selector, g, int_or_string,
                                          list_with_more, name)

# --- autoscaling: HorizontalPodAutoscaler (v2, and v1 through the same view) -----------------------

_HPA = "io.k8s.api.autoscaling.v2."


def _v1_metrics(o: dict) -> tuple[list, list]:
    """autoscaling/v1's single CPU target, seen as the equivalent v2 metric spec and status."""
    specs, statuses = [], []
    target = g(o, "spec", "targetCPUUtilizationPercentage")
    if target is not None:
        specs.append({"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": target}}})
        current = g(o, "status", "currentCPUUtilizationPercentage")
        if current is not None:
            statuses.append({"type": "Resource", "resource": {"name": "cpu", "current": {
                "averageUtilization": current}}})
    return specs, statuses


def _metric(spec: dict, status: dict | None) -> str:
    t = spec.get("type")
    src_key = {"External": "external", "Pods": "pods", "Object": "object", "Resource": "resource",
               "ContainerResource": "containerResource"}.get(t)
    if src_key is None:
        return "<unknown type>"
    src = spec.get(src_key) or {}
    target = src.get("target") or {}
    cur = g(status, src_key, "current", default=None) if status and status.get(src_key) else None
    if t in ("External", "Object"):
        if target.get("averageValue") is not None:
            current = (cur or {}).get("averageValue") or "<unknown>"
            return f"{current}/{target['averageValue']} (avg)"
        current = (cur or {}).get("value", "<unknown>") if cur is not None else "<unknown>"
        return f"{current}/{target.get('value', '0')}"
    if t == "Pods":
        current = (cur or {}).get("averageValue", "<unknown>") if cur is not None else "<unknown>"
        return f"{current}/{target.get('averageValue', '0')}"
    res_name = src.get("name", "")
    if target.get("averageValue") is not None:
        current = (cur or {}).get("averageValue", "<unknown>") if cur is not None else "<unknown>"
        return f"{res_name}: {current}/{target['averageValue']}"
    util = (cur or {}).get("averageUtilization")
    current = f"{util}%" if util is not None else "<unknown>"
    want = f"{target['averageUtilization']}%" if target.get("averageUtilization") is not None else "<auto>"
    return f"{res_name}: {current}/{want}"


def hpa_targets(o: dict) -> str:
    specs = g(o, "spec", "metrics", default=[])
    statuses = g(o, "status", "currentMetrics", default=[])
    if not specs:
        specs, statuses = _v1_metrics(o)
    if not specs:
        return "<none>"
    items = [_metric(s, statuses[i] if i < len(statuses) else None) for i, s in enumerate(specs)]
    if len(items) > 2:
        return ", ".join(items[:2]) + f" + {len(items) - 2} more..."
    return ", ".join(items)


def _hpa(o: dict, now: datetime) -> list:
    ref = g(o, "spec", "scaleTargetRef", default={})
    min_pods = g(o, "spec", "minReplicas")
    return [name(o), f"{ref.get('kind', '')}/{ref.get('name', '')}", hpa_targets(o),
            "<unset>" if min_pods is None else str(min_pods), g(o, "spec", "maxReplicas", default=0),
            g(o, "status", "currentReplicas", default=0), age(o, now)]


HPA = Printer((
    NAME, Column("Reference", doc=(_HPA + "HorizontalPodAutoscalerSpec", "scaleTargetRef")),
    Column("Targets", doc=(_HPA + "HorizontalPodAutoscalerSpec", "metrics")),
    Column("MinPods", doc=(_HPA + "HorizontalPodAutoscalerSpec", "minReplicas")),
    Column("MaxPods", doc=(_HPA + "HorizontalPodAutoscalerSpec", "maxReplicas")),
    Column("Replicas", doc=(_HPA + "HorizontalPodAutoscalerStatus", "currentReplicas")), AGE,
), _hpa)


# --- networking.k8s.io: Ingress, IngressClass, NetworkPolicy --------------------------------------

def ingress_hosts(rules: list | None) -> str:
    rules = rules or []
    hosts = [r["host"] for r in rules[:3] if r.get("host")]
    if not hosts:
        return "*"
    if len(rules) > 3:
        return ",".join(hosts) + f" + {len(rules) - 3} more..."
    return ",".join(hosts)


def _ingress(o: dict, now: datetime) -> list:
    spec = o.get("spec") or {}
    return [name(o), spec.get("ingressClassName") or "<none>", ingress_hosts(spec.get("rules")),
            core.load_balancer_ingress(g(o, "status", "loadBalancer", "ingress")),
            "80, 443" if spec.get("tls") else "80", age(o, now)]


INGRESS = Printer((
    NAME,
    Column("Class", doc="The name of the IngressClass resource that should be used for additional configuration"),
    Column("Hosts", doc="Hosts that incoming requests are matched against before the ingress rule"),
    Column("Address", doc="Address is a list containing ingress points for the load-balancer"),
    Column("Ports", doc="Ports of TLS configurations that open"), AGE,
), _ingress)


def _ingress_class(o: dict, now: datetime) -> list:
    params = g(o, "spec", "parameters")
    cell = "<none>"
    if params:
        kind = params.get("kind", "")
        if params.get("apiGroup") is not None:
            kind += "." + params["apiGroup"]
        cell = f"{kind}/{params.get('name', '')}"
    return [name(o), g(o, "spec", "controller", default=""), cell, age(o, now)]


INGRESS_CLASS = Printer((
    NAME, Column("Controller", doc="Controller that is responsible for handling this class"),
    Column("Parameters", doc="A reference to a resource with additional parameters"), AGE,
), _ingress_class)

NETWORK_POLICY = Printer(
    (NAME, Column("Pod-Selector", doc=("io.k8s.api.networking.v1.NetworkPolicySpec", "podSelector")), AGE),
    lambda o, now: [name(o), format_selector(g(o, "spec", "podSelector", default={})), age(o, now)])


# --- storage.k8s.io: StorageClass; scheduling.k8s.io: PriorityClass -------------------------------

_DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                              "storageclass.beta.kubernetes.io/is-default-class")


def _storage_class(o: dict, now: datetime) -> list:
    ann = g(o, "metadata", "annotations", default={})
    display = name(o) + (" (default)" if any(ann.get(a) == "true" for a in _DEFAULT_CLASS_ANNOTATIONS) else "")
    return [display, o.get("provisioner", ""), o.get("reclaimPolicy") or "Delete",
            o.get("volumeBindingMode") or "Immediate", bool(o.get("allowVolumeExpansion", False)), age(o, now)]


_SC = "io.k8s.api.storage.v1.StorageClass"
STORAGE_CLASS = Printer((
    NAME, Column("Provisioner", doc=(_SC, "provisioner")), Column("ReclaimPolicy", doc=(_SC, "reclaimPolicy")),
    Column("VolumeBindingMode", doc=(_SC, "volumeBindingMode")),
    Column("AllowVolumeExpansion", doc=(_SC, "allowVolumeExpansion")), AGE,
), _storage_class)

_PC = "io.k8s.api.scheduling.v1.PriorityClass"
PRIORITY_CLASS = Printer((
    NAME, Column("Value", "integer", (_PC, "value")), Column("Global-Default", "boolean", (_PC, "globalDefault")),
    AGE, Column("PreemptionPolicy", doc=(_PC, "preemptionPolicy")),
), lambda o, now: [name(o), o.get("value", 0), bool(o.get("globalDefault", False)), age(o, now),
                   o.get("preemptionPolicy", "")])


# --- policy: PodDisruptionBudget ------------------------------------------------------------------

def _pdb(o: dict, now: datetime) -> list:
    spec = o.get("spec") or {}
    mn, mx = spec.get("minAvailable"), spec.get("maxUnavailable")
    return [name(o), "N/A" if mn is None else int_or_string(mn), "N/A" if mx is None else int_or_string(mx),
            g(o, "status", "disruptionsAllowed", default=0), age(o, now)]


PDB = Printer((
    NAME, Column("Min Available", doc="The minimum number of pods that must be available."),
    Column("Max Unavailable", doc="The maximum number of pods that may be unavailable."),
    Column("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."), AGE,
), _pdb)


# --- rbac.authorization.k8s.io: RoleBinding, ClusterRoleBinding -----------------------------------

def subjects(subs: list | None) -> tuple[str, str, str]:
    users, groups, sas = [], [], []
    for s in subs or []:
        kind = s.get("kind")
        if kind == "ServiceAccount":
            sas.append(f"{s['namespace']}:{s.get('name', '')}" if s.get("namespace") else s.get("name", ""))
        elif kind == "User":
            users.append(s.get("name", ""))
        elif kind == "Group":
            groups.append(s.get("name", ""))
    return ", ".join(users), ", ".join(groups), ", ".join(sas)


def _binding(o: dict, now: datetime) -> list:
    ref = o.get("roleRef") or {}
    return [name(o), f"{ref.get('kind', '')}/{ref.get('name', '')}", age(o, now), *subjects(o.get("subjects"))]


def _binding_printer(what: str) -> Printer:
    return Printer((
        NAME, Column("Role", doc=(f"io.k8s.api.rbac.v1.{what}", "roleRef")), AGE,
        Column("Users", priority=1, doc=f"Users in the {what[0].lower() + what[1:]}"),
        Column("Groups", priority=1, doc=f"Groups in the {what[0].lower() + what[1:]}"),
        Column("ServiceAccounts", priority=1, doc=f"ServiceAccounts in the {what[0].lower() + what[1:]}"),
    ), _binding)


# --- coordination: Lease; discovery: EndpointSlice ------------------------------------------------

LEASE = Printer(
    (NAME, Column("Holder", doc=("io.k8s.api.coordination.v1.LeaseSpec", "holderIdentity")), AGE),
    lambda o, now: [name(o), g(o, "spec", "holderIdentity", default=""), age(o, now)])


def _slice_ports(ports: list | None) -> str:
    items = []
    for p in ports or []:
        items.append(str(p["port"]) if p.get("port") is not None else (p.get("name") or "*"))
    return list_with_more(items, len(items))


def _slice_endpoints(endpoints: list | None) -> str:
    addrs = [a for e in endpoints or [] for a in e.get("addresses") or []]
    return list_with_more(addrs, len(addrs))


_ES = "io.k8s.api.discovery.v1.EndpointSlice"
ENDPOINT_SLICE = Printer((
    NAME, Column("AddressType", doc=(_ES, "addressType")), Column("Ports", doc=(_ES, "ports")),
    Column("Endpoints", doc=(_ES, "endpoints")), AGE,
), lambda o, now: [name(o), o.get("addressType", ""), _slice_ports(o.get("ports")),
                   _slice_endpoints(o.get("endpoints")), age(o, now)])


# --- events.k8s.io: Event, shown with core Event's columns (upstream prints both alike) ----------

def core_event(o: dict) -> dict:
    """An events.k8s.io/v1 Event in core/v1 field names, for the shared printer.

    The two groups share storage, so an object already in core shape passes through.
    """
    if "involvedObject" in o or "regarding" not in o and "note" not in o:
        return o
    out = {"metadata": o.get("metadata") or {}, "involvedObject": o.get("regarding") or {},
           "message": o.get("note", ""), "reason": o.get("reason", ""), "type": o.get("type", ""),
           "source": o.get("deprecatedSource") or {}, "firstTimestamp": o.get("deprecatedFirstTimestamp"),
           "lastTimestamp": o.get("deprecatedLastTimestamp"), "count": o.get("deprecatedCount", 0),
           "eventTime": o.get("eventTime"), "reportingComponent": o.get("reportingController", ""),
           "reportingInstance": o.get("reportingInstance", "")}
    if o.get("series"):
        out["series"] = o["series"]
    return out


ROLE_BINDING = _binding_printer("RoleBinding")
CLUSTER_ROLE_BINDING = _binding_printer("ClusterRoleBinding")
EVENTS_EVENT = Printer(core.EVENT.columns, lambda o, now: core.EVENT.row(core_event(o), now))


PRINTERS: dict[tuple[str, str], Printer] = {
    ("autoscaling", "HorizontalPodAutoscaler"): HPA,
    ("networking.k8s.io", "Ingress"): INGRESS,
    ("networking.k8s.io", "IngressClass"): INGRESS_CLASS,
    ("networking.k8s.io", "NetworkPolicy"): NETWORK_POLICY,
    ("storage.k8s.io", "StorageClass"): STORAGE_CLASS,
    ("scheduling.k8s.io", "PriorityClass"): PRIORITY_CLASS,
    ("policy", "PodDisruptionBudget"): PDB,
    ("rbac.authorization.k8s.io", "RoleBinding"): ROLE_BINDING,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): CLUSTER_ROLE_BINDING,
    ("coordination.k8s.io", "Lease"): LEASE,
    ("discovery.k8s.io", "EndpointSlice"): ENDPOINT_SLICE,
    ("events.k8s.io", "Event"): EVENTS_EVENT,
}


def _apiservice(o: dict, now: datetime) -> list:
    svc = g(o, "spec", "service")
    service = f"{svc.get('namespace', '')}/{svc.get('name', '')}" if isinstance(svc, dict) else "Local"
    cond = next((c for c in g(o, "status", "conditions", default=[]) or [] if c.get("type") == "Available"), None)
    if cond is None:
        available = "Unknown"
    elif cond.get("status") == "True":
        available = "True"
    else:
        available = f"{cond.get('status', 'Unknown')} ({cond.get('reason', '')})"
    return [name(o), service, available, age(o, now)]


# kube-aggregator's table convertor.
APISERVICE = Printer((
    NAME, Column("Service", doc="The reference to the service that hosts this API endpoint."),
    Column("Available", doc="Whether this service is available."), AGE,
), _apiservice)
