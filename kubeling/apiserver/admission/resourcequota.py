"""ResourceQuota (upstream ``plugin/pkg/admission/resourcequota``): a write that would take a
namespace over one of its quotas is refused with 403, and an admitted write is charged to the
quotas' ``status.used`` before it is stored.

For a CREATE (or an UPDATE of a service or PVC, whose usage can change), for every quota in the
namespace that tracks something this object uses and whose scopes match it:

1. ``constraints``: with cpu/memory quota, every container must state the matching request or
   limit — ``failed quota: <quota>: must specify requests.cpu for: app``;
2. the object's usage (minus the old object's, on update), limited to the quota's ``hard``
   names, is added to ``status.used``; if a resource that grew ends above ``hard`` the write is
   refused — ``exceeded quota: <quota>, requested: pods=1, used: pods=2, limited: pods=2``;
3. otherwise ``status.used`` is written with compare-and-swap (a conflict re-reads and checks
   again, so two concurrent creates cannot both take the last unit).

A quota whose ``status.hard`` is not yet set by the controller is still enforced (from
``spec.hard``) but charged from zero, as upstream. Every check runs before any charge, so a
refusal by the second quota does not charge the first. A charge for a write that then fails to
store is corrected by the ResourceQuota controller's next recount, as upstream. Dry runs are
checked and never charged.

Quotas are found through a cache kept by list and watch (per namespace); the charge itself reads
the stored quota.
"""

from __future__ import annotations

import asyncio
import copy

from kubeling.api import errors
from kubeling.apiserver.registry.context import Context
from kubeling.quota import resources as rl
from kubeling.quota.evaluators import evaluator_for


class ResourceQuota:
    NAME = "ResourceQuota"

    def __init__(self, store, lookup) -> None:
        self.store = store
        self.lookup = lookup
        self.quotas: dict[str, dict[str, dict]] = {}   # namespace -> name -> quota
        self.synced = False

    def handles(self, attrs) -> bool:
        if attrs.subresource or not attrs.served.res.namespaced or attrs.namespace is None:
            return False
        if attrs.operation == "CREATE":
            return True
        return attrs.operation == "UPDATE" and evaluator_for(attrs.group, attrs.resource).handles_update()

    async def validate(self, attrs) -> None:
        quotas = await self._quotas(attrs.namespace)
        if not quotas:
            return
        ev = evaluator_for(attrs.group, attrs.resource)
        new_usage = ev.usage(attrs.obj)
        old_usage = ev.usage(attrs.old) if attrs.old is not None else {}
        res = attrs.served.res
        charges = []
        for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
            hard = rl.parse_list((quota.get("spec") or {}).get("hard"))
            tracked = ev.matching_resources(hard.keys())
            if not tracked or not ev.matches_scopes(quota, attrs.obj):
                continue
            problem = ev.constraints(tracked, attrs.obj)
            if problem:
                raise errors.forbidden_status(res.resource, res.group, attrs.name,
                                              f"failed quota: {quota['metadata']['name']}: {problem}")
            delta = rl.mask(rl.subtract(new_usage, old_usage), tracked)
            if rl.is_zero(delta):
                continue
            self._check(quota, hard, delta, attrs)
            charges.append((quota["metadata"]["name"], delta))
        if attrs.ctx.dry_run:
            return
        for name, delta in charges:
            await self._charge(attrs, name, delta)

    def _check(self, quota: dict, hard: rl.ResourceList, delta: rl.ResourceList, attrs) -> None:
        used = rl.parse_list((quota.get("status") or {}).get("used"))
        after = rl.add(used, delta)
        over = [n for n in rl.exceeded(after, hard) if delta.get(n, 0) > 0]
        if over:
            res = attrs.served.res
            raise errors.forbidden_status(
                res.resource, res.group, attrs.name,
                f"exceeded quota: {quota['metadata']['name']}, requested: {rl.pretty(rl.mask(delta, over))}, "
                f"used: {rl.pretty({n: used.get(n, 0) for n in over})}, limited: {rl.pretty(rl.mask(hard, over))}")

    async def _charge(self, attrs, name: str, delta: rl.ResourceList) -> None:
        served = self.lookup("", "v1", "resourcequotas")
        ctx = Context(user="system:apiserver", groups=("system:masters",), namespace=attrs.namespace,
                      subresource="status", field_manager="kube-apiserver")

        async def mutate(current: dict | None) -> dict:
            if current is None:  # deleted meanwhile: nothing to charge
                raise errors.not_found("resourcequotas", "", name)
            hard = rl.parse_list((current.get("spec") or {}).get("hard"))
            self._check(current, hard, delta, attrs)
            new = copy.deepcopy(current)
            status = new.setdefault("status", {})
            used = rl.add(rl.parse_list(status.get("used")), delta)
            status["used"] = rl.format_list(used)
            status.setdefault("hard", (current.get("spec") or {}).get("hard") or {})
            return new

        try:
            await self.store.guaranteed_update(served, attrs.namespace, name, mutate, ctx)
        except errors.StatusError as e:
            if e.code != 404:
                raise

    async def _quotas(self, namespace: str) -> list[dict]:
        if self.synced:
            return list(self.quotas.get(namespace, {}).values())
        _, items = await self.store.list_raw(self.lookup("", "v1", "resourcequotas"), namespace)
        return items

    async def run(self, stop: asyncio.Event) -> None:
        """Keep `quotas` current (list, then watch; relist on 410)."""
        def replace(rv: int, items: list[dict]) -> None:
            by_ns: dict[str, dict[str, dict]] = {}
            for o in items:
                by_ns.setdefault(o["metadata"]["namespace"], {})[o["metadata"]["name"]] = o
            self.quotas = by_ns
            self.synced = True

        def apply(etype: str, obj: dict) -> None:
            ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
            if etype == "DELETED":
                self.quotas.get(ns, {}).pop(name, None)
            else:
                self.quotas.setdefault(ns, {})[name] = obj
        await self.store.reflect(self.lookup("", "v1", "resourcequotas"), replace, apply, what="quota cache")
