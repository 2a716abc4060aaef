"""The audit policy (upstream: ``audit.k8s.io/v1`` ``Policy``, evaluated as
``k8s.io/apiserver/pkg/audit/policy/checker.go``).

A policy is a list of rules; the **first** rule that matches a request gives its level, and a
request no rule matches is not audited (level None). A rule matches when every field it sets
matches:

- ``users``: the (authenticated, not impersonated) user's name is listed;
- ``userGroups``: one of the user's groups is listed;
- ``verbs``: the request verb (``get list watch create update patch delete deletecollection``
  for resources, the lower-cased HTTP method for other paths) is listed;
- ``namespaces`` / ``resources`` (resource requests only): the namespace is listed ("" is
  cluster scope); a ``resources`` entry matches on ``group`` (exactly; "" is core), then
  ``resources`` (``pods``, ``pods/log``, ``*``, ``*/status``, ``pods/*``; empty = all of the
  group) and ``resourceNames`` (empty = any);
- ``nonResourceURLs`` (non-resource requests only): ``*``, an exact path, or a prefix ending
  in ``*``.

``omitStages`` of the policy and of the matching rule are both omitted; ``omitManagedFields``
of the rule wins over the policy's when set. `load` reads a policy file (YAML or JSON) and
refuses an invalid one with every error, field by field, as upstream's validation does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
API_VERSIONS = ("audit.k8s.io/v1",)
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class PolicyError(ValueError):
    """An invalid policy file: the message lists every error."""


def level_at_least(level: str, than: str) -> bool:
    return LEVELS.index(level) >= LEVELS.index(than)


@dataclass(frozen=True)
class RequestAttributes:
    """What the policy looks at (upstream's authorizer.Attributes, as the audit filter fills it)."""

    user: str
    groups: tuple[str, ...]
    verb: str
    resource_request: bool
    path: str = ""
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True)
class AuditConfig:
    """The outcome for one request (upstream's RequestAuditConfig)."""

    level: str = "None"
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool = False


