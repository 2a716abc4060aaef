"""PodSecurity levels, versions and namespace labels (upstream ``k8s.io/pod-security-admission/api``).

A namespace picks a policy with labels::

    pod-security.kubernetes.io/enforce: restricted        # privileged | baseline | restricted
    pod-security.kubernetes.io/enforce-version: v1.30     # latest | v1.N
    pod-security.kubernetes.io/audit / audit-version
    pod-security.kubernetes.io/warn  / warn-version

A mode without a label falls back to the server's defaults (`PodSecurityConfiguration`;
privileged:latest unless configured). `policy_to_evaluate` never fails: a bad enforce value
evaluates as restricted (fail closed), a bad audit or warn level as privileged (fail open, as
upstream), and the field errors are returned beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubeling.api import errors
from kubeling.api.schema import KUBE_VERSION

PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
VALID_LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)

LABEL_PREFIX = "pod-security.kubernetes.io/"
ENFORCE_LEVEL_LABEL = LABEL_PREFIX + "enforce"
ENFORCE_VERSION_LABEL = LABEL_PREFIX + "enforce-version"
AUDIT_LEVEL_LABEL = LABEL_PREFIX + "audit"
AUDIT_VERSION_LABEL = LABEL_PREFIX + "audit-version"
WARN_LEVEL_LABEL = LABEL_PREFIX + "warn"
WARN_VERSION_LABEL = LABEL_PREFIX + "warn-version"

# audit annotations (upstream adds the prefix in the in-tree plugin)
AUDIT_ANNOTATION_PREFIX = LABEL_PREFIX
ENFORCED_POLICY_ANNOTATION_KEY = "enforce-policy"
AUDIT_VIOLATIONS_ANNOTATION_KEY = "audit-violations"
EXEMPTION_REASON_ANNOTATION_KEY = "exempt"


@dataclass(frozen=True, order=False)
class Version:
    """``v1.N`` or ``latest`` (newer than any numbered version)."""

    major: int = 0
    minor: int = 0
    latest: bool = False

    def __str__(self) -> str:
        return "latest" if self.latest else f"v{self.major}.{self.minor}"

    def older(self, other: "Version") -> bool:
        if self.latest:
            return False
        if other.latest:
            return True
        return (self.major, self.minor) < (other.major, other.minor)


LATEST = Version(latest=True)


def major_minor(major: int, minor: int) -> Version:
    return Version(major, minor)


def server_version() -> Version:
    """The version `latest` means on this server (its Kubernetes minor)."""
    major, minor, *_ = KUBE_VERSION.split(".")
    return Version(int(major), int(re.match(r"\d+", minor).group()))


class ParseError(ValueError):
    pass


def parse_level(level: str) -> str:
    if level in VALID_LEVELS:
        return level
    raise ParseError("must be one of " + ", ".join(VALID_LEVELS))


_VERSION = re.compile(r"^v1\.(0|[1-9][0-9]*)$")


def parse_version(version: str) -> Version:
    if version == "latest":
        return LATEST
    m = _VERSION.match(version)
    if not m:
        raise ParseError('must be "latest" or "v1.x"')
    return Version(1, int(m.group(1)))


@dataclass(frozen=True)
class LevelVersion:
    level: str
    version: Version

    def __str__(self) -> str:
        return f"{self.level}:{self.version}"


@dataclass(frozen=True)
class Policy:
    enforce: LevelVersion
    audit: LevelVersion
    warn: LevelVersion


PRIVILEGED_LATEST = LevelVersion(PRIVILEGED, LATEST)
DEFAULT_POLICY = Policy(PRIVILEGED_LATEST, PRIVILEGED_LATEST, PRIVILEGED_LATEST)


def compare_levels(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is less strict than, as strict as, or stricter than ``b``."""
    order = {PRIVILEGED: 0, BASELINE: 1, RESTRICTED: 2}
    return (order.get(a, 0) > order.get(b, 0)) - (order.get(a, 0) < order.get(b, 0))


def _label_path(label: str) -> str:
    return f"metadata.labels[{label}]"


def policy_to_evaluate(labels: dict | None, defaults: Policy = DEFAULT_POLICY) \
        -> tuple[Policy, list[errors.FieldError]]:
    """The namespace's policy from its labels over ``defaults``, and the label errors (see the
    module docstring for what a bad value evaluates as)."""
    errs: list[errors.FieldError] = []
    if not labels:
        return defaults, errs
    modes = {"enforce": defaults.enforce, "audit": defaults.audit, "warn": defaults.warn}
    for mode, fail_level in (("enforce", RESTRICTED), ("audit", PRIVILEGED), ("warn", PRIVILEGED)):
        level, version = modes[mode].level, modes[mode].version
        key = LABEL_PREFIX + mode
        if key in labels:
            value = labels[key]
            try:
                level = parse_level(value)
            except ParseError as e:
                level = fail_level
                errs.append(errors.invalid_value(_label_path(key), value, str(e)))
        vkey = key + "-version"
        if vkey in labels:
            value = labels[vkey]
            try:
                version = parse_version(value)
            except ParseError as e:
                version = LATEST
                errs.append(errors.invalid_value(_label_path(vkey), value, str(e)))
        modes[mode] = LevelVersion(level, version)
    return Policy(modes["enforce"], modes["audit"], modes["warn"]), errs
