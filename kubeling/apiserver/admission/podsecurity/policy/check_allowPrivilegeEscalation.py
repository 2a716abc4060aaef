"""allowPrivilegeEscalation (restricted, 1.8+): containers must set
``securityContext.allowPrivilegeEscalation=false``; from 1.25 Windows pods (``spec.os.name:
windows``) are exempt."""

from kubeling.apiserver.admission.podsecurity.api import RESTRICTED, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, is_windows_pod, name_of, \
    security_context, visit_containers


def allow_privilege_escalation_1_8(meta: dict, spec: dict) -> CheckResult:
    bad = [name_of(c) for c in visit_containers(spec) if security_context(c).get("allowPrivilegeEscalation") is not False]
    if bad:
        return CheckResult(False, "allowPrivilegeEscalation != false",
                           f"{containers_phrase(bad)} must set securityContext.allowPrivilegeEscalation=false")
    return ALLOWED


def allow_privilege_escalation_1_25(meta: dict, spec: dict) -> CheckResult:
    if is_windows_pod(spec):
        return ALLOWED
    return allow_privilege_escalation_1_8(meta, spec)


CHECK = Check("allowPrivilegeEscalation", RESTRICTED, (
    VersionedCheck(major_minor(1, 8), allow_privilege_escalation_1_8),
    VersionedCheck(major_minor(1, 25), allow_privilege_escalation_1_25),
))
