"""hostNamespaces (baseline, 1.0+): ``spec.hostNetwork``, ``hostPID`` and ``hostIPC`` must be unset or false."""

from kubeling.apiserver.admission.podsecurity.api import BASELINE, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck


def host_namespaces_1_0(meta: dict, spec: dict) -> CheckResult:
    used = sorted(k for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k) is True)
    if used:
        return CheckResult(False, "host namespaces", ", ".join(used))
    return ALLOWED


CHECK = Check("hostNamespaces", BASELINE, (VersionedCheck(major_minor(1, 0), host_namespaces_1_0),))
