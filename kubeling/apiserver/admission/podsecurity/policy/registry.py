"""The evaluator (upstream ``policy/registry.go``): which checks run for a level and version.

- privileged runs nothing; baseline runs the baseline checks; restricted runs the restricted
  checks plus every baseline check that no restricted check overrides.
- Each check runs the newest of its versions whose minimum is at or below the requested
  version. ``latest``, and any version newer than this server, mean the server's own version
  (upstream's emulation version), so a check newer than the server does not run.
- Results come in upstream's order: baseline check IDs sorted, then restricted IDs sorted, so
  that messages are stable.
"""

from __future__ import annotations

from functools import lru_cache

from kubeling.apiserver.admission.podsecurity.api import BASELINE, PRIVILEGED, RESTRICTED, LevelVersion, Version, \
    server_version
from kubeling.apiserver.admission.podsecurity.policy import (
    check_allowPrivilegeEscalation, check_appArmorProfile, check_capabilities_baseline, check_capabilities_restricted,
    check_hostNamespaces, check_hostPathVolumes, check_hostPorts, check_hostProbesAndHostLifecycle, check_privileged,
    check_procMount, check_restrictedVolumes, check_runAsNonRoot, check_runAsUser, check_seccompProfile_baseline,
    check_seccompProfile_restricted, check_seLinuxOptions, check_sysctls, check_windowsHostProcess)
from kubeling.apiserver.admission.podsecurity.policy.checks import Check, CheckPodFn, CheckResult, VersionedCheck

DEFAULT_CHECKS: tuple[Check, ...] = tuple(m.CHECK for m in (
    check_appArmorProfile, check_capabilities_baseline, check_hostNamespaces, check_hostPathVolumes, check_hostPorts,
    check_hostProbesAndHostLifecycle, check_windowsHostProcess, check_privileged, check_procMount,
    check_seLinuxOptions, check_seccompProfile_baseline, check_sysctls,
    check_allowPrivilegeEscalation, check_capabilities_restricted, check_restrictedVolumes, check_runAsNonRoot,
    check_runAsUser, check_seccompProfile_restricted))


def _active(check: Check, v: Version) -> VersionedCheck | None:
    found = None
    for vc in check.versions:
        if not v.older(vc.minimum_version):
            found = vc
    return found


class Evaluator:
    def __init__(self, checks: tuple[Check, ...] = DEFAULT_CHECKS, max_version: Version | None = None) -> None:
        ids = [c.id for c in checks]
        if len(set(ids)) != len(ids):
            raise ValueError("multiple checks registered for one ID")
        self.baseline = sorted((c for c in checks if c.level == BASELINE), key=lambda c: c.id)
        self.restricted = sorted((c for c in checks if c.level == RESTRICTED), key=lambda c: c.id)
        self.max_version = max_version or server_version()
        self._fns = lru_cache(maxsize=None)(self._checks_for)

    def _checks_for(self, level: str, version: Version) -> tuple[CheckPodFn, ...]:
        baseline = [(c.id, _active(c, version)) for c in self.baseline]
        if level == BASELINE:
            return tuple(vc.check_pod for _id, vc in baseline if vc)
        restricted = [(c.id, _active(c, version)) for c in self.restricted]
        overrides = {o for _id, vc in restricted if vc for o in vc.override_check_ids}
        return tuple(vc.check_pod for cid, vc in baseline if vc and cid not in overrides) + \
            tuple(vc.check_pod for _id, vc in restricted if vc)

    def checks_for(self, lv: LevelVersion) -> tuple[CheckPodFn, ...]:
        if lv.level == PRIVILEGED:
            return ()
        version = lv.version
        if self.max_version.older(version):
            version = self.max_version
        return self._fns(lv.level, version)

    def evaluate_pod(self, lv: LevelVersion, meta: dict | None, spec: dict | None) -> list[CheckResult]:
        meta = meta if isinstance(meta, dict) else {}
        spec = spec if isinstance(spec, dict) else {}
        return [fn(meta, spec) for fn in self.checks_for(lv)]
