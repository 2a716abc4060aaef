"""SelfSubjectRulesReview (upstream ``pkg/registry/authorization/selfsubjectrulesreview``): what
may the requester do? Everything for ``system:masters``; RBAC's rules arrive with issue 9."""

from kubeling.apiserver.registry.authorization.selfsubjectaccessreview import review_object
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.strategy import Strategy


class RulesReviewREST:
    """SelfSubjectRulesReview: what the requester may do (everything for ``system:masters``)."""

    def __init__(self, deps: Deps) -> None:
        pass

    async def create(self, served, namespace, name, body, ctx):
        out = review_object(served, body)
        admin = "system:masters" in ctx.groups
        out["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}] if admin
                         else [], "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}] if admin else [],
                         "incomplete": False}
        return out, 201


class SelfSubjectRulesReviewStrategy(Strategy):
    group, resource, kind = "authorization.k8s.io", "selfsubjectrulesreviews", "SelfSubjectRulesReview"
    namespaced = False
    rest = RulesReviewREST
