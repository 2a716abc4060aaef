"""Escalation prevention (upstream's ``pkg/registry/rbac`` policy-based storage and
``pkg/registry/rbac/validation``): nobody grants more than they hold.

- Creating or updating a Role or ClusterRole: every rule it grants must be covered by the rules
  the requester already holds (in the Role's namespace; cluster-wide for a ClusterRole), unless
  the requester may ``escalate`` that role. Setting an ``aggregationRule`` (which can gather
  anything) needs full authority (``*`` on everything) or ``escalate``.
- Creating or updating a RoleBinding or ClusterRoleBinding: the rules of the role it references
  must be covered by the requester's (in the binding's namespace), unless the requester may
  ``bind`` that role.
- ``system:masters`` passes without a check (upstream's ``EscalationAllowed``).
- An update that changes only ``metadata.ownerReferences``/``finalizers`` (what the garbage
  collector writes) is not checked.

"Covered" is upstream's ``Covers``: each rule is broken down into one verb on one group, one
resource and one name (or one non-resource URL), and each piece must be allowed by some held
rule, where ``*`` covers anything, ``*/x`` covers every ``r/x``, an owner rule without
resourceNames covers every name, and ``/x/*`` covers every URL under ``/x/``.

The refusal is upstream's 403: ``user "bob" (groups=[...]) is attempting to grant RBAC
permissions not currently held:`` followed by the missing rules.
"""

from __future__ import annotations

import copy

from kubeling.api import errors
from kubeling.apiserver.auth import Attributes, UserInfo
from kubeling.apiserver.rbac.authorizer import ALL, GROUP, RuleResolver

MASTERS = "system:masters"
FULL_AUTHORITY = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                  {"verbs": ["*"], "nonResourceURLs": ["*"]}]


def breakdown(rule: dict) -> list[dict]:
    """One rule per verb × group × resource × name (or verb × non-resource URL)."""
    out = []
    verbs = list(rule.get("verbs") or ())
    for group in rule.get("apiGroups") or ():
        for resource in rule.get("resources") or ():
            for verb in verbs:
                names = rule.get("resourceNames") or ()
                if names:
                    out.extend({"verbs": [verb], "apiGroups": [group], "resources": [resource],
                                "resourceNames": [n]} for n in names)
                else:
                    out.append({"verbs": [verb], "apiGroups": [group], "resources": [resource]})
    for url in rule.get("nonResourceURLs") or ():
        out.extend({"verbs": [verb], "nonResourceURLs": [url]} for verb in verbs)
    return out


def _has_all(owner, wanted) -> bool:
    return all(w in owner for w in wanted)


def _resources_covered(owner: list[str], wanted: list[str]) -> bool:
    if ALL in owner:
        return True
    for w in wanted:
        if w in owner:
            continue
        if "/" in w and "*/" + w.split("/", 1)[1] in owner:
            continue
        return False
    return True


def _url_covered(owner: str, wanted: str) -> bool:
    if owner == wanted or owner == ALL:
        return True
    return owner.endswith("*") and wanted.startswith(owner[:-1])


def _urls_covered(owner: list[str], wanted: list[str]) -> bool:
    return all(any(_url_covered(o, w) for o in owner) for w in wanted)


def rule_covers(owner: dict, sub: dict) -> bool:
    """Upstream's ``ruleCovers``: does ``owner`` allow everything ``sub`` (a broken-down rule) does?"""
    verbs = owner.get("verbs") or []
    if not (ALL in verbs or _has_all(verbs, sub.get("verbs") or [])):
        return False
    groups = owner.get("apiGroups") or []
    if not (ALL in groups or _has_all(groups, sub.get("apiGroups") or [])):
        return False
    if not _resources_covered(owner.get("resources") or [], sub.get("resources") or []):
        return False
    if not _urls_covered(owner.get("nonResourceURLs") or [], sub.get("nonResourceURLs") or []):
        return False
    owner_names, sub_names = owner.get("resourceNames") or [], sub.get("resourceNames") or []
    if sub_names:
        return not owner_names or _has_all(owner_names, sub_names)
    return not owner_names


def covers(owner_rules: list[dict], servant_rules: list[dict]) -> tuple[bool, list[dict]]:
    """(all covered, the broken-down rules that are not)."""
    missing = []
    for rule in servant_rules:
        for piece in breakdown(rule):
            if not any(rule_covers(o, piece) for o in owner_rules):
                missing.append(piece)
    return not missing, missing


