"""seccompProfile_baseline (baseline): before 1.19 the seccomp annotations must be
runtime/default, docker/default or localhost/*; from 1.19 ``securityContext.seccompProfile.type``
of the pod and containers must not be Unconfined (RuntimeDefault, Localhost or unset)."""

from kubeling.apiserver.admission.podsecurity.api import BASELINE, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import containers_phrase, join_quote, name_of, \
    pluralize, quote, security_context, visit_containers

ANNOTATION_KEY_POD = "seccomp.security.alpha.kubernetes.io/pod"
ANNOTATION_KEY_CONTAINER_PREFIX = "container.seccomp.security.alpha.kubernetes.io/"


def valid_seccomp(t) -> bool:
    return t in ("Localhost", "RuntimeDefault")


def _valid_annotation(v: str) -> bool:
    return v in ("runtime/default", "docker/default") or v.startswith("localhost/")


def seccomp_profile_baseline_1_0(meta: dict, spec: dict) -> CheckResult:
    annotations = meta.get("annotations") or {}
    forbidden = set()
    if ANNOTATION_KEY_POD in annotations and not _valid_annotation(str(annotations[ANNOTATION_KEY_POD])):
        forbidden.add(f"{ANNOTATION_KEY_POD}={quote(annotations[ANNOTATION_KEY_POD])}")
    for c in visit_containers(spec):
        key = ANNOTATION_KEY_CONTAINER_PREFIX + name_of(c)
        if key in annotations and not _valid_annotation(str(annotations[key])):
            forbidden.add(f"{key}={quote(annotations[key])}")
    if forbidden:
        return CheckResult(False, "seccompProfile",
                           f"forbidden {pluralize('annotation', 'annotations', len(forbidden))} {', '.join(sorted(forbidden))}")
    return ALLOWED


def _profile(obj: dict):
    p = security_context(obj).get("seccompProfile")
    return p if isinstance(p, dict) else None


def seccomp_profile_baseline_1_19(meta: dict, spec: dict) -> CheckResult:
    setters, values = [], set()
    p = _profile(spec)
    if p is not None and not valid_seccomp(p.get("type")):
        setters.append("pod")
        values.add(str(p.get("type") or ""))
    bad = []
    for c in visit_containers(spec):
        p = _profile(c)
        if p is not None and not valid_seccomp(p.get("type")):
            bad.append(name_of(c))
            values.add(str(p.get("type") or ""))
    if bad:
        setters.append(containers_phrase(bad))
    if setters:
        return CheckResult(False, "seccompProfile",
                           f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to "
                           f"{join_quote(sorted(values))}")
    return ALLOWED


CHECK = Check("seccompProfile_baseline", BASELINE, (
    VersionedCheck(major_minor(1, 0), seccomp_profile_baseline_1_0),
    VersionedCheck(major_minor(1, 19), seccomp_profile_baseline_1_19),
))
