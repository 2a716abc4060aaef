"""Static rules that upstream grants through RBAC bootstrap roles, answered before RBAC reads its
cache so that they hold from the first request of a start (before the bootstrap policy is
reconciled) and whatever a user does to those roles' bindings:

- `PublicInfoAuthorizer`: ``system:public-info-viewer`` — everyone (anonymous too) may read the
  health and version endpoints;
- `BasicUserAuthorizer`: ``system:basic-user`` and ``system:discovery`` — every authenticated
  user may review its own access and read discovery and OpenAPI.

They are part of the ``RBAC`` mode (`kubeling.apiserver.authorizer.build`).
"""

from __future__ import annotations

from kubeling.apiserver.auth import Attributes, Decision

PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version", "/version/")
SELF_REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews"),
                ("authorization.k8s.io", "selfsubjectrulesreviews"),
                ("authentication.k8s.io", "selfsubjectreviews")}
DISCOVERY_PATHS = ("/api", "/apis", "/openapi", "/version", "/healthz", "/livez", "/readyz")


class PublicInfoAuthorizer:
    """Health and version endpoints are readable by everyone."""

    def authorize(self, attrs: Attributes) -> Decision:
        if not attrs.resource_request and attrs.verb == "get" and (
                attrs.path in PUBLIC_PATHS or attrs.path.startswith(("/healthz/", "/livez/", "/readyz/"))):
            return Decision(True, "public info")
        return Decision(False, "")


class BasicUserAuthorizer:
    """Asking about one's own access, and reading discovery and OpenAPI, for every
    authenticated user."""

    def authorize(self, attrs: Attributes) -> Decision:
        if "system:authenticated" not in attrs.user.groups:
            return Decision(False, "")
        if attrs.resource_request:
            ok = attrs.verb == "create" and (attrs.group, attrs.resource) in SELF_REVIEWS
        else:
            ok = attrs.verb == "get" and any(attrs.path == p or attrs.path.startswith(p + "/")
                                             for p in DISCOVERY_PATHS)
        return Decision(ok, "")
