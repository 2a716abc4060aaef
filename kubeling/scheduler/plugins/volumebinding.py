"""VolumeBinding (PreFilter, Filter, PreBind): the scheduler's side of PersistentVolumeClaims.

What it does now (upstream's messages, all UnschedulableAndUnresolvable from PreFilter, so the
pod waits for a PVC/PV/StorageClass event rather than retrying every node):

- a pod without ``persistentVolumeClaim`` or generic ``ephemeral`` volumes: Skip;
- a missing claim: ``persistentvolumeclaim "<name>" not found`` (for an ephemeral volume,
  ``waiting for ephemeral volume controller to create the persistentvolumeclaim "<pod>-<vol>"``);
  a claim being deleted, a Lost claim, an ephemeral claim the pod does not own: their messages;
- an unbound claim whose class binds ``Immediate`` (or no class, or a pre-bound ``volumeName``
  the PV controller has not confirmed): ``pod has unbound immediate PersistentVolumeClaims``;
- bound claims: Filter checks each PV's ``spec.nodeAffinity.required`` against the node
  (``node(s) didn't match PersistentVolume's node affinity``), and a claim bound to a missing PV answers
  ``node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)``.

"Bound" is upstream's: ``spec.volumeName`` set and the ``pv.kubernetes.io/bind-completed``
annotation, or ``status.phase: Bound``.

Left to the storage issue: claims of a ``WaitForFirstConsumer`` class pass Filter on every node;
finding or provisioning a PV for them on the chosen node (Filter's "didn't find available
persistent volumes to bind", Reserve's assumed bindings, and PreBind's API writes and wait) is
PreBind's job, which is a no-op here.

Listers: the plugin reads claims, volumes and classes from the handle's ``informer_factory``
(a `SharedInformerFactory`), so they are cached and watched, never fetched per pod.
"""

from __future__ import annotations

from kubeling.scheduler.framework.interface import (
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    EventResource,
    Plugin,
    Status,
)
from kubeling.scheduler.framework.types import NodeInfo
from kubeling.scheduler.plugins.helper import match_node_selector_terms

NAME = "VolumeBinding"
STATE_KEY = NAME
ERR_REASON_UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
ERR_REASON_NODE_CONFLICT = "node(s) didn't match PersistentVolume's node affinity"
ERR_REASON_PV_NOT_EXIST = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
ANN_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
ANN_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"
WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"


class _PodVolumes:
    """PreFilter's findings: the node-affinity term lists of the bound PVs (None: no affinity),
    and whether some bound claim points at a PV that does not exist."""

    __slots__ = ("pv_missing", "pv_terms")

    def __init__(self) -> None:
        self.pv_terms: list[list[dict]] = []
        self.pv_missing = False

    def clone(self) -> _PodVolumes:
        return self


def pvc_is_bound(pvc: dict) -> bool:
    meta, spec = pvc.get("metadata") or {}, pvc.get("spec") or {}
    return bool(spec.get("volumeName")) and (
        ANN_BIND_COMPLETED in (meta.get("annotations") or {}) or (pvc.get("status") or {}).get("phase") == "Bound")


def pvc_class(pvc: dict) -> str:
    ann = ((pvc.get("metadata") or {}).get("annotations") or {}).get(ANN_STORAGE_CLASS)
    return ann if ann is not None else (pvc.get("spec") or {}).get("storageClassName") or ""


def _controlled_by(obj: dict, owner: dict) -> bool:
    uid = (owner.get("metadata") or {}).get("uid")
    return any(r.get("controller") and r.get("uid") == uid for r in (obj.get("metadata") or {}).get("ownerReferences") or ())


def claim_names(pod: dict) -> list[tuple[str, bool]]:
    """(claim name, is generic ephemeral) of each of the pod's claim-backed volumes."""
    pod_name = (pod.get("metadata") or {}).get("name", "")
    out = []
    for vol in (pod.get("spec") or {}).get("volumes") or ():
        if vol.get("persistentVolumeClaim") is not None:
            out.append(((vol["persistentVolumeClaim"] or {}).get("claimName", ""), False))
        elif vol.get("ephemeral") is not None:
            out.append((f"{pod_name}-{vol.get('name', '')}", True))
    return out


