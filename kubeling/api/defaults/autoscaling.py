"""autoscaling defaulting: ``pkg/apis/autoscaling/v2/defaults.go`` and ``.../v1/defaults.go``.

v2 fills ``behavior`` only when the user wrote one: each of scaleUp / scaleDown
becomes the upstream default rules with the user's non-null fields laid over
them. scaleDown's stabilization window stays unset on purpose: the controller
then uses its command-line ``--horizontal-pod-autoscaler-downscale-stabilization``.
"""

from __future__ import annotations

import copy

from kubeling.api.defaults._util import child, set_ptr

DEFAULT_CPU_UTILIZATION = 80

_SCALE_UP = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ],
}
_SCALE_DOWN = {
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}


def _rules(user: dict | None, default: dict) -> dict:
    """``copyHPAScalingRules``: the defaults, overridden by each non-null user field."""
    rules = copy.deepcopy(default)
    if isinstance(user, dict):
        for key, value in user.items():
            if value is not None:
                rules[key] = value
    return rules


def set_object_defaults_hpa_v2(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    set_ptr(spec, "minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [{
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}},
        }]
    behavior = child(spec, "behavior")
    if behavior is not None:
        behavior["scaleUp"] = _rules(behavior.get("scaleUp"), _SCALE_UP)
        behavior["scaleDown"] = _rules(behavior.get("scaleDown"), _SCALE_DOWN)


def set_object_defaults_hpa_v1(obj: dict) -> None:
    """v1 defaults only minReplicas; the 80% CPU target is implied, not written."""
    spec = child(obj, "spec", create=True)
    if spec is not None:
        set_ptr(spec, "minReplicas", 1)


DEFAULTERS = {
    ("autoscaling", "v2", "HorizontalPodAutoscaler"): set_object_defaults_hpa_v2,
    ("autoscaling", "v1", "HorizontalPodAutoscaler"): set_object_defaults_hpa_v1,
}
