"""The aggregation layer's part that needs no proxy yet (upstream ``kube-aggregator``).

- **Autoregistration** (upstream's ``autoregister`` and ``crdRegistrationController``): every
  group version this server serves itself has a *local* APIService (``spec.service`` unset), e.g.
  ``v1.`` and ``v1.apps``, labelled ``kube-aggregator.kubernetes.io/automanaged`` (``onstart``
  for built-ins, ``true`` for CRD groups, which are removed when their CRDs go).
- **Availability** (upstream's ``AvailableConditionController``): each APIService's ``Available``
  condition. Local ones are always available. One that names a Service is not, until issue 6
  routes to Service endpoints: the condition says why — ``ServiceNotFound``, ``MissingEndpoints``
  or ``FailedDiscoveryCheck`` — as upstream's messages do.
- **Requests** for an aggregated group version this server does not serve answer 503
  ServiceUnavailable with the condition's message; ``/apis`` lists the group (as upstream's
  discovery does, so clients learn it exists and report it as unavailable).

Everything reads and writes through the generic store; the controller re-checks every
`RESYNC_SECONDS` and on every APIService change.
"""

from __future__ import annotations

import asyncio
import copy
import logging

from kubeling.api import errors
from kubeling.apiserver.registry import Context, now_rfc3339

log = logging.getLogger(__name__)

AUTOMANAGED = "kube-aggregator.kubernetes.io/automanaged"
RESYNC_SECONDS = 30.0
# (group, version) -> (groupPriorityMinimum, versionPriority), as upstream's apiVersionPriorities.
PRIORITIES = {
    ("", "v1"): (18000, 1), ("apps", "v1"): (17800, 15), ("events.k8s.io", "v1"): (17750, 15),
    ("authentication.k8s.io", "v1"): (17700, 15), ("authorization.k8s.io", "v1"): (17600, 15),
    ("autoscaling", "v1"): (17500, 15), ("autoscaling", "v2"): (17500, 30), ("batch", "v1"): (17400, 15),
    ("networking.k8s.io", "v1"): (17200, 15), ("policy", "v1"): (17100, 15),
    ("rbac.authorization.k8s.io", "v1"): (17000, 15), ("storage.k8s.io", "v1"): (16800, 15),
    ("apiextensions.k8s.io", "v1"): (16700, 15), ("scheduling.k8s.io", "v1"): (16600, 12),
    ("coordination.k8s.io", "v1"): (16500, 15), ("discovery.k8s.io", "v1"): (16200, 15),
    ("apiregistration.k8s.io", "v1"): (18000, 15), ("admissionregistration.k8s.io", "v1"): (16700, 15),
}
CRD_PRIORITY = (1000, 100)  # upstream gives CRD groups a low minimum and orders versions by name


def apiservice_name(group: str, version: str) -> str:
    return f"{version}.{group}"


