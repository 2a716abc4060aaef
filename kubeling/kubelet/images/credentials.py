"""The credential keyring: which ``imagePullSecrets`` entries apply to an image, as upstream's
``pkg/credentialprovider`` keyring decides.

A secret of type ``kubernetes.io/dockerconfigjson`` holds ``{"auths": {KEY: ENTRY}}`` under
``.dockerconfigjson``; ``kubernetes.io/dockercfg`` holds ``{KEY: ENTRY}`` under ``.dockercfg``
(both base64 in ``data``). ENTRY is ``{"username","password"}`` or ``{"auth": base64(u:p)}``.

Matching (`Keyring.lookup(image)`, image a normalised name such as ``docker.io/library/busybox``):
- KEY is read as a URL (``https://`` is assumed): its host, port and path. A ``/v1/`` or ``/v2/``
  path prefix is dropped, so ``https://index.docker.io/v1/`` is the key ``index.docker.io``.
- A KEY matches when the hosts have the same number of dot-separated labels and each image label
  matches the KEY label as a glob (``*.example.com``), the ports are equal, and the image path
  starts with the KEY path.
- Images on Docker Hub (``docker.io/...``) also match the keys ``index.docker.io`` and
  ``docker.io``, since that is how ``docker login`` writes them.
- All matching entries are returned, the most specific KEY first (reverse lexical order, as
  upstream); the caller tries them in turn until one pull succeeds.
"""

from __future__ import annotations

import base64
import fnmatch
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from kubeling.kubelet.images.registries import AuthConfig

DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"
DOCKERCFG = "kubernetes.io/dockercfg"
_DOCKER_HUB_KEYS = ("index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class _Key:
    text: str
    host: str
    port: str
    path: str


def _parse_key(raw: str) -> _Key:
    text = raw if "://" in raw else "https://" + raw
    parts = urlsplit(text)
    path = parts.path
    if path.startswith(("/v1/", "/v2/")):
        path = path[3:]
    path = path.rstrip("/")
    host, port = parts.hostname or "", str(parts.port or "")
    key = f"{parts.netloc}{path}" if path else parts.netloc
    return _Key(key, host, port, path)


def _matches(key: _Key, target: _Key) -> bool:
    klabels, tlabels = key.host.split("."), target.host.split(".")
    if len(klabels) != len(tlabels):
        return False
    if not all(fnmatch.fnmatchcase(t, k) for k, t in zip(klabels, tlabels)):
        return False
    if key.port != target.port:
        return False
    return target.path.startswith(key.path)


def _secret_config(secret: dict) -> dict:
    data = secret.get("data") or {}
    kind = secret.get("type")
    try:
        if kind == DOCKERCONFIGJSON and ".dockerconfigjson" in data:
            return orjson.loads(base64.b64decode(data[".dockerconfigjson"])).get("auths") or {}
        if kind == DOCKERCFG and ".dockercfg" in data:
            return orjson.loads(base64.b64decode(data[".dockercfg"])) or {}
    except (ValueError, orjson.JSONDecodeError, AttributeError):
        # Upstream skips a secret it cannot read and pulls with the others.
        return {}
    return {}


class Keyring:
    """Credentials from a list of pull secrets (in the pod's order), looked up per image."""

    def __init__(self, entries: list[tuple[str, dict]] | None = None) -> None:
        self._entries: list[tuple[_Key, AuthConfig]] = []
        for raw_key, entry in entries or []:
            auth = AuthConfig.from_entry(entry)
            if auth is not None:
                self._entries.append((_parse_key(raw_key), auth))
        # Most specific first; the sort is stable so equal keys keep the secrets' order.
        self._entries.sort(key=lambda e: e[0].text, reverse=True)

    @classmethod
    def from_secrets(cls, secrets: list[dict]) -> Keyring:
        entries: list[tuple[str, dict]] = []
        for secret in secrets or []:
            for key, entry in _secret_config(secret).items():
                if isinstance(entry, dict):
                    entries.append((key, entry))
        return cls(entries)

    def lookup(self, image: str) -> list[AuthConfig]:
        """Credentials for ``image`` (a repository name with its registry host), best first."""
        target = _parse_key(image)
        found = [auth for key, auth in self._entries if _matches(key, target)]
        if target.host == "docker.io" and not target.port:
            found += [auth for key, auth in self._entries
                      if key.host in _DOCKER_HUB_KEYS and not key.port and auth not in found
                      and target.path.startswith(key.path)]
        return found
