"""hostPorts (baseline, 1.0+): containers must not use host ports."""

from kubeling.apiserver.admission.podsecurity.api import BASELINE, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, name_of, pluralize, \
    visit_containers


def host_ports_1_0(meta: dict, spec: dict) -> CheckResult:
    bad, ports = [], set()
    for c in visit_containers(spec):
        used = [str(p.get("hostPort")) for p in c.get("ports") or () if isinstance(p, dict) and p.get("hostPort")]
        if used:
            bad.append(name_of(c))
            ports.update(used)
    if bad:
        # upstream sorts the ports as strings
        return CheckResult(False, "hostPort",
                           f"{containers_phrase(bad)} {pluralize('uses', 'use', len(bad))} "
                           f"{pluralize('hostPort', 'hostPorts', len(ports))} {', '.join(sorted(ports))}")
    return ALLOWED


CHECK = Check("hostPorts", BASELINE, (VersionedCheck(major_minor(1, 0), host_ports_1_0),))
