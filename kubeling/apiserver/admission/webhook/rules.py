"""Which requests a webhook sees (upstream ``plugin/pkg/admission/webhook/predicates/rules`` and
``.../predicates/namespace``, ``.../predicates/object``, and the equivalent-resource matching of
``generic/webhook.go``).

- `rule_matches`: one ``RuleWithOperations`` against (operation, group, version, resource,
  subresource, scope). Operations match by name or ``*``; a CONNECT rule is never matched here
  (kubeling's chain admits writes only). Resources: ``pods`` (no subresource), ``pods/status``,
  ``pods/*`` (the resource and every subresource), ``*/status``, ``*`` (every resource, no
  subresource), ``*/*``. Scope ``Cluster`` / ``Namespaced`` / ``*``.
- `namespace_labels_match`: namespaceSelector — for a namespaced object, its namespace's labels;
  for a Namespace itself, the object's own labels; for any other cluster-scoped object, always.
- `object_labels_match`: objectSelector — the new or the old object's labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubeling.api.validation.meta import selector_is_empty, selector_matches


@dataclass(frozen=True)
class Target:
    """What a rule is matched against: one served version of a resource."""

    operation: str       # CREATE | UPDATE | DELETE | CONNECT
    group: str
    version: str
    resource: str
    subresource: str
    namespaced: bool


def _in(values: list | None, value: str) -> bool:
    values = values or []
    return "*" in values or value in values


def resource_matches(patterns: list | None, resource: str, subresource: str) -> bool:
    for p in patterns or []:
        if p == "*/*":
            return True
        res, _, sub = p.partition("/")
        if "/" not in p:
            if subresource == "" and (res == "*" or res == resource):
                return True
            continue
        if res != "*" and res != resource:
            continue
        if sub == "*" or sub == subresource:
            return True
    return False


def rule_matches(rule: dict, t: Target) -> bool:
    ops = rule.get("operations") or []
    if t.operation == "CONNECT" and "CONNECT" not in ops:
        return False
    if "*" not in ops and t.operation not in ops:
        return False
    if not _in(rule.get("apiGroups"), t.group) or not _in(rule.get("apiVersions"), t.version):
        return False
    if not resource_matches(rule.get("resources"), t.resource, t.subresource):
        return False
    scope = rule.get("scope") or "*"
    if scope == "Cluster" and t.namespaced:
        return False
    if scope == "Namespaced" and not t.namespaced:
        return False
    return True


def rules_match(rules: list | None, t: Target) -> bool:
    return any(isinstance(r, dict) and rule_matches(r, t) for r in rules or [])


def _labels(obj: dict | None) -> dict:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def object_labels_match(selector: dict | None, obj: dict | None, old: dict | None) -> bool:
    if selector_is_empty(selector):
        return True
    return (obj is not None and selector_matches(selector, _labels(obj))) or \
        (old is not None and selector_matches(selector, _labels(old)))


def namespace_labels_match(selector: dict | None, namespace_labels: dict | None) -> bool:
    """``namespace_labels`` None means: not applicable (a cluster-scoped object other than a
    Namespace), which always matches."""
    if selector_is_empty(selector) or namespace_labels is None:
        return True
    return selector_matches(selector, namespace_labels)
