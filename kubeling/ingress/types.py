"""The model the controller builds and the template renders, after ingress-nginx's
``pkg/apis/ingress`` types: a `Configuration` holds `Backend`s (nginx upstreams) and `Server`s
(one per host, plus the catch-all ``_``), each with its `Location`s.

Everything here is plain data: `kubeling.ingress.controller.build_configuration` makes it from
API objects, `kubeling.ingress.template.render` turns it into nginx.conf text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubeling.ingress.annotations import LocationConfig

CATCH_ALL = "_"           # the default server's name, as ingress-nginx's
PATH_PREFIX, PATH_EXACT, PATH_IMPL = "Prefix", "Exact", "ImplementationSpecific"


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@dataclass
class Backend:
    """One nginx upstream: the ready endpoints of one Service port."""

    name: str                      # <namespace>-<service>-<port>, ingress-nginx's upstream name
    namespace: str
    service: str
    port: str                      # the backend's port, as the Ingress names it (number or name)
    endpoints: list[Endpoint] = field(default_factory=list)


@dataclass
class Location:
    path: str                      # normalised: no trailing slash except "/"
    path_type: str                 # Prefix, Exact or ImplementationSpecific
    backend: str | None            # a Backend name; None answers 404 (no default backend)
    ingress: str = ""              # <namespace>/<name> of the Ingress that defined it
    is_default_backend: bool = False
    config: LocationConfig = field(default_factory=LocationConfig)   # from the Ingress's annotations
    ssl_redirect: bool = False     # answer plain HTTP with a 308 to HTTPS (decided by the model)
    regex: bool = False            # matched as a regular expression (the host has a use-regex Ingress)


@dataclass
class SSLCert:
    """A TLS Secret written as one PEM file (certificate chain then key), 0600."""

    secret: str                    # <namespace>/<name>
    pem_path: str
    pem: bytes = b""
    hosts: list[str] = field(default_factory=list)   # the certificate's DNS names (SANs, CN)


@dataclass
class Server:
    hostname: str                  # an exact host, "*.example.com", or CATCH_ALL
    locations: list[Location] = field(default_factory=list)
    ssl: SSLCert | None = None


@dataclass
class Configuration:
    backends: list[Backend] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)


@dataclass
class RenderOptions:
    """What the template needs besides the model: where nginx lives and listens."""

    prefix: str                    # nginx's -p: conf, pid, temp paths, certificates
    http_port: int = 80
    https_port: int = 443
    bind_address: str = "0.0.0.0"
    worker_processes: str = "auto"
    user: str = ""                 # the workers' user ("" = nginx's default)
    default_cert: str = ""         # the catch-all certificate (PEM of cert + key)
    worker_shutdown_timeout: str = "240s"
    max_open_files: int = 65536    # worker_rlimit_nofile: at most the hard RLIMIT_NOFILE nginx inherits
