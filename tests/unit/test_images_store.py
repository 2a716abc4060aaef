"""The content store (images/store.py): index, tags, shared layers, removal, GC, and the index
lock under writers in other processes."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import orjson
import pytest

from kubeling.kubelet.images.store import ImageStore


def _layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0), "sha256:" + hashlib.sha256(raw).hexdigest()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def add_image(store: ImageStore, name: str, layer_files: list[dict[str, bytes]],
                    tag: str = "latest", size: int = 1000):
    """Put an image made of ``layer_files`` into the store, as a pull would."""
    blobs, diff_ids = [], []
    for files in layer_files:
        blob, diff_id = _layer(files)
        digest = _digest(blob)
        await store.put_blob_bytes(digest, blob)
        await store.ensure_layer(digest, diff_id)
        blobs.append(digest)
        diff_ids.append(diff_id)
    config = orjson.dumps({"config": {"Cmd": [name]}, "rootfs": {"diff_ids": diff_ids}})
    await store.put_blob_bytes(_digest(config), config)
    return await store.commit({
        "id": _digest(config), "repo_tags": [f"docker.io/library/{name}:{tag}"],
        "repo_digests": [f"docker.io/library/{name}@{_digest(config + b'm')}"],
        "config": {"Cmd": [name]}, "diff_ids": diff_ids, "blobs": [_digest(config)] + blobs,
        "size": size})


BASE = {"bin/sh": b"shell"}


def test_commit_find_and_shared_layers(tmp_path):
    async def main():
        store = ImageStore(tmp_path)
        a = await add_image(store, "a", [BASE, {"a": b"1"}])
        b = await add_image(store, "b", [BASE, {"b": b"2"}])
        assert a.layers[0] == b.layers[0]                    # one copy of the shared layer
        assert (a.layers[0] / "bin/sh").read_bytes() == b"shell"
        assert a.config == {"Cmd": ["a"]}
        for ref in ("a", "docker.io/library/a:latest", a.id, a.id[7:19], a.repo_digests[0]):
            assert store.find(ref).id == a.id, ref
        assert store.find("a:other") is None
        assert store.find("sha256:" + "0" * 64) is None

        await store.remove_image(a.id)
        assert store.find("a") is None
        assert b.layers[0].is_dir()                          # still used by b
        assert not a.layers[1].exists()                      # only a used it
        assert not store.blob_path(a.id).exists()
        await store.remove_image(a.id)                       # idempotent
        await store.remove_image(b.id)
        assert not b.layers[0].exists()
        assert store.list_images() == []
    asyncio.run(main())


def test_a_tag_moves_to_the_newer_image(tmp_path):
    async def main():
        store = ImageStore(tmp_path)
        old = await add_image(store, "app", [{"v": b"1"}])
        new = await add_image(store, "app", [{"v": b"2"}])
        assert store.find("app").id == new.id
        old_now = store.record(old.id)
        assert old_now["repo_tags"] == [] and old_now["repo_digests"]
    asyncio.run(main())


def test_commit_reports_content_that_vanished(tmp_path):
    async def main():
        store = ImageStore(tmp_path)
        img = await add_image(store, "a", [{"f": b"x"}])
        rec = dict(store.record(img.id))
        await store.remove_image(img.id)
        missing = await store.commit(rec)
        assert isinstance(missing, list) and rec["diff_ids"][0] in missing
    asyncio.run(main())


class FakeDisk:
    def __init__(self, capacity: int, available: int) -> None:
        self.capacity, self.available = capacity, available

    def __call__(self, path: Path):
        return self.capacity, self.available, 1000


@pytest.mark.parametrize("available, in_use, min_age, removed", [
    pytest.param(50_000, set(), 0, [], id="below-high-threshold"),
    pytest.param(10_000, set(), 0, ["old", "mid"], id="lru-until-low"),
    pytest.param(10_000, {"old"}, 0, ["mid", "new"], id="in-use-kept"),
    pytest.param(10_000, set(), 70, ["old"], id="too-young-kept"),
])
def test_gc_removes_least_recently_used(tmp_path, available, in_use, min_age, removed):
    async def main():
        now = [1000.0]
        disk = FakeDisk(100_000, available)
        store = ImageStore(tmp_path, disk_usage=disk, clock=lambda: now[0])
        ids = {}
        for name in ("old", "mid", "new"):
            ids[name] = (await add_image(store, name, [{name: b"x"}], size=6_000)).id
            now[0] += 30
        # 90% used, high 85, low 80: 10 kB to free, so two 6 kB images go (if they may).
        got = await store.gc({ids[n] for n in in_use}, high=85, low=80, min_age=min_age)
        names = {v: k for k, v in ids.items()}
        assert [names[i] for i in got] == removed
        assert all(store.record(i) is None for i in got)
    asyncio.run(main())


WRITER = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from unit.test_images_store import add_image
from kubeling.kubelet.images.store import ImageStore
async def main():
    store = ImageStore({root!r})
    for i in range(15):
        await add_image(store, f"{prefix}{{i}}", [{{"base": b"shared"}}, {{"own": f"{prefix}{{i}}".encode()}}])
asyncio.run(main())
"""


def test_concurrent_writers_in_other_processes_lose_nothing(tmp_path):
    tests = str(Path(__file__).resolve().parents[1])
    procs = [subprocess.Popen([sys.executable, "-c", WRITER.format(tests=tests, root=str(tmp_path),
                                                                   prefix=p)])
             for p in ("p", "q")]
    try:
        async def main():
            store = ImageStore(tmp_path)
            for i in range(15):
                await add_image(store, f"r{i}", [{"base": b"shared"}, {"own": f"r{i}".encode()}])
        asyncio.run(main())
    finally:
        for proc in procs:
            assert proc.wait(timeout=120) == 0
    store = ImageStore(tmp_path)
    tags = sorted(t for img in store.list_images() for t in img.repo_tags)
    assert len(tags) == 45
    assert len(list((tmp_path / "layers" / "sha256").iterdir())) == 46   # 45 own + 1 shared
    assert list((tmp_path / "tmp").iterdir()) == []
