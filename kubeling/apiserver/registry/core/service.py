"""Services (upstream ``pkg/registry/core/service``): ClusterIP and NodePort allocation.

Allocation happens in the store's ``begin_create`` / ``begin_update`` hooks (upstream's
``BeginCreate``/``BeginUpdate`` in the service REST storage), before validation, so validation
sees the allocated values; the hook's ``finish`` gives back what it took when the write fails, and
``after_delete`` releases a deleted Service's IP and node ports. The allocators are bitmaps held
in the store (`rangeallocation`), so several API servers can share them, and no write lists the
other Services.

- ``clusterIP`` unset: a free IP of the service CIDR; set: it must be in the CIDR and free
  (upstream's messages); ``None``: headless, nothing allocated; ExternalName: no IP.
- NodePort and LoadBalancer: each port without a ``nodePort`` gets a free one of the node port
  range; a given one must be free. A Service that stops being NodePort/LoadBalancer loses its
  node ports.
- On update, allocated values the client left out are kept (upstream's patchAllocatedValues).
- ``services/<[scheme:]name[:port]>/proxy/<path>`` (`ServiceProxyREST`): to a ready endpoint.
"""

from __future__ import annotations

import copy
import ipaddress
import random

from kubeling.api import errors, fields
from kubeling.api.defaults import core as defaults
from kubeling.api.printers import core as printers
from kubeling.api.validation import meta
from kubeling.api.validation import service as validation
from kubeling.apiserver.registry.core.rangeallocation import RangeAllocator, RangeFull
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.strategy import Strategy
from kubeling.apiserver.registry.subresources import status_subresources

SERVICE_CIDR = "10.43.0.0/16"
NODE_PORT_RANGE = (30000, 32767)
IPS_KEY = "/registry/ranges/serviceips"
PORTS_KEY = "/registry/ranges/servicenodeports"


class ServiceProxyREST:
    """``services/<[scheme:]name[:port]>/proxy/<path>``: upstream's ``ResourceLocation`` plus the
    upgrade-aware relay (`kubeling.apiserver.proxy.relay_to`).

    - A port *number* is turned into the name of the Service port that has it (upstream compares
      ``spec.ports[].port``); none: 503 ``no service port N found for service "web"``. A port
      name (or none, for an unnamed single port) is matched against the endpoint ports' names.
    - The endpoints are the Service's Endpoints object (as upstream); when it does not exist
      (no Endpoints controller runs), its EndpointSlices (label ``kubernetes.io/service-name``,
      endpoints whose ``ready`` is not false). A subset and an address are picked at random; an
      address whose ``targetRef`` Pod is gone or no longer has that IP is skipped (upstream's
      ``isValidAddress``). Nothing usable: 503 ``no endpoints available for service "<id>"``.
    - ``https:`` in the id speaks TLS to the endpoint, unverified (upstream's proxy transport).
    - A missing Service is a 404; ``.../proxy`` without a path is redirected to ``.../proxy/``.
    """

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store
        self.lookup = deps.lookup

    async def connect(self, served, namespace, name, request, info):
        from kubeling.apiserver import proxy
        svc_name, scheme, port_str = info.proxy_name or info.name, info.proxy_scheme, info.proxy_port
        svc = await self.store.get(served, namespace, svc_name)  # 404 for a Service that does not exist
        if port_str.isdigit():
            num = int(port_str)
            match = [p for p in (svc.get("spec") or {}).get("ports") or [] if p.get("port") == num]
            if not match:
                raise errors.StatusError(503, "ServiceUnavailable",
                                         f'no service port {num} found for service "{svc_name}"')
            port_str = match[0].get("name") or ""
        candidates = await self._candidates(namespace, svc_name, port_str)
        for ip, port, target in candidates:
            if await self._valid(namespace, ip, target):
                redirect = proxy.redirect_to_slash(request)
                if redirect is not None:
                    return redirect
                return await proxy.relay_to(request, ip, port, info.proxy_path or "/", request.query_string,
                                            ssl_ctx=proxy.target_ssl_context() if scheme == "https" else None,
                                            target_kind="service", wrap=True)
        raise errors.StatusError(503, "ServiceUnavailable", f'no endpoints available for service "{info.name}"')

    async def _candidates(self, namespace: str, svc_name: str, port_name: str) -> list[tuple[str, int, dict | None]]:
        """(ip, port, targetRef) to try, in upstream's random order: a random subset first, a
        random address first within it."""
        subsets = await self._subsets(namespace, svc_name)
        out: list[tuple[str, int, dict | None]] = []
        if not subsets:
            return out
        seed = random.randrange(len(subsets))
        for i in range(len(subsets)):
            addresses, ports = subsets[(seed + i) % len(subsets)]
            if not addresses:
                continue
            for p in ports:
                if (p.get("name") or "") != port_name or not p.get("port"):
                    continue
                start = random.randrange(len(addresses))
                for j in range(len(addresses)):
                    a = addresses[(start + j) % len(addresses)]
                    out.append((a["ip"], int(p["port"]), a.get("targetRef")))
        return out

    async def _subsets(self, namespace: str, svc_name: str) -> list[tuple[list[dict], list[dict]]]:
        """[(ready addresses, ports)]: from the Endpoints object, else from the EndpointSlices."""
        endpoints = self.lookup("", "v1", "endpoints")
        if endpoints is not None:
            try:
                eps = await self.store.get(endpoints, namespace, svc_name)
            except errors.StatusError as e:
                if e.code != 404:
                    raise
            else:
                return [([a for a in ss.get("addresses") or [] if a.get("ip")], ss.get("ports") or [])
                        for ss in eps.get("subsets") or []]
        slices = self.lookup("discovery.k8s.io", "v1", "endpointslices")
        if slices is None:
            return []
        _, items = await self.store.list_raw(slices, namespace)
        out = []
        for sl in items:
            labels = (sl.get("metadata") or {}).get("labels") or {}
            if labels.get("kubernetes.io/service-name") != svc_name or sl.get("addressType", "IPv4") == "FQDN":
                continue
            addrs = [{"ip": ep["addresses"][0], "targetRef": ep.get("targetRef")} for ep in sl.get("endpoints") or []
                     if ep.get("addresses") and (ep.get("conditions") or {}).get("ready") is not False]
            out.append((addrs, sl.get("ports") or []))
        return out

    async def _valid(self, namespace: str, ip: str, target: dict | None) -> bool:
        """Upstream's isValidAddress: an address pointing at a Pod must still be that Pod's."""
        if not target or target.get("kind") != "Pod":
            return True
        pods = self.lookup("", "v1", "pods")
        if pods is None:
            return True
        try:
            pod = await self.store.get(pods, target.get("namespace") or namespace, target.get("name", ""))
        except errors.StatusError:
            return False
        status = pod.get("status") or {}
        return ip == status.get("podIP") or ip in [p.get("ip") for p in status.get("podIPs") or []]


