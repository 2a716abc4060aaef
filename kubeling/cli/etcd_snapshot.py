"""``kubeling etcd-snapshot save|list|delete|prune|restore``: snapshots of an etcd datastore, as
k3s's ``k3s etcd-snapshot``, for a cluster whose API servers run with ``--datastore-endpoint``.

- ``save [--name on-demand] [--dir DIR] --datastore-endpoint URL,... [--datastore-cafile F
  --datastore-certfile F --datastore-keyfile F]`` streams etcd's own snapshot (the Maintenance
  Snapshot RPC, from the first endpoint that answers) to ``DIR/<name>-<node>-<unix time>``, as k3s
  names on-demand snapshots. It is written to a hidden temporary file, fsynced, checked (an etcd
  snapshot ends with the sha256 of what precedes it), then renamed into place; the path is printed.
  DIR defaults to ``<data-dir>/server/db/snapshots`` (k3s's place); files are 0600, the
  directory 0700 (a snapshot holds every Secret).
- ``list`` (``ls``) prints Name, Location, Size and Created of the snapshots in DIR.
- ``delete NAME...`` removes snapshots from DIR; ``prune --snapshot-retention N`` keeps the
  newest N of ``<name>-<node>-*`` (k3s's retention).
- ``restore FILE --etcd-data-dir DIR --name MEMBER --initial-cluster M1=URL,... 
  --initial-advertise-peer-urls URL [--initial-cluster-token T]`` makes one member's data
  directory of a new cluster from the snapshot, with etcd's offline restore (``etcdctl snapshot
  restore``). Run it once per member, with the same snapshot, ``--initial-cluster`` and token,
  into empty data directories; then start every member with those data directories. It refuses
  a data directory that is not empty and a snapshot whose checksum does not match.

Failures are one line on stderr, ``kubeling etcd-snapshot <command>: ...``, and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = ".kubeling"
DEFAULT_NAME = "on-demand"
SHA256_LEN = 32
CHUNK_TIMEOUT = 30.0  # seconds etcd may take to send the first or the next chunk of a snapshot
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# <name>-<node>-<unix seconds>; k3s adds .zip when compressed (we never compress).
_SNAPSHOT = re.compile(r"^(?P<prefix>.+)-(?P<ts>\d{9,11})(?P<ext>\.zip)?$")


class SnapshotError(Exception):
    """A failure reported to the user in one line."""


# -- names and listing -------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotFile:
    name: str
    path: Path
    size: int
    created: dt.datetime
    prefix: str  # <name>-<node>


def snapshot_name(name: str, node: str, now: float | None = None) -> str:
    """k3s's name of an on-demand snapshot: ``<name>-<node>-<unix seconds>``."""
    for what, value in (("--name", name), ("node name", node)):
        if not _SAFE.match(value or ""):
            raise SnapshotError(f"{what} {value!r}: use letters, digits, '.', '_' and '-' only")
    return f"{name}-{node}-{int(time.time() if now is None else now)}"


def parse_snapshot_name(filename: str) -> tuple[str, int] | None:
    """``(prefix, unix seconds)`` of a snapshot's file name, or None if it is not one of ours."""
    m = _SNAPSHOT.match(filename)
    if not m or filename.startswith("."):
        return None
    return m.group("prefix"), int(m.group("ts"))


def list_snapshots(directory: Path | str) -> list[SnapshotFile]:
    """The snapshots in ``directory``, oldest first (a missing directory has none)."""
    d = Path(directory)
    out = []
    try:
        entries = list(os.scandir(d))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise SnapshotError(f"cannot read {d}: {e.strerror or e}") from None
    for e in entries:
        parsed = parse_snapshot_name(e.name)
        if parsed is None or not e.is_file(follow_symlinks=False):
            continue
        st = e.stat(follow_symlinks=False)
        out.append(SnapshotFile(e.name, d / e.name, st.st_size,
                                dt.datetime.fromtimestamp(parsed[1], dt.timezone.utc), parsed[0]))
    return sorted(out, key=lambda s: (s.created, s.name))


def default_dir(data_dir: str) -> Path:
    return Path(data_dir) / "server" / "db" / "snapshots"


# -- the checksum ------------------------------------------------------------------------------


