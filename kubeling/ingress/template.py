"""nginx.conf from a `Configuration` (ingress-nginx's ``nginx.tmpl``, written as code).

Contracts:

- ``render(cfg, opts)`` is a pure function of its arguments: the same model gives the same text
  byte for byte (the controller reloads nginx only when the text changes). Servers come sorted by
  name with the catch-all ``_`` first; upstreams by name; locations longest path first (nginx
  picks the longest prefix itself, the order is for readers and for stable output).
- Path semantics (networking.k8s.io/v1):
  ``Exact /foo``  -> ``location = "/foo"``;
  ``Prefix /foo`` -> ``location = "/foo"`` and ``location "/foo/"``: element-wise, so ``/foo``
  and ``/foo/bar`` match and ``/foobar`` does not (as ingress-nginx adds an exact location next
  to the prefix one); ``Prefix /`` -> ``location "/"``; ImplementationSpecific is Prefix.
  A host with a ``use-regex`` Ingress has every non-Exact path as ``location ~* "^<path>"``,
  longest first (nginx takes the first regular expression that matches), and
  ``rewrite-target`` becomes ``rewrite "(?i)<path>" <target> break;``, as ingress-nginx writes them.
  When two paths would make the same nginx location the model decides who wins
  (`kubeling.ingress.controller`); the template never emits one location twice.
- Hosts: an exact host is an exact ``server_name``; ``*.example.com`` becomes the regular
  expression ``~^[^.]+\\.example\\.com$`` — a wildcard covers exactly one DNS label, as the
  Ingress API defines (nginx's own ``*.`` would match any depth). nginx prefers exact names over
  regular expressions, as the API prefers an exact host over a wildcard.
- Every server listens on the HTTP and the HTTPS port; a server without a certificate of its
  own answers TLS with the controller's default (self-signed) certificate, SNI picks the
  server. A location the model marks ``ssl_redirect`` answers plain HTTP with 308 to HTTPS
  (ingress-nginx's ``ssl-redirect``/``http-redirect-code``); a server with TLS sends HSTS on
  HTTPS (its ``hsts`` default). Per-location annotations (`kubeling.ingress.annotations`) become
  directives inside the location.
- A location whose backend has no ready endpoint answers 503; one with no backend at all
  (the catch-all without a ``defaultBackend``) answers 404.
"""

from __future__ import annotations

import re

from kubeling.ingress.types import CATCH_ALL, PATH_EXACT, Backend, Configuration, Location, RenderOptions, Server


