#!/usr/bin/env python3
"""Build kubeling's test images from the Debian-packaged binaries on this machine; nothing is
fetched. Needs busybox-static, redis-server and nginx installed (scripts/install-deps.sh).

    build-images.py --out DIR

writes, for each of busybox, redis, nginx and python-client:

    DIR/<name>/                   an OCI image layout (oci-layout, index.json, blobs/sha256/..)
    DIR/<name>.oci.tar            the same layout as one tarball (``kubeling images import``)
    DIR/<name>.docker.tar         a docker-archive, as ``docker save`` writes it

plus ``DIR/busybox-zstd/`` (and ``.oci.tar``): busybox with a zstd-compressed layer, and
``DIR/busybox-arm64/``: a busybox manifest whose config says linux/arm64 (same layer; it is
never run, it only gives the seeded image index a second platform).

The images, like Docker Hub's:
- busybox: ``/bin/busybox`` and a symlink per applet in ``/bin``, ``/etc/passwd`` and
  ``/etc/group`` (root and nobody), ``/tmp``; Cmd ``["sh"]``.
- redis: the busybox layer (shared) plus ``redis-server`` with its libraries (from ldd) and an
  entrypoint that turns protected mode off when no config is given, as Docker Hub's does;
  Cmd ``["redis-server"]``, port 6379, WorkingDir ``/data``.
- nginx: the busybox layer plus nginx, its libraries, ``/etc/nginx`` (nginx.conf serving
  ``/usr/share/nginx/html`` on port 80, logs to stdout/stderr, mime.types); Cmd
  ``["nginx", "-g", "daemon off;"]``.
- python-client (``docker.io/kubeling/python-client:latest``, for in-cluster client tests): the
  busybox layer plus the Python interpreter that runs this script (its ``sys.base_prefix``:
  binary, libpython, the standard library without tests, IDLE, tkinter, ensurepip, lib2to3 and
  bytecode caches, and ``lib-dynload`` with the libraries ldd names), and the official
  ``kubernetes`` package with its dependency closure (markers evaluated, no extras) copied from
  this interpreter's site-packages by their RECORD, dist-info included. Laid out as the
  ``python`` images are: ``/usr/local/bin/python3``, ``/usr/local/lib/python3.X``;
  Env ``LD_LIBRARY_PATH=/usr/local/lib``, ``PYTHONDONTWRITEBYTECODE=1``; Cmd ``["python3"]``.

Reproducible: entries sorted, owners root (nginx's temp dirs: nobody), one fixed mtime
(``SOURCE_DATE_EPOCH``, default 2024-01-01), gzip without name or time, fixed zstd level;
two runs on one machine give the same digests.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "1704067200"))
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\n"
NOBODY = 65534

REDIS_ENTRYPOINT = """#!/bin/sh
# Like Docker Hub's redis entrypoint: with no config file given, listen on every address
# without protected mode, so that other pods can connect.
set -e
if [ "${1#-}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = "redis-server" ]; then
    case "$2" in
        *.conf) ;;
        *) shift; set -- redis-server --protected-mode no "$@" ;;
    esac
fi
exec "$@"
"""

NGINX_CONF = """user nobody nobody;
worker_processes 1;
pid /run/nginx.pid;
error_log /dev/stderr notice;

