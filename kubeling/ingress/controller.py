"""From API objects to the nginx model: which Ingresses are ours, and `build_configuration`.

Which Ingresses this controller serves (as ingress-nginx decides):

- IngressClasses whose ``spec.controller`` is ours (``kubeling.io/ingress-nginx``) are ours;
- an Ingress is ours when its ``spec.ingressClassName`` names one of them; or, with no class
  name, when its legacy ``kubernetes.io/ingress.class`` annotation does; or, with neither, when
  one of our classes carries ``ingressclass.kubernetes.io/is-default-class: "true"``.

``build_configuration(ingresses, services, slices, secrets, cert_dir)`` is pure apart from
reading nothing at all: it returns the `Configuration` and a list of `Problem`s (Warning Events
for the controller to record on the Ingress). Precedence, as the API and ingress-nginx define it:

- Ingresses are taken oldest first (creationTimestamp, then namespace/name): when two claim the
  same host and path, the older one wins;
- within a host an ``Exact`` path beats a ``Prefix`` (or ImplementationSpecific) one of the same
  path; ``Prefix /foo/`` is ``Prefix /foo`` (a trailing slash is ignored);
- an Ingress's ``defaultBackend`` answers the paths of its hosts that no rule matches, and the
  oldest one also answers the catch-all server; without one, unmatched requests get 404;
- a backend resolves to the ready endpoints (``conditions.ready`` not false) of the Service port
  it names, by number or by name, through the Service's EndpointSlices (label
  ``kubernetes.io/service-name``); no Service, no such port or no ready endpoint gives 503;
- ``spec.tls`` hosts get the certificate of their ``kubernetes.io/tls`` Secret (same namespace)
  and an HTTP->HTTPS redirect (per location, as the annotations of `kubeling.ingress.annotations`
  may turn it off or force it); a rule host no ``hosts`` list names (an entry may list none)
  takes a certificate of its Ingress whose DNS names cover it; a missing or bad Secret leaves the host on the default
  certificate, without redirect, and says so in an Event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kubeling.ingress import annotations, ssl
from kubeling.ingress.types import (CATCH_ALL, PATH_EXACT, PATH_IMPL, PATH_PREFIX, Backend, Configuration, Endpoint,
                                    Location, Server, SSLCert)

CONTROLLER_NAME = "kubeling.io/ingress-nginx"
DEFAULT_CLASS = "nginx"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# Characters a path may hold (RFC 3986 path characters, as ingress-nginx's strict path check,
# plus percent-encoding): nothing that could end an nginx string or directive.
_PATH_RE = re.compile(r"^/[A-Za-z0-9\-._~/%!$&'()*+,;=:@]*$")
# A use-regex path: anything printable but what would end an nginx string or start a variable.
_REGEX_PATH_RE = re.compile(r'^/[^\s"\\{};]*$')


@dataclass
class Problem:
    ingress: dict
    reason: str
    message: str


def key_of(obj: dict) -> str:
    md = obj.get("metadata") or {}
    return f"{md.get('namespace', '')}/{md.get('name', '')}"


def our_classes(ingress_classes: list[dict], controller: str = CONTROLLER_NAME) -> tuple[set[str], bool]:
    """(names of the IngressClasses we implement, whether one of them is the default)."""
    names, default = set(), False
    for ic in ingress_classes:
        if (ic.get("spec") or {}).get("controller") == controller:
            names.add(ic["metadata"]["name"])
            ann = ic["metadata"].get("annotations") or {}
            default = default or ann.get(DEFAULT_CLASS_ANNOTATION) == "true"
    return names, default


def is_ours(ingress: dict, classes: set[str], default: bool) -> bool:
    spec = ingress.get("spec") or {}
    name = spec.get("ingressClassName")
    if name:
        return name in classes
    legacy = ((ingress.get("metadata") or {}).get("annotations") or {}).get(LEGACY_CLASS_ANNOTATION)
    if legacy:
        return legacy in classes
    return default


def _age(obj: dict) -> tuple:
    md = obj.get("metadata") or {}
    return (md.get("creationTimestamp") or "", md.get("namespace") or "", md.get("name") or "")


def normalise_path(path: str | None, path_type: str) -> str:
    path = path or "/"
    if path_type != PATH_EXACT and len(path) > 1:
        path = path.rstrip("/") or "/"
    return path


def endpoints_for(service: dict | None, port: dict, slices: list[dict]) -> tuple[list[Endpoint], str]:
    """The ready endpoints of the Service port a backend names, and why there are none."""
    if service is None:
        return [], "not found"
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return [], "is an ExternalName service, which this controller does not proxy to"
    number, name = port.get("number"), port.get("name")
    svc_port = next((p for p in spec.get("ports") or ()
                     if (number and p.get("port") == number) or (name and p.get("name") == name)), None)
    if svc_port is None:
        return [], f"has no port {number or name!r}"
    port_name = svc_port.get("name") or ""
    protocol = svc_port.get("protocol") or "TCP"
    out: list[Endpoint] = []
    for es in slices:
        if es.get("addressType") not in ("IPv4", "IPv6"):
            continue
        target = next((p.get("port") for p in es.get("ports") or ()
                       if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == protocol), None)
        if not target:
            continue
        for ep in es.get("endpoints") or ():
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for addr in ep.get("addresses") or ():
                out.append(Endpoint(addr, int(target)))
    return sorted(set(out), key=lambda e: (e.address, e.port)), "" if out else "has no ready endpoints"


def _wildcard_covers(pattern: str, host: str) -> bool:
    if not pattern.startswith("*."):
        return False
    head, _, rest = host.partition(".")
    return bool(head) and head != "*" and rest == pattern[2:]


def build_configuration(ingresses: list[dict], services: dict[str, dict], slices: dict[str, list[dict]],
                        secrets: dict[str, dict], cert_dir: Path | str) -> tuple[Configuration, list[Problem]]:
    """See the module docstring. ``services``/``secrets`` are keyed ``ns/name``; ``slices`` by the
    ``ns/service`` they belong to."""
    problems: list[Problem] = []
    backends: dict[str, Backend] = {}
    servers: dict[str, Server] = {}
    certs: dict[str, SSLCert | None] = {}
    cert_dir = Path(cert_dir)

    def backend_for(ing: dict, ref: dict | None) -> str | None:
        ns = ing["metadata"]["namespace"]
        svc = (ref or {}).get("service")
        if not svc:
            if ref and ref.get("resource"):
                problems.append(Problem(ing, "UnsupportedBackend",
                                        "resource backends are not supported by this controller"))
            return None
        port = svc.get("port") or {}
        port_text = str(port.get("number") or port.get("name") or "")
        name = f"{ns}-{svc.get('name')}-{port_text}"
        if name not in backends:
            eps, why = endpoints_for(services.get(f"{ns}/{svc.get('name')}"), port,
                                     slices.get(f"{ns}/{svc.get('name')}", []))
            backends[name] = Backend(name, ns, svc.get("name", ""), port_text, eps)
            if not eps:
                problems.append(Problem(ing, "ServiceUnavailable",
                                        f"service {ns}/{svc.get('name')}:{port_text} {why}: answering 503"))
        return name

    def server(host: str) -> Server:
        if host not in servers:
            servers[host] = Server(host)
        return servers[host]

    def cert_of(ing: dict, secret_name: str) -> SSLCert | None:
        ns = ing["metadata"]["namespace"]
        key = f"{ns}/{secret_name}"
        if key not in certs:
            certs[key] = None
            secret = secrets.get(key)
            if secret is None:
                problems.append(Problem(ing, "SecretNotFound",
                                        f"TLS secret {key} not found: using the default certificate"))
            else:
                try:
                    pem = ssl.pem_from_secret(secret)
                    certs[key] = SSLCert(key, str(cert_dir / ssl.pem_file_name(ns, secret_name, pem)), pem,
                                         ssl.certificate_hosts(pem))
                except ssl.InvalidCertificate as e:
                    problems.append(Problem(ing, "InvalidCertificate",
                                            f"TLS secret {key}: {e}: using the default certificate"))
        return certs[key]

    ordered = sorted(ingresses, key=_age)
    defaults: list[tuple[str, Location]] = []   # (host, default-backend location), applied last

    def add_ingress(ing: dict) -> None:
        spec = ing.get("spec") or {}
        ikey = key_of(ing)
        conf, unusable = annotations.parse(ing)
        for message in unusable:
            problems.append(Problem(ing, "InvalidAnnotation", message + ": using the default"))
        hosts: list[str] = []
        for rule in spec.get("rules") or ():
            host = rule.get("host") or CATCH_ALL
            srv = server(host)
            hosts.append(host)
            for p in ((rule.get("http") or {}).get("paths") or ()):
                ptype = p.get("pathType") or PATH_IMPL
                if ptype not in (PATH_EXACT, PATH_PREFIX, PATH_IMPL):
                    problems.append(Problem(ing, "InvalidPath", f"pathType {ptype!r} is not supported"))
                    continue
                if conf.use_regex and ptype != PATH_EXACT:
                    path = p.get("path") or "/"
                    if not _REGEX_PATH_RE.match(path):
                        problems.append(Problem(ing, "InvalidPath", f"path {path!r} is not a usable regular "
                                                                    "expression path"))
                        continue
                    srv.locations.append(Location(path, PATH_PREFIX, backend_for(ing, p.get("backend")), ikey,
                                                  config=conf, regex=True))
                    continue
                path = normalise_path(p.get("path"), ptype)
                if not _PATH_RE.match(path):
                    problems.append(Problem(ing, "InvalidPath",
                                            f"path {path!r} holds characters this controller does not accept"))
                    continue
                srv.locations.append(Location(path, PATH_EXACT if ptype == PATH_EXACT else PATH_PREFIX,
                                              backend_for(ing, p.get("backend")), ikey, config=conf))
        default_backend = spec.get("defaultBackend")
        if default_backend:
            be = backend_for(ing, default_backend)
            for host in dict.fromkeys(hosts + [CATCH_ALL]):
                defaults.append((host, Location("/", PATH_PREFIX, be, ikey, is_default_backend=True, config=conf)))
        for tls in spec.get("tls") or ():
            if not tls.get("secretName"):
                continue
            cert = cert_of(ing, tls["secretName"])
            for host in tls.get("hosts") or ():
                targets = [host] + [h for h in servers if _wildcard_covers(host, h)]
                for h in targets:
                    srv = server(h)
                    if srv.ssl is None and cert is not None:
                        srv.ssl = cert
        for host in hosts:
            # a rule host named by no tls entry takes a certificate of the Ingress valid for it
            # (ingress-nginx matches the certificate's names when the hosts lists do not)
            srv = servers[host]
            if srv.ssl is not None or host == CATCH_ALL:
                continue
            for tls in spec.get("tls") or ():
                cert = cert_of(ing, tls["secretName"]) if tls.get("secretName") else None
                if cert is not None and any(n == host or _wildcard_covers(n, host) for n in cert.hosts):
                    srv.ssl = cert
                    break

    for ing in ordered:
        try:
            add_ingress(ing)
        except Exception as e:  # noqa: BLE001 - one malformed object never stops the others
            problems.append(Problem(ing, "InvalidIngress", f"left out: {type(e).__name__}: {e}"))
    for host, loc in defaults:
        server(host).locations.append(loc)
    for srv in servers.values():
        # Exact before Prefix for one path; otherwise oldest Ingress first (the sort is stable).
        srv.locations.sort(key=lambda loc: loc.path_type != PATH_EXACT)
        srv.locations.append(Location("/", PATH_PREFIX, None))
        if srv.ssl is None:
            for pattern, s in list(servers.items()):
                if s.ssl is not None and _wildcard_covers(pattern, srv.hostname):
                    srv.ssl = s.ssl
    for srv in servers.values():
        regex = any(loc.regex for loc in srv.locations)   # ingress-nginx: one regex path makes all regex
        for loc in srv.locations:
            loc.regex = regex and loc.path_type != PATH_EXACT
            loc.ssl_redirect = loc.config.force_ssl_redirect or (srv.ssl is not None and loc.config.ssl_redirect)
    cfg = Configuration(backends=sorted(backends.values(), key=lambda b: b.name),
                        servers=sorted(servers.values(), key=lambda s: s.hostname))
    return cfg, problems
