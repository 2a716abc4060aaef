"""``kubeling backup``, ``kubeling restore`` and ``kubeling doctor``: the state file's care.

- ``backup FILE --data-dir DIR`` copies ``DIR/state.db`` to FILE, consistently, while a server
  runs on DIR (it only reads, and takes no lock), like k3s's ``etcd-snapshot save``.
- ``restore FILE --data-dir DIR`` puts a backup in place with the server stopped (it refuses
  while a server holds the lock); the replaced state is kept as ``state.db.bak-<time>``.
- ``doctor --data-dir DIR`` runs a full ``integrity_check`` and checks file permissions; exit
  code 0 when the state is sound, 1 when it is not.

Failures are one line on stderr, prefixed with the command's name, and exit code 1.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

from kubeling.storage import StorageError, backup

DEFAULT_DATA_DIR = ".kubeling"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the three sub-commands on ``kubeling``'s sub-parsers."""
    p = sub.add_parser("backup", help="back up the cluster state (works while the server runs)")
    p.add_argument("file", help="where to write the backup")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the server's data directory")
    p.add_argument("--datastore-endpoint", default="", help="etcd: refused, see `kubeling etcd-snapshot`")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="restore the cluster state from a backup (server stopped)")
    p.add_argument("file", help="a file written by `kubeling backup`")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the server's data directory")
    p.add_argument("--datastore-endpoint", default="", help="etcd: refused, see `kubeling etcd-snapshot`")
    p.set_defaults(func=cmd_restore)
    p = sub.add_parser("doctor", help="check the cluster state for damage (integrity_check)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the server's data directory")
    p.add_argument("--datastore-endpoint", default="", help="etcd: refused, etcdctl checks etcd")
    p.set_defaults(func=cmd_doctor)


def _fail(command: str, err: BaseException) -> int:
    print(f"kubeling {command}: {err}", file=sys.stderr)
    return 1


def _on_etcd(command: str, args: argparse.Namespace) -> int | None:
    """The state is in etcd, not in a SQLite file: say which command backs it up."""
    if not args.datastore_endpoint:
        return None
    if command == "doctor":
        instead = ("check etcd with `etcdctl endpoint health --cluster` and `etcdctl endpoint status "
                   "--cluster -w table` (and `etcdctl alarm list`)")
    else:
        instead = f"use `kubeling etcd-snapshot {'save' if command == 'backup' else 'restore'}`"
    return _fail(command, StorageError(f"the datastore is etcd (--datastore-endpoint): `kubeling {command}` handles "
                                       f"the SQLite state only; {instead}"))


def cmd_backup(args: argparse.Namespace) -> int:
    if (code := _on_etcd("backup", args)) is not None:
        return code
    db = Path(args.data_dir) / backup.STATE_FILE
    try:
        info = backup.backup_database(db, args.file)
    except StorageError as e:
        return _fail("backup", e)
    print(f"backed up {db} at revision {info.revision} to {info.path} ({info.size} bytes)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    if (code := _on_etcd("restore", args)) is not None:
        return code
    try:
        info = backup.restore(args.file, args.data_dir)
    except StorageError as e:
        return _fail("restore", e)
    kept = (f"the previous state is kept as {info.previous}" if info.previous
            else "there was no previous state")
    print(f"restored {args.file} into {info.path} at revision {info.revision}; {kept}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    if (code := _on_etcd("doctor", args)) is not None:
        return code
    data = Path(args.data_dir)
    db = data / backup.STATE_FILE
    migrated = sorted(data.glob(f"{backup.STATE_FILE}.migrated-*"))
    if migrated and not db.exists():
        return _fail("doctor", StorageError(f"{data} has no {backup.STATE_FILE}: it was moved into etcd "
                                            f"(kept as {migrated[-1].name}); check etcd with `etcdctl endpoint "
                                            f"health --cluster`"))
    print(f"{db}:")
    problems = backup.verify(db, full=True)
    if problems:
        print(f"  integrity_check: {len(problems)} problem(s):")
        for p in problems:
            print(f"    {p}")
        print(f"  {backup.restore_hint(db)}")
        return 1
    facts = backup.describe(db)
    print("  integrity_check: ok")
    print(f"  revision {facts['revision']}, compact revision {facts['compact_revision']},"
          f" {facts['keys']} live keys in {facts['rows']} rows, {db.stat().st_size} bytes")
    for warning in _permission_warnings(data):
        print(f"  warning: {warning}")
    return 0


def _permission_warnings(data: Path) -> list[str]:
    """Files that hold secrets but are readable by others (the server narrows them at start)."""
    wanted = [(data, 0o700), (data / "pki", 0o700)]
    wanted += [(data / f"{backup.STATE_FILE}{s}", 0o600) for s in ("", *backup.SIDECARS, ".lock")]
    wanted += [(key, 0o600) for key in sorted((data / "pki").glob("*.key"))]
    out = []
    for path, mode in wanted:
        try:
            have = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            continue
        if have & ~mode:
            out.append(f"{path} is {have:04o}, should be {mode:04o}")
    return out
