"""Quota evaluators: what one object uses (upstream's ``pkg/quota/v1/evaluator/core`` and
``generic``).

An `Evaluator` is for one group/resource and answers:

- ``matching_resources(names)``: which quota names it tracks (a quota on ``pods`` and
  ``requests.cpu`` involves the pod evaluator; ``count/deployments.apps`` the object counter);
- ``usage(obj)``: the ResourceList the object consumes. A pod that has finished (Succeeded or
  Failed) still counts for ``count/pods`` (the object exists) but no longer for ``pods`` or
  compute resources, as upstream;
- ``matches_scopes(quota, obj)``: the quota's ``scopes`` and ``scopeSelector`` (Terminating,
  NotTerminating, BestEffort, NotBestEffort, PriorityClass, CrossNamespacePodAffinity);
- ``constraints(required, obj)``: upstream's backward-compatible rule that a pod in a namespace
  whose quota tracks cpu or memory must state the matching request or limit on every container.

`evaluator_for(group, resource)` returns the specific evaluator, or an object counter for any
other resource (``count/<resource>.<group>``).
"""

from __future__ import annotations

from decimal import Decimal

from kubeling.api.resource import BEST_EFFORT, compute_qos, pod_limits, pod_requests
from kubeling.quota.resources import ResourceList, parse_list

ONE = Decimal(1)
COMPUTE = ("cpu", "memory", "ephemeral-storage")
_POD_NAMES = {"pods", "count/pods", "cpu", "memory", "ephemeral-storage", "requests.cpu", "requests.memory",
              "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage"}
_VALIDATION = {"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"}
# the legacy names upstream counts without the count/ prefix
LEGACY_COUNTS = {("", "pods"): "pods", ("", "services"): "services",
                 ("", "replicationcontrollers"): "replicationcontrollers",
                 ("", "resourcequotas"): "resourcequotas", ("", "secrets"): "secrets",
                 ("", "configmaps"): "configmaps", ("", "persistentvolumeclaims"): "persistentvolumeclaims"}
STORAGE_CLASS_SUFFIX = ".storageclass.storage.k8s.io/"


def count_name(group: str, resource: str) -> str:
    return f"count/{resource}" if not group else f"count/{resource}.{group}"


class Evaluator:
    """Object count only; subclasses add resource usage."""

    def __init__(self, group: str, resource: str) -> None:
        self.group, self.resource = group, resource
        self.count = count_name(group, resource)
        self.legacy = LEGACY_COUNTS.get((group, resource))

    def names(self) -> set[str]:
        return {self.count} | ({self.legacy} if self.legacy else set())

    def matching_resources(self, names) -> set[str]:
        return {n for n in names if n in self.names()}

    def usage(self, obj: dict) -> ResourceList:
        out = {self.count: ONE}
        if self.legacy:
            out[self.legacy] = ONE
        return out

    def matches_scopes(self, quota: dict, obj: dict) -> bool:
        spec = quota.get("spec") or {}
        # scopes only restrict pods; a scoped quota tracks nothing else (upstream)
        return not spec.get("scopes") and not (spec.get("scopeSelector") or {}).get("matchExpressions")

    def constraints(self, required: set[str], obj: dict) -> str | None:
        return None

    def handles_update(self) -> bool:
        return False


def is_terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class PodEvaluator(Evaluator):
    def __init__(self) -> None:
        super().__init__("", "pods")

    def matching_resources(self, names) -> set[str]:
        return {n for n in names if n in _POD_NAMES or _is_extended_request(n)}

    def usage(self, pod: dict) -> ResourceList:
        out: ResourceList = {"count/pods": ONE}
        if is_terminal(pod):
            return out
        out["pods"] = ONE
        for name, v in pod_requests(pod).items():
            if name in COMPUTE:
                out[name] = v
                out[f"requests.{name}"] = v
            else:   # hugepages and extended resources are quota'd by request only
                out[f"requests.{name}"] = v
        for name, v in pod_limits(pod).items():
            if name in COMPUTE:
                out[f"limits.{name}"] = v
        return out

    def matches_scopes(self, quota: dict, pod: dict) -> bool:
        spec = quota.get("spec") or {}
        for scope in spec.get("scopes") or ():
            if not _pod_matches_scope(scope, None, pod):
                return False
        for req in (spec.get("scopeSelector") or {}).get("matchExpressions") or ():
            if not _pod_matches_scope(req.get("scopeName", ""), req, pod):
                return False
        return True

    def constraints(self, required: set[str], pod: dict) -> str | None:
        """``must specify requests.cpu for: app; limits.memory for: app`` or None."""
        wanted = required & _VALIDATION
        if not wanted:
            return None
        missing: dict[str, set[str]] = {}
        spec = pod.get("spec") or {}
        for c in list(spec.get("containers") or ()) + list(spec.get("initContainers") or ()):
            res = c.get("resources") or {}
            req, lim = res.get("requests") or {}, res.get("limits") or {}
            for name in wanted:
                if name.startswith("limits."):
                    ok = name[len("limits."):] in lim
                elif name.startswith("requests."):
                    ok = name[len("requests."):] in req
                else:
                    ok = name in req
                if not ok:
                    missing.setdefault(name, set()).add(c.get("name", ""))
        if not missing:
            return None
        parts = [f"{name} for: {','.join(sorted(missing[name]))}" for name in sorted(missing)]
        return "must specify " + "; ".join(parts)


