"""SelfSubjectAccessReview (upstream ``pkg/registry/authorization/selfsubjectaccessreview``): may
the requester do this? ``kubectl auth can-i`` asks it. Answered by the authorizer, never stored.

`AccessReviewREST` answers the three access reviews of ``authorization.k8s.io/v1``:

- SelfSubjectAccessReview: for the requester (after impersonation, the impersonated user, with
  uid, groups and extra);
- SubjectAccessReview: for ``spec.user``/``spec.groups``/``spec.uid``/``spec.extra``;
- LocalSubjectAccessReview: as SubjectAccessReview, limited to the request's namespace
  (``spec.resourceAttributes.namespace`` must match it; no nonResourceAttributes).

Validation and messages are upstream's (``ValidateSubjectAccessReviewSpec``); the status carries
``allowed``, ``denied`` and ``reason`` from the authorizer chain. An authorizer fault is an
``evaluationError`` with ``allowed: false``, never a grant.
"""

from __future__ import annotations

import copy
import logging

from kubeling.api import errors
from kubeling.apiserver.auth import Attributes, UserInfo
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.strategy import Strategy

log = logging.getLogger(__name__)


def review_object(served, body: dict) -> dict:
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request must be a JSON or YAML object")
    out = copy.deepcopy(body)
    out["apiVersion"], out["kind"] = served.res.group_version, served.res.kind
    out.setdefault("metadata", {})["creationTimestamp"] = None
    return out


def _strings(v) -> list[str]:
    return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []


def spec_errors(spec: dict, *, subject: bool, local_namespace: str | None = None) -> list:
    """Upstream's ValidateSubjectAccessReviewSpec (and the local and self variants)."""
    errs = []
    ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if ra is not None and not isinstance(ra, dict):
        errs.append(errors.invalid_value("spec.resourceAttributes", ra, "must be an object"))
    if nra is not None and not isinstance(nra, dict):
        errs.append(errors.invalid_value("spec.nonResourceAttributes", nra, "must be an object"))
    if ra is not None and nra is not None:
        errs.append(errors.invalid_value("spec.nonResourceAttributes", nra,
                                         "cannot be specified in combination with resourceAttributes"))
    if ra is None and nra is None:
        errs.append(errors.invalid_value("spec.resourceAttributes", None,
                                         "exactly one of nonResourceAttributes or resourceAttributes must be "
                                         "specified"))
    if subject and not spec.get("user") and not spec.get("groups"):
        errs.append(errors.invalid_value("spec.user", spec.get("user", ""),
                                         "at least one of user or group must be specified"))
    if local_namespace is not None:
        if isinstance(ra, dict) and (ra.get("namespace") or "") != local_namespace:
            errs.append(errors.invalid_value("spec.resourceAttributes.namespace", ra.get("namespace", ""),
                                             "must match metadata.namespace"))
        if nra is not None:
            errs.append(errors.invalid_value("spec.nonResourceAttributes", nra, "disallowed on this kind of request"))
    return errs


def attributes(user: UserInfo, spec: dict) -> Attributes:
    ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if ra:
        return Attributes(user, str(ra.get("verb", "")), True, "", str(ra.get("group", "")),
                          str(ra.get("version", "")), str(ra.get("resource", "")), str(ra.get("subresource", "")),
                          str(ra.get("namespace", "")), str(ra.get("name", "")))
    nra = nra or {}
    return Attributes(user, str(nra.get("verb", "")), False, str(nra.get("path", "")))


class AccessReviewREST:
    """SelfSubjectAccessReview (the requester), SubjectAccessReview and LocalSubjectAccessReview
    (the user in the spec)."""

    def __init__(self, deps: Deps) -> None:
        self.authorizer = deps.authorizer

    async def create(self, served, namespace, name, body, ctx):
        out = review_object(served, body)
        spec = out.get("spec")
        if not isinstance(spec, dict):
            spec = out["spec"] = {}
        kind, resource = served.res.kind, served.res.resource
        local = None
        if resource == "localsubjectaccessreviews":
            if not namespace:
                raise errors.bad_request("namespace is required on this type: ")
            meta = out["metadata"]
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent "
                                         "on the request")
            meta["namespace"] = local = namespace
        errs = spec_errors(spec, subject=resource != "selfsubjectaccessreviews", local_namespace=local)
        if errs:
            raise errors.invalid(kind, served.res.group, "", errs)
        if resource == "selfsubjectaccessreviews":
            user = UserInfo(ctx.user, ctx.uid or "", tuple(ctx.groups or ()),
                            {k: list(v) for k, v in (ctx.extra or {}).items()})
        else:
            extra = spec.get("extra") if isinstance(spec.get("extra"), dict) else {}
            user = UserInfo(str(spec.get("user") or ""), str(spec.get("uid") or ""), tuple(_strings(spec.get("groups"))),
                            {str(k): _strings(v) for k, v in extra.items()})
        try:
            d = self.authorizer.authorize(attributes(user, spec))
        except Exception as e:  # noqa: BLE001 - fail closed: the review says no, with why
            log.exception("access review")
            out["status"] = {"allowed": False, "evaluationError": str(e) or type(e).__name__}
            return out, 201
        out["status"] = {"allowed": bool(d.allowed)}
        if d.denied:
            out["status"]["denied"] = True
        if d.reason:
            out["status"]["reason"] = d.reason
        return out, 201


class SelfSubjectAccessReviewStrategy(Strategy):
    group, resource, kind = "authorization.k8s.io", "selfsubjectaccessreviews", "SelfSubjectAccessReview"
    namespaced = False
    rest = AccessReviewREST
