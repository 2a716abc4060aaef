"""Service and Endpoints, as upstream's core validation.

A Service needs ports unless it is headless or an ExternalName; ports need
names once there is more than one; node ports live in 30000-32767; the
cluster IP never changes once allocated.
"""

from __future__ import annotations


from kubeling.api.errors import FieldError, duplicate, invalid_value, not_supported, required
from kubeling.api.validation import meta, util
from kubeling.api.validation.container import PROTOCOLS, validate_port_num_or_name
from kubeling.api.validation.kind import Kind
from kubeling.api.validation.meta import forbidden

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
SESSION_AFFINITIES = ("ClientIP", "None")
TRAFFIC_POLICIES = ("Cluster", "Local")
IP_FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
IP_FAMILIES = ("IPv4", "IPv6")
NODE_PORT_RANGE = (30000, 32767)


def _validate_ports(spec: dict, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    ports = spec.get("ports") or []
    stype = spec.get("type") or "ClusterIP"
    names: set[str] = set()
    seen: set[tuple] = set()
    node_ports: set[tuple] = set()
    for i, port in enumerate(ports):
        p = f"{path}[{i}]"
        name = port.get("name") or ""
        if len(ports) > 1 and not name:
            errs.append(required(p + ".name", ""))
        elif name:
            errs += meta.dns_label(name, p + ".name")
            if name in names:
                errs.append(duplicate(p + ".name", name))
            names.add(name)
        num = port.get("port")
        errs += [invalid_value(p + ".port", num, m) for m in util.is_valid_port_num(num)]
        proto = port.get("protocol") or "TCP"
        if proto not in PROTOCOLS:
            errs.append(not_supported(p + ".protocol", proto, PROTOCOLS))
        key = (num, proto)
        if key in seen:
            errs.append(duplicate(p, {"port": num, "protocol": proto}))
        seen.add(key)
        if port.get("targetPort") not in (None, 0):
            errs += validate_port_num_or_name(port["targetPort"], p + ".targetPort")
        if port.get("appProtocol"):
            errs += meta.qualified_name(port["appProtocol"], p + ".appProtocol")
        np = port.get("nodePort")
        if np:
            if stype in ("ClusterIP", "ExternalName"):
                errs.append(forbidden(p + ".nodePort", f"may not be used when `type` is '{stype}'"))
            elif not isinstance(np, int) or not NODE_PORT_RANGE[0] <= np <= NODE_PORT_RANGE[1]:
                errs.append(invalid_value(p + ".nodePort", np, "provided port is not in the valid range. The "
                                          f"range of valid ports is {NODE_PORT_RANGE[0]}-{NODE_PORT_RANGE[1]}"))
            elif (np, proto) in node_ports:
                errs.append(duplicate(p + ".nodePort", np))
            node_ports.add((np, proto))
    return errs


def _validate_cluster_ips(spec: dict, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    if spec.get("clusterIP") and spec.get("clusterIPs") and spec["clusterIPs"][0] != spec["clusterIP"]:
        errs.append(invalid_value(path + ".clusterIPs", spec["clusterIPs"], "first value must match `clusterIP`"))
    for i, ip in enumerate(ips):
        if ip == "None":
            if i > 0 or len(ips) > 1:
                errs.append(invalid_value(f"{path}.clusterIPs[{i}]", ip, "'None' must be the first and only value"))
        elif util.is_valid_ip(ip):
            errs.append(invalid_value(f"{path}.clusterIPs[{i}]", ip, "must be empty, 'None', or a valid IP address"))
    return errs


def validate_service(svc: dict) -> list[FieldError]:
    spec = svc.get("spec")
    if not isinstance(spec, dict):
        return [required("spec", "")]
    errs: list[FieldError] = []
    stype = spec.get("type") or "ClusterIP"
    if stype not in SERVICE_TYPES:
        errs.append(not_supported("spec.type", stype, SERVICE_TYPES))
    headless = spec.get("clusterIP") == "None"
    if stype == "ExternalName":
        ext = (spec.get("externalName") or "").rstrip(".")
        if not ext:
            errs.append(required("spec.externalName", ""))
        else:
            errs += [invalid_value("spec.externalName", spec["externalName"], m)
                     for m in util.is_dns1123_subdomain(ext)]
        if spec.get("clusterIP") and not headless:
            errs.append(forbidden("spec.clusterIP", "may not be set for ExternalName services"))
    elif not spec.get("ports") and not headless:
        errs.append(required("spec.ports", ""))
    errs += _validate_ports(spec, "spec.ports")
    errs += _validate_cluster_ips(spec, "spec")
    errs += meta.validate_labels(spec.get("selector"), "spec.selector")
    errs += meta.enum(spec.get("sessionAffinity"), "spec.sessionAffinity", SESSION_AFFINITIES)
    for k in ("externalTrafficPolicy", "internalTrafficPolicy"):
        errs += meta.enum(spec.get(k), f"spec.{k}", TRAFFIC_POLICIES)
    errs += meta.enum(spec.get("ipFamilyPolicy"), "spec.ipFamilyPolicy", IP_FAMILY_POLICIES)
    for i, fam in enumerate(spec.get("ipFamilies") or ()):
        errs += meta.enum(fam, f"spec.ipFamilies[{i}]", IP_FAMILIES, optional=False)
    for i, ip in enumerate(spec.get("externalIPs") or ()):
        errs += [invalid_value(f"spec.externalIPs[{i}]", ip, m) for m in util.is_valid_ip(ip)]
    for i, cidr in enumerate(spec.get("loadBalancerSourceRanges") or ()):
        errs += [invalid_value(f"spec.loadBalancerSourceRanges[{i}]", cidr, m) for m in util.is_valid_cidr(cidr)]
    if spec.get("allocateLoadBalancerNodePorts") is not None and stype != "LoadBalancer":
        errs.append(forbidden("spec.allocateLoadBalancerNodePorts", "may only be used when `type` is 'LoadBalancer'"))
    return errs


def validate_service_update(new: dict, old: dict) -> list[FieldError]:
    ns, os_ = new.get("spec") or {}, old.get("spec") or {}
    # Changing to or from ExternalName releases/allocates IPs: the only time they may change.
    if "ExternalName" in (ns.get("type"), os_.get("type")):
        return []
    old_ips = os_.get("clusterIPs") or ([os_["clusterIP"]] if os_.get("clusterIP") else [])
    new_ips = ns.get("clusterIPs") or ([ns["clusterIP"]] if ns.get("clusterIP") else [])
    if not old_ips:
        return []
    if not new_ips:
        # An empty value in an update means "keep": the strategy copies it from the old object.
        return []
    if new_ips[0] != old_ips[0]:
        return [invalid_value("spec.clusterIPs[0]", new_ips, "may not change once set")]
    errs: list[FieldError] = []
    lb_class_old, lb_class_new = os_.get("loadBalancerClass"), ns.get("loadBalancerClass")
    if lb_class_old and os_.get("type") == "LoadBalancer" and ns.get("type") == "LoadBalancer" \
            and lb_class_new != lb_class_old:
        errs.append(invalid_value("spec.loadBalancerClass", lb_class_new, "may not change once set"))
    return errs


def validate_endpoints(ep: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, subset in enumerate(ep.get("subsets") or ()):
        p = f"subsets[{i}]"
        addrs, nra = subset.get("addresses") or [], subset.get("notReadyAddresses") or []
        if not addrs and not nra:
            errs.append(required(p, "must specify `addresses` or `notReadyAddresses`"))
        for key, lst in (("addresses", addrs), ("notReadyAddresses", nra)):
            for j, a in enumerate(lst):
                ip = a.get("ip") or ""
                errs += [invalid_value(f"{p}.{key}[{j}].ip", ip, m) for m in util.is_valid_ip(ip)]
                if a.get("hostname"):
                    errs += meta.dns_label(a["hostname"], f"{p}.{key}[{j}].hostname")
        for j, port in enumerate(subset.get("ports") or ()):
            pp = f"{p}.ports[{j}]"
            if len(subset.get("ports") or ()) > 1 and not port.get("name"):
                errs.append(required(pp + ".name", ""))
            elif port.get("name"):
                errs += meta.dns_label(port["name"], pp + ".name")
            errs += [invalid_value(pp + ".port", port.get("port"), m) for m in util.is_valid_port_num(port.get("port"))]
            errs += meta.enum(port.get("protocol"), pp + ".protocol", PROTOCOLS)
    return errs


KINDS = {
    ("", "Service"): Kind(validate_service, validate_service_update, meta.name_is_dns1035_label),
    ("", "Endpoints"): Kind(validate_endpoints),
}
