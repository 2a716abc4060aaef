"""rbac.authorization.k8s.io/v1 defaulting: ``pkg/apis/rbac/v1/defaults.go``.

A binding's ``roleRef.apiGroup`` and a User/Group subject's ``apiGroup`` default to
the RBAC group; a ServiceAccount subject's stays "" (core). Roles have no defaults.
"""

from __future__ import annotations

from kubeling.api.defaults._util import child, dicts, set_zero

GROUP = "rbac.authorization.k8s.io"


def set_object_defaults_binding(obj: dict) -> None:
    role_ref = child(obj, "roleRef", create=True)
    if role_ref is not None:
        set_zero(role_ref, "apiGroup", GROUP)
    for subject in dicts(obj, "subjects"):
        if not subject.get("apiGroup"):
            kind = subject.get("kind")
            if kind in ("User", "Group"):
                subject["apiGroup"] = GROUP
            elif kind == "ServiceAccount":
                subject["apiGroup"] = ""


DEFAULTERS = {
    (GROUP, "v1", "RoleBinding"): set_object_defaults_binding,
    (GROUP, "v1", "ClusterRoleBinding"): set_object_defaults_binding,
}
