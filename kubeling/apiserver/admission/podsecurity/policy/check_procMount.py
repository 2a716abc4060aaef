"""procMount (baseline, 1.0+): containers' ``securityContext.procMount`` must be unset or Default."""

from kubeling.apiserver.admission.podsecurity.api import BASELINE, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, join_quote, name_of, \
    security_context, visit_containers


def proc_mount_1_0(meta: dict, spec: dict) -> CheckResult:
    bad, types = [], set()
    for c in visit_containers(spec):
        pm = security_context(c).get("procMount")
        if pm is not None and pm != "Default":
            bad.append(name_of(c))
            types.add(str(pm))
    if bad:
        return CheckResult(False, "procMount",
                           f"{containers_phrase(bad)} must not set securityContext.procMount to {join_quote(sorted(types))}")
    return ALLOWED


CHECK = Check("procMount", BASELINE, (VersionedCheck(major_minor(1, 0), proc_mount_1_0),))
