"""apiextensions.k8s.io/v1 defaulting: ``apiextensions-apiserver/pkg/apis/apiextensions/v1/defaults.go``.

Only the CustomResourceDefinition object itself; defaults *inside* custom
resources come from their OpenAPI schemas (`kubeling.api.structural`).
"""

from __future__ import annotations

from kubeling.api.defaults._util import child, set_ptr, set_zero


def _service_reference(svc: dict | None) -> None:
    if svc is not None:
        set_ptr(svc, "port", 443)


def set_object_defaults_crd(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    names = child(spec, "names", create=True)
    if names is not None:
        kind = names.get("kind")
        if isinstance(kind, str):
            set_zero(names, "singular", kind.lower())
            if kind:
                set_zero(names, "listKind", kind + "List")
    set_ptr(spec, "conversion", {"strategy": "None"})
    webhook = child(child(spec, "conversion"), "webhook")
    _service_reference(child(child(webhook, "clientConfig"), "service"))
    status = child(obj, "status", create=True)
    if status is not None and not status.get("storedVersions"):
        storage = [v.get("name") for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("storage")]
        if storage:
            status["storedVersions"] = storage[:1]


DEFAULTERS = {
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"): set_object_defaults_crd,
}
