"""A range of integers (service IPs, node ports) allocated through one key in the store.

Upstream keeps each allocator as a bitmap in a ``RangeAllocation`` object (``/registry/ranges/
serviceips``, ``/registry/ranges/servicenodeports``) and changes it with compare-and-swap, so
that several API servers over one etcd never hand out the same value. The same here: every
allocation and release is read → change bitmap → CAS write, retried on a lost race; an
``asyncio.Lock`` keeps this server's own writers from racing each other.

Dynamic allocations pick a random free offset, preferring the upper part of the range and
leaving the lower ``reserved`` offsets to values users ask for by hand (upstream's
``RandomScanStrategyWithOffset``), so a user's static choice rarely collides.

`repair` (at server start) adds every value a stored object holds but the bitmap lacks, so a
crash between allocating and writing the object can never lead to a double allocation. Values
the bitmap holds but no object uses (a crash before the object was written) stay taken; they
are counted in the log.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import random

import orjson

from kubeling.api import errors

log = logging.getLogger(__name__)

MAX_RETRIES = 32


class RangeFull(Exception):
    """Every value of the range is allocated."""


class RangeAllocator:
    def __init__(self, store, key: str, name: str, range_text: str, size: int) -> None:
        self.store = store
        self.key = key
        self.name = name
        self.range_text = range_text
        self.size = size
        self.reserved = min(max(16, size // 16), 256) if size > 32 else 0
        self._lock = asyncio.Lock()
        self._random = random.Random()

    # -- the stored bitmap ---------------------------------------------------------------------

    async def _read(self) -> tuple[bytearray, int]:
        value, rev = await self.store.read_key(self.key)
        bits = bytearray((self.size + 7) // 8)
        if value:
            doc = orjson.loads(value)
            raw = base64.b64decode(doc.get("data") or "")
            bits[:len(raw)] = raw[:len(bits)]
        return bits, rev

    def _encode(self, bits: bytearray) -> bytes:
        return orjson.dumps({"apiVersion": "v1", "kind": "RangeAllocation", "metadata": {"name": self.name},
                             "range": self.range_text, "data": base64.b64encode(bytes(bits)).decode()})

    async def _change(self, change) -> object:
        """Read, ``change(bits) -> result`` (mutating bits, or raising), CAS write; retried."""
        async with self._lock:
            for _ in range(MAX_RETRIES):
                bits, rev = await self._read()
                before = bytes(bits)
                result = change(bits)
                if bytes(bits) == before:
                    return result
                if await self.store.swap_key(self.key, self._encode(bits), rev):
                    return result
        raise errors.conflict("rangeallocations", "", self.name, "too many concurrent allocations")

    # -- bits ----------------------------------------------------------------------------------

    @staticmethod
    def _has(bits: bytearray, i: int) -> bool:
        return bool(bits[i >> 3] & (1 << (i & 7)))

    @staticmethod
    def _set(bits: bytearray, i: int, on: bool) -> None:
        if on:
            bits[i >> 3] |= 1 << (i & 7)
        else:
            bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF

    def _free_offset(self, bits: bytearray) -> int:
        for lo, hi in ((self.reserved, self.size), (0, self.reserved)):
            if hi <= lo:
                continue
            start = self._random.randrange(lo, hi)
            for i in itertools.chain(range(start, hi), range(lo, start)):
                if not bits[i >> 3] & (1 << (i & 7)):
                    return i
        raise RangeFull(self.name)

    # -- the operations ------------------------------------------------------------------------

    async def allocate(self, offset: int, *, dry_run: bool = False) -> bool:
        """Take ``offset``; False when it is already taken."""
        if dry_run:
            bits, _ = await self._read()
            return not self._has(bits, offset)

        def take(bits):
            if self._has(bits, offset):
                return False
            self._set(bits, offset, True)
            return True
        return bool(await self._change(take))

    async def allocate_next(self, *, dry_run: bool = False) -> int:
        """Take a free offset (raises `RangeFull`)."""
        if dry_run:
            bits, _ = await self._read()
            return self._free_offset(bits)

        def take(bits):
            i = self._free_offset(bits)
            self._set(bits, i, True)
            return i
        return int(await self._change(take))

    async def release(self, *offsets: int) -> None:
        def give(bits):
            for i in offsets:
                if 0 <= i < self.size:
                    self._set(bits, i, False)
        await self._change(give)

    async def repair(self, in_use: set[int]) -> None:
        """Mark every offset in ``in_use`` taken (see the module docstring)."""
        def fix(bits):
            missing = [i for i in in_use if 0 <= i < self.size and not self._has(bits, i)]
            for i in missing:
                self._set(bits, i, True)
            return missing
        missing = await self._change(fix)
        bits, _ = await self._read()
        leaked = sum(1 for i in range(self.size) if self._has(bits, i) and i not in in_use)
        if missing or leaked:
            log.info("%s: repaired %d missing allocations; %d allocated values are held by no object",
                     self.name, len(missing), leaked)