def _compact(rule: dict) -> str:
    parts = []
    for key, label in (("apiGroups", "APIGroups"), ("resources", "Resources"), ("resourceNames", "ResourceNames"),
                       ("nonResourceURLs", "NonResourceURLs"), ("verbs", "Verbs")):
        if rule.get(key):
            parts.append(f"{label}:[" + " ".join(f'"{v}"' for v in rule[key]) + "]")
    return "{" + ", ".join(parts) + "}"


def confirm_no_escalation(resolver: RuleResolver, user: UserInfo, namespace: str, rules: list[dict]) -> str | None:
    """None when ``user`` holds every rule of ``rules`` in ``namespace``; else why not."""
    owner, resolution_errors = resolver.rules_for(user, namespace)
    ok, missing = covers(owner, rules)
    if ok:
        return None
    groups = "[" + " ".join(f'"{g}"' for g in user.groups) + "]"
    msg = (f'user "{user.name}" (groups={groups}) is attempting to grant RBAC permissions not currently held:\n'
           + "\n".join(_compact(m) for m in missing))
    if resolution_errors:
        msg += "; resolution errors: [" + ", ".join(resolution_errors) + "]"
    return msg


def _user(ctx) -> UserInfo:
    return UserInfo(ctx.user, ctx.uid, tuple(ctx.groups), dict(ctx.extra or {}))


def _only_gc_fields_changed(new: dict, old: dict | None) -> bool:
    """Upstream's ``IsOnlyMutatingGCFields``."""
    if old is None:
        return False
    a, b = copy.deepcopy(new), copy.deepcopy(old)
    for o in (a, b):
        meta = o.setdefault("metadata", {})
        for k in ("ownerReferences", "finalizers", "resourceVersion", "managedFields", "generation"):
            meta.pop(k, None)
    return a == b


class EscalationCheck:
    """What the RBAC registry strategies call before a write (see the module docstring).

    ``authorizer``: the server's whole chain (for the ``escalate``/``bind`` verbs);
    ``resolver``: RBAC's `RuleResolver` (for the requester's own rules)."""

    def __init__(self, authorizer, resolver: RuleResolver) -> None:
        self.authorizer = authorizer
        self.resolver = resolver

    def _allowed(self, user: UserInfo, verb: str, resource: str, namespace: str, name: str) -> bool:
        d = self.authorizer.authorize(Attributes(user, verb, True, "", GROUP, "v1", resource, "", namespace, name))
        return d.allowed

    def check_role(self, resource: str, obj: dict, old: dict | None, ctx) -> None:
        """Before creating/updating a Role (``resource="roles"``) or ClusterRole."""
        user = _user(ctx)
        if MASTERS in user.groups or _only_gc_fields_changed(obj, old):
            return
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace", "") if resource == "roles" else ""
        name = meta.get("name", "")
        if self._allowed(user, "escalate", resource, namespace, name):
            return
        why = confirm_no_escalation(self.resolver, user, namespace, list(obj.get("rules") or ()))
        if why is None and resource == "clusterroles" and (obj.get("aggregationRule") or
                                                           (old or {}).get("aggregationRule")):
            if confirm_no_escalation(self.resolver, user, "", FULL_AUTHORITY) is not None:
                why = "must have cluster-admin privileges to use the aggregationRule"
        if why is not None:
            raise errors.forbidden_status(resource, GROUP, name, why)

    def check_binding(self, resource: str, obj: dict, old: dict | None, ctx) -> None:
        """Before creating/updating a RoleBinding (``resource="rolebindings"``) or ClusterRoleBinding."""
        user = _user(ctx)
        if MASTERS in user.groups or _only_gc_fields_changed(obj, old):
            return
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace", "") if resource == "rolebindings" else ""
        name = meta.get("name", "")
        ref = obj.get("roleRef") or {}
        kind, role = ref.get("kind", ""), ref.get("name", "")
        role_resource = "clusterroles" if kind == "ClusterRole" else "roles"
        if self._allowed(user, "bind", role_resource, namespace, role):
            return
        rules, err = self.resolver.role_rules(kind, role, namespace)
        if err:
            raise errors.forbidden_status(resource, GROUP, name, err)
        why = confirm_no_escalation(self.resolver, user, namespace, rules)
        if why is not None:
            raise errors.forbidden_status(resource, GROUP, name, why)
