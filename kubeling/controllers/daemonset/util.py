"""Which nodes run a DaemonSet's pod, and what that pod looks like (upstream's
``pkg/controller/daemon/util`` and ``nodeShouldRunDaemonPod``).

- `node_should_run_daemon_pod(node, ds)` → ``(should_run, should_continue_running)``: the pod
  the set would make must fit the node's name, its nodeSelector and required node affinity
  must admit the node, and every NoSchedule/NoExecute taint must be tolerated. A node whose
  only untolerated taints are NoSchedule keeps an existing pod (``should_continue_running``);
  an untolerated NoExecute taint evicts it. The matching rules are the scheduler's own
  (`kubeling.scheduler.plugins.helper`), so the two never disagree.
- `add_daemon_tolerations`: upstream's defaults on every daemon pod — ``not-ready`` and
  ``unreachable`` NoExecute with no ``tolerationSeconds`` (a daemon pod is never evicted for
  them), ``disk-pressure``, ``memory-pressure``, ``pid-pressure`` and ``unschedulable``
  NoSchedule, and ``network-unavailable`` NoSchedule for hostNetwork pods.
- `replace_node_name_affinity`: daemon pods are bound by the scheduler, not by the controller
  (upstream since 1.12); the required node affinity becomes the single term ``matchFields
  metadata.name In [node]`` (the set's own terms were already checked here), preferred terms
  are kept.
- `target_node_name`: the node a daemon pod is for — ``spec.nodeName``, else that affinity term.
"""

from __future__ import annotations

import copy
import math

from kubeling.scheduler.plugins.helper import (
    NO_EXECUTE,
    OBJECT_NAME_FIELD,
    RequiredNodeAffinity,
    do_not_schedule_taint,
    find_matching_untolerated_taint,
)

TEMPLATE_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"
TEMPLATE_GENERATION_LABEL = "pod-template-generation"

_NO_EXECUTE_KEYS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
_NO_SCHEDULE_KEYS = ("node.kubernetes.io/disk-pressure", "node.kubernetes.io/memory-pressure",
                     "node.kubernetes.io/pid-pressure", "node.kubernetes.io/unschedulable")
_NETWORK_UNAVAILABLE = "node.kubernetes.io/network-unavailable"


def _add_or_update(tolerations: list[dict], tol: dict) -> None:
    """Upstream's ``AddOrUpdateTolerationInPodSpec``: same key+operator+effect (+value) replaced."""
    for i, t in enumerate(tolerations):
        if (t.get("key"), t.get("operator") or "Equal", t.get("effect"), t.get("value") or "") == \
                (tol["key"], tol["operator"], tol["effect"], ""):
            tolerations[i] = tol
            return
    tolerations.append(tol)


def add_daemon_tolerations(spec: dict) -> None:
    tolerations = spec.setdefault("tolerations", [])
    for key in _NO_EXECUTE_KEYS:
        _add_or_update(tolerations, {"key": key, "operator": "Exists", "effect": "NoExecute"})
    for key in _NO_SCHEDULE_KEYS:
        _add_or_update(tolerations, {"key": key, "operator": "Exists", "effect": "NoSchedule"})
    if spec.get("hostNetwork"):
        _add_or_update(tolerations, {"key": _NETWORK_UNAVAILABLE, "operator": "Exists", "effect": "NoSchedule"})


def template_generation(ds: dict) -> str | None:
    return (ds["metadata"].get("annotations") or {}).get(TEMPLATE_GENERATION_ANNOTATION)


def create_pod_template(ds: dict, hash_: str) -> dict:
    """The set's template with the default tolerations and the revision labels."""
    template = copy.deepcopy((ds.get("spec") or {}).get("template") or {})
    add_daemon_tolerations(template.setdefault("spec", {}))
    labels = template.setdefault("metadata", {}).setdefault("labels", {})
    generation = template_generation(ds)
    if generation is not None:
        labels[TEMPLATE_GENERATION_LABEL] = generation
    if hash_:
        labels["controller-revision-hash"] = hash_
    return template


def new_pod(ds: dict, node_name: str) -> dict:
    """The pod the set would run on ``node_name``, for the predicates only (never created)."""
    spec = copy.deepcopy(((ds.get("spec") or {}).get("template") or {}).get("spec") or {})
    add_daemon_tolerations(spec)
    spec.setdefault("nodeName", node_name)
    return {"metadata": {}, "spec": spec}


def node_should_run_daemon_pod(node: dict, ds: dict) -> tuple[bool, bool]:
    name = node["metadata"]["name"]
    wanted = (((ds.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeName")
    if wanted and wanted != name:
        return False, False
    pod = new_pod(ds, name)
    if not RequiredNodeAffinity(pod).match(node):
        return False, False
    taints = (node.get("spec") or {}).get("taints") or ()
    tolerations = pod["spec"].get("tolerations") or ()
    if find_matching_untolerated_taint(taints, tolerations, do_not_schedule_taint) is None:
        return True, True
    evicting = find_matching_untolerated_taint(taints, tolerations, lambda t: t.get("effect") == NO_EXECUTE)
    return False, evicting is None


def replace_node_name_affinity(affinity: dict | None, node_name: str) -> dict:
    affinity = copy.deepcopy(affinity or {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [
        {"matchFields": [{"key": OBJECT_NAME_FIELD, "operator": "In", "values": [node_name]}]}]}
    return affinity


def target_node_name(pod: dict) -> str | None:
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    for term in required.get("nodeSelectorTerms") or ():
        for req in term.get("matchFields") or ():
            if req.get("key") == OBJECT_NAME_FIELD and req.get("operator") == "In" and \
                    len(req.get("values") or ()) == 1:
                return req["values"][0]
    return None


def scaled_value(value, total: int, round_up: bool = True) -> int:
    """``intstr.GetScaledValueFromIntOrPercent``: an int as is, ``"25%"`` of ``total``."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    s = str(value)
    if not s.endswith("%"):
        return int(s)
    pct = int(s[:-1])
    v = pct * total / 100
    return math.ceil(v) if round_up else math.floor(v)


def rolling_update_bounds(ds: dict, desired: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) scaled to ``desired``; both 0 means unavailable 1, as upstream."""
    ru = ((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {}
    surge = scaled_value(ru.get("maxSurge"), desired)
    unavailable = scaled_value(ru.get("maxUnavailable", 1), desired)
    if desired > 0 and surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def allows_surge(ds: dict) -> bool:
    ru = ((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {}
    return scaled_value(ru.get("maxSurge"), 1) > 0
