"""AtomicWriter: the ..data symlink swap, modes, user-visible symlinks, no rewrite when unchanged."""

import os
import re
from pathlib import Path

import pytest

from kubeling.kubelet.volumes.atomic_writer import (
    AtomicWriter,
    FileProjection,
    PayloadError,
)


def snapshot(d):
    """The user-visible view: path -> (content, mode), reading through the symlinks."""
    out = {}
    for root, dirs, files in os.walk(d, followlinks=True):
        rel_root = os.path.relpath(root, d)
        if rel_root.split("/")[0].startswith(".."):
            continue
        dirs[:] = [x for x in dirs if not x.startswith("..")]
        for f in files:
            if f.startswith(".."):
                continue
            p = os.path.join(root, f)
            out[os.path.normpath(os.path.join(rel_root, f))] = (Path(p).read_bytes(), os.stat(p).st_mode & 0o777)
    return out


def test_layout_and_content(tmp_path):
    w = AtomicWriter(tmp_path / "vol")
    assert w.write({"a": FileProjection(b"1", 0o644), "sub/b": FileProjection(b"2", 0o400)})
    vol = tmp_path / "vol"
    target = os.readlink(vol / "..data")
    assert re.fullmatch(r"\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\..+", target)
    assert os.readlink(vol / "a") == "..data/a"
    assert os.readlink(vol / "sub") == "..data/sub"   # only top-level names are links
    assert snapshot(vol) == {"a": (b"1", 0o644), "sub/b": (b"2", 0o400)}
    assert os.stat(vol / target).st_mode & 0o777 == 0o755
    assert sorted(os.listdir(vol)) == sorted(["..data", target, "a", "sub"])


def test_no_rewrite_when_unchanged(tmp_path):
    w = AtomicWriter(tmp_path)
    payload = {"a": FileProjection(b"1"), "b": FileProjection(b"2", 0o600)}
    assert w.write(payload)
    before = os.readlink(tmp_path / "..data")
    inode = os.stat(tmp_path / "a").st_ino
    assert not w.write(dict(payload))
    assert os.readlink(tmp_path / "..data") == before
    assert os.stat(tmp_path / "a").st_ino == inode


@pytest.mark.parametrize("second,want", [
    pytest.param({"a": FileProjection(b"new")}, {"a": (b"new", 0o644)}, id="content-changed"),
    pytest.param({"a": FileProjection(b"1", 0o600)}, {"a": (b"1", 0o600)}, id="mode-changed"),
    pytest.param({"a": FileProjection(b"1"), "c": FileProjection(b"3")}, {"a": (b"1", 0o644), "c": (b"3", 0o644)},
                 id="key-added"),
    pytest.param({}, {}, id="all-removed"),
])
def test_swap(tmp_path, second, want):
    w = AtomicWriter(tmp_path)
    w.write({"a": FileProjection(b"1"), "gone/x": FileProjection(b"x")})
    old = os.readlink(tmp_path / "..data")
    with open(tmp_path / "a", "rb") as held:   # a reader that opened before the swap
        assert w.write(second)
        new = os.readlink(tmp_path / "..data")
        assert new != old
        assert not (tmp_path / old).exists()    # the old timestamped dir is removed
        assert held.read() == b"1"              # ... but an open file keeps its content
    assert snapshot(tmp_path) == want
    assert not os.path.lexists(tmp_path / "gone")   # links of removed keys are removed
    assert not os.path.lexists(tmp_path / "..data_tmp")


@pytest.mark.parametrize("path", [
    pytest.param("/abs", id="absolute"),
    pytest.param("a/../b", id="backstep"),
    pytest.param("..hidden", id="dotdot-prefix"),
    pytest.param("", id="empty"),
    pytest.param("x" * 256, id="long-element"),
])
def test_invalid_paths(tmp_path, path):
    with pytest.raises(PayloadError):
        AtomicWriter(tmp_path).write({path: FileProjection(b"")})
    assert not os.path.lexists(tmp_path / "..data")


def test_owner(tmp_path):
    w = AtomicWriter(tmp_path)
    w.write({"t": FileProjection(b"tok", 0o640, None, 4242)})
    st = os.stat(tmp_path / "t")
    assert (st.st_gid, st.st_mode & 0o777) == (4242, 0o640)
    assert not w.write({"t": FileProjection(b"tok", 0o640, None, 4242)})
    assert w.write({"t": FileProjection(b"tok", 0o640, None, 4243)})
