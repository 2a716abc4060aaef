"""Helpers shared by the storage tests: read n watch events, and a store filled with a known
history."""

from __future__ import annotations

import asyncio


async def take(watch, n, timeout=5.0):
    out = []

    async def _take():
        async for ev in watch:
            out.append(ev)
            if len(out) == n:
                return

    await asyncio.wait_for(_take(), timeout)
    return out


async def fill(s):
    """Revisions: 1 a=1, 2 b=1, 3 c=1, 4 a=2, 5 del b, 6 d=1, 7 (other prefix) /pq/x."""
    await s.create("/p/a", b"a1")
    await s.create("/p/b", b"b1")
    await s.create("/p/c", b"c1")
    await s.update("/p/a", b"a2", 1)
    await s.delete("/p/b")
    await s.create("/p/d", b"d1")
    await s.create("/pq/x", b"other prefix")
