"""SelfSubjectReview (upstream ``pkg/registry/authentication/selfsubjectreview``): who the
requester is, as ``kubectl auth whoami`` asks."""

from kubeling.apiserver.registry.authorization.selfsubjectaccessreview import review_object
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.strategy import Strategy


class SelfSubjectReviewREST:
    def __init__(self, deps: Deps) -> None:
        pass

    async def create(self, served, namespace, name, body, ctx):
        out = review_object(served, body)
        out["status"] = {"userInfo": {"username": ctx.user, "groups": list(ctx.groups),
                                      **({"uid": ctx.uid} if ctx.uid else {}),
                                      # a pod-bound token's pod, node and credential id, as upstream
                                      **({"extra": {k: list(v) for k, v in ctx.extra.items()}}
                                         if ctx.extra else {})}}
        return out, 201


class SelfSubjectReviewStrategy(Strategy):
    group, resource, kind = "authentication.k8s.io", "selfsubjectreviews", "SelfSubjectReview"
    namespaced = False
    rest = SelfSubjectReviewREST
