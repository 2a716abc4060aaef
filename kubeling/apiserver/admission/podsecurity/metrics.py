"""PodSecurity's Prometheus metrics, with upstream's names and labels
(``k8s.io/pod-security-admission/metrics``)::

    pod_security_evaluations_total{decision, policy_level, policy_version, mode,
                                   request_operation, resource, subresource}
    pod_security_exemptions_total{request_operation, resource, subresource}
    pod_security_errors_total{fatal, request_operation, resource, subresource}

``decision`` is allow or deny, ``mode`` enforce, audit or warn, ``resource`` pod or controller,
``policy_version`` latest, v1.N, or future for a version newer than the server. The counters
live on a registry the server passes to `PodSecurity.register_metrics` (the server's own
``/metrics`` registry); before that they are kept on a private one.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from kubeling.apiserver.admission.podsecurity.api import LevelVersion, server_version


def _resource(attrs) -> str:
    return "pod" if (attrs.group, attrs.resource) == ("", "pods") else "controller"


class PodSecurityMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self.evaluations = Counter(
            "pod_security_evaluations", "Number of policy evaluations that occurred, not counting ignored or exempt "
            "requests.", ["decision", "policy_level", "policy_version", "mode", "request_operation", "resource",
                          "subresource"], registry=registry)
        self.exemptions = Counter(
            "pod_security_exemptions", "Number of exempt requests, not counting ignored or out of scope requests.",
            ["request_operation", "resource", "subresource"], registry=registry)
        self.errors = Counter(
            "pod_security_errors", "Number of errors preventing normal evaluation. Non-fatal errors may result in "
            "the latest restricted profile being used for evaluation.",
            ["fatal", "request_operation", "resource", "subresource"], registry=registry)

    def evaluation(self, decision: str, lv: LevelVersion, mode: str, attrs) -> None:
        if lv.version.latest:
            version = "latest"
        elif server_version().older(lv.version):
            version = "future"
        else:
            version = str(lv.version)
        self.evaluations.labels(decision, lv.level, version, mode, attrs.operation.lower(), _resource(attrs),
                                attrs.subresource or "").inc()

    def exemption(self, attrs) -> None:
        self.exemptions.labels(attrs.operation.lower(), _resource(attrs), attrs.subresource or "").inc()

    def error(self, fatal: bool, attrs) -> None:
        self.errors.labels(str(fatal).lower(), attrs.operation.lower(), _resource(attrs), attrs.subresource or "").inc()
