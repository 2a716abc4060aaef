"""`AtomicWriter`: upstream's atomic writer for API-data volumes (configMap, secret, downwardAPI,
projected): readers in a container always see one complete version of the payload.

Layout of a volume directory written by it::

    <dir>/..2025_01_31_12_00_00.k3j9x/   the current payload (a "timestamped dir")
    <dir>/..data -> ..2025_01_31_12_00_00.k3j9x
    <dir>/key    -> ..data/key             user-visible paths: top-level names only
    <dir>/sub    -> ..data/sub             (a nested "sub/file" is reached through "sub")

Writing a new payload:

1. Validate the paths (relative, no ``..`` element, not starting with ``..``, length limits).
2. If the current timestamped dir holds exactly the payload (same files, content and mode),
   do nothing: `write` returns False, so unchanged sources never churn the directory.
3. Write every file into a fresh timestamped dir (0755) with its mode and owner.
4. Create the missing user-visible symlinks, point ``..data_tmp`` at the new dir and rename it
   over ``..data``: one ``rename(2)``, so the switch is atomic for readers.
5. Remove user-visible symlinks no longer in the payload, then the old timestamped dir.

A reader that opened a file before the switch keeps the old inode (and so does a bind mount of
a resolved path, which is why a subPath of a configMap volume never sees updates).

Contract: ``write`` is blocking file work; callers run it in a thread (`write_async`). One
writer per directory at a time (the volume manager serializes per pod).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = "..data"
DATA_TMP = "..data_tmp"
MAX_PATH = 4096
MAX_NAME = 255


@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int = 0o644
    uid: int | None = None       # fsUser; None keeps the agent's
    gid: int | None = None       # fsGroup


class PayloadError(ValueError):
    pass


def validate_path(path: str) -> None:
    if not path:
        raise PayloadError("invalid path: must not be empty")
    if len(path) > MAX_PATH:
        raise PayloadError(f"invalid path: must be less than or equal to {MAX_PATH} characters")
    if path.startswith("/"):
        raise PayloadError(f"invalid path: must be relative path: {path}")
    parts = path.split("/")
    if any(len(p) > MAX_NAME for p in parts):
        raise PayloadError(f"invalid path: must not contain an element longer than {MAX_NAME} characters")
    if ".." in parts:
        raise PayloadError(f"invalid path: must not contain '..': {path}")
    if path.startswith(".."):
        raise PayloadError(f"invalid path: must not start with '..': {path}")


class AtomicWriter:
    """Writes payloads into ``target_dir`` as described in the module docstring."""

    def __init__(self, target_dir: Path | str) -> None:
        self.target = Path(target_dir)

    def current_dir(self) -> Path | None:
        try:
            link = os.readlink(self.target / DATA_DIR)
        except OSError:
            return None
        return self.target / link

    def write(self, payload: dict[str, FileProjection]) -> bool:
        """Make ``payload`` the volume's content; True if anything changed."""
        cleaned: dict[str, FileProjection] = {}
        for path, proj in payload.items():
            validate_path(path)
            cleaned[os.path.normpath(path)] = proj
        self.target.mkdir(parents=True, exist_ok=True)
        old_dir = self.current_dir()
        old_visible = self._visible_of(old_dir)
        new_visible = {p.split("/", 1)[0] for p in cleaned}
        if old_dir is not None and old_dir.is_dir() and self._same(old_dir, cleaned) and \
                self._links_ok(new_visible):
            return False
        ts_dir = Path(tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()),
                                       dir=self.target))
        try:
            os.chmod(ts_dir, 0o755)
            self._write_files(ts_dir, cleaned)
            for name in sorted(new_visible):
                link = self.target / name
                if not link.is_symlink():
                    if link.exists():
                        raise PayloadError(f"{name} exists in the volume and is not a symlink")
                    os.symlink(f"{DATA_DIR}/{name}", link)
            tmp = self.target / DATA_TMP
            if tmp.is_symlink():
                tmp.unlink()
            os.symlink(ts_dir.name, tmp)
            os.rename(tmp, self.target / DATA_DIR)
        except BaseException:
            shutil.rmtree(ts_dir, ignore_errors=True)
            raise
        for name in old_visible - new_visible:
            link = self.target / name
            if link.is_symlink():
                link.unlink()
        if old_dir is not None and old_dir != ts_dir:
            shutil.rmtree(old_dir, ignore_errors=True)
        return True

    async def write_async(self, payload: dict[str, FileProjection]) -> bool:
        return await asyncio.to_thread(self.write, payload)

    # -- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _visible_of(ts_dir: Path | None) -> set[str]:
        if ts_dir is None or not ts_dir.is_dir():
            return set()
        return set(os.listdir(ts_dir))

    def _links_ok(self, names: set[str]) -> bool:
        return all((self.target / n).is_symlink() for n in names)

    @staticmethod
    def _same(ts_dir: Path, payload: dict[str, FileProjection]) -> bool:
        """The timestamped dir holds exactly ``payload``: same file set, content and mode."""
        found: set[str] = set()
        for root, _dirs, files in os.walk(ts_dir):
            for f in files:
                found.add(os.path.relpath(os.path.join(root, f), ts_dir))
        if found != set(payload):
            return False
        for path, proj in payload.items():
            p = ts_dir / path
            try:
                st = p.lstat()
                if (st.st_mode & 0o7777) != proj.mode or p.read_bytes() != proj.data:
                    return False
                if (proj.uid is not None and st.st_uid != proj.uid) or \
                        (proj.gid is not None and st.st_gid != proj.gid):
                    return False
            except OSError:
                return False
        return True

    @staticmethod
    def _write_files(ts_dir: Path, payload: dict[str, FileProjection]) -> None:
        for path, proj in sorted(payload.items()):
            dest = ts_dir / path
            if dest.parent != ts_dir:
                dest.parent.mkdir(parents=True, exist_ok=True)
                for parent in dest.relative_to(ts_dir).parents:
                    if str(parent) != ".":
                        os.chmod(ts_dir / parent, 0o755)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                view = memoryview(proj.data)
                while view:
                    view = view[os.write(fd, view):]
                if proj.uid is not None or proj.gid is not None:
                    os.fchown(fd, -1 if proj.uid is None else proj.uid, -1 if proj.gid is None else proj.gid)
                # fchmod after write: the umask never narrows the mode the pod asked for.
                os.fchmod(fd, proj.mode)
            finally:
                os.close(fd)
