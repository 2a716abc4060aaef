#!/usr/bin/env python3
"""Push the images of ``build-images.py`` to a registry over the OCI distribution API.

    seed-registry.py --registry http://127.0.0.1:PORT --from DIR [--username U --password P]

Blobs go up as monolithic uploads (``POST /v2/<repo>/blobs/uploads/``, then ``PUT
<location>?digest=``), skipped when ``HEAD`` finds them; manifests with ``PUT
/v2/<repo>/manifests/<tag>``. A 401 is answered as a client should: ``Basic`` with the given
credentials, or ``Bearer`` by fetching a ``pull,push`` token from the challenge's realm.

What is pushed:

    library/busybox:latest   an OCI image index: linux/amd64 and linux/arm64
    library/busybox:1.35     the linux/amd64 OCI manifest
    library/busybox:zstd     busybox with a zstd layer
    busybox:latest           the amd64 manifest again, for ``k8s.gcr.io/busybox`` through a mirror
    library/redis:latest     as a Docker schema 2 manifest (the other manifest family)
    library/nginx:latest     an OCI manifest
    kubeling/python-client:latest   an OCI manifest (Python and the kubernetes client)

Prints ``<repo>:<tag> <digest>`` per manifest. Standard library only, so that it runs under
``ip netns exec`` with any Python 3.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class Pusher:
    def __init__(self, registry: str, username: str = "", password: str = "") -> None:
        self.base = registry.rstrip("/") + "/v2"
        self.username, self.password = username, password
        self.tokens: dict[str, str] = {}

    def _basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _token(self, challenge: str, repo: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = {"service": params.get("service", ""), "scope": f"repository:{repo}:pull,push"}
        req = urllib.request.Request(params["realm"] + "?" + urllib.parse.urlencode(query))
        if self.username:
            req.add_header("Authorization", self._basic())
        with urllib.request.urlopen(req, timeout=30) as resp:
            doc = json.loads(resp.read())
        return "Bearer " + (doc.get("token") or doc["access_token"])

    def request(self, method: str, url: str, repo: str, data: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict, bytes]:
        for attempt in (0, 1):
            req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
            if repo in self.tokens:
                req.add_header("Authorization", self.tokens[repo])
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    return resp.status, dict(resp.headers), resp.read()
            except urllib.error.HTTPError as e:
                body = e.read()
                if e.code == 401 and attempt == 0:
                    challenge = e.headers.get("WWW-Authenticate", "")
                    if challenge.lower().startswith("basic"):
                        self.tokens[repo] = self._basic()
                    else:
                        self.tokens[repo] = self._token(challenge, repo)
                    continue
                if e.code == 404 and method == "HEAD":
                    return 404, dict(e.headers), body
                raise SystemExit(f"seed-registry: {method} {url}: {e.code} {body[:300]!r}")
        raise SystemExit(f"seed-registry: {method} {url}: still unauthorized")

    def blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, _, _ = self.request("HEAD", f"{self.base}/{repo}/blobs/{digest}", repo)
        if status == 200:
            return digest
        _, headers, _ = self.request("POST", f"{self.base}/{repo}/blobs/uploads/", repo, b"")
        location = headers.get("Location") or headers.get("location")
        location = urllib.parse.urljoin(self.base, location)
        sep = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{sep}digest={urllib.parse.quote(digest)}", repo, data,
                     {"Content-Type": "application/octet-stream"})
        return digest

    def manifest(self, repo: str, tag: str, body: bytes, media_type: str) -> str:
        self.request("PUT", f"{self.base}/{repo}/manifests/{tag}", repo, body,
                     {"Content-Type": media_type})
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        print(f"{repo}:{tag} {digest}")
        return digest


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.partition(":")[2]).read_bytes()


def _manifest_of(layout: Path) -> tuple[dict, bytes]:
    desc = json.loads((layout / "index.json").read_text())["manifests"][0]
    body = _blob(layout, desc["digest"])
    return desc, body


def push_image(p: Pusher, layout: Path, repo: str, tags: list[str], docker: bool = False) -> dict:
    """Push one layout's image; its descriptor (as an index entry would hold it)."""
    desc, body = _manifest_of(layout)
    manifest = json.loads(body)
    for d in [manifest["config"]] + manifest["layers"]:
        p.blob(repo, _blob(layout, d["digest"]))
    media = OCI_MANIFEST
    if docker:
        manifest["mediaType"] = media = DOCKER_MANIFEST
        manifest["config"]["mediaType"] = DOCKER_CONFIG
        for layer in manifest["layers"]:
            layer["mediaType"] = DOCKER_LAYER
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    digest = ""
    for tag in tags:
        digest = p.manifest(repo, tag, body, media)
    return {"mediaType": media, "digest": digest, "size": len(body),
            "platform": desc.get("platform") or {"architecture": "amd64", "os": "linux"}}


def seed(p: Pusher, src: Path) -> None:
    amd64 = push_image(p, src / "busybox", "library/busybox", ["1.35"])
    arm64 = push_image(p, src / "busybox-arm64", "library/busybox", ["arm64"])
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [amd64, arm64]}
    p.manifest("library/busybox", "latest",
               json.dumps(index, sort_keys=True, separators=(",", ":")).encode(), OCI_INDEX)
    push_image(p, src / "busybox-zstd", "library/busybox", ["zstd"])
    push_image(p, src / "busybox", "busybox", ["latest"])
    push_image(p, src / "redis", "library/redis", ["latest"], docker=True)
    push_image(p, src / "nginx", "library/nginx", ["latest"])
    if (src / "python-client").exists():
        push_image(p, src / "python-client", "kubeling/python-client", ["latest"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", required=True, help="e.g. http://127.0.0.1:5000")
    parser.add_argument("--from", dest="src", required=True, type=Path,
                        help="the output directory of build-images.py")
    parser.add_argument("--username", default="")
    parser.add_argument("--password", default="")
    args = parser.parse_args(argv)
    seed(Pusher(args.registry, args.username, args.password), args.src)
    return 0


if __name__ == "__main__":
    sys.exit(main())
