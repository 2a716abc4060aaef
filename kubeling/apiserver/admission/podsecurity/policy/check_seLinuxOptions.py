"""seLinuxOptions (baseline, 1.0+): SELinux ``type`` may only be container_t, container_init_t,
container_kvm_t (or empty); ``user`` and ``role`` must not be set."""

from kubeling.apiserver.admission.podsecurity.api import BASELINE, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, join_quote, name_of, \
    pluralize, security_context, visit_containers

ALLOWED_TYPES_1_0 = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})


def se_linux_options_1_0(meta: dict, spec: dict) -> CheckResult:
    bad_types: set[str] = set()
    flags = {"user": False, "role": False}

    def valid(obj: dict) -> bool:
        opts = security_context(obj).get("seLinuxOptions")
        if not isinstance(opts, dict):
            return True
        ok = True
        if (opts.get("type") or "") not in ALLOWED_TYPES_1_0:
            ok = False
            bad_types.add(str(opts.get("type")))
        for k in ("user", "role"):
            if opts.get(k):
                ok = False
                flags[k] = True
        return ok

    setters = [] if valid(spec) else ["pod"]
    bad = [name_of(c) for c in visit_containers(spec) if not valid(c)]
    if bad:
        setters.append(containers_phrase(bad))
    if setters:
        data = []
        if bad_types:
            data.append(f"{pluralize('type', 'types', len(bad_types))} {join_quote(sorted(bad_types))}")
        if flags["user"]:
            data.append("user may not be set")
        if flags["role"]:
            data.append("role may not be set")
        return CheckResult(False, "seLinuxOptions",
                           f"{' and '.join(setters)} set forbidden securityContext.seLinuxOptions: {'; '.join(data)}")
    return ALLOWED


CHECK = Check("seLinuxOptions", BASELINE, (VersionedCheck(major_minor(1, 0), se_linux_options_1_0),))
