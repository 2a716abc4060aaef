"""The node's content-addressed image store, under ``<agent root>/images``::

    blobs/sha256/<hex>           manifests, configs and layer blobs, named by their digest
    layers/sha256/<diff id hex>/ unpacked layers: each is an overlayfs lower dir (whiteouts as
                                 char devices 0/0, opaque dirs as trusted.overlay.opaque=y)
    index.json                   the images: id, tags, digests, layers (bottom first), config,
                                 size, last use
    index.lock                   flock'd by every writer of the index, in any process
    tmp/                         staging: blobs and layers are built here and renamed in

Contracts:
- Content is immutable once visible: a blob or layer appears by an atomic rename after it was
  verified (blob digest, layer diff_id), so readers never see partial content, and two writers
  of the same content (two pulls, or a pull and a ``kubeling images import`` in another process)
  both succeed and share one copy.
- ``index.json`` is replaced atomically (write aside, fsync, rename) under ``index.lock``; any
  process may read it without the lock. Every read-modify-write of the index holds the lock.
- Layers are shared between images; a blob or layer is deleted only when no image in the index
  references it, and only under the lock. `commit` re-checks, under the lock, that everything
  the new image references is still on disk (a concurrent removal may have taken a shared
  layer) and reports what is missing so the caller ingests it again.
- A tag names one image: committing ``busybox:latest`` for a new image moves the tag off the
  old one (which stays, untagged, until removed or collected), as ``docker pull`` does.
- Image GC (`gc`) follows upstream's ImageGCManager: when the image filesystem's use reaches
  ``high`` percent, images not in use and older than ``min_age`` are removed, least recently
  used first, until use would fall to ``low`` percent.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import orjson

from kubeling.kubelet.images import DigestMismatch, InvalidImageName, reference
from kubeling.kubelet.images import layers as layer_mod
from kubeling.kubelet.runtime import Image

INDEX = "index.json"
LOCK = "index.lock"


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise DigestMismatch(f"unsupported or malformed digest {digest!r}")
    return hexpart


def statvfs_usage(path: Path) -> tuple[int, int, int]:
    """(capacity bytes, available bytes, free inodes) of the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, st.f_favail