def _ports(spec: dict) -> list[int]:
    return [p["nodePort"] for p in spec.get("ports") or [] if isinstance(p, dict) and p.get("nodePort")]


def _wants_node_ports(spec: dict) -> bool:
    return spec.get("type") in ("NodePort", "LoadBalancer")


def _wants_health_check_port(spec: dict) -> bool:
    """Upstream's NeedsHealthCheck: a LoadBalancer with externalTrafficPolicy Local."""
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _wants_ip(spec: dict) -> bool:
    return spec.get("type", "ClusterIP") != "ExternalName" and spec.get("clusterIP") != "None"


class ServiceStrategy(Strategy):
    group, resource, kind = "", "services", "Service"
    name_rule = staticmethod(meta.name_is_dns1035_label)
    printer = printers.SERVICE
    field_set = fields.SERVICE
    status_subresource = True
    returns_deleted_object = True
    subresources = {**status_subresources(), "proxy": ServiceProxyREST}

    def __init__(self, config=None) -> None:
        super().__init__(config)
        cidr = getattr(config, "service_cidr", None) or SERVICE_CIDR
        self.net = ipaddress.ip_network(cidr)
        self.port_range = getattr(config, "node_port_range", None) or NODE_PORT_RANGE
        self._ips: RangeAllocator | None = None
        self._node_ports: RangeAllocator | None = None

    def initial_status(self, obj):
        return {"loadBalancer": {}}

    def defaults(self, obj):
        defaults.set_object_defaults_service(obj)

    def validate(self, obj):
        return validation.validate_service(obj)

    def validate_update(self, obj, old):
        return validation.validate_service_update(obj, old)

    def prepare_for_update(self, new, old):
        super().prepare_for_update(new, old)
        ns, os_ = new.setdefault("spec", {}), old.get("spec", {})
        for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if not ns.get(k) and os_.get(k) and ns.get("type", "ClusterIP") != "ExternalName":
                ns[k] = copy.deepcopy(os_[k])
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in os_.get("ports") or []}
        for p in ns.get("ports") or []:
            prev = old_ports.get((p.get("port"), p.get("protocol", "TCP")))
            if prev and not p.get("nodePort") and prev.get("nodePort") and _wants_node_ports(ns):
                p["nodePort"] = prev["nodePort"]

    # -- allocation ----------------------------------------------------------------------------

    def allocators(self, store) -> tuple[RangeAllocator, RangeAllocator]:
        if self._ips is None:
            size = self.net.num_addresses - (2 if self.net.version == 4 else 1)
            self._ips = RangeAllocator(store, IPS_KEY, "serviceips", str(self.net), size)
            lo, hi = self.port_range
            self._node_ports = RangeAllocator(store, PORTS_KEY, "servicenodeports", f"{lo}-{hi}", hi - lo + 1)
        return self._ips, self._node_ports

    def _ip_offset(self, ip: str) -> int | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if addr not in self.net:
            return -1
        return int(addr) - int(self.net.network_address) - 1

    def _ip_at(self, offset: int) -> str:
        return str(ipaddress.ip_address(int(self.net.network_address) + 1 + offset))

    async def _take_ip(self, ips: RangeAllocator, svc: dict, dry_run: bool) -> int | None:
        spec = svc["spec"]
        name = svc["metadata"].get("name", "")
        ip = spec.get("clusterIP")
        if not ip:
            try:
                offset = await ips.allocate_next(dry_run=dry_run)
            except RangeFull:
                raise errors.internal("failed to allocate a serviceIP: range is full") from None
            spec["clusterIP"] = self._ip_at(offset)
        else:
            offset = self._ip_offset(ip)
            if offset is None:
                return None  # not an IP: validation reports it
            if offset < 0 or offset >= ips.size:
                raise errors.invalid("Service", "", name, [errors.invalid_value(
                    "spec.clusterIPs", [ip], f"failed to allocate IP {ip}: the provided IP ({ip}) is not in the "
                    f"valid range. The range of valid IPs is {self.net}")])
            if not await ips.allocate(offset, dry_run=dry_run):
                raise errors.invalid("Service", "", name, [errors.invalid_value(
                    "spec.clusterIPs", [ip], f"failed to allocate IP {ip}: provided IP is already allocated")])
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        return None if dry_run else offset

    async def _take_port(self, node_ports: RangeAllocator, svc: dict, idx: int, dry_run: bool) -> int | None:
        """``spec.ports[idx].nodePort``: the one asked for, or the next free one."""
        return await self._take_node_port(node_ports, svc, svc["spec"]["ports"][idx], "nodePort",
                                          f"spec.ports[{idx}].nodePort", dry_run)

    async def _take_health_check_port(self, node_ports: RangeAllocator, svc: dict, dry_run: bool) -> int | None:
        """spec.healthCheckNodePort, from the node port range (upstream allocates it there)."""
        return await self._take_node_port(node_ports, svc, svc["spec"], "healthCheckNodePort",
                                          "spec.healthCheckNodePort", dry_run)

    async def _take_node_port(self, node_ports: RangeAllocator, svc: dict, holder: dict, key: str, path: str,
                              dry_run: bool) -> int | None:
        """``holder[key]`` from the node port range: a free one when unset (written back), else the
        one given, which must be in the range and free (upstream's messages). Returns the offset
        taken (None on a dry run, or when validation will refuse the value)."""
        lo, _ = self.port_range
        want = holder.get(key)
        if not want:
            try:
                offset = await node_ports.allocate_next(dry_run=dry_run)
            except RangeFull:
                raise errors.internal(f"failed to allocate a {key}: range is full") from None
            holder[key] = lo + offset
            return None if dry_run else offset
        if not isinstance(want, int) or isinstance(want, bool):
            return None  # validation reports it
        name = svc["metadata"].get("name", "")
        offset = want - lo
        if offset < 0 or offset >= node_ports.size:
            raise errors.invalid("Service", "", name, [errors.invalid_value(
                path, want, f"provided port is not in the valid range. The range of valid "
                f"ports is {lo}-{lo + node_ports.size - 1}")])
        if not await node_ports.allocate(offset, dry_run=dry_run):
            raise errors.invalid("Service", "", name, [
                errors.invalid_value(path, want, "provided port is already allocated")])
        return None if dry_run else offset

    async def begin_create(self, store, served, obj, ctx):
        return await self._allocate(store, obj, None, ctx.dry_run)

    async def begin_update(self, store, served, new, old, ctx):
        return await self._allocate(store, new, old, ctx.dry_run)

    async def _allocate(self, store, svc: dict, old: dict | None, dry_run: bool):
        """Take what ``svc`` needs beyond what ``old`` holds; return ``finish(ok)``, which gives
        back the new values if the write failed, or the values ``old`` held and ``svc`` dropped if
        it succeeded."""
        ips, node_ports = self.allocators(store)
        spec = svc.setdefault("spec", {})
        old_spec = (old or {}).get("spec") or {}
        lo, _ = self.port_range
        taken_ip: list[int] = []
        taken_ports: list[int] = []
        try:
            had_ip = old is not None and _wants_ip(old_spec) and old_spec.get("clusterIP")
            if _wants_ip(spec) and not (had_ip and spec.get("clusterIP") == old_spec.get("clusterIP")):
                off = await self._take_ip(ips, svc, dry_run)
                if off is not None:
                    taken_ip.append(off)
            if _wants_node_ports(spec):
                held = set(_ports(old_spec)) if _wants_node_ports(old_spec) else set()
                for idx, p in enumerate(spec.get("ports") or []):
                    if isinstance(p, dict) and not (p.get("nodePort") and p["nodePort"] in held):
                        off = await self._take_port(node_ports, svc, idx, dry_run)
                        if off is not None:
                            taken_ports.append(off)
            elif old is not None:
                for p in spec.get("ports") or []:
                    if isinstance(p, dict):
                        p.pop("nodePort", None)
            if _wants_health_check_port(spec):
                held_hc = old_spec.get("healthCheckNodePort") if _wants_health_check_port(old_spec) else None
                if held_hc and not spec.get("healthCheckNodePort"):
                    spec["healthCheckNodePort"] = held_hc            # an update keeps it, as upstream
                if not (held_hc and spec.get("healthCheckNodePort") == held_hc):
                    off = await self._take_health_check_port(node_ports, svc, dry_run)
                    if off is not None:
                        taken_ports.append(off)
            elif old is not None:
                spec.pop("healthCheckNodePort", None)
        except BaseException:
            if taken_ip:
                await ips.release(*taken_ip)
            if taken_ports:
                await node_ports.release(*taken_ports)
            raise
        if dry_run:
            return None
        dropped_ip = [] if old is None else self._held_ips(old_spec, spec)
        kept = set(self._held_ports(spec))
        dropped_ports = [] if old is None else [p - lo for p in self._held_ports(old_spec) if p not in kept]

        async def finish(ok: bool) -> None:
            give_ip, give_ports = (dropped_ip, dropped_ports) if ok else (taken_ip, taken_ports)
            if give_ip:
                await ips.release(*give_ip)
            if give_ports:
                await node_ports.release(*give_ports)
        return finish

    def _held_ips(self, old_spec: dict, spec: dict) -> list[int]:
        if not (_wants_ip(old_spec) and old_spec.get("clusterIP")):
            return []
        if _wants_ip(spec) and spec.get("clusterIP") == old_spec.get("clusterIP"):
            return []
        off = self._ip_offset(old_spec["clusterIP"])
        return [off] if off is not None and off >= 0 else []

    def _held_ports(self, spec: dict) -> list[int]:
        held = _ports(spec) if _wants_node_ports(spec) else []
        hc = spec.get("healthCheckNodePort")
        if _wants_health_check_port(spec) and isinstance(hc, int) and not isinstance(hc, bool) and hc:
            held.append(hc)
        return held

    async def after_delete(self, store, served, obj):
        ips, node_ports = self.allocators(store)
        spec = obj.get("spec") or {}
        if _wants_ip(spec) and spec.get("clusterIP"):
            off = self._ip_offset(spec["clusterIP"])
            if off is not None and off >= 0:
                await ips.release(off)
        lo, _ = self.port_range
        ports = [p - lo for p in self._held_ports(spec)]
        if ports:
            await node_ports.release(*ports)

    async def repair(self, store, served) -> None:
        """At start: every IP and node port a stored Service holds is marked taken."""
        ips, node_ports = self.allocators(store)
        _, services = await store.list_raw(served, None)
        lo, _ = self.port_range
        in_ips, in_ports = set(), set()
        for svc in services:
            spec = svc.get("spec") or {}
            if _wants_ip(spec) and spec.get("clusterIP"):
                off = self._ip_offset(spec["clusterIP"])
                if off is not None and off >= 0:
                    in_ips.add(off)
            in_ports.update(p - lo for p in self._held_ports(spec))
        await ips.repair(in_ips)
        await node_ports.repair(in_ports)
