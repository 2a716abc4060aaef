"""The Pod Security Standards' checks (upstream ``k8s.io/pod-security-admission/policy``), one
module per upstream check ID (``check_<ID>.py``), and the `Evaluator` that picks them per level
and version (``registry.py``).

    baseline    appArmorProfile, capabilities_baseline, hostNamespaces, hostPathVolumes,
                hostPorts, hostProbesAndHostLifecycle (1.34+), privileged, procMount,
                seLinuxOptions, seccompProfile_baseline, sysctls, windowsHostProcess
    restricted  allowPrivilegeEscalation, capabilities_restricted (overrides
                capabilities_baseline), restrictedVolumes (overrides hostPathVolumes),
                runAsNonRoot, runAsUser, seccompProfile_restricted — plus the rest of baseline
"""
