"""projected: several sources (secret, configMap, downwardAPI, serviceAccountToken) in one volume.

- Each source adds its files to one payload, written atomically on a tmpfs (as upstream).
  ``defaultMode`` (0644) applies to every source; per-item ``mode`` wins.
- secret / configMap sources follow the secret and configMap volumes' rules (``optional``,
  ``items``); their errors are collected and reported together, as upstream's aggregate.
- serviceAccountToken: the host's token function is asked for a token of the pod's service
  account with ``audience`` and ``expirationSeconds``; the file gets ``defaultMode``, or 0600
  when the pod sets ``fsGroup``/``runAsUser`` (then group-readable through ``fsGroup``).
  `next_refresh` reports when the volume must be written again: at 80 % of the token's TTL.
- clusterTrustBundle sources are not supported (the feature is off by default upstream in 1.32
  and 1.33): a volume that has one fails to mount with a clear message.
"""

from __future__ import annotations

import time
from pathlib import Path

from kubeling.kubelet.volumes import (
    VolumeHost,
    configmap,
    downwardapi,
    remove_volume_dir,
    secret,
    with_fs_group,
    write_payload,
)
from kubeling.kubelet.volumes.atomic_writer import FileProjection

DEFAULT_MODE = 0o644
REFRESH_FRACTION = 0.8


class ProjectedPlugin:
    NAME = "kubernetes.io/projected"
    SOURCE = "projected"  # the pod.spec.volumes[] key it serves
    needs_refresh = True
    read_only = True

    def __init__(self, host: VolumeHost) -> None:
        self.host = host
        self._refresh_at: dict[str, float] = {}

    def can_support(self, volume: dict) -> bool:
        return self.SOURCE in volume

    def next_refresh(self, dir: Path) -> float | None:
        return self._refresh_at.get(str(dir))

    async def setup(self, pod: dict, volume: dict, dir: Path) -> Path:
        source = volume.get("projected") or {}
        mode = source.get("defaultMode")
        mode = DEFAULT_MODE if mode is None else mode
        payload: dict[str, FileProjection] = {}
        errors: list[str] = []
        refresh_at: float | None = None
        ns = (pod.get("metadata") or {}).get("namespace") or "default"
        for src in source.get("sources") or ():
            try:
                if src.get("secret") is not None:
                    payload.update(await self._secret(ns, src["secret"], mode))
                elif src.get("configMap") is not None:
                    payload.update(await self._configmap(ns, src["configMap"], mode))
                elif src.get("downwardAPI") is not None:
                    payload.update(downwardapi.collect(src["downwardAPI"].get("items") or [], pod,
                                                       self.host.node_allocatable, mode))
                elif src.get("serviceAccountToken") is not None:
                    path, proj, at = await self._token(pod, src["serviceAccountToken"], mode)
                    payload[path] = proj
                    refresh_at = at if refresh_at is None else min(refresh_at, at)
                elif src.get("clusterTrustBundle") is not None:
                    errors.append("clusterTrustBundle projections are not supported by this node")
            except (LookupError, ValueError, OSError) as e:
                errors.append(str(e))
        if errors:
            raise ValueError(errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
        await write_payload(dir, with_fs_group(pod, payload), tmpfs=True)
        if refresh_at is not None:
            self._refresh_at[str(dir)] = refresh_at
        return dir

    async def _secret(self, ns: str, src: dict, mode: int) -> dict[str, FileProjection]:
        name, optional = src.get("name") or "", bool(src.get("optional"))
        obj = await self.host.secrets.get(ns, name)
        if obj is None:
            if not optional:
                raise LookupError(self.host.secrets.not_found_message(name))
            return {}
        return secret.make_payload(src.get("items"), obj, mode, optional)

    async def _configmap(self, ns: str, src: dict, mode: int) -> dict[str, FileProjection]:
        name, optional = src.get("name") or "", bool(src.get("optional"))
        obj = await self.host.configmaps.get(ns, name)
        if obj is None:
            if not optional:
                raise LookupError(self.host.configmaps.not_found_message(name))
            return {}
        return configmap.make_payload(src.get("items"), obj, mode, optional)

    async def _token(self, pod: dict, src: dict, mode: int) -> tuple[str, FileProjection, float]:
        if self.host.token is None:
            raise ValueError("service account tokens are not available on this node")
        spec = pod.get("spec") or {}
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        now = time.time()
        token, expiry = await self.host.token(pod, sa, src.get("audience") or "", src.get("expirationSeconds"))
        sc = spec.get("securityContext") or {}
        if sc.get("fsGroup") is not None or sc.get("runAsUser") is not None:
            mode = 0o600
        # Refresh at 80 % of the lifetime still ahead, at least a second from now (a token manager
        # that hands back the same token must not make this spin).
        at = now + max(1.0, REFRESH_FRACTION * (expiry - now))
        return src.get("path") or "token", FileProjection(token.encode(), mode), at

    async def teardown(self, dir: Path) -> None:
        self._refresh_at.pop(str(dir), None)
        await remove_volume_dir(dir)
