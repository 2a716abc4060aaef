"""Priority (upstream ``plugin/pkg/admission/priority``): a new pod gets ``spec.priority`` and
``spec.preemptionPolicy`` from its PriorityClass (0 and PreemptLowerPriority without one); a pod
naming a class that does not exist is refused. The two system classes always resolve, even
before bootstrap has written them. A pod naming no class gets the ``globalDefault`` class, if one
exists (its name and value), as upstream; the default is found through a cache kept by list and
watch."""

from __future__ import annotations

import asyncio

from kubeling.api import errors

SYSTEM_CLASSES = {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000}


class Priority:
    NAME = "Priority"

    def __init__(self, store, lookup) -> None:
        self.store = store
        self.lookup = lookup
        self.classes: dict[str, dict] = {}   # name -> PriorityClass (for globalDefault)
        self.synced = False

    def handles(self, attrs) -> bool:
        return attrs.operation == "CREATE" and attrs.is_("", "pods") and not attrs.subresource

    async def admit(self, attrs) -> None:
        spec = attrs.obj.setdefault("spec", {})
        pc_name = spec.get("priorityClassName")
        default = await self._global_default() if not pc_name else None
        if default is not None:
            spec["priorityClassName"] = default["metadata"]["name"]
            spec.setdefault("priority", default.get("value", 0))
            spec.setdefault("preemptionPolicy", default.get("preemptionPolicy", "PreemptLowerPriority"))
            return
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

    async def _global_default(self) -> dict | None:
        """The globalDefault class; with several, the lowest value (upstream's choice)."""
        classes = self.classes.values() if self.synced else \
            (await self.store.list_raw(self.lookup("scheduling.k8s.io", "v1", "priorityclasses"), None))[1]
        defaults = [pc for pc in classes if pc.get("globalDefault")]
        return min(defaults, key=lambda pc: pc.get("value", 0)) if defaults else None

    async def run(self, stop: asyncio.Event) -> None:
        def replace(rv: int, items: list[dict]) -> None:
            self.classes = {o["metadata"]["name"]: o for o in items}
            self.synced = True

        def apply(etype: str, obj: dict) -> None:
            if etype == "DELETED":
                self.classes.pop(obj["metadata"]["name"], None)
            else:
                self.classes[obj["metadata"]["name"]] = obj
        await self.store.reflect(self.lookup("scheduling.k8s.io", "v1", "priorityclasses"), replace, apply,
                                 what="priority class cache")