@dataclass
class Rule:
    level: str
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[dict, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool | None = None

    def matches(self, a: RequestAttributes) -> bool:
        if self.users and a.user not in self.users:
            return False
        if self.user_groups and not set(a.groups) & set(self.user_groups):
            return False
        if self.verbs and a.verb not in self.verbs:
            return False
        if self.namespaces or self.resources:
            return self._matches_resource(a)
        if self.non_resource_urls:
            return not a.resource_request and any(path_matches(a.path, s) for s in self.non_resource_urls)
        return True

    def _matches_resource(self, a: RequestAttributes) -> bool:
        if not a.resource_request:
            return False
        if self.namespaces and a.namespace not in self.namespaces:
            return False
        if not self.resources:
            return True
        combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        for gr in self.resources:
            if gr.get("group", "") != a.group:
                continue
            names = gr.get("resourceNames") or []
            resources = gr.get("resources") or []
            if not resources:
                return True
            if names and a.name not in names:
                continue
            for r in resources:
                if r in (combined, "*"):
                    return True
                if a.subresource and r.startswith("*/") and r[2:] == a.subresource:
                    return True
                if r.endswith("/*") and r[:-2] == a.resource:
                    return True
        return False


def path_matches(path: str, spec: str) -> bool:
    if spec in ("*", path):
        return True
    return spec.endswith("*") and path.startswith(spec[:-1])


@dataclass
class Policy:
    rules: list[Rule] = field(default_factory=list)
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool = False

    def evaluate(self, a: RequestAttributes) -> AuditConfig:
        for r in self.rules:
            if r.matches(a):
                omf = self.omit_managed_fields if r.omit_managed_fields is None else r.omit_managed_fields
                return AuditConfig(r.level, self.omit_stages | r.omit_stages, omf)
        return AuditConfig("None", self.omit_stages, self.omit_managed_fields)


def _strings(errs: list[str], path: str, v) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        errs.append(f"{path}: Invalid value: {v!r}: must be a list of strings")
        return ()
    return tuple(v)


def _stages(errs: list[str], path: str, v) -> frozenset[str]:
    stages = _strings(errs, path, v)
    for i, s in enumerate(stages):
        if s not in STAGES:
            errs.append(f'{path}[{i}]: Unsupported value: "{s}": supported values: '
                        + ", ".join(f'"{x}"' for x in STAGES))
    return frozenset(s for s in stages if s in STAGES)


def parse(doc) -> Policy:
    """A `Policy` from a decoded document; `PolicyError` listing every problem."""
    errs: list[str] = []
    if not isinstance(doc, dict):
        raise PolicyError("the audit policy must be an object (apiVersion: audit.k8s.io/v1, kind: Policy)")
    if doc.get("kind") != "Policy":
        errs.append(f'kind: Invalid value: {doc.get("kind")!r}: must be "Policy"')
    if doc.get("apiVersion") not in API_VERSIONS:
        errs.append(f'apiVersion: Unsupported value: {doc.get("apiVersion")!r}: supported values: "audit.k8s.io/v1"')
    policy = Policy(omit_stages=_stages(errs, "omitStages", doc.get("omitStages")),
                    omit_managed_fields=bool(doc.get("omitManagedFields", False)))
    rules = doc.get("rules") or []
    if not isinstance(rules, list):
        errs.append("rules: Invalid value: must be a list")
        rules = []
    for i, r in enumerate(rules):
        p = f"rules[{i}]"
        if not isinstance(r, dict):
            errs.append(f"{p}: Invalid value: must be an object")
            continue
        level = r.get("level")
        if level is None or level == "":
            errs.append(f"{p}.level: Required value")
            level = "None"
        elif level not in LEVELS:
            errs.append(f'{p}.level: Unsupported value: "{level}": supported values: '
                        + ", ".join(f'"{x}"' for x in LEVELS))
            level = "None"
        urls = _strings(errs, f"{p}.nonResourceURLs", r.get("nonResourceURLs"))
        namespaces = _strings(errs, f"{p}.namespaces", r.get("namespaces"))
        resources = r.get("resources") or []
        if not isinstance(resources, list):
            errs.append(f"{p}.resources: Invalid value: must be a list")
            resources = []
        if urls and (resources or namespaces):
            errs.append(f"{p}.nonResourceURLs: Invalid value: {list(urls)!r}: rules cannot apply to both regular "
                        "resources and non-resource URLs")
        for j, u in enumerate(urls):
            if u != "*" and not u.startswith("/"):
                errs.append(f'{p}.nonResourceURLs[{j}]: Invalid value: "{u}": non-resource URL rules must begin '
                            'with a "/" character')
            if "*" in u[:-1]:
                errs.append(f'{p}.nonResourceURLs[{j}]: Invalid value: "{u}": non-resource URL wildcards ("*") '
                            "must be the final character of the rule")
        checked = []
        for j, gr in enumerate(resources):
            q = f"{p}.resources[{j}]"
            if not isinstance(gr, dict):
                errs.append(f"{q}: Invalid value: must be an object")
                continue
            group = gr.get("group", "") or ""
            if not isinstance(group, str):
                errs.append(f"{q}.group: Invalid value: must be a string")
                continue
            if group and not _DNS_SUBDOMAIN.fullmatch(group):
                errs.append(f'{q}.group: Invalid value: "{group}": a lowercase RFC 1123 subdomain must consist of '
                            "lower case alphanumeric characters, '-' or '.', and must start and end with an "
                            "alphanumeric character")
            res = _strings(errs, f"{q}.resources", gr.get("resources"))
            names = _strings(errs, f"{q}.resourceNames", gr.get("resourceNames"))
            if names and not res:
                errs.append(f"{q}.resourceNames: Invalid value: {list(names)!r}: using resourceNames requires at "
                            "least one resource")
            for k, x in enumerate(res):
                if names and (x == "*" or x.startswith("*/") or x.endswith("/*")):
                    errs.append(f'{q}.resources[{k}]: Invalid value: "{x}": using resourceNames requires that '
                                "resources not contain wildcards")
            checked.append({"group": group, "resources": list(res), "resourceNames": list(names)})
        policy.rules.append(Rule(
            level=level, users=_strings(errs, f"{p}.users", r.get("users")),
            user_groups=_strings(errs, f"{p}.userGroups", r.get("userGroups")),
            verbs=_strings(errs, f"{p}.verbs", r.get("verbs")), resources=tuple(checked), namespaces=namespaces,
            non_resource_urls=urls, omit_stages=_stages(errs, f"{p}.omitStages", r.get("omitStages")),
            omit_managed_fields=r.get("omitManagedFields") if isinstance(r.get("omitManagedFields"), bool)
            else None))
    if errs:
        raise PolicyError("invalid audit policy: " + "; ".join(errs))
    return policy


def load(path: str | Path) -> Policy:
    """Read and validate a policy file (YAML or JSON)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise PolicyError(f"reading the audit policy {path}: {e.strerror or e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PolicyError(f"the audit policy {path} is not YAML or JSON: {e}") from None
    try:
        return parse(doc)
    except PolicyError as e:
        raise PolicyError(f"{path}: {e}") from None
