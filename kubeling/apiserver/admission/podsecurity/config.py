"""The PodSecurity plugin's configuration (upstream ``PodSecurityConfiguration``,
``pod-security.admission.config.k8s.io/v1``, also v1beta1 and v1alpha1), read from the
``--admission-control-config-file`` (an ``apiserver.config.k8s.io/v1`` AdmissionConfiguration,
JSON or YAML), as upstream::

    apiVersion: apiserver.config.k8s.io/v1
    kind: AdmissionConfiguration
    plugins:
    - name: PodSecurity
      configuration:                 # or  path: podsecurity.yaml  (relative to this file)
        apiVersion: pod-security.admission.config.k8s.io/v1
        kind: PodSecurityConfiguration
        defaults:                    # for namespaces without the labels
          enforce: baseline
          enforce-version: latest
          audit: restricted
          warn: restricted
        exemptions:
          usernames: [system:serviceaccount:kube-system:replicaset-controller]
          runtimeClasses: [kata]
          namespaces: [kube-system]

Without a file (or without a PodSecurity entry) every default is ``privileged``/``latest`` and
nothing is exempt. A bad file stops the server with the field paths at fault (upstream refuses to
start too): fail closed, never run with a half-read policy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import yaml

from kubeling.apiserver.admission.podsecurity.api import LATEST, PRIVILEGED, LevelVersion, ParseError, Policy, \
    parse_level, parse_version

ADMISSION_CONFIG_KINDS = {"apiserver.config.k8s.io/v1", "apiserver.k8s.io/v1alpha1"}
POD_SECURITY_VERSIONS = {"pod-security.admission.config.k8s.io/v1", "pod-security.admission.config.k8s.io/v1beta1",
                         "pod-security.admission.config.k8s.io/v1alpha1"}
PLUGIN_NAME = "PodSecurity"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PodSecurityConfiguration:
    defaults: Policy = Policy(LevelVersion(PRIVILEGED, LATEST), LevelVersion(PRIVILEGED, LATEST),
                              LevelVersion(PRIVILEGED, LATEST))
    exempt_usernames: frozenset[str] = field(default_factory=frozenset)
    exempt_namespaces: frozenset[str] = field(default_factory=frozenset)
    exempt_runtime_classes: frozenset[str] = field(default_factory=frozenset)


def parse_pod_security_configuration(obj: dict) -> PodSecurityConfiguration:
    """A `PodSecurityConfiguration` from its decoded form; `ConfigError` lists every fault."""
    if not isinstance(obj, dict):
        raise ConfigError("PodSecurityConfiguration: must be an object")
    problems: list[str] = []
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version not in POD_SECURITY_VERSIONS or kind != "PodSecurityConfiguration":
        problems.append(f'apiVersion/kind: Unsupported value: "{api_version}, Kind={kind}": supported values: '
                        + ", ".join(f'"{v}, Kind=PodSecurityConfiguration"' for v in sorted(POD_SECURITY_VERSIONS)))
    defaults = obj.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append("defaults: must be an object")
        defaults = {}
    modes = {}
    for mode in ("enforce", "audit", "warn"):
        level, version = PRIVILEGED, LATEST
        if defaults.get(mode) not in (None, ""):
            try:
                level = parse_level(str(defaults[mode]))
            except ParseError as e:
                problems.append(f'defaults.{mode}: Invalid value: "{defaults[mode]}": {e}')
        vkey = mode + "-version"
        if defaults.get(vkey) not in (None, ""):
            try:
                version = parse_version(str(defaults[vkey]))
            except ParseError as e:
                problems.append(f'defaults.{vkey}: Invalid value: "{defaults[vkey]}": {e}')
        modes[mode] = LevelVersion(level, version)
    exemptions = obj.get("exemptions") or {}
    if not isinstance(exemptions, dict):
        problems.append("exemptions: must be an object")
        exemptions = {}
    lists = {}
    for key, pattern in (("usernames", None), ("namespaces", _DNS1123_LABEL), ("runtimeClasses", _DNS1123_SUBDOMAIN)):
        values = exemptions.get(key) or []
        if not isinstance(values, list):
            problems.append(f"exemptions.{key}: must be a list")
            values = []
        seen = set()
        for i, v in enumerate(values):
            path = f"exemptions.{key}[{i}]"
            if not isinstance(v, str) or not v:
                problems.append(f'{path}: Invalid value: "{v}": must be a non-empty string')
            elif pattern is not None and not pattern.match(v):
                problems.append(f'{path}: Invalid value: "{v}": must be a valid name')
            elif v in seen:
                problems.append(f'{path}: Duplicate value: "{v}"')
            seen.add(v)
        lists[key] = frozenset(v for v in values if isinstance(v, str))
    if problems:
        raise ConfigError("invalid PodSecurityConfiguration: " + "; ".join(problems))
    return PodSecurityConfiguration(Policy(modes["enforce"], modes["audit"], modes["warn"]), lists["usernames"],
                                    lists["namespaces"], lists["runtimeClasses"])


def _read(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"reading admission configuration {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"parsing admission configuration {path}: {e}") from None


def load(path: str | None) -> PodSecurityConfiguration:
    """The PodSecurity configuration named by an AdmissionConfiguration file (the defaults without
    one, or when the file has no PodSecurity plugin entry)."""
    if not path:
        return PodSecurityConfiguration()
    doc = _read(path)
    if not isinstance(doc, dict) or doc.get("kind") != "AdmissionConfiguration" or \
            doc.get("apiVersion") not in ADMISSION_CONFIG_KINDS:
        raise ConfigError(f"{path}: not an AdmissionConfiguration (apiVersion apiserver.config.k8s.io/v1)")
    for i, plugin in enumerate(doc.get("plugins") or []):
        if not isinstance(plugin, dict) or plugin.get("name") != PLUGIN_NAME:
            continue
        if plugin.get("configuration") is not None:
            conf = plugin["configuration"]
        elif plugin.get("path"):
            p = plugin["path"]
            conf = _read(p if os.path.isabs(p) else os.path.join(os.path.dirname(os.path.abspath(path)), p))
        else:
            raise ConfigError(f"{path}: plugins[{i}]: PodSecurity needs configuration or path")
        return parse_pod_security_configuration(conf)
    return PodSecurityConfiguration()
