"""hostPathVolumes (baseline, 1.0+): no ``hostPath`` volumes (restricted replaces this check with
restrictedVolumes)."""

from kubeling.apiserver.admission.podsecurity.api import BASELINE, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import join_quote, pluralize

ID = "hostPathVolumes"


def host_path_volumes_1_0(meta: dict, spec: dict) -> CheckResult:
    bad = [str(v.get("name", "")) for v in spec.get("volumes") or () if isinstance(v, dict) and v.get("hostPath") is not None]
    if bad:
        return CheckResult(False, "hostPath volumes", f"{pluralize('volume', 'volumes', len(bad))} {join_quote(bad)}")
    return ALLOWED


CHECK = Check(ID, BASELINE, (VersionedCheck(major_minor(1, 0), host_path_volumes_1_0),))
