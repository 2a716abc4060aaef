"""The RBAC authorizer (upstream's ``plugin/pkg/auth/authorizer/rbac``).

A request is allowed when some rule of some role bound to its user allows it:

- `RuleResolver` walks the bindings that apply to a user: every ClusterRoleBinding, then (for a
  namespaced request) the RoleBindings of that namespace; each names a Role (of the binding's
  namespace) or a ClusterRole, whose rules it grants. A binding applies through a subject of kind
  ``User`` (the user's name), ``Group`` (one of the user's groups) or ``ServiceAccount``
  (``system:serviceaccount:<ns>:<name>``; a RoleBinding's subject without a namespace means the
  binding's own namespace).
- A rule matches a resource request when its verbs, apiGroups, resources and resourceNames all
  match (``*`` matches anything; a rule resource ``*/scale`` matches the subresource ``scale`` of
  any resource; ``pods/log`` matches that subresource only, and ``pods`` does not cover
  ``pods/log``; an empty resourceNames matches every name), and a non-resource request when its
  verbs and nonResourceURLs match (``/apis/*`` matches every path under ``/apis/``).
- A role that does not exist grants nothing (upstream records a resolution error and goes on).
- RBAC never denies: it allows or has no opinion, so the next authorizer of the chain may answer.

The roles and bindings are read from the API server's own watch cache (`CacherSource`), without
awaiting, so one authorization sees one revision of the cache. `StaticSource` holds plain lists
(tests, and the escalation check's role preview).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from kubeling.apiserver.auth import Attributes, Decision, UserInfo

log = logging.getLogger(__name__)

GROUP = "rbac.authorization.k8s.io"
SA_PREFIX = "system:serviceaccount:"
ALL = "*"
_MEMO_MAX = 8192


# -- reading roles and bindings --------------------------------------------------------------------

class StaticSource:
    """Roles and bindings held in lists (``{"roles": [...], "clusterroles": [...], ...}``)."""

    def __init__(self, objects: dict[str, list[dict]] | None = None) -> None:
        self.data = {r: list(v) for r, v in (objects or {}).items()}

    def list(self, resource: str, namespace: str | None = None) -> list[dict]:
        items = self.data.get(resource, [])
        if namespace is None:
            return items
        return [o for o in items if o["metadata"].get("namespace") == namespace]

    def get(self, resource: str, namespace: str | None, name: str) -> dict | None:
        for o in self.list(resource, namespace):
            if o["metadata"]["name"] == name:
                return o
        return None


class CacherSource:
    """Roles and bindings from the API server's watch cache (`kubeling.apiserver.cacher.Cacher`).

    ``cacher`` is a callable returning the cacher (the server attaches it after building the
    authorizer); with no cacher yet, or while the cache is rebuilt, there is nothing to read and
    RBAC grants nothing. ``prefix(resource)`` is the store prefix of an RBAC resource."""

    def __init__(self, cacher: Callable[[], object], prefix: Callable[[str], str]) -> None:
        self._cacher = cacher
        self._prefix = prefix
        self._prefixes: dict[str, str] = {}

    def _cache(self, resource: str):
        cacher = self._cacher()
        if cacher is None:
            return None
        p = self._prefixes.get(resource)
        if p is None:
            p = self._prefixes[resource] = self._prefix(resource)
        return getattr(cacher, "_caches", {}).get(p)

    def list(self, resource: str, namespace: str | None = None) -> list[dict]:
        cache = self._cache(resource)
        if cache is None:
            return []
        bucket = cache.objects if namespace is None else cache.by_namespace.get(namespace, {})
        return [e.obj for e in list(bucket.values())]

    def get(self, resource: str, namespace: str | None, name: str) -> dict | None:
        cache = self._cache(resource)
        if cache is None:
            return None
        p = self._prefixes[resource]
        entry = cache.objects.get(f"{p}{namespace}/{name}" if namespace else f"{p}{name}")
        return entry.obj if entry is not None else None


# -- matching --------------------------------------------------------------------------------------

def verb_matches(rule: dict, verb: str) -> bool:
    verbs = rule.get("verbs") or ()
    return ALL in verbs or verb in verbs


def api_group_matches(rule: dict, group: str) -> bool:
    groups = rule.get("apiGroups") or ()
    return ALL in groups or group in groups


def resource_matches(rule: dict, combined: str, subresource: str) -> bool:
    """``combined`` is ``resource`` or ``resource/subresource``."""
    for r in rule.get("resources") or ():
        if r == ALL or r == combined:
            return True
        if subresource and len(r) == len(subresource) + 2 and r.startswith("*/") and r.endswith(subresource):
            return True
    return False


def resource_name_matches(rule: dict, name: str) -> bool:
    names = rule.get("resourceNames") or ()
    return not names or name in names


def non_resource_url_matches(rule: dict, path: str) -> bool:
    for u in rule.get("nonResourceURLs") or ():
        if u == ALL or u == path or (u.endswith("*") and path.startswith(u[:-1])):
            return True
    return False


def rule_allows(attrs: Attributes, rule: dict) -> bool:
    if attrs.resource_request:
        combined = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
        return (verb_matches(rule, attrs.verb) and api_group_matches(rule, attrs.group)
                and resource_matches(rule, combined, attrs.subresource)
                and resource_name_matches(rule, attrs.name))
    return verb_matches(rule, attrs.verb) and non_resource_url_matches(rule, attrs.path)


def applies_to(subject: dict, user: UserInfo, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return bool(ns) and user.name == f"{SA_PREFIX}{ns}:{name}"
    return False


def describe_subject(subject: dict, binding_namespace: str) -> str:
    kind, name = subject.get("kind", ""), subject.get("name", "")
    if kind == "ServiceAccount":
        return f'{kind} "{subject.get("namespace") or binding_namespace}/{name}"'
    return f'{kind} "{name}"'


# -- resolving -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Visit:
    """One rule reached for a user: through which binding and role (for reasons and errors)."""

    binding_kind: str
    binding: str
    namespace: str
    role_kind: str
    role: str
    subject: dict
    rule: dict

    def reason(self) -> str:
        # upstream's describers: a RoleBinding is "name/namespace"
        where = f'{self.binding_kind} "{self.binding}' + (f'/{self.namespace}"' if self.namespace else '"')
        return (f'RBAC: allowed by {where} of {self.role_kind} "{self.role}" to '
                f'{describe_subject(self.subject, self.namespace)}')


class RuleResolver:
    """Upstream's ``DefaultRuleResolver``: the rules a user holds in a namespace ("" = cluster)."""

    def __init__(self, source) -> None:
        self.source = source

    def role_rules(self, kind: str, name: str, namespace: str) -> tuple[list[dict], str | None]:
        """The rules of a role reference: (rules, error or None)."""
        if kind == "ClusterRole":
            role = self.source.get("clusterroles", None, name)
        elif kind == "Role":
            role = self.source.get("roles", namespace, name) if namespace else None
        else:
            return [], f'unsupported role reference kind: "{kind}"'
        if role is None:
            where = f'{kind.lower()}s.{GROUP} "{name}" not found'
            return [], where
        return list(role.get("rules") or ()), None

    def visit(self, user: UserInfo, namespace: str) -> Iterator[Visit | str]:
        """Every rule ``user`` holds in ``namespace`` (``""``: cluster-wide only), as `Visit`s;
        a string is a resolution error (a role that does not exist)."""
        yield from self._visit_bindings("clusterrolebindings", "ClusterRoleBinding", None, user)
        if namespace:
            yield from self._visit_bindings("rolebindings", "RoleBinding", namespace, user)

    def _visit_bindings(self, resource: str, binding_kind: str, namespace: str | None,
                        user: UserInfo) -> Iterator[Visit | str]:
        for b in self.source.list(resource, namespace):
            ns = b["metadata"].get("namespace", "") if namespace else ""
            subject = next((s for s in b.get("subjects") or () if applies_to(s, user, ns)), None)
            if subject is None:
                continue
            ref = b.get("roleRef") or {}
            rules, err = self.role_rules(ref.get("kind", ""), ref.get("name", ""), ns)
            if err:
                yield f'{binding_kind} "{b["metadata"]["name"]}"' + (f' in namespace "{ns}"' if ns else "") + \
                      f": {err}"
            for rule in rules:
                yield Visit(binding_kind, b["metadata"]["name"], ns, ref.get("kind", ""), ref.get("name", ""),
                            subject, rule)

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[str]]:
        rules, errs = [], []
        for v in self.visit(user, namespace):
            if isinstance(v, str):
                errs.append(v)
            else:
                rules.append(v.rule)
        return rules, errs


