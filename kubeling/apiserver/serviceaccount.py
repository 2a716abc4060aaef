"""Service account tokens (upstream ``pkg/serviceaccount``): the signing key, RS256 JWTs, the
claims upstream writes, and the authenticator that turns a token back into a user.

Keys. One RSA 2048 key, ``<data-dir>/pki/service-account.key`` (``.pub`` beside it), made by
`certs.PKI.ensure`; the API server signs TokenRequests with it and verifies every token, and the
controller manager signs legacy Secret tokens with the same file (upstream's
``--service-account-private-key-file``). A key's ``kid`` is derived from its public key as
upstream does (base64url of the SHA-256 of its PKIX DER), so a verifier picks the key by it.
`Keys` loads lazily: a server that never sees a token never reads or generates a key (an
in-process test server with no file gets an ephemeral key on first use).

Two kinds of token, told apart by ``iss``:

- bound tokens (TokenRequest), issuer `ISSUER`: ``aud``, ``exp``, ``iat``, ``nbf``, ``jti`` and
  a ``kubernetes.io`` claim naming the namespace, the service account (name, uid) and at most one
  bound object (pod — with its node —, secret or node); ``warnafter`` on the extended one-year
  tokens that pod volumes get (see `TokenRequest` in ``registry/core/serviceaccount.py``);
- legacy Secret tokens (the tokens controller), issuer `LEGACY_ISSUER`: no expiry; flat
  ``kubernetes.io/serviceaccount/...`` claims; valid while their Secret holds the very token.

Validation (`Authenticator.authenticate`), as upstream's ``jwtTokenAuthenticator`` then
``validator``: a token whose unverified ``iss`` is not ours is not ours (``None``: another
authenticator may know it); then the signature, then time with `LEEWAY` (exp, nbf, iat), then
the audiences (a token without ``aud`` — legacy — counts as the API audiences), then every named
object must still exist with the claimed uid, and not be deleted more than `LEEWAY` ago. Any
failure raises `TokenInvalid` (the request gets 401). Lookups go through an `ObjectGetter`; the
server's reads its own store (point reads), never HTTP to itself.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kubeling.api import errors
from kubeling.apiserver.auth import UserInfo

ISSUER = "https://kubernetes.default.svc.cluster.local"   # k3s's --service-account-issuer
LEGACY_ISSUER = "kubernetes/serviceaccount"
LEEWAY = 60                                   # go-jose's DefaultLeeway, used for exp/nbf/iat and deletions
WARN_ONLY_EXPIRATION_SECONDS = 3607           # what kubelets ask for: marks a pod token as extensible
EXTENDED_EXPIRATION_SECONDS = 365 * 24 * 3600  # what such a token really lives (warnafter = the asked 3607 s)
EXTRA_POD_NAME = "authentication.kubernetes.io/pod-name"
EXTRA_POD_UID = "authentication.kubernetes.io/pod-uid"
EXTRA_NODE_NAME = "authentication.kubernetes.io/node-name"
EXTRA_NODE_UID = "authentication.kubernetes.io/node-uid"
EXTRA_CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"
USER_PREFIX = "system:serviceaccount:"
ALL_GROUP = "system:serviceaccounts"


class TokenInvalid(Exception):
    """A token that is ours but does not authenticate (the reason is for the server's log)."""


# -- names ------------------------------------------------------------------------------------

def username(namespace: str, name: str) -> str:
    return f"{USER_PREFIX}{namespace}:{name}"


def split_username(user: str) -> tuple[str, str] | None:
    """``system:serviceaccount:<ns>:<name>`` → (ns, name); None for anything else."""
    if not user.startswith(USER_PREFIX):
        return None
    ns, sep, name = user[len(USER_PREFIX):].partition(":")
    return (ns, name) if sep and ns and name and ":" not in name else None


def groups(namespace: str) -> tuple[str, ...]:
    return ALL_GROUP, f"{ALL_GROUP}:{namespace}"


# -- keys -------------------------------------------------------------------------------------

def key_id(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64(hashlib.sha256(der).digest())


def generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def load_private_key(path: str | Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: a service account signing key must be RSA")
    return key


class Keys:
    """The signing key and the keys tokens are verified with, loaded on first use (thread-safe:
    the tokens controller may sign from a worker thread)."""

    def __init__(self, key_file: str | Path | None = None, extra_public_keys: tuple = ()) -> None:
        self.key_file = Path(key_file) if key_file else None
        self._extra = extra_public_keys
        self._lock = threading.Lock()
        self._private = None
        self._public: dict[str, object] = {}

    def _load(self) -> None:
        with self._lock:
            if self._private is not None:
                return
            key = load_private_key(self.key_file) if self.key_file else generate_key()
            public = {key_id(key.public_key()): key.public_key()}
            pub_file = self.key_file.with_suffix(".pub") if self.key_file else None
            if pub_file is not None and pub_file.exists():  # an older key kept for rotation
                extra = serialization.load_pem_public_key(pub_file.read_bytes())
                public.setdefault(key_id(extra), extra)
            for k in self._extra:
                public.setdefault(key_id(k), k)
            self._public, self._private = public, key

    @property
    def private(self) -> rsa.RSAPrivateKey:
        self._load()
        return self._private

    @property
    def public(self) -> dict[str, object]:
        self._load()
        return self._public


# -- JWT (JWS compact serialization, RS256) ---------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(keys: Keys, claims: dict) -> str:
    """A compact RS256 JWS of ``claims`` (keys sorted, as go-jose's map encoding)."""
    key = keys.private
    header = _b64(orjson.dumps({"alg": "RS256", "kid": key_id(key.public_key())}))
    payload = _b64(orjson.dumps(claims, option=orjson.OPT_SORT_KEYS))
    signing_input = f"{header}.{payload}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64(signature)}"


def unverified_claims(token: str) -> dict | None:
    """The payload of something shaped like a JWS, unverified; None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = orjson.loads(_unb64(parts[1]))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def verify(keys: Keys, token: str) -> dict:
    """The claims of a token signed by one of ``keys``; `TokenInvalid` otherwise."""
    try:
        h, p, s = token.split(".")
        header = orjson.loads(_unb64(h))
        signature = _unb64(s)
    except (ValueError, orjson.JSONDecodeError):
        raise TokenInvalid("malformed token") from None
    if not isinstance(header, dict) or header.get("alg") != "RS256":
        raise TokenInvalid("unsupported signing algorithm")
    kid = header.get("kid")
    candidates = [keys.public[kid]] if kid in keys.public else list(keys.public.values())
    for pub in candidates:
        try:
            pub.verify(signature, f"{h}.{p}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        claims = unverified_claims(token)
        if claims is None:
            raise TokenInvalid("malformed token")
        return claims
    raise TokenInvalid("square/go-jose: error in cryptographic primitive")


# -- claims -----------------------------------------------------------------------------------

def _ref(obj: dict) -> dict:
    return {"name": obj["metadata"]["name"], "uid": obj["metadata"].get("uid", "")}


def bound_claims(sa: dict, audiences: list[str], expiration_seconds: int, *, pod: dict | None = None,
                 secret: dict | None = None, node: dict | None = None, warn_after: int = 0,
                 now: float | None = None, issuer: str = ISSUER) -> dict:
    """Upstream's ``Claims``: a token for ``sa``, bound to at most one object (a pod may carry its
    node too). ``warn_after`` > 0 marks an extended token (seconds from now)."""
    if secret is not None and (pod is not None or node is not None):
        raise ValueError("a token is bound to one object type")
    t = int(now if now is not None else time.time())
    kube: dict = {"namespace": sa["metadata"]["namespace"], "serviceaccount": _ref(sa)}
    if pod is not None:
        kube["pod"] = _ref(pod)
        if node is not None:
            kube["node"] = _ref(node)
    elif secret is not None:
        kube["secret"] = _ref(secret)
    elif node is not None:
        kube["node"] = _ref(node)
    if warn_after:
        kube["warnafter"] = t + warn_after
    return {"iss": issuer, "sub": username(sa["metadata"]["namespace"], sa["metadata"]["name"]),
            "aud": list(audiences), "iat": t, "nbf": t, "exp": t + int(expiration_seconds),
            "jti": str(uuid.uuid4()), "kubernetes.io": kube}


def legacy_claims(sa: dict, secret_name: str) -> dict:
    """Upstream's ``LegacyClaims``: what a ``kubernetes.io/service-account-token`` Secret holds."""
    ns, name = sa["metadata"]["namespace"], sa["metadata"]["name"]
    return {"iss": LEGACY_ISSUER, "sub": username(ns, name),
            "kubernetes.io/serviceaccount/namespace": ns,
            "kubernetes.io/serviceaccount/secret.name": secret_name,
            "kubernetes.io/serviceaccount/service-account.name": name,
            "kubernetes.io/serviceaccount/service-account.uid": sa["metadata"].get("uid", "")}


# -- the authenticator ------------------------------------------------------------------------

class ObjectGetter(Protocol):
    async def get(self, resource: str, namespace: str | None, name: str) -> dict | None:
        """The stored core/v1 ``resource`` object, or None when there is none."""


class StoreGetter:
    """`ObjectGetter` over the API server's generic store (point reads, no HTTP)."""

    def __init__(self, store, lookup) -> None:
        self.store = store
        self.lookup = lookup

    async def get(self, resource: str, namespace: str | None, name: str) -> dict | None:
        try:
            return await self.store.get_raw(self.lookup("", "v1", resource), namespace, name)
        except errors.StatusError as e:
            if e.code == 404:
                return None
            raise


def _deleted_before(obj: dict, cutoff: float) -> bool:
    ts = obj["metadata"].get("deletionTimestamp")
    if not ts:
        return False
    try:
        return calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")) < cutoff
    except ValueError:
        return True  # an unreadable deletion time: treat the object as going away


@dataclass
class Authenticator:
    """Bearer service account tokens → `UserInfo` (see the module docstring)."""

    keys: Keys
    getter: ObjectGetter
    issuers: tuple[str, ...] = (ISSUER,)
    api_audiences: tuple[str, ...] = (ISSUER,)
    clock: Callable[[], float] = time.time

    def handles(self, token: str) -> bool:
        claims = unverified_claims(token)
        return claims is not None and (claims.get("iss") in self.issuers or claims.get("iss") == LEGACY_ISSUER)

    async def authenticate(self, token: str) -> UserInfo | None:
        """The user, None if the token is not ours; `TokenInvalid` if it is ours and fails."""
        if not self.handles(token):
            return None
        claims = verify(self.keys, token)
        if claims.get("iss") == LEGACY_ISSUER:
            return await self._legacy(token, claims)
        self._check_time(claims)
        aud = claims.get("aud")
        token_auds = [aud] if isinstance(aud, str) else list(aud or []) or list(self.api_audiences)
        if not set(token_auds) & set(self.api_audiences):
            raise TokenInvalid(f"token audiences {token_auds} is invalid for the target audiences "
                               f"{list(self.api_audiences)}")
        return await self._bound(claims)

    def _check_time(self, claims: dict) -> None:
        now = self.clock()
        try:
            exp, nbf, iat = (claims.get(k) for k in ("exp", "nbf", "iat"))
            if exp is not None and now - LEEWAY > float(exp):
                raise TokenInvalid("service account token has expired")
            if nbf is not None and now + LEEWAY < float(nbf):
                raise TokenInvalid("service account token is not valid yet")
            if iat is not None and now + LEEWAY < float(iat):
                raise TokenInvalid("service account token is issued in the future")
        except (TypeError, ValueError):
            raise TokenInvalid("service account token claims could not be validated") from None

    async def _bound(self, claims: dict) -> UserInfo:
        kube = claims.get("kubernetes.io")
        if not isinstance(kube, dict) or not isinstance(kube.get("serviceaccount"), dict):
            raise TokenInvalid("service account token has no kubernetes.io claim")
        ns = kube.get("namespace") or ""
        sa_ref = kube["serviceaccount"]
        cutoff = self.clock() - LEEWAY
        sa = await self.getter.get("serviceaccounts", ns, sa_ref.get("name", ""))
        if sa is None:
            raise TokenInvalid(f'serviceaccounts "{sa_ref.get("name")}" not found')
        if _deleted_before(sa, cutoff):
            raise TokenInvalid(f"service account {ns}/{sa_ref.get('name')} has been deleted")
        if sa["metadata"].get("uid") != sa_ref.get("uid"):
            raise TokenInvalid(f"service account UID ({sa['metadata'].get('uid')}) does not match claim "
                               f"({sa_ref.get('uid')})")
        extra: dict[str, list[str]] = {}
        for kind, resource in (("secret", "secrets"), ("pod", "pods")):
            ref = kube.get(kind)
            if ref is None:
                continue
            obj = await self.getter.get(resource, ns, ref.get("name", ""))
            if obj is None or _deleted_before(obj, cutoff):
                raise TokenInvalid("service account token has been invalidated")
            if obj["metadata"].get("uid") != ref.get("uid"):
                raise TokenInvalid(f"{kind} UID ({obj['metadata'].get('uid')}) does not match service account "
                                   f"{kind} ref claim ({ref.get('uid')})")
            if kind == "pod":
                extra[EXTRA_POD_NAME], extra[EXTRA_POD_UID] = [ref["name"]], [ref["uid"]]
        node_ref = kube.get("node")
        if node_ref is not None:
            if kube.get("pod") is None:  # a node-bound token: the node itself must still be there
                node = await self.getter.get("nodes", None, node_ref.get("name", ""))
                if node is None:
                    raise TokenInvalid("service account token has been invalidated")
                if node["metadata"].get("uid") != node_ref.get("uid"):
                    raise TokenInvalid(f"node UID ({node['metadata'].get('uid')}) does not match service account "
                                       f"node ref claim ({node_ref.get('uid')})")
            extra[EXTRA_NODE_NAME], extra[EXTRA_NODE_UID] = [node_ref.get("name", "")], [node_ref.get("uid", "")]
        if claims.get("jti"):
            extra[EXTRA_CREDENTIAL_ID] = [f"JTI={claims['jti']}"]
        return UserInfo(username(ns, sa_ref["name"]), sa_ref.get("uid", ""), groups(ns), extra)

    async def _legacy(self, token: str, claims: dict) -> UserInfo:
        ns = claims.get("kubernetes.io/serviceaccount/namespace") or ""
        secret_name = claims.get("kubernetes.io/serviceaccount/secret.name") or ""
        name = claims.get("kubernetes.io/serviceaccount/service-account.name") or ""
        uid = claims.get("kubernetes.io/serviceaccount/service-account.uid") or ""
        if not (claims.get("sub") and ns and secret_name and name and uid):
            raise TokenInvalid("a legacy token claim is missing")
        if split_username(claims["sub"]) != (ns, name):
            raise TokenInvalid("sub claim is invalid")
        secret = await self.getter.get("secrets", ns, secret_name)
        if secret is None or secret["metadata"].get("deletionTimestamp"):
            raise TokenInvalid("token has been invalidated")
        stored = (secret.get("data") or {}).get("token", "")
        try:
            stored_bytes = base64.b64decode(stored)
        except ValueError:
            stored_bytes = b""
        if not hmac.compare_digest(stored_bytes, token.encode()):
            raise TokenInvalid("token does not match server's copy")
        sa = await self.getter.get("serviceaccounts", ns, name)
        if sa is None or sa["metadata"].get("deletionTimestamp"):
            raise TokenInvalid(f"ServiceAccount {ns}/{name} has been deleted")
        if sa["metadata"].get("uid") != uid:
            raise TokenInvalid(f"ServiceAccount UID ({sa['metadata'].get('uid')}) does not match claim ({uid})")
        return UserInfo(username(ns, name), uid, groups(ns))
