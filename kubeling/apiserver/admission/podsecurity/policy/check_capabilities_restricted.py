"""capabilities_restricted (restricted, 1.22+): containers must drop ALL and may add only
NET_BIND_SERVICE; it replaces capabilities_baseline. From 1.25 Windows pods are exempt."""

from kubeling.apiserver.admission.podsecurity.api import RESTRICTED, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, is_windows_pod, join_quote, \
    name_of, security_context, visit_containers


def capabilities_restricted_1_22(meta: dict, spec: dict) -> CheckResult:
    missing_drop, adding, caps = [], [], set()
    for c in visit_containers(spec):
        capabilities = security_context(c).get("capabilities")
        if not isinstance(capabilities, dict):
            missing_drop.append(name_of(c))
            continue
        if "ALL" not in (capabilities.get("drop") or []):
            missing_drop.append(name_of(c))
        extra = [str(a) for a in capabilities.get("add") or [] if a != "NET_BIND_SERVICE"]
        if extra:
            adding.append(name_of(c))
            caps.update(extra)
    details = []
    if missing_drop:
        details.append(f'{containers_phrase(missing_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{containers_phrase(adding)} must not include {join_quote(sorted(caps))} "
                       "in securityContext.capabilities.add")
    if details:
        return CheckResult(False, "unrestricted capabilities", "; ".join(details))
    return ALLOWED


def capabilities_restricted_1_25(meta: dict, spec: dict) -> CheckResult:
    if is_windows_pod(spec):
        return ALLOWED
    return capabilities_restricted_1_22(meta, spec)


CHECK = Check("capabilities_restricted", RESTRICTED, (
    VersionedCheck(major_minor(1, 22), capabilities_restricted_1_22, ("capabilities_baseline",)),
    VersionedCheck(major_minor(1, 25), capabilities_restricted_1_25, ("capabilities_baseline",)),
))
