"""A client of the OCI distribution API (``/v2/``), pull side, over aiohttp.

`RegistryClient` talks to one `registries.Endpoint` for one repository:
- ``get_manifest(object)`` GETs ``/v2/<repo>/manifests/<tag|digest>`` with an ``Accept`` header
  listing the four manifest types we read (Docker schema 2 manifest and manifest list, OCI
  manifest and index). The body's sha256 is its digest; a manifest asked for by digest must hash
  to it.
- ``fetch_blob(digest, dest)`` streams ``/v2/<repo>/blobs/<digest>`` into ``dest`` while hashing;
  the file is only left in place when it hashes to ``digest`` (and has the descriptor's size).
- Authentication follows the 401 challenge: ``Bearer realm=..,service=..,scope=..`` fetches a
  token from the realm (with Basic credentials when we have some, anonymously otherwise, as
  Docker Hub expects) and retries once with it; ``Basic`` retries once with the credentials. A
  second 401, or a token service that refuses us, is `Unauthorized`.

`Resolver.resolve(ref)` tries the endpoints of a reference in order as containerd does: a 404
moves on silently, any other failure is remembered and moves on; when no endpoint has the
manifest the first remembered failure is raised, or `ImageNotFound` when every endpoint said 404.
Manifest lists and OCI indexes are resolved to the ``linux/amd64`` entry.

Errors are `images.PullError` subclasses whose messages read like containerd's
(``failed to resolve reference "x": x: not found``); the caller adds the
``failed to pull and unpack image`` prefix.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from kubeling.kubelet.images import (
    DigestMismatch,
    ImageNotFound,
    PullError,
    RegistryUnreachable,
    Unauthorized,
    UnsupportedImage,
)
from kubeling.kubelet.images.reference import Reference
from kubeling.kubelet.images.registries import AuthConfig, Endpoint

MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = (MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX)
INDEX_TYPES = (MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX)
ACCEPT = ", ".join(MANIFEST_TYPES + ("*/*;q=0.8",))
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 8 << 20
PLATFORM = {"os": "linux", "architecture": "amd64"}
_CHUNK = 1 << 20
_DENIED = "pull access denied, repository does not exist or may require authorization"
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Manifest:
    media_type: str
    body: bytes
    digest: str

    @property
    def doc(self) -> dict:
        return orjson.loads(self.body)


@dataclass
class Resolved:
    """A reference resolved to one image manifest on one endpoint."""

    client: RegistryClient
    top_digest: str                  # what the tag points at (an index's digest for a list)
    manifest: Manifest               # the linux/amd64 image manifest

    @property
    def config(self) -> dict:
        return self.manifest.doc["config"]

    @property
    def layers(self) -> list[dict]:
        return self.manifest.doc.get("layers") or []


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def _basic(auth: AuthConfig) -> str:
    return "Basic " + base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()


def _ssl_for(endpoint: Endpoint) -> ssl.SSLContext | bool | None:
    if not endpoint.base.startswith("https:"):
        return None
    if endpoint.tls.insecure_skip_verify:
        return False
    if not (endpoint.tls.ca_file or endpoint.tls.cert_file):
        return None
    ctx = ssl.create_default_context(cafile=endpoint.tls.ca_file or None)
    if endpoint.tls.cert_file:
        ctx.load_cert_chain(endpoint.tls.cert_file, endpoint.tls.key_file or None)
    return ctx


def _server_message(body: bytes) -> str:
    """The registry's ``{"errors": [{"code","message"}]}`` body, as containerd quotes it."""
    try:
        errors = orjson.loads(body).get("errors") or []
    except (orjson.JSONDecodeError, AttributeError):
        return body.decode("utf-8", "replace")[:200].strip()
    return "; ".join(f"{str(e.get('code', '')).lower()}: {e.get('message', '')}" for e in errors)


