"""ServiceAccounts (upstream ``pkg/registry/core/serviceaccount``) and their ``token``
subresource: TokenRequest (``authentication.k8s.io/v1``), what ``kubectl create token`` and the
node agent's projected volumes ask for.

``POST .../serviceaccounts/<name>/token``, in upstream's order:

1. ``metadata.name`` / ``namespace`` in the body, when set, must be the URL's (422);
2. the ServiceAccount must exist (404);
3. ``spec.audiences`` defaults to the API audiences, ``spec.expirationSeconds`` to 3600, and must
   be within [600 s, 2^32 s] (422 on ``spec.expirationSeconds``);
4. ``spec.boundObjectRef``: a Pod (that runs as this account; its node goes into the token),
   a Secret or a Node, which must exist (404) and have the given uid if one is given (409); any
   other kind is a 400;
5. a maximum expiration, if configured, shortens the token with a warning; a pod-bound token
   asked for exactly 3607 s for the API audiences is an *extended* token: it lives a year, and
   ``warnafter`` records the 3607 s (upstream's ``--service-account-extend-token-expiration``);
6. the answer (201) is the TokenRequest with ``status.token`` and ``status.expirationTimestamp``
   (now + the asked duration, never the extension).

The REST object signs with the server's key: the server calls `TokenRequestREST.configure` once
(see ``app.py``); until then (a store-only test) it answers 503.
"""

from __future__ import annotations

import copy
import time

from kubeling.api import errors
from kubeling.api.printers import core as printers
from kubeling.api.validation import core as validation
from kubeling.apiserver import serviceaccount as tokens
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.strategy import Strategy
from kubeling.apiserver.admission import noderestriction

GROUP, KIND = "authentication.k8s.io", "TokenRequest"
DEFAULT_EXPIRATION_SECONDS = 3600
MIN_EXPIRATION_SECONDS = 600
MAX_EXPIRATION_SECONDS = 1 << 32
BOUND_KINDS = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def validate_token_request(tr: dict) -> list[errors.FieldError]:
    exp = tr["spec"]["expirationSeconds"]
    if not isinstance(exp, int) or isinstance(exp, bool):
        return [errors.invalid_value("spec.expirationSeconds", exp, "must be an integer")]
    if exp < MIN_EXPIRATION_SECONDS:
        return [errors.invalid_value("spec.expirationSeconds", exp, "may not specify a duration less than 10 minutes")]
    if exp > MAX_EXPIRATION_SECONDS:
        return [errors.invalid_value("spec.expirationSeconds", exp, "may not specify a duration larger than 2^32 seconds")]
    return []


