"""PersistentVolume and PersistentVolumeClaim.

A PV has a storage capacity, access modes and exactly one volume source, which
never changes. A claim asks for access modes and a storage request; once made,
its spec is fixed except that the binder may set ``volumeName`` once and a
bound claim may be resized.
"""

from __future__ import annotations

import copy

from kubeling.api.errors import FieldError, invalid_value, not_supported, required
from kubeling.api.validation import meta
from kubeling.api.validation.kind import Kind
from kubeling.api.validation.meta import forbidden
from kubeling.api.validation.resources import quantity, validate_resource_list

ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
RECLAIM_POLICIES = ("Delete", "Recycle", "Retain")
VOLUME_MODES = ("Block", "Filesystem")
PV_SOURCES = (
    "gcePersistentDisk", "awsElasticBlockStore", "hostPath", "glusterfs", "nfs", "rbd", "iscsi", "cinder",
    "cephfs", "fc", "flocker", "flexVolume", "azureFile", "vsphereVolume", "quobyte", "azureDisk",
    "photonPersistentDisk", "portworxVolume", "scaleIO", "local", "storageos", "csi",
)
PVC_UPDATE_MESSAGE = "spec is immutable after creation except resources.requests and volumeAttributesClassName " \
                     "for bound claims"


def _access_modes(modes, path: str, *, what: str) -> list[FieldError]:
    if not modes:
        return [required(path, "at least 1 access mode is required" if what == "pvc" else "")]
    errs = [not_supported(f"{path}", m, ACCESS_MODES) for m in modes if m not in ACCESS_MODES]
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        errs.append(forbidden(path, "may not use ReadWriteOncePod with other access modes"))
    return errs


def validate_pv(pv: dict) -> list[FieldError]:
    spec = pv.get("spec") or {}
    errs = _access_modes(spec.get("accessModes"), "spec.accessModes", what="pv")
    cap = spec.get("capacity") or {}
    if not cap:
        errs.append(required("spec.capacity", ""))
    for name in cap:
        if name != "storage":
            errs.append(not_supported("spec.capacity", name, ["storage"]))
    errs += validate_resource_list(cap, "spec.capacity")[1]
    sources = [k for k in PV_SOURCES if spec.get(k) is not None]
    if not sources:
        errs.append(required("spec", "must specify a volume type"))
    for extra in sources[1:]:
        errs.append(forbidden(f"spec.{extra}", "may not specify more than 1 volume type"))
    for k in sources[:1]:
        src = spec[k] or {}
        if k in ("hostPath", "local") and not src.get("path"):
            errs.append(required(f"spec.{k}.path", ""))
        if k == "local" and not spec.get("nodeAffinity"):
            errs.append(required("spec.nodeAffinity", "Local volume requires node affinity"))
        if k == "csi":
            if not src.get("driver"):
                errs.append(required("spec.csi.driver", ""))
            if not src.get("volumeHandle"):
                errs.append(required("spec.csi.volumeHandle", ""))
        if k == "nfs":
            if not src.get("server"):
                errs.append(required("spec.nfs.server", ""))
            if not src.get("path"):
                errs.append(required("spec.nfs.path", ""))
    errs += meta.enum(spec.get("persistentVolumeReclaimPolicy"), "spec.persistentVolumeReclaimPolicy",
                      RECLAIM_POLICIES)
    errs += meta.enum(spec.get("volumeMode"), "spec.volumeMode", VOLUME_MODES)
    if spec.get("storageClassName"):
        errs += meta.dns_subdomain(spec["storageClassName"], "spec.storageClassName")
    return errs


def validate_pv_update(new: dict, old: dict) -> list[FieldError]:
    ns, os_ = new.get("spec") or {}, old.get("spec") or {}
    errs: list[FieldError] = []
    if any(ns.get(k) != os_.get(k) for k in PV_SOURCES):
        errs.append(forbidden("spec.persistentvolumesource", "spec.persistentvolumesource is immutable after "
                                                               "creation"))
    if os_.get("volumeMode") is not None:
        errs += meta.immutable(ns.get("volumeMode"), os_["volumeMode"], "spec.volumeMode")
    if os_.get("nodeAffinity") is not None and ns.get("nodeAffinity") != os_["nodeAffinity"]:
        errs.append(invalid_value("spec.nodeAffinity", ns.get("nodeAffinity"), meta.IMMUTABLE))
    return errs


def validate_pvc(pvc: dict) -> list[FieldError]:
    spec = pvc.get("spec") or {}
    errs = _access_modes(spec.get("accessModes"), "spec.accessModes", what="pvc")
    errs += meta.validate_label_selector(spec.get("selector"), "spec.selector")
    requests = (spec.get("resources") or {}).get("requests") or {}
    if "storage" not in requests:
        errs.append(required("spec.resources[storage]", ""))
    else:
        q, qerrs = quantity(requests["storage"], "spec.resources.requests[storage]")
        errs += qerrs
        if q is not None and q <= 0 and not qerrs:
            errs.append(invalid_value("spec.resources.requests[storage]", requests["storage"],
                                      "must be greater than zero"))
    errs += meta.enum(spec.get("volumeMode"), "spec.volumeMode", VOLUME_MODES)
    if spec.get("storageClassName"):
        errs += meta.dns_subdomain(spec["storageClassName"], "spec.storageClassName")
    return errs


def validate_pvc_update(new: dict, old: dict) -> list[FieldError]:
    ns, os_ = copy.deepcopy(new.get("spec") or {}), copy.deepcopy(old.get("spec") or {})
    errs: list[FieldError] = []
    if not os_.get("volumeName"):
        # The binder records its choice once.
        os_["volumeName"] = ns.get("volumeName")
    bound = (old.get("status") or {}).get("phase") == "Bound"
    if bound:
        new_req = (ns.get("resources") or {}).get("requests") or {}
        cap = ((old.get("status") or {}).get("capacity") or {}).get("storage")
        if "storage" in new_req and cap is not None:
            nq, _ = quantity(new_req["storage"], "")
            cq, _ = quantity(cap, "")
            if nq is not None and cq is not None and nq < cq:
                errs.append(forbidden("spec.resources.requests.storage", "field can not be less than "
                                                                         "status.capacity"))
        ns.setdefault("resources", {})["requests"] = (os_.get("resources") or {}).get("requests")
        ns["volumeAttributesClassName"] = os_.get("volumeAttributesClassName")
    for spec in (ns, os_):
        for k in [k for k, v in spec.items() if v is None]:
            del spec[k]
    if ns != os_:
        errs.append(forbidden("spec", PVC_UPDATE_MESSAGE))
    return errs


KINDS = {
    ("", "PersistentVolume"): Kind(validate_pv, validate_pv_update, namespaced=False),
    ("", "PersistentVolumeClaim"): Kind(validate_pvc, validate_pvc_update),
}
