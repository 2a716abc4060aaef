"""The server's data directory: the state file, the PKI and the admin kubeconfig live there.

``prepare(data_dir)`` runs before anything else touches the directory. It creates it (0700: the
state holds Secrets and the PKI holds the CA key) and proves that it is writable, so that a bad
directory is reported as one clear line (:class:`DataDirError`), never as a traceback from deep
inside SQLite or the PKI. Writers of files in the directory (``certs``) raise the same error.
"""

from __future__ import annotations

import os
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
    return path


def _reason(e: OSError) -> str:
    return e.strerror or str(e)
