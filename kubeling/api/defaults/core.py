"""core/v1 defaulting: upstream's ``pkg/apis/core/v1/defaults.go`` and the covering
``SetObjectDefaults_*`` walks generated for each top-level kind.

Kinds with no defaulter upstream (ConfigMap's only one has no visible effect,
ServiceAccount, Event) are simply absent from `DEFAULTERS`.

Not defaults, and so not here: a Service's clusterIP / ipFamilies / ipFamilyPolicy
and nodePorts (the registry's allocators), a Namespace's ``kubernetes`` finalizer
(namespace strategy), a Pod's priority / preemptionPolicy / tolerations /
service-account volume (admission plugins).
"""

from __future__ import annotations

from kubeling.api.defaults import podspec
from kubeling.api.defaults._util import child, dicts, is_empty, resource_list, set_ptr, set_zero

DEFAULT_CLIENT_IP_TIMEOUT = 10800  # 3 hours, v1.DefaultClientIPServiceAffinitySeconds
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _first_ip_alias(d: dict, single: str, plural: str, key: str | None) -> None:
    """v1 keeps a singular field (``podIP``, ``podCIDR``) next to the list that the
    internal type holds. Conversion makes the singular one authoritative when the two
    disagree, and re-derives it from the list's first entry on the way out."""
    many = d.get(plural)
    first = many[0] if isinstance(many, list) and many else None
    if key:
        first = first.get(key) if isinstance(first, dict) else None
    one = d.get(single)
    if one and one != first:
        d[plural] = [{key: one} if key else one]
        first = one
    if first:
        d[single] = first


