"""What a StatefulSet's pods and claims are made of (upstream's ``stateful_set_utils.go``).

Identity: pod ``<set>-<ordinal>``, labels ``statefulset.kubernetes.io/pod-name`` and
``apps.kubernetes.io/pod-index``, ``spec.hostname`` = the pod name and ``spec.subdomain`` =
``serviceName`` (set at creation only: both are immutable on a pod). Storage: one claim
``<template>-<set>-<ordinal>`` per ``volumeClaimTemplates`` entry, and a pod volume of the
template's name pointing at it (replacing a template volume of that name). Revision: the
``controller-revision-hash`` label holds the ControllerRevision's *name*.

PVC retention (``persistentVolumeClaimRetentionPolicy``) is expressed with ownerReferences,
as upstream, so the garbage collector does the deleting:

=============  ============  ============================================
whenDeleted    whenScaled    claim owned (controller ref) by
=============  ============  ============================================
Retain         Retain        nobody
Delete         Retain        the set
Retain         Delete        the pod, once its ordinal is out of range
Delete         Delete        the pod if out of range, else the set
=============  ============  ============================================
"""

from __future__ import annotations

import copy
import re

from kubeling.controllers.controller_utils import controller_ref, is_pod_available, is_pod_ready, pod_from_template
from kubeling.controllers.history import CONTROLLER_REVISION_HASH_LABEL, new_controller_revision, template_patch

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = CONTROLLER_REVISION_HASH_LABEL
RETAIN, DELETE = "Retain", "Delete"
_ORDINAL = re.compile(r"^(.*)-([0-9]+)$")


# -- names and ordinals -----------------------------------------------------------------------

def parent_and_ordinal(pod: dict) -> tuple[str, int]:
    """(parent name, ordinal) from ``<parent>-<ordinal>``; ("", -1) for another name."""
    m = _ORDINAL.match(pod["metadata"].get("name") or "")
    if not m:
        return "", -1
    return m.group(1), int(m.group(2))


def get_ordinal(pod: dict) -> int:
    return parent_and_ordinal(pod)[1]


def is_member_of(sts: dict, pod: dict) -> bool:
    return parent_and_ordinal(pod)[0] == sts["metadata"]["name"]


def pod_name(sts: dict, ordinal: int) -> str:
    return f"{sts['metadata']['name']}-{ordinal}"


def claim_name(sts: dict, template: dict, ordinal: int) -> str:
    return f"{template['metadata']['name']}-{sts['metadata']['name']}-{ordinal}"


def start_ordinal(sts: dict) -> int:
    return int(((sts.get("spec") or {}).get("ordinals") or {}).get("start") or 0)


