"""Importing image tarballs into the store (``kubeling images import``), for air-gapped nodes.

Two formats, told apart by their members:
- docker-archive (``docker save``): ``manifest.json`` = ``[{"Config": path, "RepoTags": [..],
  "Layers": [path, ..]}]``; layers are tars (plain or compressed) at those paths. Short tags
  (``busybox:latest``) are normalised (``docker.io/library/busybox:latest``). There is no
  registry manifest, so such images have no repo digest, as after ``docker load``.
- OCI image layout (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``): each manifest of
  ``index.json`` (an index inside is resolved to linux/amd64) is one image, named by its
  ``io.containerd.image.name`` annotation or an ``org.opencontainers.image.ref.name`` that is a
  full reference; a bare tag there leaves the image untagged. The repo digest is
  ``<name>@<manifest digest>``.
When a tar has both (Docker 25 writes both) the docker ``manifest.json`` is used, for its tags.

Every blob is hashed while it is copied out of the tarball; a blob whose digest is known (OCI)
must match, and layers are checked against the config's diff_ids as they are unpacked. Import
commits through the store's lock, so it is safe while an agent uses the same store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from kubeling.kubelet.images import DigestMismatch, UnsupportedImage, reference
from kubeling.kubelet.images.distribution import (
    INDEX_TYPES,
    pick_platform,
    sha256_digest,
)
from kubeling.kubelet.images.store import ImageStore
from kubeling.kubelet.runtime import Image

_CHUNK = 1 << 20
_COMMIT_ATTEMPTS = 3


@dataclass
class _Planned:
    """One image to import: where its blobs are inside the tar, and its names."""

    config_member: str
    layer_members: list[str]
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    manifest: bytes | None = None
    config_digest: str | None = None
    layer_digests: list[str | None] = field(default_factory=list)


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.getmember(name)
    f = tar.extractfile(member)
    if f is None:
        raise UnsupportedImage(f"{name} is not a file in the archive")
    return f.read()


def _normalise_tag(tag: str) -> str | None:
    try:
        ref = reference.parse(tag)
    except reference.InvalidImageName:
        return None
    return ref.with_tag_default().string()


def _plan_docker(tar: tarfile.TarFile) -> list[_Planned]:
    entries = orjson.loads(_read(tar, "manifest.json"))
    plans = []
    for entry in entries:
        tags = [t for t in (_normalise_tag(x) for x in entry.get("RepoTags") or []) if t]
        plans.append(_Planned(entry["Config"], list(entry.get("Layers") or []), tags,
                              layer_digests=[None] * len(entry.get("Layers") or [])))
    return plans


def _blob_member(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"blobs/{algo}/{hexpart}"


def _image_name(annotations: dict) -> str | None:
    for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
        value = annotations.get(key)
        if value and ("/" in value or key == "io.containerd.image.name"):
            try:
                return reference.parse(value).with_tag_default().string()
            except reference.InvalidImageName:
                continue
    return None


def _plan_oci(tar: tarfile.TarFile) -> list[_Planned]:
    index = orjson.loads(_read(tar, "index.json"))
    plans = []
    for desc in index.get("manifests") or []:
        top_digest = desc["digest"]
        body = _read(tar, _blob_member(top_digest))
        if sha256_digest(body) != top_digest:
            raise DigestMismatch(f"blob {top_digest} in the archive does not match its digest")
        doc = orjson.loads(body)
        if desc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
            desc_m = pick_platform(doc, top_digest)
            body = _read(tar, _blob_member(desc_m["digest"]))
            if sha256_digest(body) != desc_m["digest"]:
                raise DigestMismatch(f"blob {desc_m['digest']} does not match its digest")
            doc = orjson.loads(body)
        name = _image_name(desc.get("annotations") or {})
        plan = _Planned(_blob_member(doc["config"]["digest"]),
                        [_blob_member(layer["digest"]) for layer in doc.get("layers") or []],
                        manifest=body, config_digest=doc["config"]["digest"],
                        layer_digests=[layer["digest"] for layer in doc.get("layers") or []])
        if name:
            plan.repo_tags.append(name)
            plan.repo_digests.append(f"{reference.parse(name).name}@{top_digest}")
        plans.append(plan)
    return plans


def _copy_out(tar: tarfile.TarFile, member: str, staged: Path, want: str | None) -> str:
    """Copy a member to ``staged`` while hashing; its digest (checked against ``want``)."""
    src = tar.extractfile(tar.getmember(member))
    if src is None:
        raise UnsupportedImage(f"{member} is not a file in the archive")
    sha = hashlib.sha256()
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as out:
        while data := src.read(_CHUNK):
            sha.update(data)
            out.write(data)
    got = "sha256:" + sha.hexdigest()
    if want is not None and got != want:
        staged.unlink()
        raise DigestMismatch(f"blob {member} in the archive hashes to {got}, expected {want}")
    return got


async def import_archive(store: ImageStore, path: str | Path) -> list[Image]:
    """Import every image of the tarball at ``path``; the imported images, in archive order."""
    try:
        tar = await asyncio.to_thread(tarfile.open, path, "r:*")
    except tarfile.TarError as e:
        raise UnsupportedImage(f"{path}: not a tar archive") from e
    try:
        names = set(await asyncio.to_thread(tar.getnames))
        names = {n.removeprefix("./") for n in names}
        if "manifest.json" in names:
            plans = await asyncio.to_thread(_plan_docker, tar)
        elif "index.json" in names and "oci-layout" in names:
            plans = await asyncio.to_thread(_plan_oci, tar)
        else:
            raise UnsupportedImage(f"{path}: neither a docker-archive (manifest.json) nor an OCI "
                                   f"layout (oci-layout, index.json)")
        return [await _import_one(store, tar, plan) for plan in plans]
    except (KeyError, ValueError, TypeError, tarfile.TarError) as e:
        # A member the manifest names is missing, or a JSON document is malformed.
        raise UnsupportedImage(f"{path}: malformed image archive: {e!r}") from e
    finally:
        tar.close()


async def _put_member(store: ImageStore, tar: tarfile.TarFile, member: str,
                      want: str | None) -> str:
    if want is not None and store.has_blob(want):
        return want
    staged = store.staging("import")
    digest = await asyncio.to_thread(_copy_out, tar, member, staged, want)
    await store.put_blob_file(digest, staged)
    return digest


async def _import_one(store: ImageStore, tar: tarfile.TarFile, plan: _Planned) -> Image:
    config_bytes = await asyncio.to_thread(_read, tar, plan.config_member)
    config_digest = sha256_digest(config_bytes)
    if plan.config_digest and config_digest != plan.config_digest:
        raise DigestMismatch(f"config {plan.config_member} does not match {plan.config_digest}")
    config = orjson.loads(config_bytes)
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    if len(diff_ids) != len(plan.layer_members):
        raise UnsupportedImage(f"{len(plan.layer_members)} layers but {len(diff_ids)} diff_ids")
    await store.put_blob_bytes(config_digest, config_bytes)
    blobs = [config_digest]
    if plan.manifest is not None:
        manifest_digest = sha256_digest(plan.manifest)
        await store.put_blob_bytes(manifest_digest, plan.manifest)
        blobs.insert(0, manifest_digest)
    for _ in range(_COMMIT_ATTEMPTS):
        layer_digests, size = [], len(config_bytes)
        for member, want, diff_id in zip(plan.layer_members, plan.layer_digests, diff_ids):
            digest = await _put_member(store, tar, member, want)
            await store.ensure_layer(digest, diff_id)
            layer_digests.append(digest)
            size += store.blob_path(digest).stat().st_size
        result = await store.commit({
            "id": config_digest, "repo_tags": plan.repo_tags, "repo_digests": plan.repo_digests,
            "config": config.get("config") or {}, "diff_ids": diff_ids,
            "blobs": blobs + layer_digests, "size": size})
        if isinstance(result, Image):
            return result
    raise UnsupportedImage("image content kept disappearing while importing (concurrent removal)")
