"""privileged (baseline, 1.0+): containers must not set ``securityContext.privileged=true``."""

from kubeling.apiserver.admission.podsecurity.api import BASELINE, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, name_of, security_context, \
    visit_containers


def privileged_1_0(meta: dict, spec: dict) -> CheckResult:
    bad = [name_of(c) for c in visit_containers(spec) if security_context(c).get("privileged") is True]
    if bad:
        return CheckResult(False, "privileged", f"{containers_phrase(bad)} must not set securityContext.privileged=true")
    return ALLOWED


CHECK = Check("privileged", BASELINE, (VersionedCheck(major_minor(1, 0), privileged_1_0),))
