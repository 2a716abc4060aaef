"""runAsNonRoot (restricted, 1.0+): the pod must set ``securityContext.runAsNonRoot=true``, or
every container must; nothing may set it false."""

from kubeling.apiserver.admission.podsecurity.api import RESTRICTED, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, name_of, security_context, \
    visit_containers


def run_as_non_root_1_0(meta: dict, spec: dict) -> CheckResult:
    setters = []
    pod_value = security_context(spec).get("runAsNonRoot")
    if pod_value is False:
        setters.append("pod")
    explicit, implicit = [], []
    for c in visit_containers(spec):
        v = security_context(c).get("runAsNonRoot")
        if v is not None:
            if v is False:
                explicit.append(name_of(c))
        elif pod_value is not True:
            implicit.append(name_of(c))
    if explicit:
        setters.append(containers_phrase(explicit))
    if setters:
        return CheckResult(False, "runAsNonRoot != true",
                           f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false")
    if implicit:
        return CheckResult(False, "runAsNonRoot != true",
                           f"pod or {containers_phrase(implicit)} must set securityContext.runAsNonRoot=true")
    return ALLOWED


CHECK = Check("runAsNonRoot", RESTRICTED, (VersionedCheck(major_minor(1, 0), run_as_non_root_1_0),))
