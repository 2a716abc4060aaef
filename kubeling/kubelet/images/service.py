"""`ImageService`: the runtime's ``ImageService`` protocol over the store, the registries
configuration and the distribution client (the image half of a CRI runtime, as containerd's).

Pulling ``ref``:
1. parse and normalise it (``busybox`` -> ``docker.io/library/busybox:latest``);
2. resolve it over the endpoints ``registries.yaml`` gives (mirrors first) to one linux/amd64
   image manifest (`distribution.Resolver`);
3. fetch the config and every layer blob not yet in the store, digests verified, a few at once;
4. unpack the layers not yet unpacked (diff_ids verified), shared with other images;
5. commit the image to the index under the store's lock; if a concurrent removal took a layer
   meanwhile, fetch it again (bounded).

Credentials: an endpoint with an ``auth`` entry in ``registries.yaml`` uses it; every other
endpoint gets the ``auth`` the caller passed (from the pod's ``imagePullSecrets``). The pod's
secret therefore also reaches the mirrors the node's administrator configured for that registry,
which is what lets a secret for ``docker.io`` work through a ``docker.io`` mirror.

Concurrent pulls of one reference in this process are joined (one pull, several waiters).
Errors: `InvalidImageName`, or a `PullError` subclass whose message starts
``failed to pull and unpack image "<normalised ref>": `` as containerd's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson

from kubeling.kubelet.images import PullError, UnsupportedImage, pull_failed, reference
from kubeling.kubelet.images.distribution import Resolved, Resolver
from kubeling.kubelet.images.registries import AuthConfig, Endpoint, Registries
from kubeling.kubelet.images.store import ImageStore
from kubeling.kubelet.runtime import Image

MAX_CONCURRENT_BLOBS = 3
_COMMIT_ATTEMPTS = 3


class ImageService:
    """CRI's ImageService for one node. ``root`` is the store's directory (``<agent>/images``)."""

    def __init__(self, root: str | Path, registries: Registries | None = None, *,
                 store: ImageStore | None = None, timeout: float = 300.0) -> None:
        self.store = store or ImageStore(root)
        self.registries = registries or Registries()
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._inflight: dict[tuple[str, AuthConfig | None], asyncio.Future] = {}

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=None, connect=15, sock_connect=15, sock_read=60))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- the protocol -----------------------------------------------------------------------

    async def pull_image(self, ref: str, auth: dict | None = None) -> Image:
        parsed = reference.parse(ref).with_tag_default()
        creds = AuthConfig.from_entry(auth)
        key = (parsed.string(), creds)
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            image = await asyncio.wait_for(self._pull(parsed, creds), self._timeout)
            fut.set_result(image)
            return image
        except TimeoutError:
            err = pull_failed(parsed.string(), PullError(
                f"context deadline exceeded after {self._timeout:.0f}s"))
            fut.set_exception(err)
            raise err from None
        except PullError as e:
            err = pull_failed(parsed.string(), e)
            fut.set_exception(err)
            raise err from e
        except BaseException as e:
            fut.set_exception(e)
            raise
        finally:
            self._inflight.pop(key, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # marks it retrieved when nobody else waited

    async def image_status(self, ref: str) -> Image | None:
        return self.store.find(ref)

    async def list_images(self) -> list[Image]:
        return self.store.list_images()

    async def remove_image(self, image_id: str) -> None:
        image = self.store.find(image_id)
        if image is not None:
            await self.store.remove_image(image.id)

    async def fs_info(self) -> dict:
        return await asyncio.to_thread(self.store.fs_info)

    async def gc(self, in_use: set[str], high: int = 85, low: int = 80,
                 min_age: float = 120.0) -> list[str]:
        return await self.store.gc(in_use, high, low, min_age)

    # ---- pulling ----------------------------------------------------------------------------

    async def _pull(self, ref: reference.Reference, creds: AuthConfig | None) -> Image:
        session = self._client_session()

        def auth_for(endpoint: Endpoint) -> AuthConfig | None:
            return endpoint.auth or creds

        resolved = await Resolver(session).resolve(ref, self.registries.endpoints(ref), auth_for)
        config_desc = resolved.config
        config_bytes = await self._config(resolved, config_desc["digest"])
        try:
            config = orjson.loads(config_bytes)
            diff_ids = list(config["rootfs"]["diff_ids"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            raise UnsupportedImage(f"image config {config_desc['digest']} is invalid: {e}") from e
        if len(diff_ids) != len(resolved.layers):
            raise UnsupportedImage(f"the manifest has {len(resolved.layers)} layers, the config "
                                   f"{len(diff_ids)} diff_ids")
        await self.store.put_blob_bytes(resolved.manifest.digest, resolved.manifest.body)
        record = {
            "id": config_desc["digest"],
            "repo_tags": [ref.string()] if ref.tag else [],
            "repo_digests": [f"{ref.name}@{resolved.top_digest}"],
            "config": config.get("config") or {},
            "diff_ids": diff_ids,
            "blobs": [resolved.manifest.digest, config_desc["digest"]]
                     + [d["digest"] for d in resolved.layers],
            "size": int(config_desc.get("size", len(config_bytes)))
                    + sum(int(d.get("size", 0)) for d in resolved.layers),
        }
        for _ in range(_COMMIT_ATTEMPTS):
            await self._layers(resolved, diff_ids)
            result = await self.store.commit(record)
            if isinstance(result, Image):
                return result
        raise PullError("image content kept disappearing while committing (concurrent removal)")

    async def _config(self, resolved: Resolved, digest: str) -> bytes:
        path = self.store.blob_path(digest)
        if path.exists():
            return await asyncio.to_thread(path.read_bytes)
        data = await resolved.client.fetch_bytes(digest)
        await self.store.put_blob_bytes(digest, data)
        return data

    async def _layers(self, resolved: Resolved, diff_ids: list[str]) -> None:
        sem = asyncio.Semaphore(MAX_CONCURRENT_BLOBS)

        async def one(desc: dict, diff_id: str) -> None:
            async with sem:
                if self.store.has_layer(diff_id) and self.store.has_blob(desc["digest"]):
                    return
                if not self.store.has_blob(desc["digest"]):
                    staged = self.store.staging("blob")
                    try:
                        await resolved.client.fetch_blob(desc["digest"], staged,
                                                         int(desc.get("size", -1)))
                        await self.store.put_blob_file(desc["digest"], staged)
                    finally:
                        # gone once moved into place; left behind when another layer's failure
                        # cancels this task between the fetch and the move
                        staged.unlink(missing_ok=True)
                await self.store.ensure_layer(desc["digest"], diff_id)

        tasks = [asyncio.create_task(one(d, i)) for d, i in zip(resolved.layers, diff_ids)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
