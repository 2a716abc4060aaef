"""Scheduled etcd snapshots, as k3s's server takes them.

On etcd (``--datastore-endpoint``), every ``kubeling server`` takes a snapshot of the datastore on
a schedule and keeps the newest few, as k3s does:

- ``--etcd-snapshot-schedule-cron`` (k3s's default ``0 */12 * * *``): a cron expression in the
  server's local time, or ``@every <Go duration>`` (robfig/cron's form, which k3s accepts too);
- ``--etcd-snapshot-retention`` (5): how many of this server's scheduled snapshots stay;
- ``--etcd-snapshot-dir`` (``<data-dir>/server/db/snapshots``, where ``kubeling etcd-snapshot``
  looks by default);
- ``--etcd-disable-snapshots``: none.

A snapshot is ``etcd-snapshot-<node>-<unix time>``, taken by ``kubeling etcd-snapshot save`` and
pruned by ``kubeling etcd-snapshot prune`` (`kubeling.cli.etcd_snapshot`), each run as a child
process: the stream from etcd and the fsync stay off the API server's event loop, and
``etcd-snapshot list`` shows them beside the on-demand ones. A failed snapshot is logged with
etcd's reason and the next slot is tried as usual; the server goes on serving.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys

from kubeling.api import cron
from kubeling.api.cron import Schedule

log = logging.getLogger(__name__)

DEFAULT_SCHEDULE = "0 */12 * * *"   # k3s's --etcd-snapshot-schedule-cron
DEFAULT_RETENTION = 5               # k3s's --etcd-snapshot-retention
NAME = "etcd-snapshot"              # k3s's --etcd-snapshot-name
RUN_TIMEOUT = 600.0                 # seconds a save (or prune) child may take


def parse_schedule(expr: str) -> Schedule:
    """``--etcd-snapshot-schedule-cron``, in the server's local time; ValueError naming it when bad
    (an ``@every`` under 1 s too: the flag is refused rather than raised to 1 s)."""
    try:
        schedule = cron.parse_schedule(expr, dt.datetime.now().astimezone().tzinfo)
    except ValueError as e:
        raise ValueError(f"{expr.strip()!r}: {e}") from None
    if schedule.every is not None and schedule.every < 1:
        raise ValueError(f"{schedule.expr!r}: at least 1s")
    return schedule


class SnapshotScheduler:
    """Takes and prunes this server's scheduled snapshots until ``stop`` (see the module docstring).

    ``where`` are the flags that place the files (``--data-dir``, ``--dir``, ``--node-name``: the
    ``etcd-snapshot`` commands' own defaults apply to the others); ``datastore_args`` are the
    ``--datastore-*`` flags, as the server got them."""

    def __init__(self, schedule: Schedule, retention: int, where: list[str], datastore_args: list[str]) -> None:
        self.schedule, self.retention = schedule, retention
        self.where, self.datastore_args = where, datastore_args

    async def run(self, stop: asyncio.Event) -> None:
        log.info("etcd snapshots: %s (local time), keeping %d (%s)", self.schedule.expr, self.retention,
                 " ".join(self.where))
        while not stop.is_set():
            now = dt.datetime.now().astimezone()
            delay = max((self.schedule.next(now) - now).total_seconds(), 0.0)
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self.take()
            except Exception:  # noqa: BLE001 - one bad round must not stop the server
                log.exception("scheduled etcd snapshot")

    async def take(self) -> bool:
        """One scheduled snapshot, then the prune; False (logged) when the save failed."""
        ok, out = await _kubeling("etcd-snapshot", "save", "--name", NAME, *self.where, *self.datastore_args)
        if not ok:
            log.warning("scheduled etcd snapshot failed: %s", out)
            return False
        log.info("scheduled etcd snapshot: %s", out)
        ok, out = await _kubeling("etcd-snapshot", "prune", "--name", NAME, *self.where,
                                  "--snapshot-retention", str(self.retention))
        if not ok:
            log.warning("pruning scheduled etcd snapshots: %s", out)
        elif out:
            log.info("%s", out.replace("\n", "; "))
        return True


async def _kubeling(*args: str) -> tuple[bool, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kubeling.cli.main", *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    except OSError as e:
        return False, f"cannot run kubeling {args[0]}: {e}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return False, f"kubeling {' '.join(args[:2])} took more than {RUN_TIMEOUT:.0f}s"
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return proc.returncode == 0, out.decode(errors="replace").strip()
