"""RBAC (``rbac.authorization.k8s.io``): the authorizer (`authorizer`), escalation prevention
(`escalation`) and the bootstrap policy (`bootstrap`).

Wiring (``APIServer.__init__``): `authorizer_for(api)` is the last authorizer of the default
chain (`kubeling.apiserver.auth.default_authorizer`); `install_escalation_checks(api)` gives the
RBAC registry strategies the check their create/update paths run; the server start
(`kubeling.apiserver.server.bootstrap`) reconciles the bootstrap policy.
"""

from __future__ import annotations

from kubeling.apiserver.rbac.authorizer import CacherSource, RBACAuthorizer, RuleResolver, StaticSource

GROUP = "rbac.authorization.k8s.io"
__all__ = ["CacherSource", "RBACAuthorizer", "RuleResolver", "StaticSource", "authorizer_for",
           "install_escalation_checks"]


def authorizer_for(api) -> RBACAuthorizer:
    """The RBAC authorizer over ``api``'s watch cache (``api.scope.cacher``, read when asked)."""
    return RBACAuthorizer(CacherSource(lambda: getattr(api.scope, "cacher", None),
                                       lambda r: api.lookup(GROUP, "v1", r).prefix))


def install_escalation_checks(api) -> None:
    """Give the Role/ClusterRole/RoleBinding/ClusterRoleBinding strategies of ``api`` their
    `escalation.EscalationCheck` (over ``api.authorizer`` and ``api.rbac``'s rule resolver)."""
    from kubeling.apiserver.rbac.escalation import EscalationCheck

    check = EscalationCheck(api.authorizer, api.rbac.resolver)
    for resource in ("roles", "clusterroles", "rolebindings", "clusterrolebindings"):
        strategy = api.strategies.get((GROUP, resource))
        if strategy is not None:
            strategy.escalation = check