def verify_checksum(path: Path | str) -> None:
    """An etcd snapshot (from the Snapshot RPC) ends with the sha256 of the bytes before it."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size <= SHA256_LEN:
            raise SnapshotError(f"{p} is not an etcd snapshot ({size} bytes)")
        h = hashlib.sha256()
        with open(p, "rb") as f:
            left = size - SHA256_LEN
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    raise SnapshotError(f"{p} shrank while it was read")
                h.update(chunk)
                left -= len(chunk)
            trailer = f.read(SHA256_LEN)
    except OSError as e:
        raise SnapshotError(f"cannot read {p}: {e.strerror or e}") from None
    if h.digest() != trailer:
        raise SnapshotError(f"{p}: checksum mismatch: not a complete etcd snapshot (truncated or damaged; "
                            "a db file copied from a member's data directory has no checksum: pass --skip-hash-check)")


def snapshot_status(path: Path | str) -> dict:
    """``etcdctl snapshot status``: hash, revision, totalKey, totalSize ({} without etcdctl)."""
    tool = shutil.which("etcdctl")
    if not tool:
        return {}
    proc = subprocess.run([tool, "snapshot", "status", str(path), "-w", "json"], env={**os.environ, "ETCDCTL_API": "3"},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    try:
        return json.loads(proc.stdout) if proc.returncode == 0 else {}
    except ValueError:
        return {}


# -- save ---------------------------------------------------------------------------------------


@dataclass
class Datastore:
    endpoints: list[str]
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""


def parse_endpoints(text: str) -> list[str]:
    """``http(s)://host:port,...`` as ``--datastore-endpoint`` takes it."""
    out = []
    for raw in (text or "").split(","):
        raw = raw.strip()
        if not raw:
            continue
        u = urllib.parse.urlsplit(raw)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise SnapshotError(f"--datastore-endpoint: {raw!r} is not an http:// or https:// etcd URL")
        try:
            port = u.port or 2379
        except ValueError:
            raise SnapshotError(f"--datastore-endpoint: {raw!r} has a bad port") from None
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        out.append(f"{u.scheme}://{host}:{port}")
    if not out:
        raise SnapshotError("--datastore-endpoint is required (the etcd client URLs, comma-separated)")
    return out


def _channel(endpoint: str, store: Datastore):
    import grpc

    u = urllib.parse.urlsplit(endpoint)
    target = u.netloc
    options = [("grpc.max_receive_message_length", 64 << 20)]
    if u.scheme == "http":
        return grpc.aio.insecure_channel(target, options=options)

    def read(f: str) -> bytes | None:
        if not f:
            return None
        try:
            return Path(f).read_bytes()
        except OSError as e:
            raise SnapshotError(f"cannot read {f}: {e.strerror or e}") from None

    if bool(store.certfile) != bool(store.keyfile):
        raise SnapshotError("--datastore-certfile and --datastore-keyfile go together")
    creds = grpc.ssl_channel_credentials(root_certificates=read(store.cafile), private_key=read(store.keyfile),
                                         certificate_chain=read(store.certfile))
    return grpc.aio.secure_channel(target, creds, options=options)


async def _stream_snapshot(endpoint: str, store: Datastore, out) -> None:
    """Write the snapshot from ``endpoint`` into the open file ``out``."""
    import grpc
    from aetcd import rpc

    channel = _channel(endpoint, store)
    try:
        # no wait_for_ready: a refused connection or TLS handshake fails the call at once, with why
        stream = rpc.MaintenanceStub(channel).Snapshot(rpc.SnapshotRequest(), wait_for_ready=False)
        it = stream.__aiter__()
        while True:
            try:
                resp = await asyncio.wait_for(it.__anext__(), CHUNK_TIMEOUT)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                stream.cancel()
                raise SnapshotError(f"etcd sent nothing for {CHUNK_TIMEOUT:.0f}s") from None
            except grpc.aio.AioRpcError as e:
                raise SnapshotError(f"{e.code().name}: {e.details()}") from None
            out.write(resp.blob)
    finally:
        await channel.close()


