"""Layer unpacking (images/layers.py): compressions, diff_id checks, whiteouts as overlayfs
whiteouts (checked through a real overlay mount), and paths that try to leave the layer."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile

import pytest
import zstandard

from kubeling.kubelet.images import DigestMismatch, UnsupportedImage, layers


def _tar(entries) -> bytes:
    """entries: (name, kind, payload) with kind file|dir|symlink|hardlink|fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            info.uid = info.gid = 0
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
                tar.addfile(info)
            elif kind == "fifo":
                info.type, info.mode = tarfile.FIFOTYPE, 0o600
                tar.addfile(info)
            else:
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size, info.mode = len(data), 0o640
                if name.endswith(".cap"):
                    info.pax_headers = {"SCHILY.xattr.user.kubeling": "yes"}
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _diff_id(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


LOWER = [("etc/", "dir", None), ("etc/keep", "file", "k"), ("etc/gone", "file", "g"),
         ("opaque/", "dir", None), ("opaque/old", "file", "o"),
         ("bin/", "dir", None), ("bin/tool", "file", "t"), ("bin/alias", "symlink", "tool"),
         ("bin/hard", "hardlink", "bin/tool"), ("run.fifo", "fifo", None)]
UPPER = [("etc/", "dir", None), ("etc/.wh.gone", "file", ""),
         ("opaque/", "dir", None), ("opaque/.wh..wh..opq", "file", ""),
         ("opaque/new", "file", "n"), ("x.cap", "file", "c")]


@pytest.mark.parametrize("compress", [
    pytest.param(lambda raw: raw, id="plain"),
    pytest.param(lambda raw: gzip.compress(raw), id="gzip"),
    pytest.param(lambda raw: zstandard.ZstdCompressor().compress(raw), id="zstd"),
])
def test_unpack_compressions_and_entry_types(tmp_path, compress):
    raw = _tar(LOWER)
    blob = tmp_path / "blob"
    blob.write_bytes(compress(raw))
    dest = tmp_path / "layer"
    assert layers.unpack(blob, dest, _diff_id(raw)) == len(raw)
    assert (dest / "etc/keep").read_text() == "k"
    assert stat.S_IMODE((dest / "etc/keep").stat().st_mode) == 0o640
    assert (dest / "etc/keep").stat().st_mtime == 1_600_000_000
    assert (dest / "etc").stat().st_mtime == 1_600_000_000
    assert os.readlink(dest / "bin/alias") == "tool"
    assert (dest / "bin/hard").stat().st_ino == (dest / "bin/tool").stat().st_ino
    assert stat.S_ISFIFO((dest / "run.fifo").lstat().st_mode)
    assert layers.diff_id_of(blob) == (_diff_id(raw), len(raw))


def test_whiteouts_become_overlay_whiteouts(tmp_path):
    lower_raw, upper_raw = _tar(LOWER), _tar(UPPER)
    for name, raw in (("lower", lower_raw), ("upper", upper_raw)):
        (tmp_path / f"{name}.tar").write_bytes(raw)
        layers.unpack(tmp_path / f"{name}.tar", tmp_path / name, _diff_id(raw))
    wh = (tmp_path / "upper/etc/gone").lstat()
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == os.makedev(0, 0)
    assert os.getxattr(tmp_path / "upper/opaque", "trusted.overlay.opaque") == b"y"
    assert not (tmp_path / "upper/opaque/.wh..wh..opq").exists()
    assert os.getxattr(tmp_path / "upper/x.cap", "user.kubeling") == b"yes"

    # The point of the format: an overlay of the two shows the image's filesystem.
    merged = tmp_path / "merged"
    merged.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={tmp_path / 'upper'}:{tmp_path / 'lower'}", str(merged)],
                   check=True)
    try:
        assert sorted(os.listdir(merged / "etc")) == ["keep"]
        assert sorted(os.listdir(merged / "opaque")) == ["new"]
        assert (merged / "bin/tool").read_text() == "t"
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_diff_id_mismatch_is_refused(tmp_path):
    raw = _tar(LOWER)
    (tmp_path / "b").write_bytes(gzip.compress(raw))
    with pytest.raises(DigestMismatch) as err:
        layers.unpack(tmp_path / "b", tmp_path / "l", "sha256:" + "0" * 64)
    assert "diff_id mismatch" in str(err.value)


@pytest.mark.parametrize("entries, message", [
    pytest.param([("../evil", "file", "x")], "escapes", id="dotdot"),
    pytest.param([("a/../../evil", "file", "x")], "escapes", id="nested-dotdot"),
    pytest.param([("link", "symlink", "/"), ("link/etc/evil", "file", "x")], "symlink",
                 id="through-symlink"),
    pytest.param([("h", "hardlink", "../../etc/passwd")], "escapes", id="hardlink-out"),
])
def test_entries_may_not_leave_the_layer(tmp_path, entries, message):
    raw = _tar(entries)
    (tmp_path / "b").write_bytes(raw)
    with pytest.raises(UnsupportedImage) as err:
        layers.unpack(tmp_path / "b", tmp_path / "l", None)
    assert message in str(err.value)
    assert not (tmp_path / "evil").exists()


def test_absolute_names_are_made_relative(tmp_path):
    raw = _tar([("/abs/file", "file", "a")])
    (tmp_path / "b").write_bytes(raw)
    layers.unpack(tmp_path / "b", tmp_path / "l", _diff_id(raw))
    assert (tmp_path / "l/abs/file").read_text() == "a"


def test_garbage_is_not_a_layer(tmp_path):
    (tmp_path / "b").write_bytes(gzip.compress(b"not a tar at all" * 100))
    with pytest.raises(UnsupportedImage):
        layers.unpack(tmp_path / "b", tmp_path / "l", None)
