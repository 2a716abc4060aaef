"""Per-registry mirrors and credentials, in k3s's ``registries.yaml`` format.

::

    mirrors:
      docker.io:                      # the registry a reference names ("*" matches any)
        endpoint:
          - "http://127.0.0.1:5000"   # tried in order; no scheme means https
        rewrite:                      # applied to the repository path, for mirror endpoints only
          "^library/(.*)": "mirrored/$1"
    configs:
      "127.0.0.1:5000":               # an endpoint host[:port] ("*" matches any)
        auth: {username: u, password: p}          # or {auth: base64("u:p")}, {identitytoken: t}
        tls: {insecure_skip_verify: true, ca_file: ..., cert_file: ..., key_file: ...}

Resolution (`Registries.endpoints`), as k3s and containerd do: the mirror endpoints of the
reference's registry (or of ``"*"`` when it has no entry of its own), then the registry's own
default endpoint (``https://registry-1.docker.io`` for docker.io, ``https://<host>`` otherwise;
plain ``http`` for loopback hosts, as containerd's localhost rule). The default endpoint is
skipped when a mirror already lists it, or when ``disable_default_endpoint`` is set and the
registry has a mirror entry (its own or ``"*"``): k3s's ``--disable-default-registry-endpoint``,
for air-gapped nodes, and tests, which must never reach the internet. A registry with no entry
is still pulled from directly, as in k3s. An endpoint URL without a path talks to ``/v2``; a path is a prefix before ``/v2``.

A missing file is an empty configuration; a malformed one raises `ValueError` naming the file.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from kubeling.kubelet.images.reference import DEFAULT_DOMAIN, Reference

DOCKER_HUB_ENDPOINT = "https://registry-1.docker.io"
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


@dataclass(frozen=True)
class TLSConfig:
    insecure_skip_verify: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class AuthConfig:
    username: str = ""
    password: str = ""
    identity_token: str = ""

    @classmethod
    def from_entry(cls, entry: dict | None) -> AuthConfig | None:
        """A docker ``auths`` entry or a registries.yaml ``auth``: username/password, or ``auth``
        (base64 ``user:password``), or an identity token. None when it holds no credential."""
        if not entry:
            return None
        user, password = entry.get("username") or "", entry.get("password") or ""
        if not user and entry.get("auth"):
            try:
                decoded = base64.b64decode(entry["auth"]).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return None
            user, _, password = decoded.partition(":")
        token = entry.get("identitytoken") or entry.get("identity_token") or ""
        if not (user or password or token):
            return None
        return cls(user, password, token)


@dataclass(frozen=True)
class Endpoint:
    """One place to pull a repository from: ``base`` is the URL up to and including ``/v2``."""

    base: str
    host: str                       # host[:port], the key of ``configs``
    mirror: bool                    # False for the registry's own default endpoint
    auth: AuthConfig | None = None
    tls: TLSConfig = field(default_factory=TLSConfig)
    rewrites: tuple[tuple[str, str], ...] = ()

    def repository(self, path: str) -> str:
        """The repository path to ask this endpoint for, after ``rewrite`` rules (first match)."""
        for pattern, replacement in self.rewrites:
            if re.search(pattern, path):
                return re.sub(pattern, _go_replacement(replacement), path, count=1)
        return path


def _go_replacement(text: str) -> str:
    """Go's ``$1`` / ``${1}`` / ``${name}`` in a regexp replacement, in Python's syntax."""
    return re.sub(r"\$(?:\{(\w+)\}|(\d+))", lambda m: rf"\g<{m.group(1) or m.group(2)}>",
                  text.replace("\\", "\\\\"))


def _endpoint_url(raw: str) -> tuple[str, str]:
    """(base URL ending in /v2, host) for an endpoint as written in registries.yaml."""
    text = raw.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"invalid registry endpoint {raw!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/v2"):
        path += "/v2"
    return f"{parts.scheme}://{parts.netloc}{path}", parts.netloc


def default_endpoint_url(domain: str) -> str:
    if domain == DEFAULT_DOMAIN:
        return DOCKER_HUB_ENDPOINT + "/v2"
    host = domain.rsplit(":", 1)[0] if not domain.startswith("[") else domain.split("]")[0] + "]"
    scheme = "http" if host in _LOOPBACK_HOSTS else "https"
    return f"{scheme}://{domain}/v2"


@dataclass
class Registries:
    """A parsed ``registries.yaml`` (see the module docstring)."""

    mirrors: dict[str, dict] = field(default_factory=dict)
    configs: dict[str, dict] = field(default_factory=dict)
    disable_default_endpoint: bool = False

    @classmethod
    def load(cls, path: str | Path | None, *, disable_default_endpoint: bool = False) -> Registries:
        if path is None or not Path(path).exists():
            return cls(disable_default_endpoint=disable_default_endpoint)
        try:
            doc = yaml.load(Path(path).read_text(), Loader=yaml.CSafeLoader) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: {e}") from e
        return cls.from_dict(doc, source=str(path),
                             disable_default_endpoint=disable_default_endpoint)

    @classmethod
    def from_dict(cls, doc: dict, *, source: str = "registries.yaml",
                  disable_default_endpoint: bool = False) -> Registries:
        if not isinstance(doc, dict):
            raise ValueError(f"{source}: the top level must be a mapping")  # noqa: TRY004 (a config error)
        mirrors, configs = doc.get("mirrors") or {}, doc.get("configs") or {}
        if not isinstance(mirrors, dict) or not isinstance(configs, dict):
            raise ValueError(f"{source}: 'mirrors' and 'configs' must be mappings")  # noqa: TRY004
        for name, mirror in mirrors.items():
            endpoints = (mirror or {}).get("endpoint") or []
            if not isinstance(endpoints, list):
                raise ValueError(f"{source}: mirrors.{name}.endpoint must be a list")  # noqa: TRY004
            for e in endpoints:
                try:
                    _endpoint_url(str(e))
                except ValueError as err:
                    raise ValueError(f"{source}: mirrors.{name}: {err}") from err
            for pattern in ((mirror or {}).get("rewrite") or {}):
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(f"{source}: mirrors.{name}.rewrite {pattern!r}: {err}") from err
        return cls(mirrors, configs, disable_default_endpoint)

    def _config(self, host: str) -> dict:
        return self.configs.get(host) or self.configs.get("*") or {}

    def _endpoint(self, base: str, host: str, mirror: bool, rewrites=()) -> Endpoint:
        cfg = self._config(host)
        tls = cfg.get("tls") or {}
        return Endpoint(
            base=base, host=host, mirror=mirror, auth=AuthConfig.from_entry(cfg.get("auth")),
            tls=TLSConfig(bool(tls.get("insecure_skip_verify")), tls.get("ca_file") or "",
                          tls.get("cert_file") or "", tls.get("key_file") or ""),
            rewrites=tuple(rewrites))

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        """Where to pull ``ref`` from, in order (see the module docstring)."""
        mirror = self.mirrors.get(ref.domain)
        if mirror is None:
            mirror = self.mirrors.get("*")
        # k3s: disabling the default endpoint applies only to registries that registries.yaml
        # configures; any other registry is still pulled from directly.
        configured = mirror is not None
        mirror = mirror or {}
        rewrites = tuple((mirror.get("rewrite") or {}).items())
        default = default_endpoint_url(ref.domain)
        out: list[Endpoint] = []
        for raw in mirror.get("endpoint") or []:
            base, host = _endpoint_url(str(raw))
            is_default = base == default
            out.append(self._endpoint(base, host, not is_default, () if is_default else rewrites))
        if not (self.disable_default_endpoint and configured) and all(e.base != default for e in out):
            out.append(self._endpoint(default, urlsplit(default).netloc, False))
        return out