class ImageStore:
    """The store on disk (see the module docstring). Methods that touch the disk for long are
    coroutines that run the work in a thread."""

    def __init__(self, root: str | Path, *,
                 disk_usage: Callable[[Path], tuple[int, int, int]] = statvfs_usage,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.disk_usage = disk_usage
        self.clock = clock
        for sub in ("blobs/sha256", "layers/sha256", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._layer_locks: dict[str, asyncio.Lock] = {}
        self._cache: tuple[tuple[int, int], dict] | None = None

    # ---- paths and content ------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / _hex(digest)

    def layer_path(self, diff_id: str) -> Path:
        return self.root / "layers" / "sha256" / _hex(diff_id)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def has_layer(self, diff_id: str) -> bool:
        return self.layer_path(diff_id).is_dir()

    def staging(self, what: str) -> Path:
        """A fresh path under ``tmp/`` (not created) for content being built."""
        return self.root / "tmp" / f"{what}-{uuid.uuid4().hex}"

    def _publish(self, staged: Path, final: Path) -> None:
        """Rename staged content into place; if another writer got there first, keep theirs."""
        try:
            os.rename(staged, final)
        except OSError:
            if not final.exists():
                raise
            _remove_path(staged)

    async def put_blob_file(self, digest: str, staged: Path) -> Path:
        """Move a verified file (e.g. from `RegistryClient.fetch_blob`) into ``blobs/``."""
        final = self.blob_path(digest)
        await asyncio.to_thread(self._publish, staged, final)
        return final

    async def put_blob_bytes(self, digest: str, data: bytes) -> Path:
        from kubeling.kubelet.images.distribution import sha256_digest
        got = sha256_digest(data)
        if got != digest:
            raise DigestMismatch(f"content digest {got} does not match {digest}")
        final = self.blob_path(digest)
        if final.exists():
            return final
        staged = self.staging("blob")

        def write() -> None:
            with open(staged, "wb") as f:
                f.write(data)
            self._publish(staged, final)
        await asyncio.to_thread(write)
        return final

    async def ensure_layer(self, blob_digest: str, diff_id: str) -> Path:
        """The unpacked layer ``diff_id``, unpacking blob ``blob_digest`` if it is not there yet.
        Concurrent calls for one layer in this process unpack it once."""
        final = self.layer_path(diff_id)
        lock = self._layer_locks.setdefault(diff_id, asyncio.Lock())
        async with lock:
            if final.is_dir():
                return final
            staged = self.staging("layer")

            def build() -> None:
                # One thread owns the staging dir from start to end: a cancelled caller cannot
                # stop the thread, so cleaning up from the caller would race with it.
                try:
                    layer_mod.unpack(self.blob_path(blob_digest), staged, diff_id)
                    self._publish(staged, final)
                finally:
                    _remove_path(staged)
            await asyncio.to_thread(build)
        return final

    # ---- the index --------------------------------------------------------------------------

    @contextmanager
    def _locked(self):
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_index(self) -> dict:
        path = self.root / INDEX
        try:
            st = path.stat()
        except FileNotFoundError:
            return {}
        key = (st.st_ino, st.st_mtime_ns)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        images = orjson.loads(path.read_bytes()).get("images") or {}
        self._cache = (key, images)
        return images

    def _write_index(self, images: dict) -> None:
        path = self.root / INDEX
        staged = self.staging("index")
        with open(staged, "wb") as f:
            f.write(orjson.dumps({"images": images}, option=orjson.OPT_INDENT_2))
            f.flush()
            os.fsync(f.fileno())
        os.rename(staged, path)
        self._cache = None

    async def _update(self, fn):
        """Run ``fn(images) -> result`` on a copy of the index under the lock; write it back."""
        def run():
            with self._locked():
                images = {k: dict(v) for k, v in self._read_index().items()}
                result = fn(images)
                self._write_index(images)
                return result
        return await asyncio.to_thread(run)

    def _missing(self, record: dict) -> list[str]:
        missing = [d for d in record["blobs"] if not self.has_blob(d)]
        missing += [d for d in record["diff_ids"] if not self.has_layer(d)]
        return missing

    async def commit(self, record: dict) -> Image | list[str]:
        """Add or update the image ``record`` (keys: id, repo_tags, repo_digests, config,
        diff_ids, blobs, size). Returns the `Image`, or the digests that vanished meanwhile."""
        now = self.clock()

        def apply(images: dict):
            missing = self._missing(record)
            if missing:
                return missing
            for other in images.values():
                if other["id"] != record["id"]:
                    other["repo_tags"] = [t for t in other["repo_tags"]
                                          if t not in record["repo_tags"]]
            old = images.get(record["id"]) or {}
            merged = dict(record)
            merged["repo_tags"] = _union(old.get("repo_tags", []), record["repo_tags"])
            merged["repo_digests"] = _union(old.get("repo_digests", []), record["repo_digests"])
            merged["created"] = old.get("created", now)
            merged["last_used"] = now
            images[record["id"]] = merged
            return merged
        result = await self._update(apply)
        return result if isinstance(result, list) else self._image(result)

    def _image(self, rec: dict) -> Image:
        return Image(id=rec["id"], repo_tags=list(rec["repo_tags"]),
                     repo_digests=list(rec["repo_digests"]), size=rec["size"],
                     config=rec.get("config") or {},
                     layers=[self.layer_path(d) for d in rec["diff_ids"]])

    def list_images(self) -> list[Image]:
        return [self._image(r) for r in self._read_index().values()]

    def record(self, image_id: str) -> dict | None:
        return self._read_index().get(image_id)

    def find(self, ref: str) -> Image | None:
        """The image ``ref`` names: an id (``sha256:<hex>``, or the bare hex or a unique prefix
        of at least 12 characters), or a reference by tag or digest."""
        images = self._read_index()
        bare = ref.removeprefix("sha256:")
        if len(bare) >= 12 and all(c in "0123456789abcdef" for c in bare):
            hits = [r for k, r in images.items() if k[len("sha256:"):].startswith(bare)]
            if len(hits) == 1:
                return self._image(hits[0])
            if ref.startswith("sha256:"):
                return None
        try:
            parsed = reference.parse(ref).with_tag_default()
        except InvalidImageName:
            return None
        for rec in images.values():
            if parsed.digest:
                if f"{parsed.name}@{parsed.digest}" in rec["repo_digests"]:
                    return self._image(rec)
            elif parsed.string() in rec["repo_tags"]:
                return self._image(rec)
        return None

    async def mark_used(self, image_ids: set[str]) -> None:
        """Record that these images are in use now (upstream's lastUsed, for LRU collection)."""
        now = self.clock()

        def apply(images: dict) -> None:
            for i in image_ids:
                if i in images:
                    images[i]["last_used"] = now
        await self._update(apply)

    # ---- removal and GC ---------------------------------------------------------------------

    def _drop(self, images: dict, image_id: str) -> list[Path]:
        """Remove ``image_id`` from ``images``; the paths no remaining image references."""
        rec = images.pop(image_id, None)
        if rec is None:
            return []
        kept_blobs = {b for r in images.values() for b in r["blobs"]}
        kept_layers = {d for r in images.values() for d in r["diff_ids"]}
        paths = [self.blob_path(b) for b in rec["blobs"] if b not in kept_blobs]
        paths += [self.layer_path(d) for d in rec["diff_ids"] if d not in kept_layers]
        return paths

    async def remove_image(self, image_id: str) -> None:
        """Remove an image and the content only it used. Removing a missing image succeeds."""
        def run() -> None:
            with self._locked():
                images = {k: dict(v) for k, v in self._read_index().items()}
                if image_id not in images:
                    return
                paths = self._drop(images, image_id)
                self._write_index(images)
                # Deleting under the lock: a concurrent commit then sees what is gone.
                for p in paths:
                    _remove_path(p)
        await asyncio.to_thread(run)

    def fs_info(self) -> dict:
        capacity, available, inodes = self.disk_usage(self.root)
        return {"capacity_bytes": capacity, "used_bytes": capacity - available,
                "available_bytes": available, "inodes_free": inodes}

    async def gc(self, in_use: set[str], high: int = 85, low: int = 80,
                 min_age: float = 120.0) -> list[str]:
        """Upstream's image GC (see the module docstring). Returns the removed image ids."""
        await self.mark_used(in_use)
        capacity, available, _ = await asyncio.to_thread(self.disk_usage, self.root)
        if capacity <= 0:
            return []
        usage = 100 - available * 100 // capacity
        if usage < high:
            return []
        to_free = capacity * (100 - low) // 100 - available
        now = self.clock()
        candidates = sorted((r for r in self._read_index().values()
                             if r["id"] not in in_use and now - r.get("created", 0) >= min_age),
                            key=lambda r: (r.get("last_used", 0), r.get("created", 0)))
        removed, freed = [], 0
        for rec in candidates:
            if freed >= to_free:
                break
            await self.remove_image(rec["id"])
            removed.append(rec["id"])
            freed += rec["size"]
        return removed


def _union(a: list[str], b: list[str]) -> list[str]:
    return a + [x for x in b if x not in a]


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
