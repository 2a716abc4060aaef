"""``kubeling images import`` and ``kubeling images ls`` (kubeling/cli/images.py) on the
tarballs scripts/build-images.py writes: docker-archive and OCI layout, run as the command
line runs them (a child process per command)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from kubeling.kubelet.images.store import ImageStore
from tests.support.registry import build_images

# `kubeling images` is wired into kubeling/cli/main.py by the lead; until then the test drives
# the sub-command module exactly as main.py will (add_subcommands, then args.func(args)).
LAUNCHER = """
import argparse, sys
from kubeling.cli import images
parser = argparse.ArgumentParser(prog="kubeling")
images.add_subcommands(parser.add_subparsers(dest="command"))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def kubeling(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LAUNCHER, *argv], capture_output=True,
                          text=True, timeout=120, cwd=cwd, check=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return build_images(tmp_path_factory.mktemp("built-images"))


def _config_digest(images: Path, name: str) -> str:
    index = json.loads((images / name / "index.json").read_text())
    manifest = json.loads((images / name / "blobs" / "sha256" /
                           index["manifests"][0]["digest"][7:]).read_text())
    return manifest["config"]["digest"]


def test_import_docker_archive_and_oci_layout_then_ls(tmp_path, images):
    data = tmp_path / "data"
    r = kubeling("images", "import", "--data-dir", str(data),
                 str(images / "busybox.docker.tar"), str(images / "redis.oci.tar"))
    assert r.returncode == 0, r.stderr
    assert "docker.io/library/busybox:latest" in r.stdout
    assert "docker.io/library/redis:latest" in r.stdout

    store = ImageStore(data / "agent" / "images")
    busybox = store.find("busybox")
    redis = store.find("redis")
    assert busybox.id == _config_digest(images, "busybox")     # same config either way
    assert busybox.repo_digests == []                           # docker load has none
    oci_digest = json.loads((images / "redis" / "index.json").read_text())["manifests"][0]["digest"]
    assert redis.repo_digests == [f"docker.io/library/redis@{oci_digest}"]
    assert redis.layers[0] == busybox.layers[0]                 # the shared busybox layer
    assert redis.config["Entrypoint"] == ["docker-entrypoint.sh"]
    assert (redis.layers[1] / "usr/local/bin/docker-entrypoint.sh").is_file()

    r = kubeling("images", "ls", "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["docker.io/library/busybox"][1:3] == ["latest", busybox.id[7:20]]
    assert rows["docker.io/library/redis"][1:3] == ["latest", redis.id[7:20]]
    assert rows["docker.io/library/redis"][3].endswith("MB")

    r = kubeling("images", "ls", "-q", "--data-dir", str(data))
    assert sorted(r.stdout.split()) == sorted([busybox.id, redis.id])


def test_import_is_idempotent_and_defaults_to_make_ups_data_dir(tmp_path, images):
    for _ in range(2):
        r = kubeling("images", "import", str(images / "nginx.oci.tar"), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    store = ImageStore(tmp_path / ".kubeling" / "agent" / "images")
    assert [i.repo_tags for i in store.list_images()] == [["docker.io/library/nginx:latest"]]


def test_concurrent_imports_from_two_processes(tmp_path, images):
    data = tmp_path / "data"
    argv = [sys.executable, "-c", LAUNCHER, "images", "import", "--data-dir", str(data)]
    procs = [subprocess.Popen(argv + [str(images / f)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
             for f in ("redis.oci.tar", "nginx.docker.tar", "busybox-zstd.oci.tar")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    store = ImageStore(data / "agent" / "images")
    assert sorted(t for i in store.list_images() for t in i.repo_tags) == [
        "docker.io/library/nginx:latest", "docker.io/library/redis:latest"]
    assert len(store.list_images()) == 3                       # the zstd one is untagged
    assert list((data / "agent" / "images" / "tmp").iterdir()) == []


@pytest.mark.parametrize("content, message", [
    pytest.param({"hello.txt": b"hi"}, "neither a docker-archive", id="not-an-image"),
    pytest.param(None, "not a tar archive", id="not-a-tar"),
])
def test_bad_archives_fail_with_one_line(tmp_path, content, message):
    path = tmp_path / "bad.tar"
    if content is None:
        path.write_bytes(b"definitely not a tarball")
    else:
        with tarfile.open(path, "w") as tar:
            for name, data in content.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    r = kubeling("images", "import", "--data-dir", str(tmp_path / "d"), str(path))
    assert r.returncode == 1
    assert r.stderr.startswith("kubeling images import: ") and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
