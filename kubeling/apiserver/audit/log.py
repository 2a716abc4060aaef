"""The audit log backend (upstream: ``k8s.io/apiserver/plugin/pkg/audit/log``): one JSON event
per line, to a file (``--audit-log-path``) or to standard output (``-``).

Rotation is lumberjack's, which kube-apiserver uses:

- ``--audit-log-maxsize`` (MB; 0 means lumberjack's default of 100): before a write would take
  the file past it, the file is renamed to ``<name>-<UTC time 2006-01-02T15-04-05.000><.ext>``
  and a new one is started;
- ``--audit-log-maxbackup``: at most this many rotated files are kept (0 keeps all);
- ``--audit-log-maxage``: rotated files older than this many days are removed (0 keeps all).

The file and its new siblings are created 0600 (a missing directory 0700, as upstream). The
event loop never waits on the disk: events are serialised on the loop (orjson, microseconds)
and queued to one writer thread, which writes whatever has queued up and flushes after each
batch. `close` drains the queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

MB = 1024 * 1024
DEFAULT_MAX_SIZE_MB = 100   # lumberjack's default when MaxSize is 0
BACKUP_TIME_FORMAT = "%Y-%m-%dT%H-%M-%S"
MAX_QUEUE = 100_000          # events waiting for the writer; beyond it, events are dropped (and counted)


class RotatingFile:
    """A lumberjack-style file: size-triggered rotation, backups pruned by count and age."""

    def __init__(self, path: str | Path, max_size_mb: int = 0, max_backups: int = 0, max_age_days: int = 0,
                 clock=time.time) -> None:
        self.path = Path(path)
        self.max_bytes = (max_size_mb or DEFAULT_MAX_SIZE_MB) * MB
        self.max_backups = max_backups
        self.max_age_days = max_age_days
        self.clock = clock
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._f = self._open()
        self._size = self._f.tell()

    def _open(self):
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "ab")

    def backup_name(self, when: float) -> Path:
        t = datetime.fromtimestamp(when, timezone.utc)
        stamp = t.strftime(BACKUP_TIME_FORMAT) + f".{t.microsecond // 1000:03d}"
        return self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}")

    def write(self, data: bytes) -> None:
        if self._size + len(data) > self.max_bytes and self._size > 0:
            self.rotate()
        self._f.write(data)
        self._size += len(data)

    def flush(self) -> None:
        self._f.flush()

    def rotate(self) -> None:
        self._f.close()
        target = self.backup_name(self.clock())
        n = 1
        while target.exists():   # two rotations in one millisecond
            target = self.backup_name(self.clock() + n / 1000)
            n += 1
        os.replace(self.path, target)
        self._f = self._open()
        self._size = 0
        self.prune()

    def backups(self) -> list[Path]:
        """Rotated files, oldest first (their names sort by time)."""
        prefix, suffix = self.path.stem + "-", self.path.suffix
        out = []
        for p in self.path.parent.iterdir():
            name = p.name
            if name.startswith(prefix) and name.endswith(suffix) and p != self.path:
                stamp = name[len(prefix):len(name) - len(suffix) if suffix else None]
                try:
                    datetime.strptime(stamp, BACKUP_TIME_FORMAT + ".%f")
                except ValueError:
                    continue
                out.append(p)
        return sorted(out)

    def prune(self) -> None:
        files = self.backups()
        doomed: set[Path] = set()
        if self.max_backups > 0 and len(files) > self.max_backups:
            doomed.update(files[:len(files) - self.max_backups])
        if self.max_age_days > 0:
            cutoff = self.clock() - self.max_age_days * 86400
            for p in files:
                stamp = p.name[len(self.path.stem) + 1:len(p.name) - len(self.path.suffix) if self.path.suffix
                               else None]
                t = datetime.strptime(stamp, BACKUP_TIME_FORMAT + ".%f").replace(tzinfo=timezone.utc).timestamp()
                if t < cutoff:
                    doomed.add(p)
        for p in doomed:
            try:
                p.unlink()
            except OSError as e:
                log.warning("removing old audit log %s: %s", p, e)

    def close(self) -> None:
        self._f.close()


class StdoutFile:
    def write(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)

    def flush(self) -> None:
        sys.stdout.buffer.flush()

    def close(self) -> None:
        self.flush()


class LogBackend:
    """Queues events to a writer thread (see the module docstring)."""

    def __init__(self, path: str, *, max_size_mb: int = 0, max_backups: int = 0, max_age_days: int = 0) -> None:
        self.out = StdoutFile() if path == "-" else RotatingFile(path, max_size_mb, max_backups, max_age_days)
        self.dropped = 0
        self._q: queue.Queue = queue.Queue(MAX_QUEUE)
        self._thread = threading.Thread(target=self._run, name="audit-log", daemon=True)
        self._thread.start()
        self._closed = False

    def process(self, event: dict) -> None:
        """Queue one event (called on the event loop; never blocks)."""
        if self._closed:
            return
        try:
            self._q.put_nowait(orjson.dumps(event) + b"\n")
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                log.error("the audit log writer is behind: %d events dropped", self.dropped)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            batch = [item]
            while True:   # take whatever else is waiting: one flush per batch
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            try:
                for data in batch:
                    if data is not None:
                        self.out.write(data)
                self.out.flush()
            except Exception:  # noqa: BLE001 - a full disk must not kill the writer
                log.exception("writing the audit log")
            if stop:
                return

    async def aclose(self) -> None:
        """`close` off the event loop (the server's shutdown)."""
        await asyncio.to_thread(self.close)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the writer."""
        if self._closed:
            return
        self._closed = True
        self._q.put(None)
        self._thread.join(timeout)
        try:
            self.out.close()
        except Exception:  # noqa: BLE001
            log.exception("closing the audit log")
