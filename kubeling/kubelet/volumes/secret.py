"""secret: the keys of a Secret as files, on a tmpfs, rewritten atomically when the Secret changes.

- Same rules as configMap (``items``, ``defaultMode`` 0644, per-item ``mode``, ``optional``);
  values are the decoded bytes of ``data``. Messages: ``secret "x" not found``, ``references
  non-existent secret key: k``.
- The volume is a tmpfs (as upstream: secret material never touches the node's disk); teardown
  unmounts it.
"""

from __future__ import annotations

import base64
from pathlib import Path

from kubeling.kubelet.volumes import (
    VolumeHost,
    remove_volume_dir,
    with_fs_group,
    write_payload,
)
from kubeling.kubelet.volumes.atomic_writer import FileProjection

DEFAULT_MODE = 0o644


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


class SecretPlugin:
    NAME = "kubernetes.io/secret"
    SOURCE = "secret"  # the pod.spec.volumes[] key it serves
    needs_refresh = True
    read_only = True

    def __init__(self, host: VolumeHost) -> None:
        self.host = host

    def can_support(self, volume: dict) -> bool:
        return self.SOURCE in volume

    async def setup(self, pod: dict, volume: dict, dir: Path) -> Path:
        source = volume.get("secret") or {}
        name, optional = source.get("secretName") or "", bool(source.get("optional"))
        cache = self.host.secrets
        secret = await cache.get((pod.get("metadata") or {}).get("namespace") or "default", name)
        if secret is None:
            if not optional:
                raise LookupError(cache.not_found_message(name))
            secret = {}
        mode = source.get("defaultMode")
        payload = make_payload(source.get("items"), secret, DEFAULT_MODE if mode is None else mode, optional)
        await write_payload(dir, with_fs_group(pod, payload), tmpfs=True)
        return dir

    async def teardown(self, dir: Path) -> None:
        await remove_volume_dir(dir)