@contextlib.contextmanager
def _quiet_stderr():
    """gRPC's C core logs connection failures to fd 2 whatever GRPC_VERBOSITY says; the failure
    is reported once, in the command's error line, so its lines are dropped while it runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Saved:
    path: Path
    size: int
    revision: int
    endpoint: str


def save(store: Datastore, directory: Path | str, name: str) -> Saved:
    """Take a snapshot from the first endpoint that gives one; see the module docstring."""
    d = Path(directory)
    try:
        if not d.is_dir():  # made private; a directory the user names is left as it is
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(d, 0o700)
    except OSError as e:
        raise SnapshotError(f"cannot create {d}: {e.strerror or e}") from None
    final = d / name
    if final.exists():
        raise SnapshotError(f"{final} exists already")
    tmp = d / f".{name}.part"
    errors = []
    for endpoint in store.endpoints:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f, _quiet_stderr():
                asyncio.run(_stream_snapshot(endpoint, store, f))
                f.flush()
                os.fsync(f.fileno())
            verify_checksum(tmp)
            os.rename(tmp, final)
            _fsync_dir(d)
            return Saved(final, final.stat().st_size, snapshot_status(final).get("revision", 0), endpoint)
        except SnapshotError as e:
            tls = endpoint.startswith("https:") and any(w in str(e) for w in ("TSI_", "SSL", "andshake"))
            hint = " (a TLS failure: check --datastore-cafile, --datastore-certfile and --datastore-keyfile)"
            errors.append(f"{endpoint}: {e}{hint if tls else ''}")
        except OSError as e:
            errors.append(f"{endpoint}: {e.strerror or e}")
        finally:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
    raise SnapshotError("no snapshot taken: " + "; ".join(errors))


# -- restore ------------------------------------------------------------------------------------


def _initial_cluster(text: str) -> dict[str, list[str]]:
    members: dict[str, list[str]] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, url = part.partition("=")
        if not sep or not name or not url:
            raise SnapshotError(f"--initial-cluster: {part!r} is not NAME=PEER_URL")
        members.setdefault(name, []).append(url)
    if not members:
        raise SnapshotError("--initial-cluster is required: NAME=PEER_URL for every member, comma-separated")
    return members


def _empty_or_absent(d: Path) -> bool:
    try:
        return not any(os.scandir(d))
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        raise SnapshotError(f"--etcd-data-dir {d} is not a directory") from None


def restore(file: Path | str, data_dir: Path | str, name: str, initial_cluster: str, peer_urls: str,
            token: str = "etcd-cluster", skip_hash_check: bool = False, etcdctl: str | None = None) -> Path:
    """One member's data directory from ``file``, with ``etcdctl snapshot restore``."""
    f, d = Path(file), Path(data_dir)
    if not f.is_file():
        raise SnapshotError(f"{f}: no such snapshot file")
    members = _initial_cluster(initial_cluster)
    if name not in members:
        raise SnapshotError(f"--name {name!r} is not in --initial-cluster ({', '.join(members)})")
    urls = [u.strip() for u in (peer_urls or "").split(",") if u.strip()]
    if not urls:
        raise SnapshotError("--initial-advertise-peer-urls is required (this member's peer URLs)")
    if sorted(urls) != sorted(members[name]):
        raise SnapshotError(f"--initial-advertise-peer-urls {','.join(urls)} does not match {name}'s entry in "
                            f"--initial-cluster ({','.join(members[name])})")
    if not _empty_or_absent(d):
        raise SnapshotError(f"--etcd-data-dir {d} is not empty: a member is restored into an empty directory "
                            "(stop the member and move its old data away first)")
    if not skip_hash_check:
        verify_checksum(f)
    tool = etcdctl or shutil.which("etcdctl")
    if not tool:
        raise SnapshotError("etcdctl is not installed (Debian: apt-get install etcd-client)")
    existed = d.exists()
    argv = [tool, "snapshot", "restore", str(f), "--data-dir", str(d), "--name", name,
            "--initial-cluster", initial_cluster, "--initial-cluster-token", token,
            "--initial-advertise-peer-urls", ",".join(urls)]
    if skip_hash_check:
        argv.append("--skip-hash-check")
    if existed:
        # etcdctl refuses an existing data dir; it was empty, so hand it a fresh one.
        d.rmdir()
    proc = subprocess.run(argv, env={**os.environ, "ETCDCTL_API": "3"}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        if existed:
            d.mkdir(mode=0o700, exist_ok=True)
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise SnapshotError(f"etcdctl snapshot restore failed: {detail[-1] if detail else proc.returncode}")
    os.chmod(d, 0o700)
    return d


# -- the commands -------------------------------------------------------------------------------


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("etcd-snapshot", help="save, list, delete and restore snapshots of an etcd datastore "
                                             "(as k3s etcd-snapshot)")
    cmds = p.add_subparsers(dest="etcd_snapshot_command", required=True)

    def where(c: argparse.ArgumentParser) -> argparse.ArgumentParser:
        c.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the server's data directory (default: .kubeling)")
        c.add_argument("--dir", "--etcd-snapshot-dir", dest="dir", default=None,
                       help="where snapshots are kept (default: <data-dir>/server/db/snapshots)")
        return c

    c = where(cmds.add_parser("save", help="take a snapshot now"))
    c.add_argument("--name", default=DEFAULT_NAME, help="the snapshot's base name (default: on-demand)")
    c.add_argument("--node-name", default="", help="the node name in the file name (default: the hostname)")
    c.add_argument("--datastore-endpoint", default="", help="etcd client URLs, comma-separated")
    c.add_argument("--datastore-cafile", default="", help="CA bundle that signed etcd's serving certificates")
    c.add_argument("--datastore-certfile", default="", help="client certificate for etcd")
    c.add_argument("--datastore-keyfile", default="", help="client key for etcd")
    c.set_defaults(func=cmd_save)
    where(cmds.add_parser("list", aliases=["ls", "l"], help="list snapshots")).set_defaults(func=cmd_list)
    c = where(cmds.add_parser("delete", help="delete snapshots"))
    c.add_argument("names", nargs="+", metavar="NAME")
    c.set_defaults(func=cmd_delete)
    c = where(cmds.add_parser("prune", help="delete all but the newest --snapshot-retention snapshots"))
    c.add_argument("--name", default=DEFAULT_NAME, help="the base name of the snapshots to prune (default: on-demand)")
    c.add_argument("--node-name", default="", help="the node name in the file names (default: the hostname)")
    c.add_argument("--snapshot-retention", type=int, default=5, help="how many to keep (default: 5)")
    c.set_defaults(func=cmd_prune)
    c = cmds.add_parser("restore", help="make one etcd member's data directory from a snapshot (etcd stopped)")
    c.add_argument("file", help="a snapshot written by `kubeling etcd-snapshot save` (or `etcdctl snapshot save`)")
    c.add_argument("--etcd-data-dir", required=True, help="the member's data directory (must be empty or absent)")
    c.add_argument("--name", required=True, help="the member's name (etcd --name)")
    c.add_argument("--initial-cluster", required=True, help="NAME=PEER_URL of every member, comma-separated")
    c.add_argument("--initial-advertise-peer-urls", required=True, help="this member's peer URLs")
    c.add_argument("--initial-cluster-token", default="etcd-cluster",
                   help="the new cluster's token, the same for every member (default: etcd-cluster)")
    c.add_argument("--skip-hash-check", action="store_true",
                   help="accept a db file copied from a member's data directory (it has no checksum)")
    c.set_defaults(func=cmd_restore)


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else default_dir(args.data_dir)


def _fail(command: str, err: BaseException) -> int:
    print(f"kubeling etcd-snapshot {command}: {err}", file=sys.stderr)
    return 1


def _node(args: argparse.Namespace) -> str:
    return args.node_name or socket.gethostname().split(".")[0]


def cmd_save(args: argparse.Namespace) -> int:
    try:
        store = Datastore(parse_endpoints(args.datastore_endpoint), args.datastore_cafile, args.datastore_certfile,
                          args.datastore_keyfile)
        saved = save(store, _dir(args), snapshot_name(args.name, _node(args)))
    except SnapshotError as e:
        return _fail("save", e)
    print(f"Snapshot {saved.path.name} saved: {saved.path.resolve()} ({saved.size} bytes, revision "
          f"{saved.revision}, from {saved.endpoint})")
    return 0



def cmd_list(args: argparse.Namespace) -> int:
    try:
        snaps = list_snapshots(_dir(args))
    except SnapshotError as e:
        return _fail("list", e)
    rows = [("Name", "Location", "Size", "Created")]
    rows += [(s.name, f"file://{s.path.resolve()}", str(s.size), s.created.strftime("%Y-%m-%dT%H:%M:%SZ"))
             for s in snaps]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print(" ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    d = _dir(args)
    known = {s.name: s for s in list_snapshots(d)}
    code = 0
    for name in args.names:
        s = known.get(os.path.basename(name))
        if s is None or os.path.basename(name) != name:
            code = _fail("delete", SnapshotError(f"no snapshot {name!r} in {d}"))
            continue
        s.path.unlink()
        print(f"Snapshot {name} deleted.")
    return code


def prune(directory: Path | str, prefix: str, retention: int) -> list[SnapshotFile]:
    """Delete all but the newest ``retention`` snapshots named ``<prefix>-<time>``; the deleted."""
    if retention < 1:
        raise SnapshotError("--snapshot-retention must be at least 1")
    mine = [s for s in list_snapshots(directory) if s.prefix == prefix]
    gone = mine[:-retention] if len(mine) > retention else []
    for s in gone:
        s.path.unlink()
    return gone


def cmd_prune(args: argparse.Namespace) -> int:
    try:
        snapshot_name(args.name, _node(args))  # validates both
        gone = prune(_dir(args), f"{args.name}-{_node(args)}", args.snapshot_retention)
    except SnapshotError as e:
        return _fail("prune", e)
    for s in gone:
        print(f"Snapshot {s.name} deleted.")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    try:
        d = restore(args.file, args.etcd_data_dir, args.name, args.initial_cluster, args.initial_advertise_peer_urls,
                    token=args.initial_cluster_token, skip_hash_check=args.skip_hash_check)
    except SnapshotError as e:
        return _fail("restore", e)
    except subprocess.TimeoutExpired:
        return _fail("restore", SnapshotError("etcdctl snapshot restore did not finish in 10 minutes"))
    print(f"Restored {args.file} into {d} as member {args.name} of a new cluster ({args.initial_cluster}, token "
          f"{args.initial_cluster_token}). Restore every member the same way, then start each etcd with its "
          f"--data-dir (the --initial-cluster flags are then ignored).")
    return 0
