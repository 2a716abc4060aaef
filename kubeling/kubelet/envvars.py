"""A container's environment (upstream's ``makeEnvironmentVariables``) and ``$(VAR)`` expansion.

`make_environment` builds, in this order of precedence (later wins):

1. service links: for every Service with a cluster IP in the pod's namespace (unless
   ``enableServiceLinks: false``) ``<SVC>_SERVICE_HOST``, ``<SVC>_SERVICE_PORT``,
   ``<SVC>_SERVICE_PORT_<PORT NAME>`` and the Docker link variables (``<SVC>_PORT``,
   ``<SVC>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]``); the ``kubernetes`` Service of the
   ``default`` namespace is always included. These only fill names nothing else set.
2. ``envFrom`` (ConfigMaps and Secrets, with ``prefix``). Keys that are not valid variable
   names are skipped and reported as an ``InvalidEnvironmentVariableNames`` warning event.
3. ``env`` in order. A literal ``value`` is expanded (`expand`) against the variables defined
   so far and then the service variables; ``valueFrom`` values are never expanded:
   fieldRef (``metadata.*``, ``spec.nodeName``, ``spec.serviceAccountName``,
   ``status.hostIP(s)``, ``status.podIP(s)``), resourceFieldRef (with divisor; a missing limit
   reads the node's allocatable), configMapKeyRef and secretKeyRef (``optional`` skips a missing
   object or key).

The result is a list of ``(name, value)`` in first-definition order. Missing references raise
`CreateContainerConfigError` with upstream's messages: ``configmap "x" not found``,
``couldn't find key k in ConfigMap ns/x``, ``secret "x" not found``, ``couldn't find key k in
Secret ns/x``. The pod must be registered with the host's object caches (`make_environment`
registers it; registration is idempotent).

Expansion (`expand`, upstream's ``third_party/forked/golang/expansion``): ``$(NAME)`` becomes the
value when NAME is defined and stays as written otherwise; ``$$`` is a literal ``$`` (so
``$$(NAME)`` is the text ``$(NAME)``); a ``$`` followed by anything else, or an unterminated
``$(``, stays as written.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

from kubeling.api.validation.util import is_env_var_name
from kubeling.kubelet.objectcache import NotRegistered, NotSynced
from kubeling.kubelet.volumes import fieldpath


class CreateContainerConfigError(Exception):
    """The container's configuration cannot be built; ``reason`` goes into its waiting state."""

    reason = "CreateContainerConfigError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


MASTER_SERVICES = ("kubernetes",)


def expand(text: str, *contexts: Mapping[str, str]) -> str:
    """``$(VAR)`` expansion against ``contexts`` (the first that defines VAR wins)."""
    out: list[str] = []
    checkpoint = 0
    i, n = 0, len(text)
    while i < n:
        if text[i] == "$" and i + 1 < n:
            out.append(text[checkpoint:i])
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
            elif nxt == "(":
                close = text.find(")", i + 2)
                if close < 0:
                    out.append("$(")
                    i += 2
                else:
                    name = text[i + 2:close]
                    for ctx in contexts:
                        if name in ctx:
                            out.append(ctx[name])
                            break
                    else:
                        out.append(f"$({name})")
                    i = close + 1
            else:
                out.append("$" + nxt)
                i += 2
            checkpoint = i
        else:
            i += 1
    out.append(text[checkpoint:])
    return "".join(out)


def expand_command(argv: Iterable[str], env: Iterable[tuple[str, str]] | Mapping[str, str]) -> list[str]:
    """``command``/``args`` with ``$(VAR)`` expanded against the container's final environment."""
    ctx = dict(env.items() if isinstance(env, Mapping) else env)
    return [expand(a, ctx) for a in argv]


# -- service links -----------------------------------------------------------------------------------

def _env_name(name: str) -> str:
    return name.replace("-", "_").upper()


def _has_cluster_ip(svc: dict) -> bool:
    ip = (svc.get("spec") or {}).get("clusterIP")
    return bool(ip) and ip != "None"


def service_env(services: Iterable[dict], namespace: str, enable_service_links: bool) -> dict[str, str]:
    """The service-link variables a pod in ``namespace`` sees (see the module docstring)."""
    chosen: dict[str, dict] = {}
    for svc in services:
        meta = svc.get("metadata") or {}
        if not _has_cluster_ip(svc):
            continue
        name = meta.get("name") or ""
        if meta.get("namespace") == "default" and name in MASTER_SERVICES:
            chosen.setdefault(name, svc)
        elif meta.get("namespace") == namespace and enable_service_links:
            chosen[name] = svc
    out: dict[str, str] = {}
    for name in sorted(chosen):
        svc = chosen[name]
        ip = svc["spec"]["clusterIP"]
        ports = svc["spec"].get("ports") or []
        prefix = _env_name(name)
        out[f"{prefix}_SERVICE_HOST"] = ip
        if ports:
            out[f"{prefix}_SERVICE_PORT"] = str(ports[0].get("port"))
        for p in ports:
            if p.get("name"):
                out[f"{prefix}_SERVICE_PORT_{_env_name(p['name'])}"] = str(p.get("port"))
        host = f"[{ip}]" if ":" in ip else ip
        for i, p in enumerate(ports):
            proto = p.get("protocol") or "TCP"
            url = f"{proto.lower()}://{host}:{p.get('port')}"
            if i == 0:
                out[f"{prefix}_PORT"] = url   # Docker special-cases the first port
            pp = f"{prefix}_PORT_{p.get('port')}_{proto.upper()}"
            out[pp] = url
            out[f"{pp}_PROTO"] = proto.lower()
            out[f"{pp}_PORT"] = str(p.get("port"))
            out[f"{pp}_ADDR"] = ip
    return out