def _is_extended_request(name: str) -> bool:
    return name.startswith("requests.") and ("/" in name or name.startswith("requests.hugepages-"))


def _pod_matches_scope(scope: str, req: dict | None, pod: dict) -> bool:
    spec = pod.get("spec") or {}
    if scope == "Terminating":
        return spec.get("activeDeadlineSeconds") is not None
    if scope == "NotTerminating":
        return spec.get("activeDeadlineSeconds") is None
    if scope == "BestEffort":
        return compute_qos(pod) == BEST_EFFORT
    if scope == "NotBestEffort":
        return compute_qos(pod) != BEST_EFFORT
    if scope == "PriorityClass":
        if req is None:
            return bool(spec.get("priorityClassName"))
        return _match_operator(req, spec.get("priorityClassName"))
    if scope == "CrossNamespacePodAffinity":
        return _uses_cross_namespace_affinity(pod)
    return False


def _match_operator(req: dict, value: str | None) -> bool:
    op, values = req.get("operator"), set(req.get("values") or ())
    if op == "Exists":
        return bool(value)
    if op == "DoesNotExist":
        return not value
    if op == "In":
        return value in values
    if op == "NotIn":
        return value not in values
    return False


def _uses_cross_namespace_affinity(pod: dict) -> bool:
    aff = (pod.get("spec") or {}).get("affinity") or {}
    for kind in ("podAffinity", "podAntiAffinity"):
        k = aff.get(kind) or {}
        terms = list(k.get("requiredDuringSchedulingIgnoredDuringExecution") or ())
        terms += [w.get("podAffinityTerm") or {} for w in k.get("preferredDuringSchedulingIgnoredDuringExecution") or ()]
        if any(t.get("namespaces") or t.get("namespaceSelector") is not None for t in terms):
            return True
    return False


class ServiceEvaluator(Evaluator):
    def __init__(self) -> None:
        super().__init__("", "services")

    def names(self) -> set[str]:
        return super().names() | {"services.nodeports", "services.loadbalancers"}

    def usage(self, svc: dict) -> ResourceList:
        out = super().usage(svc)
        spec = svc.get("spec") or {}
        typ = spec.get("type", "ClusterIP")
        ports = len(spec.get("ports") or ())
        if typ == "NodePort":
            out["services.nodeports"] = Decimal(ports)
        elif typ == "LoadBalancer":
            out["services.loadbalancers"] = ONE
            if spec.get("allocateLoadBalancerNodePorts", True):
                out["services.nodeports"] = Decimal(ports)
        return out

    def handles_update(self) -> bool:
        return True


class PVCEvaluator(Evaluator):
    def __init__(self) -> None:
        super().__init__("", "persistentvolumeclaims")

    def matching_resources(self, names) -> set[str]:
        return {n for n in names if n in self.names() or n == "requests.storage" or STORAGE_CLASS_SUFFIX in n}

    def usage(self, pvc: dict) -> ResourceList:
        out = super().usage(pvc)
        spec = pvc.get("spec") or {}
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        sc = spec.get("storageClassName") or ""
        if storage is not None:
            v = parse_list({"storage": storage}).get("storage", Decimal(0))
            out["requests.storage"] = v
            if sc:
                out[f"{sc}{STORAGE_CLASS_SUFFIX}requests.storage"] = v
        if sc:
            out[f"{sc}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"] = ONE
        return out

    def handles_update(self) -> bool:
        return True


_SPECIFIC = {("", "pods"): PodEvaluator, ("", "services"): ServiceEvaluator,
             ("", "persistentvolumeclaims"): PVCEvaluator}


def evaluator_for(group: str, resource: str) -> Evaluator:
    cls = _SPECIFIC.get((group, resource))
    return cls() if cls else Evaluator(group, resource)


def group_resource_of(name: str) -> tuple[str, str] | None:
    """The (group, resource) a quota name is about, for the names that say: ``count/x.g``,
    the legacy counts, and pods/services/PVC resource names. None when it cannot tell."""
    if name.startswith("count/"):
        res, _, group = name[len("count/"):].partition(".")
        return group, res
    for gr, legacy in LEGACY_COUNTS.items():
        if legacy == name:
            return gr
    if name in _POD_NAMES or _is_extended_request(name):
        return "", "pods"
    if name.startswith("services."):
        return "", "services"
    if name == "requests.storage" or STORAGE_CLASS_SUFFIX in name:
        return "", "persistentvolumeclaims"
    return None
