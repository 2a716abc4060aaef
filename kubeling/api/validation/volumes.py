"""Pod volumes and container volume mounts, as upstream's core validation.

A volume has a DNS-1123 label name, unique in the pod, and exactly one source.
Sources that point at other objects must name them; projected/keyed sources
must use relative paths that stay inside the volume.
"""

from __future__ import annotations

from typing import Any

from kubeling.api.errors import FieldError, duplicate, invalid_value, not_supported, required
from kubeling.api.validation import meta
from kubeling.api.validation.meta import forbidden
from kubeling.api.validation.resources import quantity

# Every VolumeSource member of core/v1 (the "one of" set).
VOLUME_SOURCES = (
    "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret", "nfs", "iscsi",
    "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "downwardAPI",
    "fc", "azureFile", "configMap", "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk",
    "projected", "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral", "image",
)
HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice",
                   "BlockDevice")
STORAGE_MEDIUMS = ("", "Memory", "HugePages")
MOUNT_PROPAGATIONS = ("None", "HostToContainer", "Bidirectional")
MAX_MODE = 0o777


def validate_local_path(p: Any, path: str) -> list[FieldError]:
    """A path inside a volume: relative and never climbing out with '..'."""
    errs: list[FieldError] = []
    if not isinstance(p, str):
        return [invalid_value(path, p, "must be a string")]
    if p.startswith("/"):
        errs.append(invalid_value(path, p, "must be a relative path"))
    if ".." in p.split("/"):
        errs.append(invalid_value(path, p, "must not contain '..'"))
    return errs


def _mode(value: Any, path: str) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_MODE:
        return [invalid_value(path, value, "must be a number between 0 and 0777 (octal), both inclusive")]
    return []


