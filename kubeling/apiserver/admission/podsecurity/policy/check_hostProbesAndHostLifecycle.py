"""hostProbesAndHostLifecycle (baseline, 1.34+): probes and lifecycle handlers must not set
``httpGet.host`` or ``tcpSocket.host``. Newer than this server's version, so ``latest`` does not
include it yet; it applies once the server's version reaches 1.34."""

from kubeling.apiserver.admission.podsecurity.api import BASELINE, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, join_quote, name_of, \
    pluralize, visit_containers


def _hosts(handler) -> list[str]:
    if not isinstance(handler, dict):
        return []
    return [h for h in ((handler.get("httpGet") or {}).get("host"), (handler.get("tcpSocket") or {}).get("host")) if h]


def host_probes_and_host_lifecycle_1_34(meta: dict, spec: dict) -> CheckResult:
    bad, hosts = set(), set()
    for c in visit_containers(spec):
        lifecycle = c.get("lifecycle") or {}
        for handler in (c.get("livenessProbe"), c.get("readinessProbe"), c.get("startupProbe"),
                        lifecycle.get("postStart"), lifecycle.get("preStop")):
            found = _hosts(handler)
            if found:
                bad.add(name_of(c))
                hosts.update(found)
    if bad:
        return CheckResult(False, "probe or lifecycle host",
                           f"{containers_phrase(sorted(bad))} {pluralize('uses', 'use', len(bad))} "
                           f"{pluralize('probe or lifecycle host', 'probe or lifecycle hosts', len(hosts))} "
                           f"{join_quote(sorted(hosts))}")
    return ALLOWED


CHECK = Check("hostProbesAndHostLifecycle", BASELINE,
              (VersionedCheck(major_minor(1, 34), host_probes_and_host_lifecycle_1_34),))
