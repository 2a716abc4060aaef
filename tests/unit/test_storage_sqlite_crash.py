"""Durability of the SQLite store: an acknowledged write survives ``kill -9`` of the process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from kubeling.storage import SQLiteStore

# The child writes from 50 concurrent callers (creates, then CAS updates of the same keys) and
# prints "<key> <mod_revision>" for each write once it is acknowledged, flushing every line.
CHILD = r"""
import asyncio, sys
from kubeling.storage import SQLiteStore

async def main(path, synchronous):
    store = await SQLiteStore.open(path, synchronous=synchronous, compact_interval=0)
    print("ready", flush=True)

    async def caller(c):
        i = 0
        while True:
            key = f"/registry/pods/crash/c{c}-{i}"
            ok, kv = await store.create(key, b"x" * 300)
            assert ok
            sys.stdout.write(f"{key} {kv.mod_revision}\n")
            sys.stdout.flush()
            ok, kv = await store.update(key, b"y" * 300, kv.mod_revision)
            assert ok
            sys.stdout.write(f"{key} {kv.mod_revision}\n")
            sys.stdout.flush()
            i += 1

    await asyncio.gather(*(caller(c) for c in range(50)))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.parametrize("synchronous", [pytest.param("FULL", id="full"),
                                         pytest.param("NORMAL", id="normal")])
def test_acknowledged_writes_survive_sigkill(tmp_path, synchronous):
    path = str(tmp_path / "db")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, path, synchronous],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline() == b"ready\n", child.stderr.read()
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while len(lines) < 2000 and time.monotonic() < deadline:  # kill it mid-storm
            line = child.stdout.readline()
            assert line, child.stderr.read()
            lines.append(line.decode().rstrip("\n"))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert len(lines) == 2000
    # Plus everything still in the pipe; a torn last line was never fully acknowledged.
    lines += rest.decode().split("\n")[:-1]
    latest: dict[str, int] = {}
    for line in lines:
        key, rev = line.split()
        latest[key] = max(int(rev), latest.get(key, 0))

    async def check():
        store = await SQLiteStore.open(path, compact_interval=0)
        try:
            for key, rev in latest.items():
                _, kv = await store.get(key)
                assert kv is not None, f"acknowledged {key} lost"
                assert kv.mod_revision >= rev, f"acknowledged write {key}@{rev} lost"
            current = await store.current_revision()
            assert current >= max(latest.values())
            ok, kv = await store.create("/registry/pods/crash/after", b"z")
            assert ok and kv.mod_revision == current + 1  # revisions continue upward
        finally:
            await store.close()

    asyncio.run(check())