class TokenRequestREST:
    """``serviceaccounts/<name>/token`` (see the module docstring)."""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store
        self.lookup = deps.lookup
        self.keys: tokens.Keys | None = None
        self.api_audiences: tuple[str, ...] = (tokens.ISSUER,)
        self.issuer = tokens.ISSUER
        self.max_expiration_seconds = 0
        self.extend_expiration = True
        self.clock = time.time

    def configure(self, keys: tokens.Keys, *, issuer: str = tokens.ISSUER, api_audiences: tuple[str, ...] = (),
                  max_expiration_seconds: int = 0, extend_expiration: bool = True, clock=time.time) -> None:
        self.keys, self.issuer = keys, issuer
        self.api_audiences = tuple(api_audiences) or (issuer,)
        self.max_expiration_seconds, self.extend_expiration, self.clock = \
            max_expiration_seconds, extend_expiration, clock

    async def create(self, served, namespace, name, body, ctx):
        if self.keys is None:
            raise errors.StatusError(503, "ServiceUnavailable", "token issuance is not configured on this server")
        tr = self._request(body, namespace, name)
        sa = await self._get("serviceaccounts", namespace, name)
        spec = tr["spec"]
        if not spec.get("audiences"):
            spec["audiences"] = list(self.api_audiences)
        if spec.get("expirationSeconds") is None:
            spec["expirationSeconds"] = DEFAULT_EXPIRATION_SECONDS
        meta = tr["metadata"]
        meta["name"], meta["namespace"] = name, namespace
        now = self.clock()
        meta["creationTimestamp"] = _rfc3339(now)
        tr.pop("status", None)
        errs = validate_token_request(tr)
        if errs:
            raise errors.invalid(KIND, GROUP, "", errs)
        bound = await self._bound_objects(spec.get("boundObjectRef"), namespace, name)
        noderestriction.admit_token_request(ctx, name, tr, bound.get("pod"))  # a node: only its own pods' tokens
        if self.max_expiration_seconds > 0 and spec["expirationSeconds"] > self.max_expiration_seconds:
            ctx.warnings.append(f"requested expiration of {spec['expirationSeconds']} seconds shortened to "
                                f"{self.max_expiration_seconds} seconds")
            spec["expirationSeconds"] = self.max_expiration_seconds
        exp, warn_after = spec["expirationSeconds"], 0
        if self.extend_expiration and bound.get("pod") is not None and exp == tokens.WARN_ONLY_EXPIRATION_SECONDS \
                and set(spec["audiences"]) <= set(self.api_audiences):
            warn_after, exp = exp, tokens.EXTENDED_EXPIRATION_SECONDS
        claims = tokens.bound_claims(sa, spec["audiences"], exp, warn_after=warn_after, now=now,
                                     issuer=self.issuer, **bound)
        tr["status"] = {"token": tokens.sign(self.keys, claims),
                        "expirationTimestamp": _rfc3339(int(now) + spec["expirationSeconds"])}
        return tr, 201

    @staticmethod
    def _request(body, namespace: str, name: str) -> dict:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a TokenRequest object")
        if body.get("kind") not in (None, "", KIND):
            raise errors.bad_request(f"the body of the request was a {body.get('kind')}, not a {KIND}")
        body = copy.deepcopy(body)
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        tr = {"apiVersion": f"{GROUP}/v1", "kind": KIND, "metadata": meta, "spec": spec}
        for field, want in (("name", name), ("namespace", namespace)):
            if meta.get(field) and meta[field] != want:
                raise errors.invalid(KIND, GROUP, name, [errors.invalid_value(
                    f"metadata.{field}", meta[field], f"must match the service account {field} if specified")])
        return tr

    async def _get(self, resource: str, namespace: str | None, name: str) -> dict:
        return await self.store.get_raw(self.lookup("", "v1", resource), namespace, name)

    async def _bound_objects(self, ref, namespace: str, sa_name: str) -> dict:
        """The keyword arguments of `bound_claims` for ``boundObjectRef`` (see the module docstring)."""
        if not ref:
            return {}
        if not isinstance(ref, dict):
            raise errors.bad_request("spec.boundObjectRef must be an object")
        api_version, kind = ref.get("apiVersion") or "", ref.get("kind") or ""
        group = api_version.rpartition("/")[0] if "/" in api_version else ""
        version = api_version.rpartition("/")[2]
        resource = BOUND_KINDS.get(kind) if group == "" else None
        if resource is None:
            raise errors.bad_request(f"cannot bind token to object of type {group}/{version}, Kind={kind}")
        obj_name = ref.get("name") or ""
        obj = await self._get(resource, None if kind == "Node" else namespace, obj_name)
        out: dict = {kind.lower(): obj}
        if kind == "Pod":
            if (obj.get("spec") or {}).get("serviceAccountName") != sa_name:
                raise errors.bad_request(f'cannot bind token for serviceaccount "{sa_name}" to pod running with '
                                         f"different serviceaccount name.")
            node_name = (obj.get("spec") or {}).get("nodeName")
            if node_name:  # the node's identity goes into the token, when the node can be read
                try:
                    out["node"] = await self._get("nodes", None, node_name)
                except errors.StatusError:
                    pass
        uid = obj["metadata"].get("uid", "")
        if ref.get("uid") and ref["uid"] != uid:
            raise errors.conflict(kind, group, obj_name, f"the UID in the bound object reference ({ref['uid']}) "
                                  "does not match the UID in record. The object might have been deleted and then "
                                  "recreated")
        return out


class ServiceAccountStrategy(Strategy):
    group, resource, kind = "", "serviceaccounts", "ServiceAccount"
    printer = printers.SERVICE_ACCOUNT
    subresources = {"token": TokenRequestREST}

    def validate(self, obj):
        return validation.validate_service_account(obj)

