"""networking.k8s.io/v1 (Ingress, IngressClass, NetworkPolicy) and discovery.k8s.io/v1 EndpointSlice."""

from __future__ import annotations

from typing import Any

from kubeling.api.errors import FieldError, duplicate, invalid_value, not_supported, required
from kubeling.api.validation import meta, util
from kubeling.api.validation.container import PROTOCOLS, validate_port_num_or_name
from kubeling.api.validation.kind import Kind
from kubeling.api.validation.meta import forbidden

PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")
# Sequences a proxy would normalise away, so a path containing them can never match as written.
INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
INVALID_PATH_SUFFIXES = ("/..", "/.")
POLICY_TYPES = ("Ingress", "Egress")
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
MAX_ENDPOINTS = 1000
MAX_ADDRESSES = 100
INGRESS_CLASS_CONTROLLER_MAX = 250


# --- Ingress ----------------------------------------------------------------------------------------

def _backend(b: Any, path: str) -> list[FieldError]:
    if not isinstance(b, dict):
        return [required(path, "")]
    svc, res = b.get("service"), b.get("resource")
    if svc is not None and res is not None:
        return [invalid_value(path, "", "cannot set both resource and service backends")]
    if res is not None:
        errs: list[FieldError] = []
        for k in ("kind", "name"):
            if not res.get(k):
                errs.append(required(f"{path}.resource.{k}", ""))
        return errs
    if svc is None:
        return [invalid_value(path, "", "resource or service backend is required")]
    errs = []
    name = svc.get("name") or ""
    if not name:
        errs.append(required(path + ".service.name", ""))
    else:
        errs += [invalid_value(path + ".service.name", name, m) for m in util.is_dns1035_label(name)]
    port = svc.get("port") or {}
    pname, pnum = port.get("name"), port.get("number")
    if pname and pnum:
        errs.append(invalid_value(path + ".service.port", port, "cannot set both port name & port number"))
    elif pname:
        errs += [invalid_value(path + ".service.port.name", pname, m) for m in util.is_valid_port_name(pname)]
    elif pnum is not None:
        errs += [invalid_value(path + ".service.port.number", pnum, m) for m in util.is_valid_port_num(pnum)]
    else:
        errs.append(required(path + ".service.port", "port name or number is required"))
    return errs


def _host(host: str, path: str) -> list[FieldError]:
    if not util.is_valid_ip(host):
        return [invalid_value(path, host, "must be a DNS name, not an IP address")]
    if "*" in host:
        return [invalid_value(path, host, m) for m in util.is_wildcard_dns1123_subdomain(host)]
    return [invalid_value(path, host, m) for m in util.is_dns1123_subdomain(host)]