def _key_to_paths(items: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, it in enumerate(items or ()):
        p = f"{path}[{i}]"
        if not it.get("key"):
            errs.append(required(p + ".key", ""))
        if not it.get("path"):
            errs.append(required(p + ".path", ""))
        else:
            errs += validate_local_path(it["path"], p + ".path")
        errs += _mode(it.get("mode"), p + ".mode")
    return errs


def _downward_items(items: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, it in enumerate(items or ()):
        p = f"{path}[{i}]"
        if not it.get("path"):
            errs.append(required(p + ".path", ""))
        else:
            errs += validate_local_path(it["path"], p + ".path")
        refs = [k for k in ("fieldRef", "resourceFieldRef") if it.get(k)]
        if len(refs) > 1:
            errs.append(invalid_value(p, "", "fieldRef and resourceFieldRef can not be specified simultaneously"))
        elif not refs:
            errs.append(required(p, "one of fieldRef and resourceFieldRef is required"))
        errs += _mode(it.get("mode"), p + ".mode")
    return errs


def _source(kind: str, src: Any, path: str) -> list[FieldError]:
    """Checks for the sources that pods commonly use; others only need to be objects."""
    if not isinstance(src, dict):
        return [invalid_value(path, src, "must be an object")]
    errs: list[FieldError] = []
    if kind == "configMap":
        if not src.get("name"):
            errs.append(required(path + ".name", ""))
        errs += _key_to_paths(src.get("items"), path + ".items") + _mode(src.get("defaultMode"),
                                                                         path + ".defaultMode")
    elif kind == "secret":
        if not src.get("secretName"):
            errs.append(required(path + ".secretName", ""))
        errs += _key_to_paths(src.get("items"), path + ".items") + _mode(src.get("defaultMode"),
                                                                         path + ".defaultMode")
    elif kind == "persistentVolumeClaim":
        if not src.get("claimName"):
            errs.append(required(path + ".claimName", ""))
    elif kind == "hostPath":
        if not src.get("path"):
            errs.append(required(path + ".path", ""))
        errs += meta.enum(src.get("type"), path + ".type", HOST_PATH_TYPES)
    elif kind == "emptyDir":
        errs += meta.enum(src.get("medium"), path + ".medium", STORAGE_MEDIUMS)
        if src.get("sizeLimit") is not None:
            errs += quantity(src["sizeLimit"], path + ".sizeLimit")[1]
    elif kind == "downwardAPI":
        errs += _downward_items(src.get("items"), path + ".items") + _mode(src.get("defaultMode"),
                                                                           path + ".defaultMode")
    elif kind == "projected":
        errs += _projected(src, path)
    elif kind == "nfs":
        if not src.get("server"):
            errs.append(required(path + ".server", ""))
        if not src.get("path"):
            errs.append(required(path + ".path", ""))
        elif not src["path"].startswith("/"):
            errs.append(invalid_value(path + ".path", src["path"], "must be an absolute path"))
    elif kind == "csi":
        if not src.get("driver"):
            errs.append(required(path + ".driver", ""))
    elif kind == "image":
        if not src.get("reference"):
            errs.append(required(path + ".reference", ""))
    return errs


def _projected(src: dict, path: str) -> list[FieldError]:
    errs = _mode(src.get("defaultMode"), path + ".defaultMode")
    for i, proj in enumerate(src.get("sources") or ()):
        p = f"{path}.sources[{i}]"
        kinds = [k for k in ("secret", "configMap", "downwardAPI", "serviceAccountToken", "clusterTrustBundle")
                 if proj.get(k) is not None]
        if not kinds:
            errs.append(required(p, "must specify exactly 1 of: secret, configMap, downwardAPI, "
                                    "serviceAccountToken, clusterTrustBundle"))
        for extra in kinds[1:]:
            errs.append(forbidden(f"{p}.{extra}", "may not specify more than 1 volume type per source"))
        for k in kinds[:1]:
            s = proj[k]
            if k in ("secret", "configMap"):
                if not s.get("name"):
                    errs.append(required(f"{p}.{k}.name", ""))
                errs += _key_to_paths(s.get("items"), f"{p}.{k}.items")
            elif k == "downwardAPI":
                errs += _downward_items(s.get("items"), f"{p}.{k}.items")
            elif k == "serviceAccountToken":
                if not s.get("path"):
                    errs.append(required(f"{p}.{k}.path", ""))
                else:
                    errs += validate_local_path(s["path"], f"{p}.{k}.path")
                exp = s.get("expirationSeconds")
                if isinstance(exp, int) and exp < 600:
                    errs.append(invalid_value(f"{p}.{k}.expirationSeconds", exp,
                                              "may not specify a duration less than 10 minutes"))
    return errs


def validate_volumes(volumes: Any, path: str) -> tuple[set[str], list[FieldError]]:
    """Pod volumes; returns the set of valid names for the mounts to refer to."""
    names: set[str] = set()
    errs: list[FieldError] = []
    for i, vol in enumerate(volumes or ()):
        p = f"{path}[{i}]"
        name = vol.get("name") or ""
        verrs: list[FieldError] = []
        if not name:
            verrs.append(required(p + ".name", ""))
        else:
            verrs += meta.dns_label(name, p + ".name")
            if name in names:
                verrs.append(duplicate(p + ".name", name))
        sources = [k for k in VOLUME_SOURCES if vol.get(k) is not None]
        if not sources:
            verrs.append(required(p, "must specify a volume type"))
        for extra in sources[1:]:
            verrs.append(forbidden(f"{p}.{extra}", "may not specify more than 1 volume type"))
        for k in sources[:1]:
            verrs += _source(k, vol[k], f"{p}.{k}")
        if name:
            names.add(name)  # even a broken volume resolves, so its mounts don't pile on a second error
        errs += verrs
    return names, errs


def validate_volume_mounts(mounts: Any, volumes: set[str], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    seen_paths: set[str] = set()
    for i, m in enumerate(mounts or ()):
        p = f"{path}[{i}]"
        name = m.get("name") or ""
        if not name:
            errs.append(required(p + ".name", ""))
        elif name not in volumes:
            errs.append(FieldError("NotFound", p + ".name", "", name))
        mp = m.get("mountPath") or ""
        if not mp:
            errs.append(required(p + ".mountPath", ""))
        elif mp in seen_paths:
            errs.append(invalid_value(p + ".mountPath", mp, "must be unique"))
        seen_paths.add(mp)
        if m.get("subPath"):
            errs += validate_local_path(m["subPath"], p + ".subPath")
        if m.get("subPath") and m.get("subPathExpr"):
            errs.append(invalid_value(p + ".subPathExpr", m["subPathExpr"],
                                      "subPathExpr and subPath are mutually exclusive"))
        if m.get("mountPropagation") is not None and m["mountPropagation"] not in MOUNT_PROPAGATIONS:
            errs.append(not_supported(p + ".mountPropagation", m["mountPropagation"], MOUNT_PROPAGATIONS))
    return errs


def validate_volume_devices(devices: Any, volumes: set[str], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, d in enumerate(devices or ()):
        p = f"{path}[{i}]"
        if not d.get("name"):
            errs.append(required(p + ".name", ""))
        elif d["name"] not in volumes:
            errs.append(FieldError("NotFound", p + ".name", "", d["name"]))
        if not d.get("devicePath"):
            errs.append(required(p + ".devicePath", ""))
    return errs

