"""One container of a pod: name, image, ports, env, mounts, resources, probes, lifecycle.

Upstream runs the same checks over ``containers``, ``initContainers`` and
``ephemeralContainers``; `validate_container` is that common part, and the pod
spec adds what differs between the three lists.
"""

from __future__ import annotations

import re
from typing import Any

from kubeling.api.errors import FieldError, duplicate, invalid_value, not_supported, required
from kubeling.api.validation import meta, util
from kubeling.api.validation.meta import forbidden
from kubeling.api.validation.resources import validate_resource_requirements
from kubeling.api.validation.volumes import validate_volume_devices, validate_volume_mounts

PROTOCOLS = ("SCTP", "TCP", "UDP")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
URI_SCHEMES = ("HTTP", "HTTPS")
FIELD_REF_PATHS = ("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
                   "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs")
_SUBSCRIPTED_FIELD_REF = re.compile(r"^metadata\.(labels|annotations)\['[^']+'\]$")
RESOURCE_FIELD_REFS = ("limits.cpu", "limits.memory", "limits.ephemeral-storage", "requests.cpu",
                       "requests.memory", "requests.ephemeral-storage")
PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
LIFECYCLE_HANDLERS = ("exec", "httpGet", "tcpSocket", "sleep")
MAX_TERMINATION_MESSAGE_LENGTH = 12 * 1024


def validate_port_num_or_name(value: Any, path: str) -> list[FieldError]:
    """An IntOrString port: a number 1-65535 or an IANA service name."""
    if isinstance(value, bool) or value is None:
        return [required(path, "")] if value is None else [invalid_value(path, value, "must be an int or string")]
    if isinstance(value, int):
        return [invalid_value(path, value, m) for m in util.is_valid_port_num(value)]
    if isinstance(value, str):
        if value.isdigit():
            return [invalid_value(path, value, m) for m in util.is_valid_port_num(int(value))]
        return [invalid_value(path, value, m) for m in util.is_valid_port_name(value)]
    return [invalid_value(path, value, "must be an int or string")]