events {
    worker_connections 1024;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
"""

NGINX_DEFAULT_SITE = """server {
    listen 80;
    listen [::]:80;
    server_name localhost;
    location / {
        root /usr/share/nginx/html;
        index index.html;
    }
}
"""

NGINX_INDEX = """<!DOCTYPE html>
<html>
<head><title>Welcome to nginx!</title></head>
<body>
<h1>Welcome to nginx!</h1>
<p>This nginx was built by kubeling from the Debian package.</p>
</body>
</html>
"""


@dataclass
class Entry:
    """One thing in a layer: a directory, a file (bytes), or a symlink."""

    path: str
    kind: str                    # "dir" | "file" | "symlink"
    mode: int = 0o755
    data: bytes = b""
    target: str = ""
    owner: int = 0


class Layer:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def dir(self, path: str, mode: int = 0o755, owner: int = 0) -> None:
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            self.entries.setdefault(parent, Entry(parent, "dir"))
        self.entries[path] = Entry(path, "dir", mode, owner=owner)

    def _parent(self, path: str) -> None:
        parent = path.rpartition("/")[0]
        if parent and parent not in self.entries:
            self.dir(parent)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self._parent(path)
        self.entries[path] = Entry(path, "file", mode, data)

    def copy(self, path: str, src: str | Path, mode: int | None = None) -> None:
        real = Path(os.path.realpath(src))
        self.file(path, real.read_bytes(), mode if mode is not None else real.stat().st_mode & 0o7777)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        self._parent(path)
        self.entries[path] = Entry(path, "symlink", 0o777, target=target)

    def tar(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                e = self.entries[path]
                info = tarfile.TarInfo(e.path + ("/" if e.kind == "dir" else ""))
                info.mtime, info.uid, info.gid, info.uname, info.gname = (EPOCH, e.owner,
                                                                          e.owner, "", "")
                info.mode = e.mode
                if e.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif e.kind == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, e.target
                    tar.addfile(info)
                else:
                    info.size = len(e.data)
                    tar.addfile(info, io.BytesIO(e.data))
        return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ldd_libraries(binary: str) -> list[str]:
    """The shared libraries ``binary`` loads, as the paths ldd resolves them to."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libs.append(m.group(1))
    return sorted(set(libs))


def add_binary(layer: Layer, path: str, src: str) -> None:
    layer.copy(path, src, 0o755)
    for lib in ldd_libraries(src):
        layer.copy(lib, lib, 0o755)


def busybox_layer() -> Layer:
    layer = Layer()
    for d in ("bin", "dev", "etc", "proc", "root", "sys", "usr/bin", "usr/sbin", "var/www"):
        layer.dir(d, 0o700 if d == "root" else 0o755)
    layer.dir("tmp", 0o1777)
    layer.dir("home", 0o755)
    layer.copy("bin/busybox", "/usr/bin/busybox", 0o755)
    applets = subprocess.run(["/usr/bin/busybox", "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            layer.symlink(f"bin/{applet}", "busybox")
    layer.file("etc/passwd", PASSWD.encode())
    layer.file("etc/group", GROUP.encode())
    return layer


def redis_layer() -> Layer:
    layer = Layer()
    add_binary(layer, "usr/bin/redis-check-rdb", "/usr/bin/redis-server")
    layer.symlink("usr/bin/redis-server", "redis-check-rdb")
    layer.file("usr/local/bin/docker-entrypoint.sh", REDIS_ENTRYPOINT.encode(), 0o755)
    layer.dir("data", 0o777)
    return layer


def nginx_layer() -> Layer:
    layer = Layer()
    add_binary(layer, "usr/sbin/nginx", "/usr/sbin/nginx")
    layer.file("etc/nginx/nginx.conf", NGINX_CONF.encode())
    layer.file("etc/nginx/conf.d/default.conf", NGINX_DEFAULT_SITE.encode())
    layer.copy("etc/nginx/mime.types", "/etc/nginx/mime.types", 0o644)
    layer.file("usr/share/nginx/html/index.html", NGINX_INDEX.encode())
    for d in ("var/log/nginx", "run", "var/cache/nginx"):
        layer.dir(d)
    # The temp dirs belong to the worker user already, so the master need not chown them
    # (which would need CAP_CHOWN).
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        layer.dir(f"var/lib/nginx/{d}", 0o700, owner=NOBODY)
    layer.symlink("var/log/nginx/access.log", "/dev/stdout")
    layer.symlink("var/log/nginx/error.log", "/dev/stderr")
    return layer


PY_SKIP_TOP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages",
               "pydoc_data", "__phello__", "config-3.11-x86_64-linux-gnu"}
PY_SKIP_DIRS = {"__pycache__", "tests", "test"}
PY_SKIP_MODULES = ("_test", "_tkinter", "xxlimited", "_ctypes_test", "_xxtestfuzz", "_xxsubinterpreters")


def _dependency_closure(root: str) -> list:
    """The installed distributions ``root`` needs (its own included), without extras."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    seen: dict[str, md.Distribution] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        dist = md.distribution(name)
        key = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if key in seen:
            continue
        seen[key] = dist
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [seen[k] for k in sorted(seen)]


def python_client_layer() -> Layer:
    layer = Layer()
    base = Path(sys.base_prefix)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = base / "lib" / ver
    dest_lib = f"usr/local/lib/{ver}"
    native: set[str] = set()

    def add_native(dest: str, src: Path) -> None:
        layer.copy(dest, src, 0o755)
        native.add(str(src))

    add_native(f"usr/local/bin/{ver}", base / "bin" / ver)
    layer.symlink("usr/local/bin/python3", ver)
    layer.symlink("usr/local/bin/python", ver)
    for path in sorted(stdlib.rglob("*")):
        rel = path.relative_to(stdlib)
        if rel.parts[0] in PY_SKIP_TOP or PY_SKIP_DIRS & set(rel.parts[:-1]) or path.suffix == ".pyc" \
                or path.is_dir() or rel.name.startswith(PY_SKIP_MODULES):
            continue
        if path.is_symlink():
            continue
        if path.suffix == ".so":
            add_native(f"{dest_lib}/{rel}", path)
        else:
            layer.copy(f"{dest_lib}/{rel}", path, 0o644)
    for dist in _dependency_closure("kubernetes"):
        for f in dist.files or []:
            rel = Path(str(f))
            if ".." in rel.parts or "__pycache__" in rel.parts or rel.suffix == ".pyc":
                continue      # console scripts (bin/), bytecode
            src = Path(dist.locate_file(f))
            if not src.is_file():
                continue
            if src.suffix == ".so":
                add_native(f"{dest_lib}/site-packages/{rel}", src)
            else:
                layer.copy(f"{dest_lib}/site-packages/{rel}", src, 0o644)
    libs: set[str] = set()
    for binary in sorted(native):
        libs.update(ldd_libraries(binary))
    for lib in sorted(libs):
        real = Path(os.path.realpath(lib))
        if str(real).startswith(str(base)):
            layer.copy(f"usr/local/lib/{Path(lib).name}", real, 0o755)      # libpython
        else:
            layer.copy(lib, lib, 0o755)
    return layer


def compress(tar: bytes, kind: str) -> bytes:
    if kind == "zstd":
        return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(tar)
    return gzip.compress(tar, compresslevel=6, mtime=0)


def image_config(arch: str, diff_ids: list[str], config: dict) -> bytes:
    doc = {
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "kubeling build-images"}
                    for _ in diff_ids],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class Layout:
    """An OCI image layout being written under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        if root.exists():
            shutil.rmtree(root)
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def blob(self, data: bytes) -> dict:
        digest = sha256(data)
        (self.root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def image(self, tars: list[bytes], compression: str, arch: str, config: dict) -> dict:
        """Write an image's blobs; its manifest's descriptor (with the platform)."""
        layers = []
        for tar in tars:
            desc = self.blob(compress(tar, compression))
            layers.append({"mediaType": LAYER_ZSTD if compression == "zstd" else LAYER_GZIP,
                           **desc})
        cfg = self.blob(image_config(arch, [sha256(t) for t in tars], config))
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, **cfg}, "layers": layers}
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        return {"mediaType": OCI_MANIFEST, **self.blob(body),
                "platform": {"architecture": arch, "os": "linux"}}

    def index(self, manifests: list[dict]) -> None:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        (self.root / "index.json").write_text(json.dumps(doc, sort_keys=True, indent=1))


def tar_dir(src: Path, dest: Path) -> None:
    """A reproducible tarball of the directory ``src`` (its contents at the top level)."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in src.rglob("*")):
            info = tar.gettarinfo(path, path.relative_to(src).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def docker_archive(dest: Path, tag: str, tars: list[bytes], config: dict) -> None:
    """A ``docker save`` tarball: manifest.json, <config hex>.json, <layer id>/layer.tar."""
    cfg = image_config("amd64", [sha256(t) for t in tars], config)
    members: list[tuple[str, bytes]] = [(f"{sha256(cfg)[7:]}.json", cfg)]
    layer_paths = []
    for t in tars:
        path = f"{sha256(t)[7:]}/layer.tar"
        layer_paths.append(path)
        members.append((path, t))
    manifest = [{"Config": members[0][0], "RepoTags": [tag], "Layers": layer_paths}]
    members.append(("manifest.json", json.dumps(manifest).encode()))
    name, _, version = tag.rpartition(":")
    members.append(("repositories", json.dumps(
        {name: {version: sha256(tars[-1])[7:]}}).encode()))
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted({p.rpartition("/")[0] for p, _ in members if "/" in p}):
            info = tarfile.TarInfo(d + "/")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            tar.addfile(info)
        for path, data in sorted(members):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, EPOCH
            tar.addfile(info, io.BytesIO(data))


def build(out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    base = busybox_layer().tar()
    images = {
        "busybox": ([base], {"Env": [PATH_ENV], "Cmd": ["sh"]}),
        "redis": ([base, redis_layer().tar()], {
            "Env": [PATH_ENV], "Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["redis-server"],
            "ExposedPorts": {"6379/tcp": {}}, "WorkingDir": "/data", "Volumes": {"/data": {}}}),
        "nginx": ([base, nginx_layer().tar()], {
            "Env": [PATH_ENV], "Cmd": ["nginx", "-g", "daemon off;"],
            "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGQUIT"}),
        "python-client": ([base, python_client_layer().tar()], {
            "Env": [PATH_ENV, "LD_LIBRARY_PATH=/usr/local/lib", "PYTHONDONTWRITEBYTECODE=1", "LANG=C.UTF-8"],
            "Cmd": ["python3"]}),
    }
    refs = {"python-client": "kubeling/python-client"}
    written = {}
    for name, (tars, config) in images.items():
        layout = Layout(out / name)
        desc = layout.image(tars, "gzip", "amd64", config)
        ref = refs.get(name, f"library/{name}")
        desc["annotations"] = {"io.containerd.image.name": f"docker.io/{ref}:latest",
                               "org.opencontainers.image.ref.name": "latest"}
        layout.index([desc])
        tar_dir(out / name, out / f"{name}.oci.tar")
        docker_archive(out / f"{name}.docker.tar", f"{ref.removeprefix('library/')}:latest", tars, config)
        written[name] = out / name
    bb_tars, bb_config = images["busybox"]
    for name, compression, arch in (("busybox-zstd", "zstd", "amd64"),
                                    ("busybox-arm64", "gzip", "arm64")):
        layout = Layout(out / name)
        desc = layout.image(bb_tars, compression, arch, bb_config)
        layout.index([desc])
        tar_dir(out / name, out / f"{name}.oci.tar")
        written[name] = out / name
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    args = parser.parse_args(argv)
    for tool in ("/usr/bin/busybox", "/usr/bin/redis-server", "/usr/sbin/nginx"):
        if not os.path.exists(tool):
            print(f"build-images: {tool} is missing; run scripts/install-deps.sh", file=sys.stderr)
            return 1
    for name, path in build(args.out).items():
        index = json.loads((path / "index.json").read_text())
        print(f"{name}: {index['manifests'][0]['digest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
