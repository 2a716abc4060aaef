"""storage.k8s.io/v1 defaulting: ``pkg/apis/storage/v1/defaults.go``."""

from __future__ import annotations

from kubeling.api.defaults._util import child, set_ptr


def set_object_defaults_storage_class(obj: dict) -> None:
    set_ptr(obj, "reclaimPolicy", "Delete")
    set_ptr(obj, "volumeBindingMode", "Immediate")


def set_object_defaults_csi_driver(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    set_ptr(spec, "attachRequired", True)
    set_ptr(spec, "podInfoOnMount", False)
    set_ptr(spec, "storageCapacity", False)
    set_ptr(spec, "fsGroupPolicy", "ReadWriteOnceWithFSType")
    if not spec.get("volumeLifecycleModes"):
        spec["volumeLifecycleModes"] = ["Persistent"]
    set_ptr(spec, "requiresRepublish", False)
    # SELinuxMountReadWriteOncePod is on by default (beta since 1.28).
    set_ptr(spec, "seLinuxMount", False)


DEFAULTERS = {
    ("storage.k8s.io", "v1", "StorageClass"): set_object_defaults_storage_class,
    ("storage.k8s.io", "v1", "CSIDriver"): set_object_defaults_csi_driver,
}