def quote(text: str) -> str:
    """An nginx string literal: double quotes, with ``\\`` and ``"`` escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def server_name(host: str) -> str:
    if host == CATCH_ALL:
        return "_"
    if host.startswith("*."):
        return "~^[^.]+" + re.escape(host[1:]).replace("\\-", "-") + "$"
    return host


def location_blocks(loc: Location) -> list[tuple[str, str]]:
    """(nginx location modifier + path, the path) pairs one model location becomes."""
    if loc.path_type == PATH_EXACT:
        return [("= " + quote(loc.path), loc.path)]
    if loc.regex:
        return [("~* " + quote("^" + loc.path), loc.path)]
    if loc.path == "/":
        return [(quote("/"), "/")]
    return [("= " + quote(loc.path), loc.path), (quote(loc.path + "/"), loc.path + "/")]


def _location_body(loc: Location, backends: dict[str, Backend], opts: RenderOptions) -> list[str]:
    out = []
    if loc.ssl_redirect:
        port = "" if opts.https_port == 443 else f":{opts.https_port}"
        out += ["if ($scheme = http) {", f"    return 308 https://$host{port}$request_uri;", "}"]
    if loc.backend is None:
        return out + ["return 404;"]
    be = backends.get(loc.backend)
    if be is None or not be.endpoints:
        return out + ["return 503;"]
    conf = loc.config
    if conf.rewrite_target and loc.regex:
        out.append(f"rewrite {quote('(?i)' + loc.path)} {quote(conf.rewrite_target)} break;")
    if conf.body_size:
        out += [f"client_max_body_size {conf.body_size};", "proxy_request_buffering off;"]
    for name, value in (("connect", conf.connect_timeout), ("send", conf.send_timeout), ("read", conf.read_timeout)):
        if value:
            out.append(f"proxy_{name}_timeout {value}s;")
    scheme = "https" if conf.backend_protocol == "HTTPS" else "http"
    if scheme == "https":
        out += ["proxy_ssl_server_name on;", "proxy_ssl_verify off;"]
    out.append(f"proxy_pass {scheme}://{be.name};")
    return out


def _server(server: Server, backends: dict[str, Backend], opts: RenderOptions) -> list[str]:
    default = " default_server" if server.hostname == CATCH_ALL else ""
    addr = opts.bind_address if ":" not in opts.bind_address else f"[{opts.bind_address}]"
    lines = [
        "server {",
        f"    server_name {server_name(server.hostname)};",
        f"    listen {addr}:{opts.http_port}{default};",
        f"    listen {addr}:{opts.https_port}{default} ssl;",
    ]
    if server.ssl is not None:
        lines += [f"    ssl_certificate {quote(server.ssl.pem_path)};",
                  f"    ssl_certificate_key {quote(server.ssl.pem_path)};",
                  "    add_header Strict-Transport-Security $hsts_header always;"]
    blocks: list[tuple[str, str, Location]] = []
    seen: set[str] = set()
    for loc in server.locations:
        for spec, path in location_blocks(loc):
            if spec not in seen:
                seen.add(spec)
                blocks.append((spec, path, loc))
    # longest path first, an exact location before a prefix one of the same path
    blocks.sort(key=lambda b: (-len(b[2].path), not b[0].startswith("="), b[0]))
    for spec, _, loc in blocks:
        lines.append(f"    location {spec} {{")
        lines += ["        " + line for line in _location_body(loc, backends, opts)]
        lines.append("    }")
    lines.append("}")
    return lines


def render(cfg: Configuration, opts: RenderOptions) -> str:
    p = opts.prefix.rstrip("/")
    backends = {b.name: b for b in cfg.backends}
    out = ["# Generated by kubeling ingress: every change here is lost at the next sync.",
           "daemon off;",
           f"worker_processes {opts.worker_processes};",
           f"worker_rlimit_nofile {opts.max_open_files};",
           f"worker_shutdown_timeout {opts.worker_shutdown_timeout};",
           f"pid {quote(p + '/nginx.pid')};",
           "error_log stderr warn;"]
    if opts.user:
        out.append(f"user {opts.user};")
    out += [
        "events {",
        f"    worker_connections {max(512, min(16384, opts.max_open_files // 2))};",
        "    multi_accept on;",
        "}",
        "http {",
        f"    client_body_temp_path {quote(p + '/tmp/client-body')};",
        f"    proxy_temp_path {quote(p + '/tmp/proxy')};",
        f"    fastcgi_temp_path {quote(p + '/tmp/fastcgi')};",
        f"    uwsgi_temp_path {quote(p + '/tmp/uwsgi')};",
        f"    scgi_temp_path {quote(p + '/tmp/scgi')};",
        "    access_log off;",
        "    server_tokens off;",
        "    default_type text/plain;",
        "    sendfile on;",
        "    keepalive_timeout 75s;",
        "    keepalive_requests 1000;",
        "    client_max_body_size 1m;",
        "    client_body_buffer_size 1m;",       # = client_max_body_size: bodies never go to disk
        "    server_names_hash_bucket_size 256;",
        "    server_names_hash_max_size 16384;",
        "    variables_hash_bucket_size 256;",
        "    map $http_upgrade $connection_upgrade {",
        "        default upgrade;",
        "        '' '';",
        "    }",
        "    map $scheme $hsts_header {",          # HSTS on HTTPS answers of TLS hosts only
        '        https "max-age=31536000; includeSubDomains";',
        "    }",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        "    ssl_session_cache shared:SSL:10m;",
        "    ssl_session_timeout 10m;",
        "    ssl_prefer_server_ciphers on;",
    ]
    if opts.default_cert:
        out += [f"    ssl_certificate {quote(opts.default_cert)};",
                f"    ssl_certificate_key {quote(opts.default_cert)};"]
    out += [
        "    proxy_http_version 1.1;",
        "    proxy_buffering off;",
        "    proxy_request_buffering on;",
        "    proxy_connect_timeout 5s;",
        "    proxy_send_timeout 60s;",
        "    proxy_read_timeout 60s;",
        "    proxy_next_upstream error timeout;",
        "    proxy_next_upstream_tries 3;",
        "    proxy_set_header Host $host;",
        "    proxy_set_header Upgrade $http_upgrade;",
        "    proxy_set_header Connection $connection_upgrade;",
        "    proxy_set_header X-Request-ID $request_id;",
        "    proxy_set_header X-Real-IP $remote_addr;",
        "    proxy_set_header X-Forwarded-For $remote_addr;",
        "    proxy_set_header X-Forwarded-Host $host;",
        "    proxy_set_header X-Forwarded-Port $server_port;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Forwarded-Scheme $scheme;",
        "    proxy_set_header X-Scheme $scheme;",
    ]
    for be in sorted(cfg.backends, key=lambda b: b.name):
        if not be.endpoints:
            continue   # an upstream needs a server; its locations answer 503 instead
        out.append(f"    upstream {be.name} {{")
        for ep in sorted(set(be.endpoints), key=lambda e: (e.address, e.port)):
            out.append(f"        server {ep} max_fails=0;")
        out += ["        keepalive 32;", "    }"]
    servers = sorted(cfg.servers, key=lambda s: (s.hostname != CATCH_ALL, s.hostname))
    if not any(s.hostname == CATCH_ALL for s in servers):
        servers.insert(0, Server(CATCH_ALL, [Location("/", "Prefix", None)]))
    for server in servers:
        out += ["    " + line for line in _server(server, backends, opts)]
    out.append("}")
    return "\n".join(out) + "\n"
