"""HorizontalPodAutoscalers (upstream ``pkg/registry/autoscaling/horizontalpodautoscaler``),
served as ``autoscaling/v2`` (storage) and ``autoscaling/v1``.

v1 has one CPU target (``targetCPUUtilizationPercentage``); it converts to and from a v2
``Resource`` metric on ``cpu`` with a ``Utilization`` target. What v1 cannot express (other
metrics, behavior, conditions) is dropped on the way out, as upstream keeps it in annotations.
"""

import copy

from kubeling.api.defaults import autoscaling as defaults
from kubeling.api.printers import other as printers
from kubeling.api.validation import meta
from kubeling.api.validation import other as validation
from kubeling.apiserver.registry.strategy import WorkloadStrategy
from kubeling.apiserver.registry.subresources import status_subresources


def v1_to_v2(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    out["apiVersion"] = "autoscaling/v2"
    spec = out.get("spec") or {}
    target = spec.pop("targetCPUUtilizationPercentage", None)
    if target is not None:
        spec["metrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}]
    status = out.get("status")
    if isinstance(status, dict):
        cur = status.pop("currentCPUUtilizationPercentage", None)
        if cur is not None:
            status["currentMetrics"] = [{"type": "Resource", "resource": {
                "name": "cpu", "current": {"averageUtilization": cur}}}]
    return out


def v2_to_v1(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    out["apiVersion"] = "autoscaling/v1"
    spec = out.get("spec") or {}
    metrics = spec.pop("metrics", None) or []
    spec.pop("behavior", None)
    for m in metrics:
        r = m.get("resource") or {}
        if m.get("type") == "Resource" and r.get("name") == "cpu" and \
                (r.get("target") or {}).get("averageUtilization") is not None:
            spec["targetCPUUtilizationPercentage"] = r["target"]["averageUtilization"]
    status = out.get("status")
    if isinstance(status, dict):
        cur = status.pop("currentMetrics", None) or []
        status.pop("conditions", None)
        for m in cur:
            r = m.get("resource") or {}
            if m.get("type") == "Resource" and r.get("name") == "cpu":
                v = (r.get("current") or {}).get("averageUtilization")
                if v is not None:
                    status["currentCPUUtilizationPercentage"] = v
    return out


class HorizontalPodAutoscalerStrategy(WorkloadStrategy):
    group, resource, kind = "autoscaling", "horizontalpodautoscalers", "HorizontalPodAutoscaler"
    name_rule = staticmethod(meta.name_is_path_segment)
    printer = printers.HPA
    subresources = status_subresources()

    def defaults(self, obj):
        defaults.set_object_defaults_hpa_v2(obj)

    def validate(self, obj):
        return validation.validate_hpa(obj)

    def to_storage(self, obj, served):
        return v1_to_v2(obj) if served.res.version == "v1" else obj

    def from_storage(self, obj, served):
        if served.res.version != "v1" or obj.get("apiVersion") == served.res.group_version:
            return obj
        return v2_to_v1(obj)
