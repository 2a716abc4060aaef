"""``kubeling images``: the node's image store from the command line (as ``ctr images`` /
``crictl images``).

- ``images import [--data-dir DIR] FILE...`` imports docker-archive (``docker save``) and
  OCI-layout tarballs into ``DIR/agent/images``, for air-gapped nodes. It works while an agent
  runs on DIR: the store's index is only changed under its lock file.
- ``images ls [--data-dir DIR]`` lists the images with crictl's columns: IMAGE, TAG, IMAGE ID
  (13 hex characters), SIZE (decimal units, 3 significant digits).

``--data-dir`` defaults to ``.kubeling``, the directory ``make up`` uses. When it is a
``kubeling cluster`` directory (it holds ``cluster.json``), ``import`` fills every node's store,
as ``kind load`` does, and ``ls`` lists each node's images under a ``node <name>:`` line. Failures are one line
on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from kubeling.kubelet.images import ImageError
from kubeling.kubelet.images.archive import import_archive
from kubeling.kubelet.images.store import ImageStore
from kubeling.kubelet.runtime import Image

DEFAULT_DATA_DIR = ".kubeling"


def store_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "agent" / "images"


def node_data_dirs(data_dir: str | Path) -> dict[str, Path]:
    """The data dirs of the nodes an import goes to: every node of a cluster directory
    (``kubeling cluster``), or the directory itself under the name ``""``."""
    from kubeling.cluster.cluster import STATE_FILE, ClusterState
    state = Path(data_dir) / STATE_FILE
    if not state.exists():
        return {"": Path(data_dir)}
    import json
    nodes = ClusterState.from_json(json.loads(state.read_text())).nodes
    return {name: Path(node.data_dir) for name, node in nodes.items()}


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``images`` (with ``import`` and ``ls``) on ``kubeling``'s sub-parsers."""
    p = subparsers.add_parser("images", help="manage the node's image store")
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="images_command", required=True)
    imp = sub.add_parser("import", help="import docker-archive or OCI-layout tarballs")
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the node's data directory")
    ls = sub.add_parser("ls", aliases=["list"], help="list the images in the store")
    ls.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the node's data directory")
    ls.add_argument("-q", "--quiet", action="store_true", help="only show image ids")


def run(args: argparse.Namespace) -> int:
    cmd = args.images_command
    try:
        if cmd == "import":
            return asyncio.run(_import(args))
        return _ls(args)
    except (ImageError, OSError, ValueError) as e:
        print(f"kubeling images {cmd}: {e}", file=sys.stderr)
        return 1


async def _import(args: argparse.Namespace) -> int:
    for node, data_dir in node_data_dirs(args.data_dir).items():
        store = ImageStore(store_dir(data_dir))
        where = f" on node {node}" if node else ""
        for path in args.files:
            for image in await import_archive(store, path):
                name = ", ".join(image.repo_tags) or "(untagged)"
                print(f"unpacked {name} ({image.id}), {len(image.layers)} layers, {image.size} bytes{where}")
    return 0


def human_size(size: float) -> str:
    """go-units' HumanSizeWithPrecision(size, 3): decimal units, as crictl prints sizes."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.3g}{units[i]}"


def rows(images: list[Image]) -> list[tuple[str, str, str, str]]:
    out = []
    for image in images:
        short_id = image.id.partition(":")[2][:13]
        size = human_size(image.size)
        for tag in image.repo_tags:
            name, _, t = tag.rpartition(":")
            out.append((name, t, short_id, size))
        if not image.repo_tags:
            name = image.repo_digests[0].partition("@")[0] if image.repo_digests else "<none>"
            out.append((name, "<none>", short_id, size))
    return sorted(out)


def _ls(args: argparse.Namespace) -> int:
    dirs = node_data_dirs(args.data_dir)
    for node, data_dir in dirs.items():
        if node:
            print(f"node {node}:")
        _ls_one(data_dir, args.quiet)
    return 0


def _ls_one(data_dir: Path, quiet: bool) -> None:
    root = store_dir(data_dir)
    images = ImageStore(root).list_images() if root.exists() else []
    if quiet:
        for image in images:
            print(image.id)
        return
    table = [("IMAGE", "TAG", "IMAGE ID", "SIZE")] + rows(images)
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    for r in table:
        print("   ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "   " + r[3])
