"""Host-local IPAM: pod IPs from the node's podCIDR, one file per reserved IP (as CNI's host-local).

State lives under one directory (``<agent root>/network/``)::

    10.42.0.7              "<sandbox id>\\neth0"  — one file per reserved IP
    last_reserved_ip.0     the IP handed out last: the next search starts after it
    lock                   flock()ed around every change

Contracts:

- **Range.** Every host address of the podCIDR except the network address, the gateway (the
  first host address, which the bridge holds) and the broadcast address.
- **Exclusive.** A reservation is an ``O_CREAT|O_EXCL`` file, taken under the lock: two
  sandboxes never get one IP, also across processes and agent restarts.
- **Round-robin.** The search starts after the last IP reserved and wraps, so an IP just freed
  is handed out again only once the rest of the range is taken — a late packet or a stale ARP
  entry for the old pod never reaches the new one.
- **Idempotent.** `allocate` for a sandbox that already holds an IP returns that IP (a retried
  setup); `release` of a sandbox with nothing reserved does nothing.
- **Restart-safe.** Nothing is kept in memory: a new object over the same directory sees every
  reservation. Files for IPs outside the current range (the podCIDR changed) still count as
  reserved and are released by sandbox id as usual.
- The methods are coroutines; the file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
from pathlib import Path

LAST_RESERVED = "last_reserved_ip.0"
LOCK = "lock"
IFNAME = "eth0"


class IPAMError(Exception):
    """No IP could be reserved (the range is full, or the state directory is unusable)."""


class HostLocalIPAM:
    """Reserve pod IPs from ``cidr`` with state in ``directory``; see the module docstring."""

    def __init__(self, directory: Path, cidr: str) -> None:
        self.dir = Path(directory)
        self.network = ipaddress.ip_network(cidr, strict=False)
        if self.network.version != 4 or self.network.prefixlen > 30:
            raise ValueError(f"podCIDR {cidr}: need an IPv4 range of at least 4 addresses")
        self.gateway = self.network.network_address + 1
        self.first = self.network.network_address + 2
        self.last = self.network.broadcast_address - 1

    @property
    def range_set(self) -> str:
        """The range as host-local prints it in errors: ``10.42.0.2-10.42.0.254``."""
        return f"{self.first}-{self.last}"

    async def allocate(self, sandbox_id: str) -> str:
        """Reserve an IP for ``sandbox_id`` (or return the one it holds); `IPAMError` if none is free.

        Cancelled, it still waits for the file work to end, so that a caller undoing a cancelled
        setup (`release`) never runs before a reservation that would then leak."""
        work = asyncio.ensure_future(asyncio.to_thread(self._allocate, sandbox_id))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await work
            raise

    async def release(self, sandbox_id: str) -> list[str]:
        """Free every IP ``sandbox_id`` holds; the IPs freed (none is fine)."""
        return await asyncio.to_thread(self._release, sandbox_id)

    async def lookup(self, sandbox_id: str) -> str | None:
        """The IP ``sandbox_id`` holds, if any."""
        return await asyncio.to_thread(self._lookup, sandbox_id)

    def in_use(self) -> dict[str, str]:
        """Every reservation, ``{ip: sandbox id}`` (a quick directory read; also for leak counts)."""
        return reservations(self.dir)

    # -- the file work, under the lock -------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _allocate(self, sandbox_id: str) -> str:
        with self._locked():
            held = self._lookup(sandbox_id)
            if held is not None:
                return held
            for ip in self._candidates():
                try:
                    fd = os.open(self.dir / str(ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    continue
                try:
                    # no fsync: a reservation only matters while its sandbox lives, and no
                    # sandbox outlives the machine
                    os.write(fd, f"{sandbox_id}\n{IFNAME}".encode())
                finally:
                    os.close(fd)
                _write_atomic(self.dir / LAST_RESERVED, str(ip))
                return str(ip)
        raise IPAMError(f"failed to allocate for range 0: no IP addresses available in range set: {self.range_set}")

    def _candidates(self):
        """Every IP of the range once, starting after the last one reserved."""
        size = int(self.last) - int(self.first) + 1
        start = 0
        try:
            last = ipaddress.ip_address((self.dir / LAST_RESERVED).read_text().strip())
            if self.first <= last <= self.last:
                start = int(last) - int(self.first) + 1
        except (OSError, ValueError):
            pass  # no (or a garbled) marker: start at the bottom
        for i in range(size):
            yield self.first + (start + i) % size

    def _release(self, sandbox_id: str) -> list[str]:
        with self._locked():
            freed = [ip for ip, owner in reservations(self.dir).items() if owner == sandbox_id]
            for ip in freed:
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / ip).unlink()
            return freed

    def _lookup(self, sandbox_id: str) -> str | None:
        return next((ip for ip, owner in reservations(self.dir).items() if owner == sandbox_id), None)


def reservations(directory: Path) -> dict[str, str]:
    """``{ip: sandbox id}`` for every reservation file in ``directory`` (empty if it is missing)."""
    out: dict[str, str] = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return out
    for name in names:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            continue  # the lock, the last-reserved marker, a temp file
        try:
            owner = (Path(directory) / name).read_text().split("\n", 1)[0].strip()
        except FileNotFoundError:
            continue  # released meanwhile
        out[name] = owner
    return out


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
