"""SelfSubjectRulesReview (upstream ``pkg/registry/authorization/selfsubjectrulesreview``): what
may the requester do in ``spec.namespace``? ``kubectl auth can-i --list`` asks it. Answered from
the authorizer chain's ``rules_for`` (``system:masters``: everything; RBAC: the rules of every
role bound to the user there and cluster-wide), never stored. ``incomplete`` is true and
``evaluationError`` says why when a binding names a role that does not exist, as upstream."""

from kubeling.apiserver.auth import UserInfo
from kubeling.apiserver.rbac.authorizer import split_rules
from kubeling.apiserver.registry.authorization.selfsubjectaccessreview import review_object
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.strategy import Strategy


class RulesReviewREST:
    """SelfSubjectRulesReview: what the requester may do in a namespace."""

    def __init__(self, deps: Deps) -> None:
        self.authorizer = deps.authorizer

    async def create(self, served, namespace, name, body, ctx):
        out = review_object(served, body)
        spec = out.get("spec") or {}
        user = UserInfo(ctx.user, ctx.uid, tuple(ctx.groups), dict(ctx.extra or {}))
        rules, errs = self.authorizer.rules_for(user, spec.get("namespace") or "")
        resource_rules, non_resource_rules = split_rules(rules)
        out["status"] = {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
                         "incomplete": bool(errs)}
        if errs:
            out["status"]["evaluationError"] = "; ".join(errs)
        return out, 201


class SelfSubjectRulesReviewStrategy(Strategy):
    group, resource, kind = "authorization.k8s.io", "selfsubjectrulesreviews", "SelfSubjectRulesReview"
    namespaced = False
    rest = RulesReviewREST
