"""Pulling from a real registry (Debian's docker-registry on loopback, seeded with the images
scripts/build-images.py makes): mirrors, digests, indexes, zstd, shared layers, corruption,
not-found, and Basic and Bearer (token) authentication."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from kubeling.kubelet.images import (
    DigestMismatch,
    ImageError,
    ImageNotFound,
    PullError,
    Unauthorized,
)
from kubeling.kubelet.images.puller import ImageManager
from kubeling.kubelet.images.registries import Registries
from kubeling.kubelet.images.service import ImageService
from tests.support.registry import Registry, build_images


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return build_images(tmp_path_factory.mktemp("built-images"))


@pytest.fixture(scope="module")
def open_registry(images, tmp_path_factory):
    with Registry.start(tmp_path_factory.mktemp("registry-open"), "open") as reg:
        reg.seed(images)
        yield reg


def _layout_digest(images: Path, name: str) -> str:
    return json.loads((images / name / "index.json").read_text())["manifests"][0]["digest"]


def _config_digest(images: Path, name: str) -> str:
    desc = _layout_digest(images, name)
    manifest = json.loads((images / name / "blobs" / "sha256" / desc[7:]).read_text())
    return manifest["config"]["digest"]


def _mirror(reg: Registry, *domains: str, configs: dict | None = None) -> Registries:
    doc = {"mirrors": {d: {"endpoint": [reg.url]} for d in domains}, "configs": configs or {}}
    return Registries.from_dict(doc, disable_default_endpoint=True)


def _pull(tmp_path, registries, ref, auth=None, service=None):
    async def main():
        svc = service or ImageService(tmp_path / "images", registries)
        try:
            return await svc.pull_image(ref, auth)
        finally:
            await svc.close()
    return asyncio.run(main())


def test_pull_through_the_docker_io_mirror_resolves_the_index(tmp_path, images, open_registry):
    image = _pull(tmp_path, _mirror(open_registry, "docker.io"), "busybox")
    assert image.id == _config_digest(images, "busybox")            # the amd64 entry
    assert image.repo_tags == ["docker.io/library/busybox:latest"]
    (index_digest,) = [d.partition("@")[2] for d in image.repo_digests]
    assert index_digest != _layout_digest(images, "busybox")         # the tag names the index
    assert image.config["Cmd"] == ["sh"]
    (layer,) = image.layers
    assert (layer / "bin" / "busybox").is_file() and (layer / "bin" / "sh").is_symlink()
    assert (layer / "etc" / "passwd").read_text().startswith("root:x:0:0:")


@pytest.mark.parametrize("ref", [
    pytest.param("k8s.gcr.io/busybox", id="k8s-gcr-mirror"),
    pytest.param("busybox:1.35", id="tag"),
    pytest.param("busybox:zstd", id="zstd-layer"),
    pytest.param("DIGEST", id="by-digest"),
])
def test_pull_variants_give_the_same_filesystem(tmp_path, images, open_registry, ref):
    if ref == "DIGEST":
        ref = "busybox@" + _layout_digest(images, "busybox")
    image = _pull(tmp_path, _mirror(open_registry, "docker.io", "k8s.gcr.io"), ref)
    (layer,) = image.layers
    assert (layer / "bin" / "busybox").read_bytes() == Path("/usr/bin/busybox").read_bytes()
    if "@" in ref:
        assert image.repo_tags == [] and image.repo_digests == [
            "docker.io/library/" + ref]


def test_layers_are_shared_between_images_and_manifest_types(tmp_path, images, open_registry):
    async def main():
        svc = ImageService(tmp_path / "images", _mirror(open_registry, "docker.io"))
        try:
            return [await svc.pull_image(r) for r in ("busybox", "redis", "nginx",
                                                       "busybox:zstd")]
        finally:
            await svc.close()
    busybox, redis, nginx, zstd = asyncio.run(main())
    assert redis.layers[0] == nginx.layers[0] == busybox.layers[0] == zstd.layers[0]
    assert redis.config["Cmd"] == ["redis-server"]                   # pushed as Docker schema 2
    assert redis.config["ExposedPorts"] == {"6379/tcp": {}}
    assert nginx.config["Cmd"] == ["nginx", "-g", "daemon off;"]
    assert (redis.layers[1] / "usr/bin/redis-check-rdb").is_file()
    assert (nginx.layers[1] / "etc/nginx/nginx.conf").is_file()
    assert len(list((tmp_path / "images" / "layers" / "sha256").iterdir())) == 3


def test_not_found_is_typed_and_readable(tmp_path, open_registry):
    with pytest.raises(ImageNotFound) as err:
        _pull(tmp_path, _mirror(open_registry, "docker.io"), "nope")
    assert str(err.value) == (
        'failed to pull and unpack image "docker.io/library/nope:latest": failed to resolve '
        'reference "docker.io/library/nope:latest": docker.io/library/nope:latest: not found')
    assert err.value.reason == "ErrImagePull"


def test_unreachable_registry(tmp_path):
    from tests.support.registry import free_port
    regs = Registries.from_dict({"mirrors": {"docker.io": {
        "endpoint": [f"http://127.0.0.1:{free_port()}"]}}}, disable_default_endpoint=True)
    with pytest.raises(PullError) as err:
        _pull(tmp_path, regs, "busybox")
    assert type(err.value).__name__ == "RegistryUnreachable"
    assert "failed to do request" in str(err.value)


def test_a_corrupted_blob_is_refused_and_not_stored(tmp_path, images):
    with Registry.start(tmp_path / "reg", "open") as reg:
        reg.seed(images)
        manifest = json.loads((images / "nginx" / "blobs" / "sha256" /
                               _layout_digest(images, "nginx")[7:]).read_text())
        layer = manifest["layers"][1]["digest"]
        data = reg.blob_file("library/nginx", layer)
        blob = bytearray(data.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        data.write_bytes(bytes(blob))
        with pytest.raises(DigestMismatch) as err:
            _pull(tmp_path, _mirror(reg, "docker.io"), "nginx")
    assert "unexpected commit digest" in str(err.value) and layer in str(err.value)
    store = tmp_path / "images"
    assert not (store / "blobs" / "sha256" / layer[7:]).exists()
    assert list((store / "tmp").iterdir()) == []
    assert not (store / "index.json").exists() or b"nginx" not in (store / "index.json").read_bytes()


def _pull_secret(host: str, user: str, password: str) -> dict:
    cfg = {"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}
    return {"type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(orjson.dumps(cfg)).decode()}}


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_authenticated_registries(tmp_path, images, auth):
    with Registry.start(tmp_path / "reg", auth) as reg:
        reg.seed(images)
        ref = f"{reg.host}/library/busybox:1.35"
        with pytest.raises(Unauthorized) as err:
            _pull(tmp_path, Registries(), ref)
        assert "pull access denied, repository does not exist or may require authorization" \
            in str(err.value)
        assert str(err.value).startswith(f'failed to pull and unpack image "{ref}"')
        with pytest.raises(Unauthorized):
            _pull(tmp_path, Registries(), ref, {"username": reg.username, "password": "wrong"})

        async def via_manager():
            svc = ImageService(tmp_path / "images", Registries())
            events = []
            try:
                pod = {"metadata": {"uid": "u1"}}
                container = {"name": "c", "image": ref, "imagePullPolicy": "Always"}
                secret = _pull_secret(reg.host, reg.username, reg.password)
                image = await ImageManager(svc).ensure_image(pod, container, [secret],
                                                             lambda *e: events.append(e))
                return image, events
            finally:
                await svc.close()
        image, events = asyncio.run(via_manager())
        assert image.id == _config_digest(images, "busybox")
        assert [e[1] for e in events] == ["Pulling", "Pulled"]
        assert f"Image size: {image.size} bytes." in events[1][2]

        # registries.yaml credentials for a mirror endpoint, no pull secret.
        configs = {reg.host: {"auth": {"username": reg.username, "password": reg.password}}}
        image = _pull(tmp_path / "b", _mirror(reg, "docker.io", configs=configs), "redis")
        assert image.config["Cmd"] == ["redis-server"]


def test_registry_in_a_network_namespace(tmp_path, images):
    ns = f"kl-imgtest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        with Registry.start(tmp_path / "reg", "token", netns=ns) as reg:
            out = reg.seed(images)
            assert "library/busybox:latest sha256:" in out
            # Only reachable inside the namespace.
            with pytest.raises(PullError):
                _pull(tmp_path, Registries(), f"{reg.host}/library/busybox:1.35")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


# containerd's default capability set for containers (runc's own default is smaller).
DEFAULT_CAPS = {f"CAP_{c}" for c in ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD",
                                     "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
                                     "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")}


def _runc_run(tmp_path: Path, layers: list[Path], args: list[str]) -> subprocess.CompletedProcess:
    """Run ``args`` with runc on an overlay of ``layers`` (bottom first); everything removed."""
    cid = f"kl-imgtest-{uuid.uuid4().hex[:12]}"
    bundle, state = tmp_path / "bundle", tmp_path / "runc-state"
    rootfs, upper, work = bundle / "rootfs", tmp_path / "upper", tmp_path / "work"
    for d in (rootfs, upper, work, state):
        d.mkdir(parents=True)
    lower = ":".join(str(p) for p in reversed(layers))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(rootfs)], check=True)
    try:
        subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
        spec = json.loads((bundle / "config.json").read_text())
        spec["process"].update(args=args, terminal=False)
        caps = sorted(set(spec["process"]["capabilities"]["bounding"]) | DEFAULT_CAPS)
        spec["process"]["capabilities"] = {k: caps for k in ("bounding", "effective",
                                                             "permitted")}
        spec["root"] = {"path": "rootfs", "readonly": False}
        spec["linux"]["cgroupsPath"] = f"/{cid}"
        (bundle / "config.json").write_text(json.dumps(spec))
        return subprocess.run(["runc", "--root", str(state), "run", "--bundle", str(bundle), cid],
                              capture_output=True, text=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL)
    finally:
        subprocess.run(["runc", "--root", str(state), "delete", "--force", cid],
                       capture_output=True, check=False)
        subprocess.run(["umount", str(rootfs)], check=True)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            leftover = hierarchy / cid
            if leftover.is_dir():
                leftover.rmdir()


@pytest.mark.parametrize("ref, args, output", [
    pytest.param("busybox", ["/bin/sh", "-c", "echo ok"], "ok", id="busybox-sh"),
    pytest.param("redis", ["redis-server", "--version"], "Redis server v=", id="redis-libs"),
    pytest.param("nginx", ["nginx", "-t"], "test is successful", id="nginx-config"),
])
def test_pulled_images_run_under_runc(tmp_path, open_registry, ref, args, output):
    image = _pull(tmp_path, _mirror(open_registry, "docker.io"), ref)
    result = _runc_run(tmp_path, image.layers, args)
    assert result.returncode == 0, result.stderr
    assert output in result.stdout + result.stderr


def test_missing_image_gives_err_image_pull_then_back_off(tmp_path, open_registry):
    async def main():
        svc = ImageService(tmp_path / "images", _mirror(open_registry, "docker.io"))
        mgr = ImageManager(svc)
        pod = {"metadata": {"uid": "u-missing"}}
        container = {"name": "c", "image": "nope:1"}
        outcomes = []
        try:
            for _ in range(2):
                try:
                    await mgr.ensure_image(pod, container, [])
                except ImageError as e:
                    outcomes.append((e.reason, str(e)))
        finally:
            await svc.close()
        return outcomes
    (first, second) = asyncio.run(main())
    assert first == ("ErrImagePull", ('failed to pull and unpack image '
                                      '"docker.io/library/nope:1": failed to resolve reference '
                                      '"docker.io/library/nope:1": docker.io/library/nope:1: '
                                      'not found'))
    assert second == ("ImagePullBackOff", f'Back-off pulling image "nope:1": ErrImagePull: {first[1]}')