class Aggregator:
    def __init__(self, api) -> None:
        self.api = api
        self.apiservices: dict[str, dict] = {}
        self._wake = asyncio.Event()

    # -- serving -------------------------------------------------------------------------------

    def _served(self):
        return self.api.lookup("apiregistration.k8s.io", "v1", "apiservices")

    def serves(self, group: str, version: str) -> bool:
        """Whether ``group/version`` is an aggregated API (registered, backed by a Service)."""
        svc = self.apiservices.get(apiservice_name(group, version))
        return svc is not None and bool((svc.get("spec") or {}).get("service"))

    def unavailable(self, group: str, version: str) -> errors.StatusError:
        name = apiservice_name(group, version)
        cond = _available(self.apiservices.get(name) or {})
        why = (cond or {}).get("message") or "its service is not reachable"
        return errors.StatusError(503, "ServiceUnavailable", f"the server is currently unable to handle the request "
                                  f"(APIService {name} is not available: {why})", details={"group": group})

    async def proxy(self, request, group: str, version: str):
        """Requests for an aggregated API: no proxy to Services exists yet (issue 6), so 503."""
        raise self.unavailable(group, version)

    def discovery_groups(self, served_groups: list[dict]) -> list[dict]:
        """``APIGroup`` entries for aggregated groups this server does not serve itself."""
        have = {g["name"] for g in served_groups}
        out: dict[str, dict] = {}
        for svc in sorted(self.apiservices.values(), key=lambda s: s["metadata"]["name"]):
            spec = svc.get("spec") or {}
            group, version = spec.get("group", ""), spec.get("version", "")
            if not spec.get("service") or not group or group in have:
                continue
            entry = out.setdefault(group, {"name": group, "versions": []})
            gv = {"groupVersion": f"{group}/{version}", "version": version}
            entry["versions"].append(gv)
            entry.setdefault("preferredVersion", gv)
        return list(out.values())

    # -- the controller ------------------------------------------------------------------------

    async def start(self) -> None:
        """Register the local APIServices and load every APIService (before serving)."""
        await self._autoregister()
        _, items = await self.api.registry.list_raw(self._served(), None)
        self.apiservices = {o["metadata"]["name"]: o for o in items}

    async def run(self, stop: asyncio.Event) -> None:
        watcher = asyncio.create_task(self._watch(stop))
        try:
            while not stop.is_set():
                try:
                    await self._autoregister()
                    for svc in list(self.apiservices.values()):
                        await self._update_condition(svc)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - retried at the next resync
                    log.exception("APIService availability")
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), RESYNC_SECONDS)
                except asyncio.TimeoutError:
                    pass
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _watch(self, stop: asyncio.Event) -> None:
        def replace(rv: int, items: list[dict]) -> None:
            self.apiservices = {o["metadata"]["name"]: o for o in items}
            self._wake.set()

        def apply(etype: str, obj: dict) -> None:
            if etype == "DELETED":
                self.apiservices.pop(obj["metadata"]["name"], None)
            else:
                self.apiservices[obj["metadata"]["name"]] = obj
                self._wake.set()
        await self.api.registry.reflect(self._served(), replace, apply, what="APIService watch")

    def _wanted_local(self) -> dict[str, tuple[str, str, str]]:
        """name -> (group, version, automanaged) for every group version served here."""
        out = {}
        for res in self.api.resources.resources():
            if not res.discoverable or res.storage_version:
                continue
            name = apiservice_name(res.group, res.version)
            out[name] = (res.group, res.version, "true" if res.crd else "onstart")
        return out

    async def _autoregister(self) -> None:
        served = self._served()
        ctx = Context(user="system:apiserver", field_manager="kube-apiserver")
        wanted = self._wanted_local()
        for name, (group, version, managed) in wanted.items():
            if name in self.apiservices:
                continue
            gpm, vp = PRIORITIES.get((group, version), CRD_PRIORITY)
            obj = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                   "metadata": {"name": name, "labels": {AUTOMANAGED: managed}},
                   "spec": {"group": group, "version": version, "groupPriorityMinimum": gpm,
                            "versionPriority": vp}}
            try:
                created = await self.api.registry.create(served, obj, ctx)
                self.apiservices[name] = created
            except errors.StatusError as e:
                if e.reason != "AlreadyExists":
                    log.warning("registering APIService %s: %s", name, e.message)
        for name, svc in list(self.apiservices.items()):
            labels = svc["metadata"].get("labels") or {}
            if labels.get(AUTOMANAGED) == "true" and name not in wanted:
                try:
                    await self.api.registry.delete(served, None, name, {}, ctx)
                except errors.StatusError as e:
                    if e.code != 404:
                        log.warning("removing APIService %s: %s", name, e.message)
                self.apiservices.pop(name, None)

    async def _condition_for(self, svc: dict) -> dict:
        ref = (svc.get("spec") or {}).get("service")
        if not ref:
            return {"type": "Available", "status": "True", "reason": "Local",
                    "message": "Local APIServices are always available"}
        ns, name = ref.get("namespace", ""), ref.get("name", "")
        services = self.api.lookup("", "v1", "services")
        try:
            await self.api.registry.get_raw(services, ns, name)
        except errors.StatusError as e:
            if e.code != 404:
                raise
            return {"type": "Available", "status": "False", "reason": "ServiceNotFound",
                    "message": f'service/{name} in "{ns}" is not present'}
        endpoints = self.api.lookup("", "v1", "endpoints")
        try:
            ep = await self.api.registry.get_raw(endpoints, ns, name)
        except errors.StatusError as e:
            if e.code != 404:
                raise
            ep = {}
        if not any(s.get("addresses") for s in ep.get("subsets") or []):
            return {"type": "Available", "status": "False", "reason": "MissingEndpoints",
                    "message": f'endpoints for service/{name} in "{ns}" have no addresses'}
        spec = svc["spec"]
        return {"type": "Available", "status": "False", "reason": "FailedDiscoveryCheck",
                "message": f"failing or missing response from https://{name}.{ns}.svc:{ref.get('port', 443)}"
                           f"/apis/{spec.get('group')}/{spec.get('version')}: the API server does not route to "
                           f"Service endpoints yet"}

    async def _update_condition(self, svc: dict) -> None:
        want = await self._condition_for(svc)
        have = _available(svc)
        if have and all(have.get(k) == want[k] for k in ("status", "reason", "message")):
            return
        name = svc["metadata"]["name"]

        async def mutate(current):
            if current is None:
                raise errors.not_found("apiservices", "apiregistration.k8s.io", name)
            new = copy.deepcopy(current)
            conds = [c for c in (new.get("status") or {}).get("conditions") or [] if c.get("type") != "Available"]
            prev = _available(current)
            changed = prev is None or prev.get("status") != want["status"]
            conds.append({**want, "lastTransitionTime": now_rfc3339() if changed else prev.get("lastTransitionTime")})
            new["status"] = {**(new.get("status") or {}), "conditions": conds}
            return new

        ctx = Context(user="system:apiserver", field_manager="kube-apiserver", subresource="status")
        try:
            updated, _ = await self.api.registry.guaranteed_update(self._served(), None, name, mutate, ctx)
            self.apiservices[name] = updated
        except errors.StatusError as e:
            if e.code != 404:
                raise


def _available(svc: dict) -> dict | None:
    return next((c for c in (svc.get("status") or {}).get("conditions") or [] if c.get("type") == "Available"),
                None)


__all__ = ["Aggregator", "apiservice_name"]
