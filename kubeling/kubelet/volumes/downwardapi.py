"""downwardAPI: pod metadata and container resources as files, rewritten when the pod changes.

Items: ``path``, ``fieldRef.fieldPath`` (``metadata.name|namespace|uid|labels|annotations``,
``metadata.labels['k']``, ``metadata.annotations['k']``) or ``resourceFieldRef`` (``containerName``,
``resource``, ``divisor``; a missing limit reads the node's allocatable), ``mode`` (else
``defaultMode``, 0644). Values are computed by `fieldpath`; the files live on a tmpfs, as
upstream. The manager re-runs setup on `VolumeManager.refresh(pod)` (labels and annotations may
change on a running pod).
"""

from __future__ import annotations

from pathlib import Path

from kubeling.kubelet.volumes import (
    VolumeHost,
    fieldpath,
    remove_volume_dir,
    with_fs_group,
    write_payload,
)
from kubeling.kubelet.volumes.atomic_writer import FileProjection

DEFAULT_MODE = 0o644


def collect(items: list[dict], pod: dict, allocatable: dict, default_mode: int) -> dict[str, FileProjection]:
    """The payload of downwardAPI ``items`` (also a projected volume's downwardAPI source)."""
    payload: dict[str, FileProjection] = {}
    errors = []
    for item in items or ():
        mode = item.get("mode")
        mode = default_mode if mode is None else mode
        try:
            if item.get("fieldRef"):
                value = fieldpath.pod_field(pod, item["fieldRef"].get("fieldPath") or "")
            elif item.get("resourceFieldRef"):
                ref = item["resourceFieldRef"]
                value = fieldpath.resource_for_pod(pod, ref.get("containerName") or "", ref.get("resource") or "",
                                                   ref.get("divisor"), allocatable)
            else:
                continue
        except fieldpath.FieldPathError as e:
            errors.append(f"{item.get('path')}: {e}")
            continue
        payload[item.get("path") or ""] = FileProjection(value.encode(), mode)
    if errors:
        raise ValueError("; ".join(errors))
    return payload


class DownwardAPIPlugin:
    NAME = "kubernetes.io/downward-api"
    SOURCE = "downwardAPI"  # the pod.spec.volumes[] key it serves
    needs_refresh = True
    read_only = True

    def __init__(self, host: VolumeHost) -> None:
        self.host = host

    def can_support(self, volume: dict) -> bool:
        return self.SOURCE in volume

    async def setup(self, pod: dict, volume: dict, dir: Path) -> Path:
        source = volume.get("downwardAPI") or {}
        mode = source.get("defaultMode")
        payload = collect(source.get("items") or [], pod, self.host.node_allocatable,
                          DEFAULT_MODE if mode is None else mode)
        await write_payload(dir, with_fs_group(pod, payload), tmpfs=True)
        return dir

    async def teardown(self, dir: Path) -> None:
        await remove_volume_dir(dir)