def validate_container_ports(ports: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    names: set[str] = set()
    for i, port in enumerate(ports or ()):
        p = f"{path}[{i}]"
        name = port.get("name")
        if name:
            errs += [invalid_value(p + ".name", name, m) for m in util.is_valid_port_name(name)]
            if name in names:
                errs.append(duplicate(p + ".name", name))
            names.add(name)
        cp = port.get("containerPort")
        if not cp:
            errs.append(required(p + ".containerPort", ""))
        else:
            errs += [invalid_value(p + ".containerPort", cp, m) for m in util.is_valid_port_num(cp)]
        hp = port.get("hostPort")
        if hp:
            errs += [invalid_value(p + ".hostPort", hp, m) for m in util.is_valid_port_num(hp)]
        errs += meta.enum(port.get("protocol"), p + ".protocol", PROTOCOLS)
        if port.get("hostIP"):
            errs += [invalid_value(p + ".hostIP", port["hostIP"], m) for m in util.is_valid_ip(port["hostIP"])]
    return errs


def _key_ref(ref: dict, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    if not ref.get("key"):
        errs.append(required(path + ".key", ""))
    else:
        errs += [invalid_value(path + ".key", ref["key"], m) for m in util.is_config_map_key(ref["key"])]
    if not ref.get("name"):
        errs.append(required(path + ".name", ""))
    return errs


def _field_ref(ref: dict, path: str) -> list[FieldError]:
    fp = ref.get("fieldPath")
    if not fp:
        return [required(path + ".fieldPath", "")]
    if fp in FIELD_REF_PATHS or _SUBSCRIPTED_FIELD_REF.match(fp):
        return []
    return [not_supported(path + ".fieldPath", fp, ["metadata.name", "metadata.namespace", "metadata.uid",
                                                      "metadata.labels['<KEY>']", "metadata.annotations['<KEY>']",
                                                      *FIELD_REF_PATHS[3:]])]


def _resource_field_ref(ref: dict, path: str) -> list[FieldError]:
    res = ref.get("resource")
    if not res:
        return [required(path + ".resource", "")]
    if res in RESOURCE_FIELD_REFS or res.startswith(("limits.hugepages-", "requests.hugepages-")):
        return []
    return [not_supported(path + ".resource", res, RESOURCE_FIELD_REFS)]


def validate_env(env: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, ev in enumerate(env or ()):
        p = f"{path}[{i}]"
        name = ev.get("name") or ""
        if not name:
            errs.append(required(p + ".name", ""))
        else:
            errs += [invalid_value(p + ".name", name, m) for m in util.is_env_var_name(name)]
        vf = ev.get("valueFrom")
        if vf is None:
            continue
        vp = p + ".valueFrom"
        sources = [k for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef", "fileKeyRef")
                   if vf.get(k) is not None]
        if ev.get("value"):
            errs.append(invalid_value(vp, "", "may not be specified when `value` is not empty"))
        if not sources:
            errs.append(invalid_value(vp, "", "must specify one of: `fieldRef`, `resourceFieldRef`, "
                                              "`configMapKeyRef` or `secretKeyRef`"))
        elif len(sources) > 1:
            errs.append(invalid_value(vp, "", "may not have more than one field specified at a time"))
        else:
            k = sources[0]
            if k in ("configMapKeyRef", "secretKeyRef"):
                errs += _key_ref(vf[k], f"{vp}.{k}")
            elif k == "fieldRef":
                errs += _field_ref(vf[k], f"{vp}.{k}")
            elif k == "resourceFieldRef":
                errs += _resource_field_ref(vf[k], f"{vp}.{k}")
    return errs


def validate_env_from(env_from: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, ef in enumerate(env_from or ()):
        p = f"{path}[{i}]"
        if ef.get("prefix"):
            errs += [invalid_value(p + ".prefix", ef["prefix"], m) for m in util.is_env_var_name(ef["prefix"])]
        refs = [k for k in ("configMapRef", "secretRef") if ef.get(k) is not None]
        if not refs:
            errs.append(invalid_value(p, "", "must specify one of: `configMapRef` or `secretRef`"))
        elif len(refs) > 1:
            errs.append(invalid_value(p, "", "may not have more than one field specified at a time"))
        else:
            ref = ef[refs[0]]
            if not ref.get("name"):
                errs.append(required(f"{p}.{refs[0]}.name", ""))
            else:
                errs += meta.dns_subdomain(ref["name"], f"{p}.{refs[0]}.name")
    return errs


def _handler(h: dict, path: str) -> list[FieldError]:
    """The body of one probe/lifecycle handler."""
    errs: list[FieldError] = []
    if "exec" in h and not (h["exec"] or {}).get("command"):
        errs.append(required(path + ".exec.command", ""))
    if "httpGet" in h:
        g = h["httpGet"] or {}
        errs += validate_port_num_or_name(g.get("port"), path + ".httpGet.port")
        errs += meta.enum(g.get("scheme"), path + ".httpGet.scheme", URI_SCHEMES)
        for j, hdr in enumerate(g.get("httpHeaders") or ()):
            if not hdr.get("name"):
                errs.append(required(f"{path}.httpGet.httpHeaders[{j}].name", ""))
    if "tcpSocket" in h:
        errs += validate_port_num_or_name((h["tcpSocket"] or {}).get("port"), path + ".tcpSocket.port")
    if "grpc" in h:
        port = (h["grpc"] or {}).get("port")
        errs += [invalid_value(path + ".grpc.port", port, m) for m in util.is_valid_port_num(port)]
    if "sleep" in h:
        secs = (h["sleep"] or {}).get("seconds")
        if not isinstance(secs, int) or secs < 0:
            errs.append(invalid_value(path + ".sleep.seconds", secs, "must be non-negative and less than "
                                                                      "terminationGracePeriodSeconds (30s)"))
    return errs


def _one_handler(h: dict, path: str, kinds: tuple[str, ...]) -> list[FieldError]:
    present = [k for k in kinds if h.get(k) is not None]
    if not present:
        return [required(path, "must specify a handler type")]
    if len(present) > 1:
        return [forbidden(f"{path}.{present[1]}", "may not specify more than 1 handler type")]
    return _handler(h, path)


def validate_probe(probe: Any, path: str, *, success_must_be_one: bool) -> list[FieldError]:
    if probe is None:
        return []
    errs = _one_handler(probe, path, PROBE_HANDLERS)
    for k in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        errs += meta.nonneg(probe.get(k), f"{path}.{k}")
    if success_must_be_one and probe.get("successThreshold") not in (None, 1):
        errs.append(invalid_value(path + ".successThreshold", probe["successThreshold"], "must be 1"))
    tgp = probe.get("terminationGracePeriodSeconds")
    if tgp is not None:
        errs += meta.positive(tgp, path + ".terminationGracePeriodSeconds")
    return errs


def validate_lifecycle(lc: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for hook in ("postStart", "preStop"):
        if lc and lc.get(hook) is not None:
            errs += _one_handler(lc[hook], f"{path}.{hook}", LIFECYCLE_HANDLERS)
    return errs


def validate_container(c: Any, path: str, volumes: set[str], *, require_image: bool = True) -> list[FieldError]:
    """Checks shared by every kind of container (the pod spec checks names across lists)."""
    if not isinstance(c, dict):
        return [invalid_value(path, c, "must be an object")]
    errs: list[FieldError] = []
    name = c.get("name") or ""
    if not name:
        errs.append(required(path + ".name", ""))
    else:
        errs += meta.dns_label(name, path + ".name")
    image = c.get("image")
    if not image:
        if require_image:
            errs.append(required(path + ".image", ""))
    elif image != image.strip():
        errs.append(invalid_value(path + ".image", image, "must not have leading or trailing whitespace"))
    errs += validate_container_ports(c.get("ports"), path + ".ports")
    errs += validate_env(c.get("env"), path + ".env")
    errs += validate_env_from(c.get("envFrom"), path + ".envFrom")
    errs += validate_volume_mounts(c.get("volumeMounts"), volumes, path + ".volumeMounts")
    errs += validate_volume_devices(c.get("volumeDevices"), volumes, path + ".volumeDevices")
    errs += validate_resource_requirements(c.get("resources"), path + ".resources")
    errs += meta.enum(c.get("imagePullPolicy"), path + ".imagePullPolicy", PULL_POLICIES)
    errs += meta.enum(c.get("terminationMessagePolicy"), path + ".terminationMessagePolicy",
                      TERMINATION_MESSAGE_POLICIES)
    return errs


def validate_app_probes(c: dict, path: str) -> list[FieldError]:
    """Probes and lifecycle hooks of a container that keeps running (app container or sidecar)."""
    return (validate_probe(c.get("livenessProbe"), path + ".livenessProbe", success_must_be_one=True)
            + validate_probe(c.get("readinessProbe"), path + ".readinessProbe", success_must_be_one=False)
            + validate_probe(c.get("startupProbe"), path + ".startupProbe", success_must_be_one=True)
            + validate_lifecycle(c.get("lifecycle"), path + ".lifecycle"))
