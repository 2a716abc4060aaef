"""Built-in admission: the plugins every upstream cluster has on by default that matter here.

Mutating (`Admission.admit`, in order):
- ServiceAccount: pods get ``spec.serviceAccountName: default`` (and the deprecated
  ``serviceAccount`` alias) when they name none.
- Priority: pods get ``spec.priority`` from their PriorityClass (0 without one) and its
  preemptionPolicy.
- DefaultTolerationSeconds: pods tolerate ``not-ready``/``unreachable`` NoExecute for 300s.
- Service IP and NodePort allocation (upstream does this in the service REST storage).

Validating (`Admission.validate`):
- NamespaceLifecycle: no new objects in a missing or terminating namespace; the
  ``default``, ``kube-system`` and ``kube-public`` namespaces cannot be deleted.

Plugins read other objects through the store directly: they are part of the API server.
"""

from __future__ import annotations

import asyncio
import ipaddress

import orjson

from kubeling.api import errors
from kubeling.storage.interface import CompactedError

IMMORTAL_NAMESPACES = ("default", "kube-system", "kube-public")
NAMESPACE_PREFIX = "/registry/core/namespaces/"
SERVICE_CIDR = "10.43.0.0/16"
NODE_PORT_RANGE = (30000, 32767)
TOLERATION_SECONDS = 300