def replicas(sts: dict) -> int:
    r = (sts.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


def pod_in_ordinal_range(pod: dict, sts: dict) -> bool:
    o, start = get_ordinal(pod), start_ordinal(sts)
    return start <= o < start + replicas(sts)


# -- spec accessors ---------------------------------------------------------------------------

def allows_burst(sts: dict) -> bool:
    return (sts.get("spec") or {}).get("podManagementPolicy") == "Parallel"


def strategy(sts: dict) -> dict:
    return (sts.get("spec") or {}).get("updateStrategy") or {"type": "RollingUpdate"}


def partition(sts: dict) -> int | None:
    """The RollingUpdate partition; None when there is no ``rollingUpdate`` block."""
    ru = strategy(sts).get("rollingUpdate")
    if ru is None:
        return None
    return int(ru.get("partition") or 0)


def min_ready_seconds(sts: dict) -> int:
    return int((sts.get("spec") or {}).get("minReadySeconds") or 0)


def retention_policy(sts: dict) -> tuple[str, str]:
    p = (sts.get("spec") or {}).get("persistentVolumeClaimRetentionPolicy") or {}
    return p.get("whenDeleted") or RETAIN, p.get("whenScaled") or RETAIN


# -- pod predicates ---------------------------------------------------------------------------

def phase(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase") or ""


def is_created(pod: dict) -> bool:
    """Stored by the API server. Upstream tests ``status.phase != ""`` (the server defaults it);
    a pod only built by `new_versioned_pod` has no UID either, which does not depend on defaulting."""
    return bool(pod["metadata"].get("uid"))


def is_failed(pod: dict) -> bool:
    return phase(pod) == "Failed"


def is_succeeded(pod: dict) -> bool:
    return phase(pod) == "Succeeded"


def is_terminating(pod: dict) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def is_running_and_ready(pod: dict) -> bool:
    return phase(pod) == "Running" and is_pod_ready(pod)


def is_running_and_available(pod: dict, min_ready: int, now) -> bool:
    return phase(pod) == "Running" and is_pod_available(pod, min_ready, now)


def is_healthy(pod: dict) -> bool:
    return is_running_and_ready(pod) and not is_terminating(pod)


def pod_revision(pod: dict) -> str:
    return (pod["metadata"].get("labels") or {}).get(REVISION_LABEL, "")


# -- building pods ----------------------------------------------------------------------------

def persistent_volume_claims(sts: dict, ordinal: int) -> dict[str, dict]:
    """Template name → the claim for ``ordinal`` (the set's selector labels added)."""
    out = {}
    match_labels = ((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    for tmpl in (sts.get("spec") or {}).get("volumeClaimTemplates") or ():
        claim = copy.deepcopy(tmpl)
        claim["apiVersion"], claim["kind"] = "v1", "PersistentVolumeClaim"
        meta = claim.setdefault("metadata", {})
        name = meta["name"]
        meta["name"] = claim_name(sts, tmpl, ordinal)
        meta["namespace"] = sts["metadata"].get("namespace")
        meta["labels"] = {**(meta.get("labels") or {}), **match_labels}
        claim.pop("status", None)
        out[name] = claim
    return out


def update_storage(sts: dict, pod: dict) -> None:
    """Point the pod's volumes at its claims; other volumes are kept."""
    claims = persistent_volume_claims(sts, get_ordinal(pod))
    spec = pod.setdefault("spec", {})
    volumes = [{"name": name, "persistentVolumeClaim": {"claimName": c["metadata"]["name"]}}
               for name, c in claims.items()]
    volumes += [v for v in spec.get("volumes") or () if v.get("name") not in claims]
    if volumes:
        spec["volumes"] = volumes


def storage_matches(sts: dict, pod: dict) -> bool:
    claims = persistent_volume_claims(sts, get_ordinal(pod))
    by_name = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or ()}
    for name, claim in claims.items():
        v = by_name.get(name)
        if v is None or (v.get("persistentVolumeClaim") or {}).get("claimName") != claim["metadata"]["name"]:
            return False
    return True


def update_identity(sts: dict, pod: dict) -> None:
    ordinal = get_ordinal(pod)
    meta = pod["metadata"]
    meta["name"] = pod_name(sts, ordinal)
    meta["namespace"] = sts["metadata"].get("namespace")
    labels = meta.setdefault("labels", {})
    labels[POD_NAME_LABEL] = meta["name"]
    labels[POD_INDEX_LABEL] = str(ordinal)


def identity_matches(sts: dict, pod: dict) -> bool:
    parent, ordinal = parent_and_ordinal(pod)
    labels = pod["metadata"].get("labels") or {}
    return (ordinal >= 0 and parent == sts["metadata"]["name"]
            and pod["metadata"].get("namespace") == sts["metadata"].get("namespace")
            and labels.get(POD_NAME_LABEL) == pod["metadata"]["name"]
            and labels.get(POD_INDEX_LABEL) == str(ordinal))


def new_stateful_set_pod(sts: dict, ordinal: int) -> dict:
    pod = pod_from_template((sts.get("spec") or {}).get("template") or {}, sts, controller_ref(sts, "apps/v1",
                                                                                               "StatefulSet"),
                            generate_name="")
    pod["metadata"].pop("generateName", None)
    pod["metadata"]["name"] = pod_name(sts, ordinal)
    update_identity(sts, pod)
    pod["spec"]["hostname"] = pod["metadata"]["name"]
    service = (sts.get("spec") or {}).get("serviceName")
    if service:
        pod["spec"]["subdomain"] = service
    update_storage(sts, pod)
    return pod


def new_versioned_pod(current_set: dict, update_set: dict, current_revision: str, update_revision: str,
                      ordinal: int, current_replicas: int) -> dict:
    """The pod for ``ordinal``: at the current revision below the partition (or, without a
    partition, among the first ``current_replicas``), else at the update revision."""
    if strategy(current_set).get("type", "RollingUpdate") == "RollingUpdate":
        p = partition(current_set)
        bound = start_ordinal(current_set) + (current_replicas if p is None else p)
        if ordinal < bound:
            pod = new_stateful_set_pod(current_set, ordinal)
            pod["metadata"]["labels"][REVISION_LABEL] = current_revision
            return pod
    pod = new_stateful_set_pod(update_set, ordinal)
    pod["metadata"]["labels"][REVISION_LABEL] = update_revision
    return pod


# -- revisions --------------------------------------------------------------------------------

def new_revision(sts: dict, revision: int, collision_count: int | None) -> dict:
    cr = new_controller_revision(sts, ((sts.get("spec") or {}).get("template") or {}).get("metadata", {}).get(
        "labels"), template_patch(sts), revision, collision_count)
    if sts["metadata"].get("annotations"):
        cr["metadata"]["annotations"] = dict(sts["metadata"]["annotations"])
    return cr


# -- claim ownership (retention policy) -------------------------------------------------------

def _owner_uids(obj: dict) -> set[str]:
    return {r.get("uid") for r in obj["metadata"].get("ownerReferences") or ()}


def claim_owner_up_to_date(claim: dict, sts: dict, pod: dict) -> bool:
    """Whether the claim's ownerReferences already say what the retention table says."""
    return _wanted_refs(claim, sts, pod) == (claim["metadata"].get("ownerReferences") or [])


def _wanted_refs(claim: dict, sts: dict, pod: dict) -> list[dict]:
    mine = {sts["metadata"].get("uid"), pod["metadata"].get("uid")}
    refs = [r for r in claim["metadata"].get("ownerReferences") or () if r.get("uid") not in mine]
    if any(r.get("controller") for r in refs):
        return refs  # someone else controls this claim: leave it to them, as upstream
    when_deleted, when_scaled = retention_policy(sts)
    scaled_down = not pod_in_ordinal_range(pod, sts)
    if when_scaled == DELETE and scaled_down and pod["metadata"].get("uid"):
        refs.append(controller_ref(pod, "v1", "Pod"))
    elif when_deleted == DELETE and not (when_scaled == DELETE and scaled_down):
        refs.append(controller_ref(sts, "apps/v1", "StatefulSet"))
    return refs


def update_claim_owner_refs(claim: dict, sts: dict, pod: dict) -> dict:
    """A copy of ``claim`` with the ownerReferences the retention policy wants."""
    out = copy.deepcopy(claim)
    refs = _wanted_refs(claim, sts, pod)
    if refs:
        out["metadata"]["ownerReferences"] = refs
    else:
        out["metadata"].pop("ownerReferences", None)
    return out
