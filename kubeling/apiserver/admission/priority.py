"""Priority (upstream ``plugin/pkg/admission/priority``): a new pod gets ``spec.priority`` and
``spec.preemptionPolicy`` from its PriorityClass (0 and PreemptLowerPriority without one); a pod
naming a class that does not exist is refused. The two system classes always resolve, even
before bootstrap has written them."""

from __future__ import annotations

from kubeling.api import errors

SYSTEM_CLASSES = {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000}


class Priority:
    NAME = "Priority"

    def __init__(self, store, lookup) -> None:
        self.store = store
        self.lookup = lookup

    def handles(self, attrs) -> bool:
        return attrs.operation == "CREATE" and attrs.is_("", "pods") and not attrs.subresource

    async def admit(self, attrs) -> None:
        spec = attrs.obj.setdefault("spec", {})
        pc_name = spec.get("priorityClassName")
        if not pc_name:
            spec.setdefault("priority", 0)
            spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
            return
        try:
            pc = await self.store.get_raw(self.lookup("scheduling.k8s.io", "v1", "priorityclasses"), None, pc_name)
        except errors.StatusError as e:
            if e.code != 404:
                raise
            pc = {"value": SYSTEM_CLASSES[pc_name]} if pc_name in SYSTEM_CLASSES else None
        if pc is None:
            raise errors.forbidden_status("pods", "", attrs.name, f"no PriorityClass with name {pc_name} was found")
        spec.setdefault("priority", pc.get("value", 0))
        spec.setdefault("preemptionPolicy", pc.get("preemptionPolicy", "PreemptLowerPriority"))
