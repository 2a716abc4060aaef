"""Serving CustomResourceDefinitions: the apiextensions part of the API server.

The CRD controller keeps `APIServer.resources` in step with the stored CRDs. It is
part of the API server process (as upstream's apiextensions-apiserver is), and reads the CRDs
through the generic store: list at start, then watch from the list's revision.

For each CRD it:
- serves every ``served`` version as a `Served` with a `CustomResourceStrategy` built from the
  version's schema, printer columns, selectable fields, status and scale subresources (all
  versions share storage; with conversion ``None`` only ``apiVersion`` changes between them);
- sets ``status.conditions`` NamesAccepted and Established, ``acceptedNames`` and
  ``storedVersions``, and adds the ``customresourcecleanup.apiextensions.k8s.io`` finalizer;
- on deletion, deletes every custom resource of the CRD through the registry (their own finalizers
  run), waits until none is left, then removes that finalizer.
"""

from __future__ import annotations

import asyncio
import copy
import logging

from kubeling.api import errors, kinds
from kubeling.apiserver.registry import Context, CustomResourceStrategy, now_rfc3339
from kubeling.apiserver.resources import Served

log = logging.getLogger(__name__)

CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
CLEANUP_RECHECK = 1.0  # seconds between passes while instances held by finalizers remain


def served_for(crd: dict) -> list[Served]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    kind = names.get("kind", "")
    plural = names.get("plural", "")
    if not (group and kind and plural):
        return []
    versions = spec.get("versions") or []
    storage = next((v["name"] for v in versions if v.get("storage")), versions[0]["name"] if versions else "")
    out = []
    for v in versions:
        if not v.get("served", True):
            continue
        subs = v.get("subresources") or {}
        subresources = tuple(s for s in ("status", "scale") if s in subs)
        res = kinds.Resource(
            group, v["name"], plural, kind, spec.get("scope", "Namespaced") == "Namespaced",
            tuple(names.get("shortNames") or ()), tuple(names.get("categories") or ()), subresources,
            kinds.ALL_VERBS, crd=True, singular=names.get("singular") or kind.lower(),
            list_kind=names.get("listKind") or kind + "List",
            extra={"selectableFields": v.get("selectableFields") or [], "crd": crd["metadata"]["name"]})
        schema_node = ((v.get("schema") or {}).get("openAPIV3Schema")) or {"type": "object",
                                                                           "x-kubernetes-preserve-unknown-fields": True}
        strategy = CustomResourceStrategy(group, plural, kind, res.namespaced, schema=schema_node,
                                          has_status="status" in subs, has_scale="scale" in subs,
                                          printer_columns=v.get("additionalPrinterColumns") or (),
                                          selectable_fields=v.get("selectableFields") or ())
        out.append(Served(res, f"/registry/{group}/{plural}/", f"{group}/{storage}", schema_node, strategy,
                          scale=subs.get("scale"), crd_name=crd["metadata"]["name"]))
    return out


def _established(crd: dict) -> bool:
    conds = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds)


