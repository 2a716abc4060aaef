"""secret: the keys of a Secret as files, on a tmpfs, rewritten atomically when the Secret changes.

- Same rules as configMap (``items``, ``defaultMode`` 0644, per-item ``mode``, ``optional``);
  values are the decoded bytes of ``data``. Messages: ``secret "x" not found``, ``references
  non-existent secret key: k``.
- The volume is a tmpfs (as upstream: secret material never touches the node's disk); teardown
  unmounts it.
"""

from __future__ import annotations

import base64
from kubeling.kubelet.volumes import ProjectionPlugin, lookup_source
from kubeling.kubelet.volumes.atomic_writer import FileProjection


def make_payload(items: list[dict] | None, secret: dict, default_mode: int,
                 optional: bool) -> dict[str, FileProjection]:
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    if not items:
        return {k: FileProjection(v, default_mode) for k, v in data.items()}
    payload = {}
    for item in items:
        key = item.get("key")
        if key not in data:
            if optional:
                continue
            raise LookupError(f"references non-existent secret key: {key}")
        mode = item.get("mode")
        payload[item.get("path") or key] = FileProjection(data[key], default_mode if mode is None else mode)
    return payload


class SecretPlugin(ProjectionPlugin):
    NAME = "kubernetes.io/secret"
    SOURCE = "secret"  # the pod.spec.volumes[] key it serves
    TMPFS = True

    async def payload(self, pod: dict, source: dict, mode: int) -> dict[str, FileProjection]:
        optional = bool(source.get("optional"))
        secret = await lookup_source(self.host.secrets, pod, source.get("secretName") or "", optional)
        return make_payload(source.get("items"), secret, mode, optional)
