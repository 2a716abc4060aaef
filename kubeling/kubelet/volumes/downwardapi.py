"""downwardAPI: pod metadata and container resources as files, rewritten when the pod changes.

Items: ``path``, ``fieldRef.fieldPath`` (``metadata.name|namespace|uid|labels|annotations``,
``metadata.labels['k']``, ``metadata.annotations['k']``) or ``resourceFieldRef`` (``containerName``,
``resource``, ``divisor``; a missing limit reads the node's allocatable), ``mode`` (else
``defaultMode``, 0644). Values are computed by `fieldpath`; the files live on a tmpfs, as
upstream. The manager re-runs setup on `VolumeManager.refresh(pod)` (labels and annotations may
change on a running pod).
"""

from __future__ import annotations

from kubeling.kubelet.volumes import ProjectionPlugin, fieldpath
from kubeling.kubelet.volumes.atomic_writer import FileProjection


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


class DownwardAPIPlugin(ProjectionPlugin):
    NAME = "kubernetes.io/downward-api"
    SOURCE = "downwardAPI"  # the pod.spec.volumes[] key it serves
    TMPFS = True

    async def payload(self, pod: dict, source: dict, mode: int) -> dict[str, FileProjection]:
        return collect(source.get("items") or [], pod, self.host.node_allocatable, mode)
