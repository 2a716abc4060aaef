"""runAsUser (restricted, 1.23+): neither the pod nor a container may set ``runAsUser=0``."""

from kubeling.apiserver.admission.podsecurity.api import RESTRICTED, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, name_of, security_context, \
    visit_containers


def _root(obj: dict) -> bool:
    v = security_context(obj).get("runAsUser")
    return v == 0 and not isinstance(v, bool)


def run_as_user_1_23(meta: dict, spec: dict) -> CheckResult:
    setters = ["pod"] if _root(spec) else []
    bad = [name_of(c) for c in visit_containers(spec) if _root(c)]
    if bad:
        setters.append(containers_phrase(bad))
    if setters:
        return CheckResult(False, "runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0")
    return ALLOWED


CHECK = Check("runAsUser", RESTRICTED, (VersionedCheck(major_minor(1, 23), run_as_user_1_23),))
