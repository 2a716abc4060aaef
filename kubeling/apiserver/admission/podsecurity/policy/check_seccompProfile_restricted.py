"""seccompProfile_restricted (restricted, 1.19+): the pod, or every container, must set
``securityContext.seccompProfile.type`` to RuntimeDefault or Localhost; from 1.25 Windows pods are
exempt."""

from kubeling.apiserver.admission.podsecurity.api import RESTRICTED, major_minor
from kubeling.apiserver.admission.podsecurity.policy.check_seccompProfile_baseline import valid_seccomp
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, is_windows_pod, join_quote, \
    name_of, security_context, visit_containers


def _profile(obj: dict):
    p = security_context(obj).get("seccompProfile")
    return p if isinstance(p, dict) else None


def seccomp_profile_restricted_1_19(meta: dict, spec: dict) -> CheckResult:
    setters, values = [], set()
    pod_set = False
    p = _profile(spec)
    if p is not None:
        if not valid_seccomp(p.get("type")):
            setters.append("pod")
            values.add(str(p.get("type") or ""))
        else:
            pod_set = True
    explicit, implicit = [], []
    for c in visit_containers(spec):
        p = _profile(c)
        if p is not None:
            if not valid_seccomp(p.get("type")):
                explicit.append(name_of(c))
                values.add(str(p.get("type") or ""))
        elif not pod_set:
            implicit.append(name_of(c))
    if explicit:
        setters.append(containers_phrase(explicit))
    if setters:
        return CheckResult(False, "seccompProfile",
                           f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to "
                           f"{join_quote(sorted(values))}")
    if implicit:
        return CheckResult(False, "seccompProfile",
                           f'pod or {containers_phrase(implicit)} must set securityContext.seccompProfile.type to '
                           '"RuntimeDefault" or "Localhost"')
    return ALLOWED


def seccomp_profile_restricted_1_25(meta: dict, spec: dict) -> CheckResult:
    if is_windows_pod(spec):
        return ALLOWED
    return seccomp_profile_restricted_1_19(meta, spec)


CHECK = Check("seccompProfile_restricted", RESTRICTED, (
    VersionedCheck(major_minor(1, 19), seccomp_profile_restricted_1_19),
    VersionedCheck(major_minor(1, 25), seccomp_profile_restricted_1_25),
))
