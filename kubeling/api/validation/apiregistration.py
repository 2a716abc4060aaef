"""APIService validation, as kube-aggregator's ``pkg/apis/apiregistration/validation``.

The name must be ``<spec.version>.<spec.group>``; only ``v1`` may have an empty group; the
priorities are bounded; a local APIService (no ``spec.service``) may not carry TLS settings; a
service-backed one needs a namespace, a name and a valid port.
"""

from __future__ import annotations

from kubeling.api.errors import FieldError, invalid_value, required
from kubeling.api.validation import util


def apiservice_name_rule(spec: dict):
    """The metadata.name rule for one APIService (it depends on the spec)."""
    wanted = f"{spec.get('version', '')}.{spec.get('group', '')}"

    def rule(name: str, prefix: bool) -> list[str]:
        failures = util.is_path_segment_name(name)
        if failures:
            return failures
        if name != wanted:
            return [f'must be `spec.version+"."+spec.group`: "{wanted}"']
        return []
    return rule


def validate_apiservice(obj: dict) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errs: list[FieldError] = []
    group, version = spec.get("group") or "", spec.get("version") or ""
    if not group and version != "v1":
        errs.append(required("spec.group", "only v1 may have an empty group and it better be legacy kube"))
    if group:
        errs += [invalid_value("spec.group", group, m) for m in util.is_dns1123_subdomain(group)]
    errs += [invalid_value("spec.version", version, m) for m in util.is_dns1035_label(version)]
    gpm, vp = spec.get("groupPriorityMinimum") or 0, spec.get("versionPriority") or 0
    if not isinstance(gpm, int) or gpm <= 0 or gpm > 20000:
        errs.append(invalid_value("spec.groupPriorityMinimum", gpm, "must be positive and less than 20000"))
    if not isinstance(vp, int) or vp <= 0 or vp > 1000:
        errs.append(invalid_value("spec.versionPriority", vp, "must be positive and less than 1000"))
    svc = spec.get("service")
    ca, insecure = spec.get("caBundle") or "", bool(spec.get("insecureSkipTLSVerify"))
    if not svc:
        if ca:
            errs.append(invalid_value("spec.caBundle", f"{len(ca)} bytes", "local APIServices may not have a caBundle"))
        if insecure:
            errs.append(invalid_value("spec.insecureSkipTLSVerify", insecure,
                                      "local APIServices may not have insecureSkipTLSVerify"))
        return errs
    if not svc.get("namespace"):
        errs.append(required("spec.service.namespace", ""))
    if not svc.get("name"):
        errs.append(required("spec.service.name", ""))
    port = svc.get("port", 443)
    port_errs = util.is_valid_port_num(port)
    if port_errs:
        errs.append(invalid_value("spec.service.port", port, "port is not valid: " + ", ".join(port_errs)))
    if insecure and ca:
        errs.append(invalid_value("spec.insecureSkipTLSVerify", insecure, "may not be true if caBundle is present"))
    return errs


def validate_apiservice_status(obj: dict) -> list[FieldError]:
    errs = []
    for i, c in enumerate((obj.get("status") or {}).get("conditions") or []):
        if c.get("status") not in ("True", "False", "Unknown"):
            from kubeling.api.errors import not_supported
            errs.append(not_supported(f"status.conditions[{i}].status", c.get("status"), ["True", "False", "Unknown"]))
    return errs
