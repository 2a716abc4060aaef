"""appArmorProfile (baseline, 1.0+): ``securityContext.appArmorProfile.type`` of the pod and its
containers must be RuntimeDefault or Localhost (or unset), and the deprecated
``container.apparmor.security.beta.kubernetes.io/*`` annotations ``runtime/default``,
``localhost/*`` or empty."""

from kubeling.apiserver.admission.podsecurity.api import BASELINE, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, join_quote, name_of, \
    pluralize, quote, security_context, visit_containers

ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def _allowed_annotation(v: str) -> bool:
    return v == "" or v == "runtime/default" or v.startswith("localhost/")


def _bad_type(obj: dict):
    profile = security_context(obj).get("appArmorProfile")
    if isinstance(profile, dict) and profile.get("type") not in ("RuntimeDefault", "Localhost"):
        return str(profile.get("type") or "")
    return None


def app_armor_profile_1_0(meta: dict, spec: dict) -> CheckResult:
    setters, values = [], set()
    t = _bad_type(spec)
    if t is not None:
        setters.append("pod")
        values.add(t)
    bad = []
    for c in visit_containers(spec):
        t = _bad_type(c)
        if t is not None:
            bad.append(name_of(c))
            values.add(t)
    if bad:
        setters.append(containers_phrase(bad))
    annotations = sorted(f"{k}={quote(v)}" for k, v in ((meta.get("annotations") or {}).items())
                         if k.startswith(ANNOTATION_PREFIX) and not _allowed_annotation(str(v)))
    value_list = sorted(values) + annotations
    if annotations:
        setters.append(pluralize("annotation", "annotations", len(annotations)))
    if setters:
        return CheckResult(False, pluralize("forbidden AppArmor profile", "forbidden AppArmor profiles", len(value_list)),
                           f"{' and '.join(setters)} must not set AppArmor profile type to {join_quote(value_list)}")
    return ALLOWED


CHECK = Check("appArmorProfile", BASELINE, (VersionedCheck(major_minor(1, 0), app_armor_profile_1_0),))
