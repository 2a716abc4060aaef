"""windowsHostProcess (baseline, 1.0+): the pod and its containers must not set
``securityContext.windowsOptions.hostProcess=true``."""

from kubeling.apiserver.admission.podsecurity.api import BASELINE, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, name_of, security_context, \
    visit_containers


def _host_process(obj: dict) -> bool:
    return (security_context(obj).get("windowsOptions") or {}).get("hostProcess") is True


def windows_host_process_1_0(meta: dict, spec: dict) -> CheckResult:
    bad = [name_of(c) for c in visit_containers(spec) if _host_process(c)]
    setters = (["pod"] if _host_process(spec) else []) + ([containers_phrase(bad)] if bad else [])
    if setters:
        return CheckResult(False, "hostProcess",
                           f"{' and '.join(setters)} must not set securityContext.windowsOptions.hostProcess=true")
    return ALLOWED


CHECK = Check("windowsHostProcess", BASELINE, (VersionedCheck(major_minor(1, 0), windows_host_process_1_0),))
