"""The server's data directory: the state file, the PKI and the admin kubeconfig live there.

``prepare(data_dir)`` runs before anything else touches the directory. It creates it (0700: the
state holds Secrets and the PKI holds the CA key) and proves that it is writable, so that a bad
directory is reported as one clear line (:class:`DataDirError`), never as a traceback from deep
inside SQLite or the PKI. Writers of files in the directory (``certs``) raise the same error.

``secure(data_dir)`` narrows what must stay private, on every start (``prepare`` calls it, and the
server again once the state file is open): the data directory and ``pki/``, ``server/``,
``server/cred/``, ``agent/pki/`` are 0700; private keys (``*.key``), kubeconfigs, the state file
(``state.db`` and its ``-wal``, ``-shm`` and lock), and every file under ``server/`` (the node
token, join tokens, the encryption configuration) are 0600. Symlinks are never followed. A file
that cannot be narrowed stops the start (`DataDirError`): private data is not served from files
others may read.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


class DataDirError(Exception):
    """The data directory, or a file in it, cannot be used. ``str()`` is one line for the user."""


def prepare(data_dir: str | os.PathLike) -> Path:
    """Create ``data_dir`` (0700) if needed, check it is a writable directory, and return it.

    Raises :class:`DataDirError` with one line, e.g. ``data directory /x is not writable:
    Read-only file system``. An existing directory is narrowed to 0700.
    """
    path = Path(data_dir)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise DataDirError(f"data directory {path} is not a directory") from None
    except OSError as e:
        raise DataDirError(f"cannot create data directory {path}: {_reason(e)}") from None
    if not path.is_dir():
        raise DataDirError(f"data directory {path} is not a directory")
    try:
        # Creating (and removing) a file is what the server will do; access() cannot see
        # read-only mounts or ACLs the way a real attempt does.
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DataDirError(f"data directory {path} is not writable: {_reason(e)}") from None
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError as e:
        raise DataDirError(f"cannot restrict data directory {path} to its owner (0700): "
                           f"{_reason(e)}") from None
    secure(path)
    return path


PRIVATE_DIRS = ("pki", "server", "server/cred", "agent/pki")
STATE_FILES = ("state.db", "state.db-wal", "state.db-shm", "state.db-journal", "state.db.lock")


def _private_files(path: Path):
    for name in STATE_FILES:
        yield path / name
    for d in (path, path / "agent"):
        yield from d.glob("*.kubeconfig")
    for d in (path / "pki", path / "agent" / "pki"):
        yield from d.glob("*.key")
    server = path / "server"
    if server.is_dir() and not server.is_symlink():
        for root, dirs, files in os.walk(server):  # small: tokens, credentials
            yield from (Path(root) / f for f in files)


def _narrow(p: Path, mode: int, kind) -> None:
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    except OSError as e:
        raise DataDirError(f"cannot read {p}: {_reason(e)}") from None
    if not kind(st.st_mode) or stat.S_IMODE(st.st_mode) & ~mode == 0:
        return  # a symlink or another kind of file is left alone; already narrow enough
    try:
        os.chmod(p, stat.S_IMODE(st.st_mode) & mode)  # lstat said: not a symlink
    except OSError as e:
        raise DataDirError(f"cannot restrict {p} to its owner: {_reason(e)}") from None


def secure(data_dir: str | os.PathLike) -> None:
    """Narrow the private directories to 0700 and the private files to 0600 (see the module
    docstring); DataDirError when one cannot be."""
    path = Path(data_dir)
    _narrow(path, 0o700, stat.S_ISDIR)
    for d in PRIVATE_DIRS:
        _narrow(path / d, 0o700, stat.S_ISDIR)
    for f in _private_files(path):
        _narrow(f, 0o600, stat.S_ISREG)


def _reason(e: OSError) -> str:
    return e.strerror or str(e)