class RBACAuthorizer:
    """Allows what some bound rule allows; otherwise no opinion (see the module docstring)."""

    def __init__(self, source) -> None:
        self.resolver = RuleResolver(source)

    def authorize(self, attrs: Attributes) -> Decision:
        namespace = attrs.namespace if attrs.resource_request else ""
        try:
            for v in self.resolver.visit(attrs.user, namespace):
                if not isinstance(v, str) and rule_allows(attrs, v.rule):
                    return Decision(True, v.reason())
        except Exception:  # noqa: BLE001 - one malformed object must not fail every request
            log.exception("RBAC: evaluating the rules of %s", attrs.user.name)
        return Decision(False, "")

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[str]]:
        return self.resolver.rules_for(user, namespace)


def split_rules(rules: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """Rules as a SelfSubjectRulesReview shows them: (resourceRules, nonResourceRules)."""
    res, non = [], []
    for r in rules:
        if r.get("nonResourceURLs"):
            non.append({"verbs": list(r.get("verbs") or ()), "nonResourceURLs": list(r["nonResourceURLs"])})
        else:
            out = {"verbs": list(r.get("verbs") or ()), "apiGroups": list(r.get("apiGroups") or ()),
                   "resources": list(r.get("resources") or ())}
            if r.get("resourceNames"):
                out["resourceNames"] = list(r["resourceNames"])
            res.append(out)
    return res, non