class RegistryClient:
    """One repository on one endpoint. Not shared between repositories: tokens are scoped."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint, repository: str,
                 auth: AuthConfig | None = None) -> None:
        self.session = session
        self.endpoint = endpoint
        self.repository = endpoint.repository(repository)
        self.auth = auth
        self._authorization: str | None = None
        self._ssl = _ssl_for(endpoint)

    def url(self, kind: str, obj: str) -> str:
        return f"{self.endpoint.base}/{self.repository}/{kind}/{obj}"

    async def _authorize(self, challenge: str) -> str:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self.auth is None or not self.auth.username:
                raise Unauthorized("no basic auth credentials")
            return _basic(self.auth)
        if scheme != "bearer" or "realm" not in params:
            raise Unauthorized(f"unsupported authentication challenge {challenge!r}")
        query = {"scope": params.get("scope") or f"repository:{self.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        basic = _basic(self.auth) if self.auth is not None and self.auth.username else None
        try:
            async with self.session.get(params["realm"], params=query, ssl=self._ssl,
                                        headers={"Authorization": basic} if basic else {}) as resp:
                body = await resp.read()
                if resp.status in (401, 403):
                    what = "fetch oauth token" if basic else "fetch anonymous token"
                    raise Unauthorized(f"failed to authorize: failed to {what}: unexpected status "
                                       f"from GET request to {params['realm']}: "
                                       f"{resp.status} {resp.reason}")
                if resp.status != 200:
                    raise PullError(f"failed to authorize: token service {params['realm']} "
                                    f"answered {resp.status} {resp.reason}")
        except aiohttp.ClientError as e:
            raise RegistryUnreachable(f"failed to authorize: GET {params['realm']}: {e}") from e
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise PullError("failed to authorize: the token service answered no JSON") from e
        token = doc.get("token") or doc.get("access_token")
        if not token:
            raise PullError("failed to authorize: the token service answered no token")
        return f"Bearer {token}"

    async def _get(self, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """GET with the 401 dance; the caller owns (and releases) the response."""
        for attempt in (0, 1):
            hdrs = dict(headers)
            if self._authorization:
                hdrs["Authorization"] = self._authorization
            try:
                resp = await self.session.get(url, headers=hdrs, ssl=self._ssl)
            except (aiohttp.ClientError, OSError) as e:
                raise RegistryUnreachable(f'failed to do request: GET "{url}": {e}') from e
            if resp.status in (401, 403):
                challenge = resp.headers.get("WWW-Authenticate", "")
                body = await resp.read()
                resp.release()
                if attempt == 0 and resp.status == 401 and challenge:
                    try:
                        self._authorization = await self._authorize(challenge)
                    except Unauthorized as e:
                        raise Unauthorized(f"{_DENIED}: {e}") from e
                    continue
                detail = _server_message(body) or f"{resp.status} {resp.reason}"
                raise Unauthorized(f"{_DENIED}: server message: {detail}")
            return resp
        raise AssertionError("unreachable")

    async def get_manifest(self, obj: str, display: str) -> Manifest | None:
        """The manifest ``obj`` (tag or digest), or None on 404. ``display`` names the reference
        in messages."""
        url = self.url("manifests", obj)
        resp = await self._get(url, {"Accept": ACCEPT})
        try:
            if resp.status == 404:
                return None
            if resp.status != 200:
                body = await resp.content.read(4096)
                raise PullError(f"unexpected status from GET request to {url}: "
                                f"{resp.status} {resp.reason}: {_server_message(body)}")
            body = await resp.content.read(MAX_MANIFEST_BYTES + 1)
            if len(body) > MAX_MANIFEST_BYTES:
                raise UnsupportedImage(f"{display}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
        except aiohttp.ClientError as e:
            raise RegistryUnreachable(f'failed to do request: GET "{url}": {e}') from e
        finally:
            resp.release()
        digest = sha256_digest(body)
        if obj.startswith("sha256:") and digest != obj:
            raise DigestMismatch(f"{display}: manifest digest mismatch: got {digest}, want {obj}")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise UnsupportedImage(f"{display}: the manifest is not JSON") from e
        media = doc.get("mediaType") or resp.headers.get("Content-Type", "").split(";")[0]
        if media not in MANIFEST_TYPES:
            if "manifests" in doc:
                media = MEDIA_OCI_INDEX
            elif "layers" in doc and "config" in doc:
                media = MEDIA_OCI_MANIFEST
            else:
                raise UnsupportedImage(f"{display}: unsupported manifest media type {media!r}")
        return Manifest(media, body, digest)

    async def fetch_bytes(self, digest: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
        """A small blob (an image config) in memory, digest-verified."""
        url = self.url("blobs", digest)
        resp = await self._get(url, {})
        try:
            if resp.status != 200:
                raise self._blob_status_error(resp, url, digest)
            body = await resp.content.read(limit + 1)
        except aiohttp.ClientError as e:
            raise RegistryUnreachable(f'failed to do request: GET "{url}": {e}') from e
        finally:
            resp.release()
        if len(body) > limit:
            raise UnsupportedImage(f"blob {digest} is larger than {limit} bytes")
        got = sha256_digest(body)
        if got != digest:
            raise DigestMismatch(f"failed to fetch {digest}: unexpected commit digest {got}, "
                                 f"expected {digest}: failed precondition")
        return body

    async def fetch_blob(self, digest: str, dest: Path, size: int = -1) -> int:
        """Stream a blob into ``dest`` (created; removed again unless it verifies)."""
        url = self.url("blobs", digest)
        resp = await self._get(url, {})
        sha, n = hashlib.sha256(), 0
        try:
            if resp.status != 200:
                raise self._blob_status_error(resp, url, digest)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as out:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    sha.update(chunk)
                    n += len(chunk)
                    out.write(chunk)
            got = "sha256:" + sha.hexdigest()
            if got != digest or (size >= 0 and n != size):
                raise DigestMismatch(f"failed to fetch {digest}: unexpected commit digest {got} "
                                     f"({n} bytes), expected {digest} ({size} bytes): "
                                     f"failed precondition")
        except BaseException as e:
            dest.unlink(missing_ok=True)
            if isinstance(e, aiohttp.ClientError):
                raise RegistryUnreachable(f'failed to do request: GET "{url}": {e}') from e
            raise
        finally:
            resp.release()
        return n

    def _blob_status_error(self, resp: aiohttp.ClientResponse, url: str, digest: str) -> PullError:
        if resp.status == 404:
            return ImageNotFound(f"failed to fetch {digest}: {self.repository}@{digest}: not found")
        return PullError(f"unexpected status from GET request to {url}: {resp.status} {resp.reason}")


def pick_platform(index: dict, display: str) -> dict:
    """The linux/amd64 descriptor of a manifest list or OCI index."""
    for desc in index.get("manifests") or []:
        plat = desc.get("platform") or {}
        if all(plat.get(k) == v for k, v in PLATFORM.items()):
            return desc
    raise UnsupportedImage(f"{display}: no match for platform linux/amd64 in manifest: not found")


class Resolver:
    """Resolves a reference over its endpoints (see the module docstring for the order)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def resolve(self, ref: Reference, endpoints: list[Endpoint],
                      auth_for) -> Resolved:
        """``auth_for(endpoint)`` gives the credentials to present to that endpoint (or None)."""
        display = ref.string()
        first_err: PullError | None = None
        for endpoint in endpoints:
            client = RegistryClient(self.session, endpoint, ref.path, auth_for(endpoint))
            try:
                top = await client.get_manifest(ref.object, display)
                if top is None:
                    continue
                manifest = top
                if top.media_type in INDEX_TYPES:
                    desc = pick_platform(top.doc, display)
                    manifest = await client.get_manifest(desc["digest"], display)
                    if manifest is None:
                        raise ImageNotFound(f"{display}: platform manifest {desc['digest']}: "
                                            f"not found")
                    if manifest.media_type in INDEX_TYPES:
                        raise UnsupportedImage(f"{display}: nested image index")
                return Resolved(client, top.digest, manifest)
            except PullError as e:
                # Bad content is not a reason to try elsewhere: it names the image exactly.
                if isinstance(e, (DigestMismatch, UnsupportedImage)):
                    raise _resolve_error(display, e) from e
                if first_err is None:
                    first_err = e
        if first_err is None:
            raise ImageNotFound(f'failed to resolve reference "{display}": {display}: not found')
        raise _resolve_error(display, first_err)


def _resolve_error(display: str, err: PullError) -> PullError:
    wrapped = type(err)(f'failed to resolve reference "{display}": {err}')
    wrapped.__cause__ = err
    return wrapped
