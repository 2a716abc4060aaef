"""configMap: the keys of a ConfigMap as files, rewritten atomically when the ConfigMap changes.

- Without ``items`` every key of ``data`` and ``binaryData`` becomes a file; with ``items`` only
  the listed keys, at their ``path``, with their ``mode`` (else ``defaultMode``, 0644).
- A missing ConfigMap fails the mount (``configmap "x" not found``) unless ``optional``, which
  gives an empty volume; a missing item key fails (``configmap references non-existent config
  key: k``) unless ``optional``.
- The object comes from the agent's `ObjectCache`, so updates arrive by watch; the manager
  re-runs `setup` and the atomic writer swaps ``..data`` only when the content changed.
- On disk (upstream wraps an emptyDir on the node's disk for configMaps).
"""

from __future__ import annotations

import base64
from kubeling.kubelet.volumes import ProjectionPlugin, lookup_source
from kubeling.kubelet.volumes.atomic_writer import FileProjection


def make_payload(items: list[dict] | None, configmap: dict, default_mode: int,
                 optional: bool) -> dict[str, FileProjection]:
    data = configmap.get("data") or {}
    binary = {k: base64.b64decode(v) for k, v in (configmap.get("binaryData") or {}).items()}
    if not items:
        payload = {k: FileProjection(v.encode(), default_mode) for k, v in data.items()}
        payload.update({k: FileProjection(v, default_mode) for k, v in binary.items()})
        return payload
    payload = {}
    for item in items:
        key = item.get("key")
        if key in data:
            content = data[key].encode()
        elif key in binary:
            content = binary[key]
        elif optional:
            continue
        else:
            raise LookupError(f"configmap references non-existent config key: {key}")
        mode = item.get("mode")
        payload[item.get("path") or key] = FileProjection(content, default_mode if mode is None else mode)
    return payload


class ConfigMapPlugin(ProjectionPlugin):
    NAME = "kubernetes.io/configmap"
    SOURCE = "configMap"  # the pod.spec.volumes[] key it serves
    TMPFS = False

    async def payload(self, pod: dict, source: dict, mode: int) -> dict[str, FileProjection]:
        optional = bool(source.get("optional"))
        configmap = await lookup_source(self.host.configmaps, pod, source.get("name") or "", optional)
        return make_payload(source.get("items"), configmap, mode, optional)
