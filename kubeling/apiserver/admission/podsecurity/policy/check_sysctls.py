"""sysctls (baseline): only the "safe" sysctls, namespaced and isolated per pod; the set grew
with versions (1.27: ip_local_reserved_ports; 1.29: TCP keepalive and fin timeout; 1.32: TCP
buffer sizes), each version checked with its own set."""

from kubeling.apiserver.admission.podsecurity.api import BASELINE, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck

SYSCTLS_ALLOWED_1_0 = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"})
SYSCTLS_ALLOWED_1_27 = SYSCTLS_ALLOWED_1_0 | {"net.ipv4.ip_local_reserved_ports"}
SYSCTLS_ALLOWED_1_29 = SYSCTLS_ALLOWED_1_27 | {
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes"}
SYSCTLS_ALLOWED_1_32 = SYSCTLS_ALLOWED_1_29 | {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}


def _sysctls(allowed: frozenset):
    def check(meta: dict, spec: dict) -> CheckResult:
        sysctls = ((spec.get("securityContext") or {}).get("sysctls")) or []
        bad = [str(s.get("name", "")) for s in sysctls if isinstance(s, dict) and s.get("name") not in allowed]
        if bad:
            return CheckResult(False, "forbidden sysctls", ", ".join(bad))
        return ALLOWED
    return check


CHECK = Check("sysctls", BASELINE, (
    VersionedCheck(major_minor(1, 0), _sysctls(SYSCTLS_ALLOWED_1_0)),
    VersionedCheck(major_minor(1, 27), _sysctls(SYSCTLS_ALLOWED_1_27)),
    VersionedCheck(major_minor(1, 29), _sysctls(SYSCTLS_ALLOWED_1_29)),
    VersionedCheck(major_minor(1, 32), _sysctls(SYSCTLS_ALLOWED_1_32)),
))
