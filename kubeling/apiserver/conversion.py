"""Conversion between a served version and the version a group/resource is stored in.

Storage keeps one version per group/resource (`Served.storage_gv`); every read
converts to the version the client asked for, every write to the storage
version. Pairs handled here:

- legacy Deployments (``extensions/v1beta1``, ``apps/v1beta1``, ``apps/v1beta2``) ⇄ ``apps/v1``
  via `kubeling.api.convert`;
- ``autoscaling/v1`` ⇄ ``autoscaling/v2`` HorizontalPodAutoscalers (CPU target ⇄ metrics list);
- ``events.k8s.io/v1`` ⇄ core ``v1`` Events (renamed fields).
"""

from __future__ import annotations

import base64
import copy

from kubeling.api import convert
from kubeling.apiserver.resources import Served

_CPU_ANN = "autoscaling.alpha.kubernetes.io/"


def to_storage(served: Served, obj: dict) -> dict:
    if served.res.resource == "secrets" and served.res.group == "" and "stringData" in obj:
        _secret_string_data(obj)
    gv = served.res.group_version
    if gv == served.storage_gv:
        return obj
    if served.res.crd:  # conversion strategy None: only apiVersion differs
        obj["apiVersion"] = served.storage_gv
        return obj
    if served.res.storage_version:
        return convert.to_storage(obj)
    if served.res.resource == "horizontalpodautoscalers":
        return _hpa_v1_to_v2(obj)
    if served.res.resource == "events":
        return _event_to_core(obj)
    return obj


def from_storage(served: Served, obj: dict) -> dict:
    gv = served.res.group_version
    if gv == served.storage_gv or obj.get("apiVersion") == gv:
        return obj
    if served.res.crd:
        return {**obj, "apiVersion": gv}
    if served.res.storage_version:
        return convert.from_storage(obj, gv)
    if served.res.resource == "horizontalpodautoscalers":
        return _hpa_v2_to_v1(obj)
    if served.res.resource == "events":
        return _event_from_core(obj)
    return obj


def _hpa_v1_to_v2(obj: dict) -> dict:
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


def _hpa_v2_to_v1(obj: dict) -> dict:
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


# events.k8s.io/v1 field -> core/v1 field
_EVENT_RENAMES = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedCount": "count",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedSource": "source",
}


def _event_to_core(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    out["apiVersion"] = "v1"
    for new, old in _EVENT_RENAMES.items():
        if new in out:
            out[old] = out.pop(new)
    return out


def _event_from_core(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    out["apiVersion"] = "events.k8s.io/v1"
    for new, old in _EVENT_RENAMES.items():
        if old in out:
            out[new] = out.pop(old)
    return out


def _secret_string_data(obj: dict) -> None:
    """``stringData`` is write-only: its keys are merged into ``data``, base64-encoded, and it is
    never stored (upstream's v1 Secret conversion)."""
    string_data = obj.pop("stringData") or {}
    if not isinstance(string_data, dict):
        return
    data = obj.get("data") or {}
    for k, v in string_data.items():
        data[k] = base64.b64encode(str(v).encode()).decode()
    obj["data"] = data