def _http_path(hp: dict, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    ptype, p = hp.get("pathType"), hp.get("path") or ""
    if not ptype:
        errs.append(required(path + ".pathType", "pathType must be specified"))
    elif ptype not in PATH_TYPES:
        errs.append(not_supported(path + ".pathType", ptype, PATH_TYPES))
    if ptype in ("Exact", "Prefix"):
        if not p.startswith("/"):
            errs.append(invalid_value(path + ".path", p, "must be an absolute path"))
        else:
            for seq in INVALID_PATH_SEQUENCES:
                if seq in p:
                    errs.append(invalid_value(path + ".path", p, f"must not contain '{seq}'"))
            for suf in INVALID_PATH_SUFFIXES:
                if p.endswith(suf):
                    errs.append(invalid_value(path + ".path", p, f"cannot end with '{suf}'"))
    elif p and not p.startswith("/"):
        errs.append(invalid_value(path + ".path", p, "must be an absolute path"))
    return errs + _backend(hp.get("backend"), path + ".backend")


def validate_ingress(ing: dict) -> list[FieldError]:
    spec = ing.get("spec") or {}
    errs: list[FieldError] = []
    rules = spec.get("rules") or []
    if not rules and spec.get("defaultBackend") is None:
        errs.append(invalid_value("spec.rules", rules, "either `defaultBackend` or `rules` must be specified"))
    if spec.get("defaultBackend") is not None:
        errs += _backend(spec["defaultBackend"], "spec.defaultBackend")
    for i, rule in enumerate(rules):
        p = f"spec.rules[{i}]"
        if rule.get("host"):
            errs += _host(rule["host"], p + ".host")
        http = rule.get("http")
        if http is None:
            continue
        paths = http.get("paths") or []
        if not paths:
            errs.append(required(p + ".http.paths", ""))
        for j, hp in enumerate(paths):
            errs += _http_path(hp, f"{p}.http.paths[{j}]")
    for i, tls in enumerate(spec.get("tls") or ()):
        for j, host in enumerate(tls.get("hosts") or ()):
            hp = f"spec.tls[{i}].hosts[{j}]"
            if "*" in host:
                errs += [invalid_value(hp, host, m) for m in util.is_wildcard_dns1123_subdomain(host)]
            else:
                errs += [invalid_value(hp, host, m) for m in util.is_dns1123_subdomain(host)]
    if spec.get("ingressClassName"):
        errs += meta.dns_subdomain(spec["ingressClassName"], "spec.ingressClassName")
    return errs


def validate_ingress_class(ic: dict) -> list[FieldError]:
    spec = ic.get("spec") or {}
    errs: list[FieldError] = []
    ctrl = spec.get("controller") or ""
    if not ctrl:
        errs.append(required("spec.controller", ""))
    else:
        if len(ctrl) > INGRESS_CLASS_CONTROLLER_MAX:
            errs.append(FieldError("TooLong", "spec.controller", f"may not be more than "
                                                                 f"{INGRESS_CLASS_CONTROLLER_MAX} bytes", ctrl))
        prefix, _, rest = ctrl.partition("/")
        if not rest or util.is_dns1123_subdomain(prefix):
            errs.append(invalid_value("spec.controller", ctrl, "must be a domain-prefixed path (such as "
                                                               "\"acme.io/foo\")"))
    params = spec.get("parameters")
    if params is not None:
        for k in ("kind", "name"):
            if not params.get(k):
                errs.append(required(f"spec.parameters.{k}", ""))
        scope = params.get("scope")
        errs += meta.enum(scope, "spec.parameters.scope", ("Cluster", "Namespace"))
        if scope == "Namespace" and not params.get("namespace"):
            errs.append(required("spec.parameters.namespace", "`parameters.scope` is set to 'Namespace'"))
        if scope != "Namespace" and params.get("namespace"):
            errs.append(forbidden("spec.parameters.namespace", "`parameters.scope` is set to 'Cluster'"))
    return errs


def validate_ingress_class_update(new: dict, old: dict) -> list[FieldError]:
    return meta.immutable((new.get("spec") or {}).get("controller"), (old.get("spec") or {}).get("controller"),
                          "spec.controller")


# --- NetworkPolicy ----------------------------------------------------------------------------------

def _np_ports(ports: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, port in enumerate(ports or ()):
        p = f"{path}[{i}]"
        errs += meta.enum(port.get("protocol"), p + ".protocol", PROTOCOLS)
        if port.get("port") is not None:
            errs += validate_port_num_or_name(port["port"], p + ".port")
        end = port.get("endPort")
        if end is not None:
            if not isinstance(port.get("port"), int):
                errs.append(required(p + ".port", "must be specified when endPort is specified")
                            if port.get("port") is None else
                            forbidden(p + ".endPort", "may not be specified when `port` is non-numeric"))
            elif end < port["port"]:
                errs.append(invalid_value(p + ".endPort", end, "must be greater than or equal to `port`"))
    return errs


def _np_peers(peers: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, peer in enumerate(peers or ()):
        p = f"{path}[{i}]"
        selectors = [k for k in ("podSelector", "namespaceSelector") if peer.get(k) is not None]
        block = peer.get("ipBlock")
        if block is not None and selectors:
            errs.append(forbidden(p, "may not specify both podSelector/namespaceSelector and ipBlock"))
        elif block is None and not selectors:
            errs.append(required(p, "must specify a peer"))
        for k in selectors:
            errs += meta.validate_label_selector(peer[k], f"{p}.{k}")
        if block is not None:
            cidr = block.get("cidr") or ""
            if not cidr:
                errs.append(required(p + ".ipBlock.cidr", ""))
            else:
                errs += [invalid_value(p + ".ipBlock.cidr", cidr, m) for m in util.is_valid_cidr(cidr)]
            for j, ex in enumerate(block.get("except") or ()):
                errs += [invalid_value(f"{p}.ipBlock.except[{j}]", ex, m) for m in util.is_valid_cidr(ex)]
    return errs


def validate_network_policy(np: dict) -> list[FieldError]:
    spec = np.get("spec") or {}
    errs = meta.validate_label_selector(spec.get("podSelector"), "spec.podSelector")
    for i, rule in enumerate(spec.get("ingress") or ()):
        errs += _np_ports(rule.get("ports"), f"spec.ingress[{i}].ports")
        errs += _np_peers(rule.get("from"), f"spec.ingress[{i}].from")
    for i, rule in enumerate(spec.get("egress") or ()):
        errs += _np_ports(rule.get("ports"), f"spec.egress[{i}].ports")
        errs += _np_peers(rule.get("to"), f"spec.egress[{i}].to")
    types = spec.get("policyTypes") or []
    for i, t in enumerate(types):
        errs += meta.enum(t, f"spec.policyTypes[{i}]", POLICY_TYPES, optional=False)
    if len(types) > len(POLICY_TYPES):
        errs.append(invalid_value("spec.policyTypes", types, "may not specify more than two policyTypes"))
    return errs


# --- EndpointSlice ----------------------------------------------------------------------------------

def validate_endpoint_slice(es: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    atype = es.get("addressType")
    if not atype:
        errs.append(required("addressType", ""))
    elif atype not in ADDRESS_TYPES:
        errs.append(not_supported("addressType", atype, ADDRESS_TYPES))
    endpoints = es.get("endpoints") or []
    if len(endpoints) > MAX_ENDPOINTS:
        errs.append(FieldError("TooMany", "endpoints", f"must have at most {MAX_ENDPOINTS} items", len(endpoints)))
    for i, ep in enumerate(endpoints):
        p = f"endpoints[{i}]"
        addrs = ep.get("addresses") or []
        if not addrs:
            errs.append(required(p + ".addresses", "must contain at least 1 address"))
        elif len(addrs) > MAX_ADDRESSES:
            errs.append(FieldError("TooMany", p + ".addresses", f"must have at most {MAX_ADDRESSES} items",
                                   len(addrs)))
        for j, a in enumerate(addrs):
            ap = f"{p}.addresses[{j}]"
            if atype in ("IPv4", "IPv6"):
                errs += [invalid_value(ap, a, m) for m in util.is_valid_ip(a)]
            elif atype == "FQDN":
                errs += [invalid_value(ap, a, m) for m in util.is_dns1123_subdomain(a)]
        if ep.get("hostname"):
            errs += meta.dns_label(ep["hostname"], p + ".hostname")
        if ep.get("nodeName"):
            errs += meta.dns_subdomain(ep["nodeName"], p + ".nodeName")
    names: set[str] = set()
    for i, port in enumerate(es.get("ports") or ()):
        p = f"ports[{i}]"
        name = port.get("name") or ""
        if name:
            errs += meta.dns_label(name, p + ".name")
        if name in names:
            errs.append(duplicate(p + ".name", name))
        names.add(name)
        errs += meta.enum(port.get("protocol"), p + ".protocol", PROTOCOLS)
        if port.get("port") is not None:
            errs += [invalid_value(p + ".port", port["port"], m) for m in util.is_valid_port_num(port["port"])]
    return errs


def validate_endpoint_slice_update(new: dict, old: dict) -> list[FieldError]:
    return meta.immutable(new.get("addressType"), old.get("addressType"), "addressType")


KINDS = {
    ("networking.k8s.io", "Ingress"): Kind(validate_ingress),
    ("networking.k8s.io", "IngressClass"): Kind(validate_ingress_class, validate_ingress_class_update,
                                                namespaced=False),
    ("networking.k8s.io", "NetworkPolicy"): Kind(validate_network_policy),
    ("discovery.k8s.io", "EndpointSlice"): Kind(validate_endpoint_slice, validate_endpoint_slice_update),
}
