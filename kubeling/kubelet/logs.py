"""Container logs in the CRI format: the writer (used by the runtime's shim) and the reader
(used by the agent's ``containerLogs`` endpoint).

One file per container start, ``logs/pods/<ns>_<name>_<uid>/<container>/<restartCount>.log``,
one entry per line::

    2016-10-06T00:17:09.669794202Z stdout F hello world
    2016-10-06T00:17:09.669794202Z stderr P a line longer than the line limit, first part

``F`` ends a line, ``P`` is a fragment that the next entry of the same stream continues (a
line longer than `MAX_LINE`, as containerd splits them). Timestamps are Go's RFC3339Nano
(trailing zeros of the fraction dropped), UTC.

Rotation (the kubelet's containerLogMaxSize / containerLogMaxFiles): before an entry would
push the file past ``max_size`` it is renamed to ``<n>.log.<YYYYMMDD-hhmmss>`` and a new file
is opened; at most ``max_files`` files are kept, the current one included. As upstream's
kubelet, the reader serves only the current file (``kubectl logs`` never shows rotated-away
lines) and a follower moves on to the new file when the current one is rotated.

Contracts:
- This module imports only the standard library, and not asyncio at import time: the shim
  (started with ``python -I -S``) loads it by path, and its start-up time is on every pod's
  critical path.
- `CRILogWriter.write` never raises on a full or vanished disk: logs are best effort, the
  container must keep running (upstream drops lines in that case too).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC

MAX_LINE = 16 * 1024                 # containerd's max_container_log_line_size
DEFAULT_MAX_SIZE = 10 * 1024 * 1024  # containerLogMaxSize
DEFAULT_MAX_FILES = 5                # containerLogMaxFiles
ROTATED_TIME_FORMAT = "%Y%m%d-%H%M%S"


def format_timestamp(ns: int) -> str:
    """Go's time.RFC3339Nano in UTC: 9 fractional digits with trailing zeros dropped."""
    seconds, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if frac == 0:
        return base + "Z"
    return f"{base}.{frac:09d}".rstrip("0") + "Z"


def parse_timestamp(text: str) -> int:
    """Nanoseconds since the epoch from an RFC3339Nano timestamp (any fraction length)."""
    from datetime import (  # the shim never parses: keep its start-up lean
        datetime,
    )

    if not text.endswith("Z"):
        raise ValueError(f"timestamp {text!r} is not UTC")
    body = text[:-1]
    whole, _, frac = body.partition(".")
    dt = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


@dataclass
class LogEntry:
    timestamp_ns: int
    stream: str          # "stdout" | "stderr"
    partial: bool
    content: bytes       # without the trailing newline


def parse_line(line: bytes) -> LogEntry:
    """One CRI log line (with or without its newline). Raises ValueError if malformed."""
    line = line.rstrip(b"\n")
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"P", b"F"):
        raise ValueError(f"not a CRI log line: {line[:80]!r}")
    return LogEntry(parse_timestamp(parts[0].decode()), parts[1].decode(), parts[2] == b"P",
                    parts[3] if len(parts) == 4 else b"")


class CRILogWriter:
    """Appends a container's output to its CRI log file, splitting lines and rotating.

    ``write(stream, data)`` takes raw chunks as they come from a pipe; bytes after the last
    newline wait for the rest of their line (or become a ``P`` entry past `MAX_LINE`).
    ``close()`` writes what is left of each stream as a full line, as containerd does at EOF.
    """

    def __init__(self, path: str, max_size: int = DEFAULT_MAX_SIZE,
                 max_files: int = DEFAULT_MAX_FILES, clock=time.time_ns) -> None:
        self.path = path
        self.max_size = max_size
        self.max_files = max(1, max_files)
        self._clock = clock
        self._pending = {"stdout": b"", "stderr": b""}
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = os.fstat(self._fd).st_size

    def write(self, stream: str, data: bytes) -> None:
        buf = self._pending[stream] + data
        entries: list[bytes] = []
        while True:
            nl = buf.find(b"\n")
            if nl < 0 or nl > MAX_LINE:
                if len(buf) <= MAX_LINE:
                    break
                entries.append(self._entry(stream, b"P", buf[:MAX_LINE]))
                buf = buf[MAX_LINE:]
                continue
            entries.append(self._entry(stream, b"F", buf[:nl]))
            buf = buf[nl + 1:]
        self._pending[stream] = buf
        for entry in entries:
            self._append(entry)

    def close(self) -> None:
        for stream, rest in self._pending.items():
            if rest:
                self._append(self._entry(stream, b"F", rest))
        self._pending = {"stdout": b"", "stderr": b""}
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _entry(self, stream: str, tag: bytes, content: bytes) -> bytes:
        return b"%s %s %s %s\n" % (format_timestamp(self._clock()).encode(), stream.encode(),
                                   tag, content)

    def _append(self, entry: bytes) -> None:
        try:
            if self._size and self._size + len(entry) > self.max_size:
                self._rotate()
            os.write(self._fd, entry)
            self._size += len(entry)
        except OSError:
            pass  # best effort: see the module contract

    def _rotate(self) -> None:
        stamp = time.strftime(ROTATED_TIME_FORMAT, time.gmtime(self._clock() / 1e9))
        target = f"{self.path}.{stamp}"
        n = 0
        while os.path.exists(target):      # several rotations within one second
            n += 1
            target = f"{self.path}.{stamp}.{n}"
        os.rename(self.path, target)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = 0
        for old in rotated_files(self.path)[: -(self.max_files - 1) or None]:
            os.unlink(old)


