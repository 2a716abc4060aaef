"""The check model (upstream ``policy/checks.go``): a `Check` has an upstream ID, a level and
versions; each `VersionedCheck` applies from its minimum version until the next one, and a
restricted check may override baseline checks (e.g. ``restrictedVolumes`` replaces
``hostPathVolumes``). A check function takes the pod's metadata and spec (plain dicts) and
returns a `CheckResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from kubeling.apiserver.admission.podsecurity.api import Version


@dataclass(frozen=True)
class CheckResult:
    allowed: bool
    forbidden_reason: str = ""
    forbidden_detail: str = ""


ALLOWED = CheckResult(True)

CheckPodFn = Callable[[dict, dict], CheckResult]


@dataclass(frozen=True)
class VersionedCheck:
    minimum_version: Version
    check_pod: CheckPodFn
    override_check_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    id: str
    level: str
    versions: tuple[VersionedCheck, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class AggregateCheckResult:
    allowed: bool
    forbidden_reasons: tuple[str, ...] = ()
    forbidden_details: tuple[str, ...] = ()

    def forbidden_reason(self) -> str:
        return ", ".join(self.forbidden_reasons)

    def forbidden_detail(self) -> str:
        """``reason (detail), reason (detail), ...`` as upstream's messages read."""
        out = []
        for reason, detail in zip(self.forbidden_reasons, self.forbidden_details):
            out.append(f"{reason} ({detail})" if detail else reason)
        return ", ".join(out)


def aggregate_check_results(results: list[CheckResult]) -> AggregateCheckResult:
    reasons, details = [], []
    for r in results:
        if not r.allowed:
            reasons.append(r.forbidden_reason)
            details.append(r.forbidden_detail)
    return AggregateCheckResult(not reasons, tuple(reasons), tuple(details))