# --- Pod, PodTemplate, ReplicationController ---------------------------------------------
def set_object_defaults_pod(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is not None:
        podspec.pod_defaults(spec)
        podspec.pod_spec_defaults(spec)
    status = child(obj, "status")
    if status is not None:
        _first_ip_alias(status, "podIP", "podIPs", "ip")
        _first_ip_alias(status, "hostIP", "hostIPs", "ip")


def set_object_defaults_pod_template(obj: dict) -> None:
    podspec.template_defaults(child(obj, "template", create=True))


def set_object_defaults_replication_controller(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    template = child(spec, "template")  # a pointer in v1: only defaulted when present
    labels = child(template, "metadata")
    labels = labels.get("labels") if labels else None
    if isinstance(labels, dict):
        if is_empty(spec.get("selector")):
            spec["selector"] = dict(labels)
        meta = child(obj, "metadata", create=True)
        if meta is not None and is_empty(meta.get("labels")):
            meta["labels"] = dict(labels)
    set_ptr(spec, "replicas", 1)
    podspec.template_defaults(template)


# --- Service, Endpoints ----------------------------------------------------------------
def _externally_accessible(spec: dict) -> bool:
    kind = spec.get("type")
    return kind in ("LoadBalancer", "NodePort") or (kind == "ClusterIP" and bool(spec.get("externalIPs")))


def set_object_defaults_service(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    set_zero(spec, "sessionAffinity", "None")
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        client_ip = child(child(spec, "sessionAffinityConfig"), "clientIP")
        if client_ip is None or client_ip.get("timeoutSeconds") is None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": DEFAULT_CLIENT_IP_TIMEOUT}}
    set_zero(spec, "type", "ClusterIP")
    for port in dicts(spec, "ports"):
        set_zero(port, "protocol", "TCP")
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port", 0)
    if _externally_accessible(spec):
        set_zero(spec, "externalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer", "ClusterIP"):
        set_ptr(spec, "internalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        set_ptr(spec, "allocateLoadBalancerNodePorts", True)
    # ServiceStatus and its LoadBalancerStatus are value-typed: always serialized.
    status = child(obj, "status", create=True)
    balancer = child(status, "loadBalancer", create=True)
    if spec["type"] == "LoadBalancer":
        for ingress in dicts(balancer, "ingress"):
            if ingress.get("ip"):
                set_ptr(ingress, "ipMode", "VIP")


def set_object_defaults_endpoints(obj: dict) -> None:
    for subset in dicts(obj, "subsets"):
        for port in dicts(subset, "ports"):
            set_zero(port, "protocol", "TCP")


# --- Namespace, Secret, Node --------------------------------------------------------------
def set_object_defaults_namespace(obj: dict) -> None:
    meta = child(obj, "metadata", create=True)
    name = meta.get("name") if meta is not None else None
    if name and isinstance(name, str):
        # Always (re)set: the label must track the immutable name.
        labels = child(meta, "labels", create=True)
        if labels is not None:
            labels[NAMESPACE_NAME_LABEL] = name
    status = child(obj, "status", create=True)
    if status is not None:
        set_zero(status, "phase", "Active")


def set_object_defaults_secret(obj: dict) -> None:
    set_zero(obj, "type", "Opaque")


def set_object_defaults_node(obj: dict) -> None:
    spec = child(obj, "spec")
    if spec is not None:
        _first_ip_alias(spec, "podCIDR", "podCIDRs", None)
    status = child(obj, "status")
    if status is None:
        return
    if status.get("allocatable") is None and isinstance(status.get("capacity"), dict):
        status["allocatable"] = dict(status["capacity"])
    resource_list(status, "capacity")
    resource_list(status, "allocatable")


# --- persistent volumes --------------------------------------------------------------------
def set_object_defaults_persistent_volume(obj: dict) -> None:
    status = child(obj, "status", create=True)
    if status is not None:
        set_zero(status, "phase", "Pending")
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    set_zero(spec, "persistentVolumeReclaimPolicy", "Retain")
    set_ptr(spec, "volumeMode", "Filesystem")
    resource_list(spec, "capacity")
    podspec.host_path_defaults(child(spec, "hostPath"))
    podspec.rbd_defaults(child(spec, "rbd"))
    podspec.iscsi_defaults(child(spec, "iscsi"))
    podspec.azure_disk_defaults(child(spec, "azureDisk"))
    podspec.scale_io_defaults(child(spec, "scaleIO"))


def set_object_defaults_persistent_volume_claim(obj: dict) -> None:
    """Also used for a StatefulSet's ``volumeClaimTemplates`` entries."""
    status = child(obj, "status", create=True)
    if status is not None:
        set_zero(status, "phase", "Pending")
        resource_list(status, "capacity")
        resource_list(status, "allocatedResources")
    podspec.pvc_spec_defaults(child(obj, "spec", create=True))


# --- LimitRange, ResourceQuota --------------------------------------------------------------
def _limit_range_item(item: dict) -> None:
    """``SetDefaults_LimitRangeItem``: for containers, default limit <- max, default
    request <- default limit, then default request <- min."""
    if item.get("type") == "Container":
        default = dict(child(item, "default") or {})
        request = dict(child(item, "defaultRequest") or {})
        for key, value in (child(item, "max") or {}).items():
            default.setdefault(key, value)
        for key, value in default.items():
            request.setdefault(key, value)
        for key, value in (child(item, "min") or {}).items():
            request.setdefault(key, value)
        # Upstream makes empty maps here, which JSON then omits.
        if default:
            item["default"] = default
        if request:
            item["defaultRequest"] = request
    for key in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
        resource_list(item, key)


def set_object_defaults_limit_range(obj: dict) -> None:
    for item in dicts(child(obj, "spec"), "limits"):
        _limit_range_item(item)


def set_object_defaults_resource_quota(obj: dict) -> None:
    resource_list(child(obj, "spec"), "hard")
    status = child(obj, "status")
    resource_list(status, "hard")
    resource_list(status, "used")


DEFAULTERS = {
    ("", "v1", "Pod"): set_object_defaults_pod,
    ("", "v1", "PodTemplate"): set_object_defaults_pod_template,
    ("", "v1", "ReplicationController"): set_object_defaults_replication_controller,
    ("", "v1", "Service"): set_object_defaults_service,
    ("", "v1", "Endpoints"): set_object_defaults_endpoints,
    ("", "v1", "Namespace"): set_object_defaults_namespace,
    ("", "v1", "Secret"): set_object_defaults_secret,
    ("", "v1", "Node"): set_object_defaults_node,
    ("", "v1", "PersistentVolume"): set_object_defaults_persistent_volume,
    ("", "v1", "PersistentVolumeClaim"): set_object_defaults_persistent_volume_claim,
    ("", "v1", "LimitRange"): set_object_defaults_limit_range,
    ("", "v1", "ResourceQuota"): set_object_defaults_resource_quota,
}