# -- downward API for env -----------------------------------------------------------------------------

def _ips(pod: dict, plural: str, single: str, given: list[str] | None) -> list[str]:
    if given is not None:
        return list(given)
    status = pod.get("status") or {}
    ips = [e.get("ip") for e in status.get(plural) or () if e.get("ip")]
    return ips or ([status[single]] if status.get(single) else [])


def field_value(pod: dict, path: str, pod_ips: list[str], host_ips: list[str]) -> str:
    spec = pod.get("spec") or {}
    if path == "spec.nodeName":
        return spec.get("nodeName") or ""
    if path == "spec.serviceAccountName":
        return spec.get("serviceAccountName") or ""
    if path == "status.hostIP":
        return host_ips[0] if host_ips else ""
    if path == "status.hostIPs":
        return ",".join(host_ips)
    if path == "status.podIP":
        return pod_ips[0] if pod_ips else ""
    if path == "status.podIPs":
        return ",".join(pod_ips)
    return fieldpath.pod_field(pod, path)


# -- the environment ----------------------------------------------------------------------------------

async def _lookup(cache: Any, ns: str, name: str) -> dict | None:
    try:
        return await cache.get(ns, name)
    except (NotRegistered, NotSynced) as e:
        raise CreateContainerConfigError(f"couldn't get {cache.resource[:-1]} {ns}/{name}: {e}") from None


def _secret_value(secret: dict, key: str) -> str | None:
    raw = (secret.get("data") or {}).get(key)
    return None if raw is None else base64.b64decode(raw).decode("utf-8", "replace")


async def make_environment(pod: dict, container: dict, host: Any, services: list[dict], *,
                           pod_ips: list[str] | None = None, host_ips: list[str] | None = None,
                           events: list[tuple[str, str, str]] | None = None) -> list[tuple[str, str]]:
    """The container's environment (see the module docstring). ``host`` is the `VolumeHost`
    (object caches, node allocatable); ``pod_ips``/``host_ips`` default to the pod's status.
    Warning events are appended to ``events`` as ``(type, reason, message)``."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    ns = meta.get("namespace") or "default"
    for cache in (host.configmaps, host.secrets):
        if cache is not None:
            cache.register_pod(pod)
    pod_ips = _ips(pod, "podIPs", "podIP", pod_ips)
    host_ips = _ips(pod, "hostIPs", "hostIP", host_ips)
    links = spec.get("enableServiceLinks")
    svc_env = service_env(services, ns, True if links is None else bool(links))
    env: dict[str, str] = {}

    for env_from in container.get("envFrom") or ():
        prefix = env_from.get("prefix") or ""
        if env_from.get("configMapRef") is not None:
            ref, cache, kind = env_from["configMapRef"], host.configmaps, "configMap"
        elif env_from.get("secretRef") is not None:
            ref, cache, kind = env_from["secretRef"], host.secrets, "secret"
        else:
            continue
        name = ref.get("name") or ""
        obj = await _lookup(cache, ns, name)
        if obj is None:
            if ref.get("optional"):
                continue
            raise CreateContainerConfigError(cache.not_found_message(name))
        values = obj.get("data") or {}
        invalid = []
        for key in values:
            var = prefix + key
            if is_env_var_name(var):
                invalid.append(var)
                continue
            env[var] = values[key] if kind == "configMap" else _secret_value(obj, key)
        if invalid and events is not None:
            events.append(("Warning", "InvalidEnvironmentVariableNames",
                           (f"Keys [{', '.join(sorted(invalid))}] from the EnvFrom {kind} {ns}/{name} were "
                            "skipped since they are considered invalid environment variable names.")))

    for var in container.get("env") or ():
        name = var.get("name") or ""
        value = var.get("value") or ""
        source = var.get("valueFrom")
        if value:
            value = expand(value, env, svc_env)
        elif source:
            got = await _value_from(pod, container, host, ns, source, pod_ips, host_ips)
            if got is None:
                continue   # an optional reference that is missing: the variable is not set
            value = got
        env[name] = value

    for name, value in svc_env.items():
        env.setdefault(name, value)
    return list(env.items())


async def _value_from(pod: dict, container: dict, host: Any, ns: str, source: dict,
                      pod_ips: list[str], host_ips: list[str]) -> str | None:
    try:
        if source.get("fieldRef"):
            return field_value(pod, source["fieldRef"].get("fieldPath") or "", pod_ips, host_ips)
        if source.get("resourceFieldRef"):
            ref = source["resourceFieldRef"]
            if ref.get("containerName"):
                return fieldpath.resource_for_pod(pod, ref["containerName"], ref.get("resource") or "",
                                                  ref.get("divisor"), host.node_allocatable)
            return fieldpath.container_resource(container, ref.get("resource") or "", ref.get("divisor"),
                                                host.node_allocatable)
    except fieldpath.FieldPathError as e:
        raise CreateContainerConfigError(str(e)) from None
    for key_ref, cache, kind in (("configMapKeyRef", host.configmaps, "ConfigMap"),
                                 ("secretKeyRef", host.secrets, "Secret")):
        ref = source.get(key_ref)
        if ref is None:
            continue
        name, key, optional = ref.get("name") or "", ref.get("key") or "", bool(ref.get("optional"))
        obj = await _lookup(cache, ns, name)
        if obj is None:
            if optional:
                return None
            raise CreateContainerConfigError(cache.not_found_message(name))
        value = (obj.get("data") or {}).get(key) if kind == "ConfigMap" else _secret_value(obj, key)
        if value is None:
            if optional:
                return None
            raise CreateContainerConfigError(f"couldn't find key {key} in {kind} {ns}/{name}")
        return value
    return ""
