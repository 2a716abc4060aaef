"""LimitRanger (upstream ``plugin/pkg/admission/limitranger``): the namespace's LimitRanges
default and bound what pods and PVCs ask for.

- **Mutating** (pod CREATE): each container (init containers too) without a request or limit for
  a resource gets the ``Container`` limit's ``defaultRequest`` / ``default``. Requests left unset
  after that default to the limit, as the API's defaulting does.
- **Validating** (pod and PVC CREATE and UPDATE):
  - ``Container``: each container's request ≥ ``min``, request and limit ≤ ``max``, and
    limit / request ≤ ``maxLimitRequestRatio``;
  - ``Pod``: the same bounds on the sums over the pod's containers;
  - ``PersistentVolumeClaim``: ``storage`` request within ``min``/``max``.
  Messages are upstream's (``minimum cpu usage per Container is 100m, but request is 50m``); more
  than one is listed as ``[a, b]``, as Go's aggregate error prints.

LimitRanges are read through a cache kept by list and watch.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from kubeling.api import errors
from kubeling.quota import resources as rl


class LimitRanger:
    NAME = "LimitRanger"

    def __init__(self, store, lookup) -> None:
        self.store = store
        self.lookup = lookup
        self.ranges: dict[str, dict[str, dict]] = {}
        self.synced = False

    def handles(self, attrs) -> bool:
        if attrs.subresource or attrs.namespace is None:
            return False
        if attrs.is_("", "pods"):
            return attrs.operation == "CREATE"
        return attrs.is_("", "persistentvolumeclaims") and attrs.operation in ("CREATE", "UPDATE")

    async def _limits(self, namespace: str) -> list[dict]:
        if self.synced:
            items = list(self.ranges.get(namespace, {}).values())
        else:
            _, items = await self.store.list_raw(self.lookup("", "v1", "limitranges"), namespace)
        return [lim for lr in items for lim in (lr.get("spec") or {}).get("limits") or ()]

    async def admit(self, attrs) -> None:
        if not attrs.is_("", "pods"):
            return
        container_limits = [lim for lim in await self._limits(attrs.namespace) if lim.get("type") == "Container"]
        if not container_limits:
            return
        spec = attrs.obj.setdefault("spec", {})
        for c in list(spec.get("containers") or ()) + list(spec.get("initContainers") or ()):
            res = c.setdefault("resources", {})
            for lim in container_limits:
                for name, q in (lim.get("default") or {}).items():
                    res.setdefault("limits", {}).setdefault(name, q)
                for name, q in (lim.get("defaultRequest") or {}).items():
                    res.setdefault("requests", {}).setdefault(name, q)
            for name, q in (res.get("limits") or {}).items():
                res.setdefault("requests", {}).setdefault(name, q)
            if not res:
                c.pop("resources")

    async def validate(self, attrs) -> None:
        limits = await self._limits(attrs.namespace)
        if not limits:
            return
        problems: list[str] = []
        if attrs.is_("", "pods"):
            spec = attrs.obj.get("spec") or {}
            containers = list(spec.get("containers") or ()) + list(spec.get("initContainers") or ())
            for lim in limits:
                if lim.get("type") == "Container":
                    for c in containers:
                        res = c.get("resources") or {}
                        problems += _bounds(lim, "Container", rl.parse_list(res.get("requests")),
                                            rl.parse_list(res.get("limits")))
                elif lim.get("type") == "Pod":
                    req: rl.ResourceList = {}
                    lims: rl.ResourceList = {}
                    for c in containers:
                        res = c.get("resources") or {}
                        req = rl.add(req, rl.parse_list(res.get("requests")))
                        lims = rl.add(lims, rl.parse_list(res.get("limits")))
                    problems += _bounds(lim, "Pod", req, lims)
        else:
            requests = rl.parse_list(((attrs.obj.get("spec") or {}).get("resources") or {}).get("requests"))
            for lim in limits:
                if lim.get("type") == "PersistentVolumeClaim":
                    problems += _bounds(lim, "PersistentVolumeClaim", requests, {}, claim=True)
        if problems:
            res = attrs.served.res
            msg = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
            raise errors.forbidden_status(res.resource, res.group, attrs.name, msg)

    async def run(self, stop: asyncio.Event) -> None:
        def replace(rv: int, items: list[dict]) -> None:
            by_ns: dict[str, dict[str, dict]] = {}
            for o in items:
                by_ns.setdefault(o["metadata"]["namespace"], {})[o["metadata"]["name"]] = o
            self.ranges = by_ns
            self.synced = True

        def apply(etype: str, obj: dict) -> None:
            ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
            if etype == "DELETED":
                self.ranges.get(ns, {}).pop(name, None)
            else:
                self.ranges.setdefault(ns, {})[name] = obj
        await self.store.reflect(self.lookup("", "v1", "limitranges"), replace, apply, what="limit range cache")


def _fmt(name: str, v: Decimal) -> str:
    return rl.format_value(name, v)


def _bounds(lim: dict, kind: str, requests: rl.ResourceList, limits: rl.ResourceList, *,
            claim: bool = False) -> list[str]:
    out: list[str] = []
    for name, lo in sorted(rl.parse_list(lim.get("min")).items()):
        req = requests.get(name)
        if req is None:
            out.append(f"minimum {name} usage per {kind} is {_fmt(name, lo)}.  No request is specified")
        elif req < lo:
            out.append(f"minimum {name} usage per {kind} is {_fmt(name, lo)}, but request is {_fmt(name, req)}")
    for name, hi in sorted(rl.parse_list(lim.get("max")).items()):
        if claim:
            req = requests.get(name)
            if req is None:
                out.append(f"maximum {name} usage per {kind} is {_fmt(name, hi)}.  No request is specified")
            elif req > hi:
                out.append(f"maximum {name} usage per {kind} is {_fmt(name, hi)}, but request is {_fmt(name, req)}")
            continue
        limit = limits.get(name)
        if limit is None:
            out.append(f"maximum {name} usage per {kind} is {_fmt(name, hi)}.  No limit is specified")
        elif limit > hi:
            out.append(f"maximum {name} usage per {kind} is {_fmt(name, hi)}, but limit is {_fmt(name, limit)}")
    for name, ratio in sorted(rl.parse_list(lim.get("maxLimitRequestRatio")).items()):
        req, limit = requests.get(name), limits.get(name)
        if not req or limit is None:
            continue
        actual = limit / req
        if actual > ratio:
            out.append(f"{name} max limit to request ratio per {kind} is {_fmt(name, ratio)}, "
                       f"but provided ratio is {float(actual):f}")
    return out