class CRDController:
    def __init__(self, api) -> None:
        self.api = api
        self.crds: dict[str, dict] = {}
        self.revision = 0
        self.cleanups: dict[str, asyncio.Task] = {}

    async def start(self) -> None:
        self.revision, items = await self.api.registry.list_raw(self._served_crd(), None)
        self.crds = {crd["metadata"]["name"]: crd for crd in items}
        self._publish()

    def _publish(self) -> None:
        served, schemas = [], {}
        # A CRD being deleted stays served until its cleanup finalizer is done.
        for crd in self.crds.values():
            for s in served_for(crd):
                served.append(s)
                schemas[(s.res.group, s.res.version, s.res.kind)] = s.schema
        self.api.set_custom_resources(served, schemas)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._run(stop)
        finally:
            for t in self.cleanups.values():
                t.cancel()
            await asyncio.gather(*self.cleanups.values(), return_exceptions=True)

    async def _run(self, stop: asyncio.Event) -> None:
        async def replace(rv: int, items: list[dict]) -> None:
            self.revision, self.crds = rv, {crd["metadata"]["name"]: crd for crd in items}
            self._publish()
            for crd in items:
                await self._reconcile(crd)

        async def apply(etype: str, crd: dict) -> None:
            self.revision = int(crd["metadata"]["resourceVersion"])
            name = crd["metadata"]["name"]
            if etype == "DELETED":
                self.crds.pop(name, None)
                self._publish()
                return
            self.crds[name] = crd
            self._publish()
            await self._reconcile(crd)
        await self.api.registry.reflect(self._served_crd(), replace, apply, what="CRD controller")

    async def _reconcile(self, crd: dict) -> None:
        try:
            if crd["metadata"].get("deletionTimestamp"):
                await self._cleanup(crd)
            elif not _established(crd) or CLEANUP_FINALIZER not in (crd["metadata"].get("finalizers") or []):
                await self._establish(crd)
        except errors.StatusError as e:
            if e.code not in (404, 409):
                log.warning("CRD %s: %s", crd["metadata"]["name"], e.message)

    def _served_crd(self) -> Served:
        return self.api.resources.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")

    async def _establish(self, crd: dict) -> None:
        name = crd["metadata"]["name"]
        served = self._served_crd()
        ctx = Context(user="system:apiserver", field_manager="kube-apiserver", subresource="finalize")

        async def mutate(current: dict | None) -> dict:
            if current is None:
                raise errors.not_found("customresourcedefinitions", "apiextensions.k8s.io", name)
            new = copy.deepcopy(current)
            fins = new["metadata"].setdefault("finalizers", [])
            if CLEANUP_FINALIZER not in fins:
                fins.append(CLEANUP_FINALIZER)
            spec = new.get("spec") or {}
            names = dict(spec.get("names") or {})
            names.setdefault("singular", names.get("kind", "").lower())
            names.setdefault("listKind", names.get("kind", "") + "List")
            now = now_rfc3339()
            status = new.setdefault("status", {})
            status["acceptedNames"] = names
            status["conditions"] = [
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts",
                 "message": "no conflicts found"},
                {"type": "Established", "status": "True", "lastTransitionTime": now,
                 "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
            ]
            stored = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
            status["storedVersions"] = sorted(set((status.get("storedVersions") or []) + stored))
            return new

        await self.api.registry.guaranteed_update(served, None, name, mutate, ctx)

    async def _cleanup(self, crd: dict) -> None:
        """Start (once per CRD) the task that deletes its custom resources, then the finalizer."""
        name = crd["metadata"]["name"]
        if CLEANUP_FINALIZER not in (crd["metadata"].get("finalizers") or []):
            return
        task = self.cleanups.get(name)
        if task is None or task.done():
            self.cleanups[name] = asyncio.create_task(self._delete_instances(crd), name=f"crd-cleanup-{name}")

    async def _delete_instances(self, crd: dict) -> None:
        """Delete every instance through the registry, so that their own finalizers run, and wait
        until none is left (as upstream's CRD finalizer); then remove the cleanup finalizer."""
        name = crd["metadata"]["name"]
        while True:
            served = next((s for s in self.api.resources.served if s.crd_name == name), None)
            if served is None:
                break
            _, items = await self.api.registry.list_raw(served, None)
            if not items:
                break
            ctx = Context(user="system:apiserver", field_manager="kube-apiserver")
            for obj in items:
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    await self.api.registry.delete(served, obj["metadata"].get("namespace"),
                                                   obj["metadata"]["name"], {"propagationPolicy": "Background"}, ctx)
                except errors.StatusError as e:
                    if e.code not in (404, 409):
                        log.warning("CRD %s: deleting %s: %s", name, obj["metadata"]["name"], e.message)
            await asyncio.sleep(CLEANUP_RECHECK)
        ctx = Context(user="system:apiserver", field_manager="kube-apiserver", subresource="finalize")

        async def mutate(current: dict | None) -> dict:
            if current is None:
                raise errors.not_found("customresourcedefinitions", "apiextensions.k8s.io", name)
            new = copy.deepcopy(current)
            new["metadata"]["finalizers"] = [f for f in new["metadata"].get("finalizers") or []
                                             if f != CLEANUP_FINALIZER]
            return new

        try:
            await self.api.registry.guaranteed_update(self._served_crd(), None, name, mutate, ctx)
        except errors.StatusError as e:
            if e.code != 404:
                raise
