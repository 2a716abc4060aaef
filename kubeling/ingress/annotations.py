"""The ingress-nginx annotations this controller honours, per Ingress (its ``annotations``
package, a few of the most used ones), all under ``nginx.ingress.kubernetes.io/``:

- ``ssl-redirect`` (default ``"true"``): redirect HTTP to HTTPS on hosts that have TLS;
- ``force-ssl-redirect`` (default ``"false"``): redirect even where the host has no TLS;
- ``proxy-body-size`` (default ``1m``): nginx's ``client_max_body_size``; bodies are then
  streamed to the backend (``proxy_request_buffering off``), never written to disk;
- ``proxy-connect-timeout``/``proxy-send-timeout``/``proxy-read-timeout`` (seconds, defaults
  5/60/60);
- ``backend-protocol``: ``HTTP`` (default) or ``HTTPS`` (the backend's certificate is not
  verified, as ingress-nginx's default ``proxy-ssl-verify: off``);
- ``use-regex: "true"``: the Ingress's paths are (case-insensitive, PCRE) regular expressions;
  as in ingress-nginx, every path of a host one such Ingress touches is then matched as
  ``~* "^<path>"`` (Exact paths stay exact), longest first;
- ``rewrite-target``: the URI the backend gets, with the path's captures (``/$2``); implies
  ``use-regex``, as upstream.

``parse(ingress)`` returns the `LocationConfig` for the Ingress's locations and a list of
messages for values it could not use (those keep their defaults).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "nginx.ingress.kubernetes.io/"
_SIZE = re.compile(r"^\d+[kKmMgG]?$")


@dataclass(frozen=True)
class LocationConfig:
    ssl_redirect: bool = True
    force_ssl_redirect: bool = False
    body_size: str = ""            # "" = the global client_max_body_size
    connect_timeout: int = 0       # 0 = the global value
    send_timeout: int = 0
    read_timeout: int = 0
    backend_protocol: str = "HTTP"
    use_regex: bool = False
    rewrite_target: str = ""


def _bool(value: str) -> bool | None:
    return {"true": True, "false": False}.get(value.strip().lower())


def parse(ingress: dict) -> tuple[LocationConfig, list[str]]:
    ann = (ingress.get("metadata") or {}).get("annotations") or {}
    kw: dict = {}
    bad: list[str] = []
    for name, field in (("ssl-redirect", "ssl_redirect"), ("force-ssl-redirect", "force_ssl_redirect"),
                        ("use-regex", "use_regex")):
        if PREFIX + name in ann:
            value = _bool(ann[PREFIX + name])
            if value is None:
                bad.append(f"{PREFIX}{name}: {ann[PREFIX + name]!r} is not true or false")
            else:
                kw[field] = value
    if PREFIX + "proxy-body-size" in ann:
        value = ann[PREFIX + "proxy-body-size"].strip()
        if _SIZE.match(value):
            kw["body_size"] = value
        else:
            bad.append(f"{PREFIX}proxy-body-size: {value!r} is not a size like 8m")
    for name in ("connect", "send", "read"):
        key = f"{PREFIX}proxy-{name}-timeout"
        if key in ann:
            value = ann[key].strip()
            if value.isdigit() and 0 < int(value) <= 3600:
                kw[f"{name}_timeout"] = int(value)
            else:
                bad.append(f"{key}: {value!r} is not a number of seconds (1-3600)")
    if PREFIX + "backend-protocol" in ann:
        value = ann[PREFIX + "backend-protocol"].strip().upper()
        if value in ("HTTP", "HTTPS"):
            kw["backend_protocol"] = value
        else:
            bad.append(f"{PREFIX}backend-protocol: {value!r} is not supported (HTTP, HTTPS)")
    if PREFIX + "rewrite-target" in ann:
        value = ann[PREFIX + "rewrite-target"].strip()
        if value and not any(c.isspace() or c in '"{};' for c in value):
            kw["rewrite_target"] = value
            kw["use_regex"] = True
        else:
            bad.append(f"{PREFIX}rewrite-target: {value!r} is not a URI")
    return LocationConfig(**kw), bad
