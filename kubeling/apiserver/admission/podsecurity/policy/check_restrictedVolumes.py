"""restrictedVolumes (restricted, 1.0+): inline volumes only of the types configMap, csi,
downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected and secret; it replaces
hostPathVolumes."""

from kubeling.apiserver.admission.podsecurity.api import RESTRICTED, major_minor
from kubeling.apiserver.admission.podsecurity.policy.checks import ALLOWED, Check, CheckResult, VersionedCheck
from kubeling.apiserver.admission.podsecurity.policy.helpers import join_quote, pluralize

ALLOWED_SOURCES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                             "projected", "secret"})
# the restricted sources in upstream's order (the first one a volume sets names its type)
RESTRICTED_SOURCES = ("hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi", "glusterfs",
                      "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile", "vsphereVolume",
                      "quobyte", "azureDisk", "photonPersistentDisk", "portworxVolume", "scaleIO", "storageos")


def restricted_volumes_1_0(meta: dict, spec: dict) -> CheckResult:
    bad, types = [], set()
    for v in spec.get("volumes") or ():
        if not isinstance(v, dict):
            continue
        if any(v.get(s) is not None for s in ALLOWED_SOURCES):
            continue
        bad.append(str(v.get("name", "")))
        types.add(next((s for s in RESTRICTED_SOURCES if v.get(s) is not None), "unknown"))
    if bad:
        return CheckResult(False, "restricted volume types",
                           f"{pluralize('volume', 'volumes', len(bad))} {join_quote(bad)} "
                           f"{pluralize('uses', 'use', len(bad))} "
                           f"{pluralize('restricted volume type', 'restricted volume types', len(types))} "
                           f"{join_quote(sorted(types))}")
    return ALLOWED


CHECK = Check("restrictedVolumes", RESTRICTED,
              (VersionedCheck(major_minor(1, 0), restricted_volumes_1_0, ("hostPathVolumes",)),))
