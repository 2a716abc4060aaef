"""APIService defaults (kube-aggregator's ``apiregistration/v1`` defaulting): a service
reference's port is 443."""

from __future__ import annotations


def set_object_defaults_apiservice(obj: dict) -> None:
    spec = obj.get("spec")
    svc = spec.get("service") if isinstance(spec, dict) else None
    if isinstance(svc, dict) and not svc.get("port"):
        svc["port"] = 443


DEFAULTERS = {
    ("apiregistration.k8s.io", "v1", "APIService"): set_object_defaults_apiservice,
}
