"""TokenReview (upstream ``pkg/registry/authentication/tokenreview``): who does this bearer token
authenticate as? Webhook token authenticators and aggregated API servers ask it. Answered by the
server's own bearer authenticators (the static token file, service account JWTs, bootstrap
tokens: `APIServer.authenticate_token`), never stored.

``status.authenticated`` is true with ``status.user`` (username, uid, groups with
``system:authenticated``, extra) and ``status.audiences`` for a known token; a token an
authenticator recognises but refuses has its reason in ``status.error``; an empty ``spec.token``
is a 400, as upstream.
"""

from __future__ import annotations

from kubeling.api import errors
from kubeling.apiserver.registry.authorization.selfsubjectaccessreview import review_object
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.strategy import Strategy

# the API server's own audience (a service account token's default ``aud``)
API_AUDIENCES = ("https://kubernetes.default.svc.cluster.local",)


class TokenReviewREST:
    def __init__(self, deps: Deps) -> None:
        self.authenticate_token = None   # set by the API server: async (token) -> UserInfo | None
        self.refused: tuple[type[Exception], ...] = ()
        self.api_audiences = API_AUDIENCES

    def configure(self, authenticate_token, refused: tuple[type[Exception], ...],
                  api_audiences: tuple[str, ...] = API_AUDIENCES) -> None:
        self.authenticate_token, self.refused, self.api_audiences = authenticate_token, refused, api_audiences

    async def create(self, served, namespace, name, body, ctx):
        out = review_object(served, body)
        spec = out.get("spec") if isinstance(out.get("spec"), dict) else {}
        token = spec.get("token")
        if not isinstance(token, str) or not token:
            raise errors.bad_request("token is required for TokenReview in authentication")
        if self.authenticate_token is None:
            raise errors.StatusError(503, "ServiceUnavailable", "token review is not configured on this server")
        wanted = [a for a in spec.get("audiences") or [] if isinstance(a, str)]
        status: dict = {"authenticated": False, "user": {}}
        try:
            user = await self.authenticate_token(token)
        except self.refused as e:
            user = None
            status["error"] = str(e) or "invalid bearer token"
        # our authenticators accept tokens for the API server's audiences only
        if user is not None and wanted and not set(wanted) & set(self.api_audiences):
            user = None
            status["error"] = "token audiences don't match the requested audiences"
        if user is not None:
            groups = list(user.groups)
            if user.name != "system:anonymous" and "system:authenticated" not in groups:
                groups.append("system:authenticated")
            info: dict = {"username": user.name}
            if user.uid:
                info["uid"] = user.uid
            info["groups"] = groups
            if user.extra:
                info["extra"] = {k: list(v) for k, v in user.extra.items()}
            status = {"authenticated": True, "user": info,
                      "audiences": [a for a in wanted if a in self.api_audiences] if wanted
                      else list(self.api_audiences)}
        out["status"] = status
        return out, 201


class TokenReviewStrategy(Strategy):
    group, resource, kind = "authentication.k8s.io", "tokenreviews", "TokenReview"
    namespaced = False
    rest = TokenReviewREST
