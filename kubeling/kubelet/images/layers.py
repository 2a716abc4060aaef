"""Unpacking one image layer (a tar, gzip- or zstd-compressed or plain) into a directory that
overlayfs can use directly as a lower dir.

Contract:
- `unpack(blob_path, dest, diff_id)` is blocking (call it through ``asyncio.to_thread``). It
  writes into ``dest`` (which must not exist yet: the caller unpacks into a staging dir and
  renames it into place, so a half-unpacked layer is never visible) and returns the number of
  bytes of the uncompressed tar.
- The uncompressed stream must hash to ``diff_id`` (the config's ``rootfs.diff_ids`` entry);
  otherwise `DigestMismatch` is raised and the caller discards ``dest``.
- The compression is detected from the content's magic bytes, not the media type: registries
  and ``docker save`` archives are loose about media types, the bytes are not.
- Whiteouts become overlayfs whiteouts, because each layer is an overlay lower dir and upper
  layers must hide lower files the way the image format says:
    ``dir/.wh.name``       -> ``dir/name`` as a character device 0/0
    ``dir/.wh..wh..opq``   -> ``dir`` gets the xattr ``trusted.overlay.opaque=y``
- Entries may not escape ``dest``: absolute names are made relative, ``..`` components and
  hard links or parents through symlinks that leave the layer are refused (`UnsupportedImage`).
- Owners, modes, mtimes, device nodes, FIFOs, hard links and ``SCHILY.xattr.*`` PAX records are
  kept (we run as root); directory mtimes are set last, since creating children changes them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import zstandard

from kubeling.kubelet.images import DigestMismatch, UnsupportedImage

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20


class _HashingReader(io.RawIOBase):
    """Reads from ``inner`` and hashes what passes, so the diff_id is checked in one pass."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.sha = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self.inner.read(len(buf))
        n = len(data)
        buf[:n] = data
        self.sha.update(data)
        self.count += n
        return n

    def drain(self) -> None:
        """Hash whatever tarfile left unread (end-of-archive padding is part of the diff_id)."""
        while data := self.inner.read(_CHUNK):
            self.sha.update(data)
            self.count += len(data)


def compression_of(head: bytes) -> str:
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return "none"


def open_uncompressed(f):
    """A file object yielding the uncompressed tar of the (possibly compressed) file ``f``."""
    head = f.read(4)
    f.seek(0)
    kind = compression_of(head)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=f, mode="rb")
    if kind == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(f, read_size=_CHUNK)
    return f


def _safe_relpath(name: str) -> str:
    parts = []
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise UnsupportedImage(f"layer entry {name!r} escapes the layer root")
        parts.append(part)
    return "/".join(parts)


def _check_parents(root: Path, rel: str) -> Path:
    """``root/rel``, refusing a path whose parent directories include a symlink: following it
    would write outside the layer (the tar-slip attack)."""
    path = root
    parts = rel.split("/")
    for part in parts[:-1]:
        path = path / part
        if path.is_symlink():
            raise UnsupportedImage(f"layer entry {rel!r} goes through the symlink {part!r}")
    return root / rel


def _remove_existing(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        import shutil
        shutil.rmtree(path)


def _apply_xattrs(path: Path, member: tarfile.TarInfo) -> None:
    for key, value in (member.pax_headers or {}).items():
        if not key.startswith("SCHILY.xattr."):
            continue
        try:
            os.setxattr(path, key[len("SCHILY.xattr."):], value.encode("utf-8", "surrogateescape"),
                        follow_symlinks=False)
        except OSError:
            # A filesystem may refuse a namespace (e.g. security.* under some LSMs); the layer
            # stays usable without it, as containerd's unpacker also tolerates.
            pass


def _make_whiteout(path: Path) -> None:
    _remove_existing(path)
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path,
                    dir_times: list[tuple[Path, float]]) -> None:
    rel = _safe_relpath(member.name)
    if not rel:
        # The layer root itself: keep its mode, it becomes "/" in the container's view.
        os.chmod(root, stat.S_IMODE(member.mode))
        dir_times.append((root, member.mtime))
        return
    base = rel.rpartition("/")[2]
    parent = _check_parents(root, rel).parent
    parent.mkdir(parents=True, exist_ok=True)
    if base == OPAQUE_WHITEOUT:
        os.setxattr(parent, OPAQUE_XATTR, b"y")
        return
    if base.startswith(WHITEOUT_PREFIX):
        _make_whiteout(parent / base[len(WHITEOUT_PREFIX):])
        return
    path = parent / base
    if member.isdir():
        if path.exists() and not path.is_dir():
            _remove_existing(path)
        path.mkdir(exist_ok=True)
    else:
        if path.exists() or path.is_symlink():
            _remove_existing(path)
        if member.isreg():
            src = tar.extractfile(member)
            with open(path, "wb") as out:
                while data := src.read(_CHUNK):
                    out.write(data)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            target = _check_parents(root, _safe_relpath(member.linkname))
            os.link(target, path, follow_symlinks=False)
            return  # a hard link shares the target's inode: owner, mode and times included
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(path, kind | stat.S_IMODE(member.mode),
                     os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(path, stat.S_IMODE(member.mode))
        else:
            raise UnsupportedImage(f"layer entry {rel!r} has an unsupported type {member.type!r}")
    os.lchown(path, member.uid, member.gid)
    if not member.issym():
        os.chmod(path, stat.S_IMODE(member.mode))
    _apply_xattrs(path, member)
    if member.isdir():
        dir_times.append((path, member.mtime))
    else:
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def unpack(blob_path: Path, dest: Path, diff_id: str | None) -> int:
    """Unpack the layer blob at ``blob_path`` into the new directory ``dest`` (see module doc).
    ``diff_id`` None skips the check (only for callers that compute it, like the image builder)."""
    dest.mkdir(mode=0o755)
    dir_times: list[tuple[Path, float]] = []
    with open(blob_path, "rb") as raw:
        stream = _HashingReader(open_uncompressed(raw))
        try:
            with tarfile.open(fileobj=io.BufferedReader(stream, _CHUNK), mode="r|",
                              ignore_zeros=False) as tar:
                for member in tar:
                    _extract_member(tar, member, dest, dir_times)
        except (tarfile.TarError, EOFError, zstandard.ZstdError, gzip.BadGzipFile) as e:
            raise UnsupportedImage(f"layer {blob_path.name} is not a valid tar: {e}") from e
        stream.drain()
    for path, mtime in reversed(dir_times):
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    got = "sha256:" + stream.sha.hexdigest()
    if diff_id is not None and got != diff_id:
        raise DigestMismatch(f"layer diff_id mismatch: the uncompressed layer is {got}, "
                             f"the image config says {diff_id}")
    return stream.count


def diff_id_of(blob_path: Path) -> tuple[str, int]:
    """The sha256 of the uncompressed tar (the diff_id) and its size, without unpacking."""
    sha = hashlib.sha256()
    n = 0
    with open(blob_path, "rb") as raw:
        f = open_uncompressed(raw)
        while data := f.read(_CHUNK):
            sha.update(data)
            n += len(data)
    return "sha256:" + sha.hexdigest(), n
