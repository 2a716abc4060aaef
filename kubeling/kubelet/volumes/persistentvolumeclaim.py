"""persistentVolumeClaim: the hook where claims become node paths (the storage issue fills it in).

Setup resolves the claim to its PersistentVolume through the API (GET the PVC, check it is
Bound and not being deleted, GET the PV named by ``spec.volumeName``, check the PV's claimRef
points back at this claim) and then supports:

- ``hostPath`` PVs: the host path, after the hostPath ``type`` check;
- ``local`` PVs: ``spec.local.path``, which must exist.

Any other PV source fails the mount with ``... is not supported yet``. ``readOnly`` on the pod's
claim reference makes every container mount read-only (see `mounts.container_mounts`). Nothing
is created under the pod's volume directory, and teardown leaves the PV's data alone.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from kubeling.api.errors import StatusError
from kubeling.kubelet.volumes import VolumeHost
from kubeling.kubelet.volumes.hostpath import check_type

SUPPORTED = ("hostPath", "local")


class PersistentVolumeClaimPlugin:
    NAME = "kubernetes.io/persistent-volume-claim"
    SOURCE = "persistentVolumeClaim"  # the pod.spec.volumes[] key it serves
    needs_refresh = False
    read_only = False

    def __init__(self, host: VolumeHost) -> None:
        self.host = host

    def can_support(self, volume: dict) -> bool:
        return self.SOURCE in volume

    async def resolve(self, pod: dict, claim_name: str) -> dict:
        """The PV bound to ``claim_name`` in the pod's namespace (errors as upstream's populator)."""
        ns = (pod.get("metadata") or {}).get("namespace") or "default"
        client = self.host.client
        if client is None:
            raise ValueError(f"error processing PVC {ns}/{claim_name}: no API client on this node")
        try:
            pvc = await client.get("", "v1", "persistentvolumeclaims", claim_name, namespace=ns)
        except StatusError as e:
            raise ValueError(f"error processing PVC {ns}/{claim_name}: failed to fetch PVC from API server: "
                             f"{e.message}") from None
        if (pvc.get("metadata") or {}).get("deletionTimestamp"):
            raise ValueError(f"error processing PVC {ns}/{claim_name}: PVC is being deleted")
        pv_name = (pvc.get("spec") or {}).get("volumeName")
        if (pvc.get("status") or {}).get("phase") != "Bound" or not pv_name:
            raise ValueError(f"error processing PVC {ns}/{claim_name}: PVC is not bound")
        try:
            pv = await client.get("", "v1", "persistentvolumes", pv_name)
        except StatusError as e:
            raise ValueError(f"error processing PVC {ns}/{claim_name}: failed to fetch PV {pv_name} from API "
                             f"server: {e.message}") from None
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        pvc_uid = (pvc.get("metadata") or {}).get("uid")
        if ref.get("name") != claim_name or ref.get("namespace") != ns or \
                (ref.get("uid") and pvc_uid and ref["uid"] != pvc_uid):
            raise ValueError(f"error processing PVC {ns}/{claim_name}: PV {pv_name} is not bound to it")
        return pv

    async def setup(self, pod: dict, volume: dict, dir: Path) -> Path:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName") or ""
        pv = await self.resolve(pod, claim)
        spec = pv.get("spec") or {}
        name = (pv.get("metadata") or {}).get("name")
        if spec.get("hostPath"):
            path = spec["hostPath"].get("path") or ""
            await asyncio.to_thread(check_type, path, spec["hostPath"].get("type") or "")
            return Path(path)
        if spec.get("local"):
            path = spec["local"].get("path") or ""
            if not await asyncio.to_thread(os.path.exists, path):
                raise ValueError(f"local PV {name}: path {path} does not exist")
            return Path(path)
        kinds = sorted(k for k, v in spec.items() if isinstance(v, dict) and k not in (
            "claimRef", "capacity", "nodeAffinity"))
        raise ValueError(f"persistentvolume \"{name}\": volume type {', '.join(kinds) or 'unknown'} is not "
                         "supported yet")

    async def teardown(self, dir: Path) -> None:
        return None  # the PV's data outlives the pod; nothing was created under it