def rotated_files(path: str) -> list[str]:
    """The rotated-away files of ``path``, oldest first."""
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory or ".")
    except FileNotFoundError:
        return []

    def key(name: str) -> tuple[str, int]:
        stamp, _, n = name[len(base) + 1:].partition(".")
        return stamp, int(n or 0)

    found = [n for n in names if n.startswith(base + ".") and key_ok(n[len(base) + 1:])]
    return [os.path.join(directory, n) for n in sorted(found, key=key)]


def key_ok(suffix: str) -> bool:
    stamp, _, n = suffix.partition(".")
    return len(stamp) == 15 and stamp[8] == "-" and (not n or n.isdigit())


@dataclass
class LogOptions:
    """The ``pods/log`` query, as the kubelet's ``LogOptions``."""

    tail: int | None = None          # tailLines; None = all
    since_ns: int = 0                # sinceSeconds/sinceTime as an absolute time; 0 = all
    timestamps: bool = False
    limit_bytes: int | None = None
    follow: bool = False
    stream: str = ""                 # "" = both, else "stdout" or "stderr"


def render(entry: LogEntry, opts: LogOptions) -> bytes:
    """An entry as ``kubectl logs`` shows it: the content, its newline unless partial, and the
    timestamp first when asked for."""
    out = entry.content if entry.partial else entry.content + b"\n"
    if opts.timestamps:
        out = format_timestamp(entry.timestamp_ns).encode() + b" " + out
    return out


def _tail_offset(fd: int, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of the file start (reading backwards)."""
    size = os.fstat(fd).st_size
    if lines <= 0:
        return size
    pos, found, block = size, 0, 64 * 1024
    # A final newline ends the last line rather than starting an empty one.
    skip_last = size > 0 and os.pread(fd, 1, size - 1) == b"\n"
    while pos > 0:
        start = max(0, pos - block)
        chunk = os.pread(fd, pos - start, start)
        end = len(chunk)
        while True:
            nl = chunk.rfind(b"\n", 0, end)
            if nl < 0:
                break
            if skip_last and start + nl == size - 1:
                skip_last = False
            else:
                found += 1
                if found == lines:
                    return start + nl + 1
            end = nl
        pos = start
    return 0


def _select(raw: bytes, opts: LogOptions) -> bytes | None:
    try:
        entry = parse_line(raw)
    except ValueError:
        return None
    if entry.timestamp_ns < opts.since_ns or (opts.stream and entry.stream != opts.stream):
        return None
    return render(entry, opts)


async def read_logs(path: str, opts: LogOptions, is_running=None):
    """Yield ``kubectl logs`` output for the CRI log file ``path`` as byte chunks.

    ``is_running()`` (a coroutine function; None = the container is not running) is asked when
    a follower reaches the end of the file: following stops once it says False and the file
    has nothing more. The file is read by small blocking reads (a page cache hit each), so
    this runs on the event loop.
    """
    import asyncio  # here, not at import: see the module contract

    remaining = opts.limit_bytes
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = _tail_offset(fd, opts.tail) if opts.tail is not None else 0
        buf = b""
        idle_checks = 0
        while True:
            chunk = os.pread(fd, 256 * 1024, offset)
            if chunk:
                offset += len(chunk)
                buf += chunk
                lines = buf.split(b"\n")
                buf = lines.pop()
                out = b"".join(r for r in (_select(line, opts) for line in lines) if r)
                if remaining is not None:
                    out = out[:remaining]
                    remaining -= len(out)
                if out:
                    yield out
                if remaining == 0:
                    return
                idle_checks = 0
                continue
            if not opts.follow:
                return
            rotated = _reopen_if_rotated(path, fd)
            if rotated is not None:
                os.close(fd)
                fd, offset, buf = rotated, 0, b""
                continue
            if is_running is None or not await is_running():
                # One more look after the container ended: its last lines may land late.
                idle_checks += 1
                if idle_checks > 1:
                    return
            await asyncio.sleep(0.1)
    finally:
        os.close(fd)


def _reopen_if_rotated(path: str, fd: int) -> int | None:
    """A new fd for ``path`` if the file there is no longer the one ``fd`` reads."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    cur = os.fstat(fd)
    if (st.st_dev, st.st_ino) == (cur.st_dev, cur.st_ino):
        return None
    return os.open(path, os.O_RDONLY)
