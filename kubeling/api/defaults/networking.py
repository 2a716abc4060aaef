"""networking.k8s.io/v1 defaulting: ``pkg/apis/networking/v1/defaults.go``.

Ingress has no defaults in v1: ``pathType`` is required there (only the removed
v1beta1 defaulted it to ImplementationSpecific), so a missing one is a
validation error, not something to fill in.
"""

from __future__ import annotations

from kubeling.api.defaults._util import child, dicts, set_ptr


def set_object_defaults_network_policy(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    for direction in ("ingress", "egress"):
        for rule in dicts(spec, direction):
            for port in dicts(rule, "ports"):
                set_ptr(port, "protocol", "TCP")
    if not spec.get("policyTypes"):
        # Every policy governs ingress; it governs egress only if it says something about it.
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def set_object_defaults_ingress_class(obj: dict) -> None:
    params = child(child(obj, "spec"), "parameters")
    if params is not None:
        set_ptr(params, "scope", "Cluster")


DEFAULTERS = {
    ("networking.k8s.io", "v1", "NetworkPolicy"): set_object_defaults_network_policy,
    ("networking.k8s.io", "v1", "IngressClass"): set_object_defaults_ingress_class,
}