class VolumeBinding(Plugin):
    """Args (VolumeBindingArgs): ``bindTimeoutSeconds`` (for the storage issue's PreBind)."""

    NAME = NAME

    def __init__(self, args: dict | None = None, handle=None) -> None:
        super().__init__(args, handle)
        factory = getattr(handle, "informer_factory", None)
        self._pvcs = self._pvs = self._classes = None
        if factory is not None:
            self._pvcs = factory.informer_for("", "v1", "persistentvolumeclaims")
            self._pvs = factory.informer_for("", "v1", "persistentvolumes")
            self._classes = factory.informer_for("storage.k8s.io", "v1", "storageclasses")

    def _delay_binding(self, pvc: dict) -> bool:
        name = pvc_class(pvc)
        if not name or self._classes is None:
            return False
        sc = self._classes.get(name)
        return sc is not None and sc.get("volumeBindingMode") == WAIT_FOR_FIRST_CONSUMER

    def pre_filter(self, state: CycleState, pod: dict, nodes: list[NodeInfo]):
        claims = claim_names(pod)
        if not claims:
            return None, Status.skip()
        if self._pvcs is None:
            return None, Status.as_error("VolumeBinding has no PersistentVolumeClaim lister (handle.informer_factory)")
        ns = (pod.get("metadata") or {}).get("namespace", "")
        found = _PodVolumes()
        unbound_immediate = False
        for name, ephemeral in claims:
            pvc = self._pvcs.get(f"{ns}/{name}")
            msg = self._claim_problem(pod, name, ephemeral, pvc)
            if msg:
                return None, Status.unresolvable(msg)
            if pvc_is_bound(pvc):
                self._add_bound(found, pvc["spec"]["volumeName"])
            elif not self._delay_binding(pvc) or (pvc.get("spec") or {}).get("volumeName"):
                unbound_immediate = True
        if unbound_immediate:
            return None, Status.unresolvable(ERR_REASON_UNBOUND_IMMEDIATE)
        if not found.pv_terms and not found.pv_missing:
            return None, Status.skip()   # nothing node-specific to check (delayed claims: see module doc)
        state.write(STATE_KEY, found)
        return None, None

    @staticmethod
    def _claim_problem(pod: dict, name: str, ephemeral: bool, pvc: dict | None) -> str:
        if pvc is None:
            if ephemeral:
                return f'waiting for ephemeral volume controller to create the persistentvolumeclaim "{name}"'
            return f'persistentvolumeclaim "{name}" not found'
        if (pvc.get("status") or {}).get("phase") == "Lost":
            return (f'persistentvolumeclaim "{name}" bound to non-existent persistentvolume '
                    f'"{(pvc.get("spec") or {}).get("volumeName", "")}"')
        if (pvc.get("metadata") or {}).get("deletionTimestamp"):
            return f'persistentvolumeclaim "{name}" is being deleted'
        if ephemeral and not _controlled_by(pvc, pod):
            meta = pod.get("metadata") or {}
            return (f"PVC {meta.get('namespace', '')}/{name} was not created for pod "
                    f"{meta.get('namespace', '')}/{meta.get('name', '')} (pod is not owner)")
        return ""

    def _add_bound(self, found: _PodVolumes, pv_name: str) -> None:
        pv = self._pvs.get(pv_name) if self._pvs is not None else None
        if pv is None:
            found.pv_missing = True
            return
        required = (((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required"))
        if required is not None:
            found.pv_terms.append(list(required.get("nodeSelectorTerms") or ()))

    def pre_filter_extensions(self):
        return None

    def filter(self, state: CycleState, pod: dict, node_info: NodeInfo) -> Status | None:
        try:
            found: _PodVolumes = state.read(STATE_KEY)
        except KeyError:
            return None
        if found.pv_missing:
            return Status.unresolvable(ERR_REASON_PV_NOT_EXIST)
        node = node_info.node or {}
        for terms in found.pv_terms:
            if not match_node_selector_terms(node, terms):
                return Status.unresolvable(ERR_REASON_NODE_CONFLICT)
        return None

    async def pre_bind(self, state: CycleState, pod: dict, node_name: str) -> Status | None:
        """No-op until the storage issue binds/provisions WaitForFirstConsumer claims here."""
        return None

    def events_to_register(self) -> list[ClusterEventWithHint]:
        add_update = ActionType.ADD | ActionType.UPDATE
        return [
            ClusterEventWithHint(ClusterEvent(EventResource.PERSISTENT_VOLUME_CLAIM, add_update), None),
            ClusterEventWithHint(ClusterEvent(EventResource.PERSISTENT_VOLUME, add_update), None),
            ClusterEventWithHint(ClusterEvent(EventResource.STORAGE_CLASS, add_update), None),
            ClusterEventWithHint(ClusterEvent(EventResource.NODE, ActionType.ADD | ActionType.UPDATE_NODE_LABEL), None),
        ]
