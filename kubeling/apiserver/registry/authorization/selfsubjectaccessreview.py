"""SelfSubjectAccessReview (upstream ``pkg/registry/authorization/selfsubjectaccessreview``): may
the requester do this? ``kubectl auth can-i`` asks it. Answered by the authorizer, never stored;
`AccessReviewREST` also answers SubjectAccessReview (for the user named in the spec)."""

from __future__ import annotations

import copy

from kubeling.api import errors
from kubeling.apiserver.auth import Attributes, UserInfo
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.strategy import Strategy


def review_object(served, body: dict) -> dict:
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request must be a JSON or YAML object")
    out = copy.deepcopy(body)
    out["apiVersion"], out["kind"] = served.res.group_version, served.res.kind
    out.setdefault("metadata", {})["creationTimestamp"] = None
    return out


class AccessReviewREST:
    """SelfSubjectAccessReview (the requester) and SubjectAccessReview (the user in the spec)."""

    def __init__(self, deps: Deps) -> None:
        self.authorizer = deps.authorizer

    async def create(self, served, namespace, name, body, ctx):
        out = review_object(served, body)
        spec = out.get("spec") or {}
        user = UserInfo(ctx.user, ctx.uid, tuple(ctx.groups))
        if served.res.resource == "subjectaccessreviews":
            user = UserInfo(spec.get("user", ""), spec.get("uid", ""), tuple(spec.get("groups") or []))
        ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if ra:
            attrs = Attributes(user, ra.get("verb", ""), True, "", ra.get("group", ""), ra.get("version", ""),
                               ra.get("resource", ""), ra.get("subresource", ""), ra.get("namespace", ""),
                               ra.get("name", ""))
        elif nra:
            attrs = Attributes(user, nra.get("verb", ""), False, nra.get("path", ""))
        else:
            raise errors.invalid(served.res.kind, served.res.group, "", [errors.required(
                "spec.resourceAttributes", "exactly one of nonResourceAttributes or resourceAttributes must be "
                "specified")])
        d = self.authorizer.authorize(attrs)
        out["status"] = {"allowed": d.allowed}
        if d.reason:
            out["status"]["reason"] = d.reason
        if d.denied:
            out["status"]["denied"] = True
        return out, 201


class SelfSubjectAccessReviewStrategy(Strategy):
    group, resource, kind = "authorization.k8s.io", "selfsubjectaccessreviews", "SelfSubjectAccessReview"
    namespaced = False
    rest = AccessReviewREST
