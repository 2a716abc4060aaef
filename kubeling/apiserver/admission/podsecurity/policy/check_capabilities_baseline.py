"""capabilities_baseline (baseline, 1.0+): containers may add only the default capabilities
(restricted replaces this check with capabilities_restricted)."""

from kubeling.apiserver.admission.podsecurity.api import BASELINE, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, join_quote, name_of, \
    security_context, visit_containers

CAPABILITIES_ALLOWED_1_0 = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})


def capabilities_baseline_1_0(meta: dict, spec: dict) -> CheckResult:
    bad, caps = [], set()
    for c in visit_containers(spec):
        added = (security_context(c).get("capabilities") or {}).get("add") or []
        extra = [str(a) for a in added if a not in CAPABILITIES_ALLOWED_1_0]
        if extra:
            bad.append(name_of(c))
            caps.update(extra)
    if bad:
        return CheckResult(False, "non-default capabilities",
                           f"{containers_phrase(bad)} must not include {join_quote(sorted(caps))} "
                           "in securityContext.capabilities.add")
    return ALLOWED


CHECK = Check("capabilities_baseline", BASELINE,
              (VersionedCheck(major_minor(1, 0), capabilities_baseline_1_0),))