class Admission:
    def __init__(self, store, service_cidr: str = SERVICE_CIDR) -> None:
        self.store = store
        self.service_net = ipaddress.ip_network(service_cidr)
        self._alloc_lock = asyncio.Lock()
        # namespace name -> is terminating; kept by `watch_namespaces`, so that creates need no read.
        self.namespaces: dict[str, bool] = {}

    async def watch_namespaces(self, stop: asyncio.Event) -> None:
        """Keep `namespaces` current from the store (list, then watch; relist on 410)."""
        while not stop.is_set():
            res = await self.store.list(NAMESPACE_PREFIX)
            self.namespaces = {kv.key[len(NAMESPACE_PREFIX):]: _terminating(orjson.loads(kv.value))
                               for kv in res.kvs}
            w = self.store.watch(NAMESPACE_PREFIX, res.revision + 1)
            try:
                async for ev in w:
                    name = ev.kv.key[len(NAMESPACE_PREFIX):]
                    if ev.type == "DELETE":
                        self.namespaces.pop(name, None)
                    else:
                        self.namespaces[name] = _terminating(orjson.loads(ev.kv.value))
            except CompactedError:
                continue
            finally:
                w.close()

    async def _get(self, key: str) -> dict | None:
        _, kv = await self.store.get(key)
        return orjson.loads(kv.value) if kv else None

    # -- mutating ------------------------------------------------------------------------------

    async def admit(self, op: str, served, obj: dict, old: dict | None, ctx) -> None:
        res = served.res
        if res.group == "" and res.resource == "pods" and op == "CREATE" and not ctx.subresource:
            await self._admit_pod(obj)
        elif res.group == "" and res.resource == "services" and not ctx.subresource:
            await self._allocate_service(obj, old, ctx)

    async def _admit_pod(self, pod: dict) -> None:
        spec = pod.setdefault("spec", {})
        if not spec.get("serviceAccountName"):
            spec["serviceAccountName"] = spec.get("serviceAccount") or "default"
        spec["serviceAccount"] = spec["serviceAccountName"]
        pc_name = spec.get("priorityClassName")
        if pc_name:
            pc = await self._get(f"/registry/scheduling.k8s.io/priorityclasses/{pc_name}")
            if pc is None and pc_name in ("system-cluster-critical", "system-node-critical"):
                pc = {"value": 2000000000 if pc_name == "system-cluster-critical" else 2000001000}
            if pc is None:
                raise errors.forbidden_status("pods", "", pod["metadata"].get("name", ""),
                                       f"no PriorityClass with name {pc_name} was found")
            spec.setdefault("priority", pc.get("value", 0))
            spec.setdefault("preemptionPolicy", pc.get("preemptionPolicy", "PreemptLowerPriority"))
        else:
            spec.setdefault("priority", 0)
            spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        tols = spec.setdefault("tolerations", [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(t.get("key") == key and t.get("effect") in ("NoExecute", None, "") for t in tols) and \
                    not any(t.get("operator") == "Exists" and not t.get("key") for t in tols):
                tols.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": TOLERATION_SECONDS})

    async def _allocate_service(self, svc: dict, old: dict | None, ctx) -> None:
        spec = svc.setdefault("spec", {})
        stype = spec.get("type", "ClusterIP")
        async with self._alloc_lock:
            used_ips, used_ports = await self._used(svc)
            if stype != "ExternalName":
                ip = spec.get("clusterIP")
                if not ip:
                    ip = self._next_ip(used_ips)
                    spec["clusterIP"] = ip
                elif ip != "None":
                    try:
                        addr = ipaddress.ip_address(ip)
                    except ValueError:
                        addr = None
                    if addr is not None and addr not in self.service_net:
                        raise errors.invalid("Service", "", svc["metadata"].get("name", ""), [
                            errors.invalid_value("spec.clusterIPs", [ip], f"failed to allocate IP {ip}: the "
                                                 f"provided IP ({ip}) is not in the valid range. The range of "
                                                 f"valid IPs is {self.service_net}")])
                    if addr is not None and ip in used_ips and (old is None or
                                                                old.get("spec", {}).get("clusterIP") != ip):
                        raise errors.invalid("Service", "", svc["metadata"].get("name", ""), [
                            errors.invalid_value("spec.clusterIPs", [ip], f"failed to allocate IP {ip}: "
                                                 f"provided IP is already allocated")])
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
            if stype in ("NodePort", "LoadBalancer"):
                for p in spec.get("ports") or []:
                    if not p.get("nodePort"):
                        p["nodePort"] = self._next_port(used_ports)
                    used_ports.add(p["nodePort"])
            elif old is not None:
                for p in spec.get("ports") or []:
                    p.pop("nodePort", None)

    async def _used(self, svc: dict) -> tuple[set[str], set[int]]:
        res = await self.store.list("/registry/core/services/")
        ips, ports = set(), set()
        me = (svc["metadata"].get("namespace"), svc["metadata"].get("name"))
        for kv in res.kvs:
            o = orjson.loads(kv.value)
            if (o["metadata"].get("namespace"), o["metadata"].get("name")) == me:
                continue
            s = o.get("spec", {})
            for ip in s.get("clusterIPs") or [s.get("clusterIP")]:
                if ip:
                    ips.add(ip)
            for p in s.get("ports") or []:
                if p.get("nodePort"):
                    ports.add(p["nodePort"])
        return ips, ports

    def _next_ip(self, used: set[str]) -> str:
        # .1 is the kubernetes Service; allocate upward from .2 (upstream picks at random).
        for i, addr in enumerate(self.service_net.hosts()):
            if i == 0:
                continue
            if str(addr) not in used:
                return str(addr)
        raise errors.StatusError(500, "InternalError", "Internal error occurred: failed to allocate a serviceIP: "
                                 "range is full")

    def _next_port(self, used: set[int]) -> int:
        for p in range(NODE_PORT_RANGE[0], NODE_PORT_RANGE[1] + 1):
            if p not in used:
                return p
        raise errors.StatusError(500, "InternalError", "Internal error occurred: failed to allocate a nodePort: "
                                 "range is full")

    # -- validating ----------------------------------------------------------------------------

    async def validate(self, op: str, served, obj: dict | None, old: dict | None, ctx) -> None:
        res = served.res
        if op == "DELETE" and res.group == "" and res.resource == "namespaces":
            name = (old or {}).get("metadata", {}).get("name")
            if name in IMMORTAL_NAMESPACES:
                raise errors.forbidden_status("namespaces", "", name, "this namespace may not be deleted")
            return
        if op != "CREATE" or not res.namespaced:
            return
        ns = obj["metadata"].get("namespace")
        terminating = self.namespaces.get(ns)
        if terminating is None:  # not seen by the cache yet: ask the store
            nsobj = await self._get(f"{NAMESPACE_PREFIX}{ns}")
            if nsobj is None:
                raise errors.not_found("namespaces", "", ns)
            terminating = _terminating(nsobj)
        if terminating:
            if res.group in ("", "events.k8s.io") and res.resource == "events":
                return
            raise errors.StatusError(403, "Forbidden", f"{res.group_resource} \"{obj['metadata'].get('name')}\" is "
                                     f"forbidden: unable to create new content in namespace {ns} because it is "
                                     f"being terminated",
                                     details={"name": obj["metadata"].get("name"), "group": res.group,
                                              "kind": res.resource,
                                              "causes": [{"reason": "NamespaceTerminating",
                                                          "message": f"namespace {ns} is being terminated",
                                                          "field": "metadata.namespace"}]})


def _terminating(ns: dict) -> bool:
    return bool(ns.get("metadata", {}).get("deletionTimestamp")) or \
        ns.get("status", {}).get("phase") == "Terminating"
