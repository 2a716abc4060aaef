"""HostLocalIPAM: range, persistence across objects (agent restarts), round-robin, exhaustion."""

import asyncio
import subprocess
import sys
import threading

import pytest

from kubeling.kubelet.network.ipam import LAST_RESERVED, HostLocalIPAM, IPAMError, reservations


@pytest.mark.parametrize("cidr, first, last, size", [
    pytest.param("10.42.0.0/24", "10.42.0.2", "10.42.0.254", 253, id="slash-24"),
    pytest.param("10.42.3.0/29", "10.42.3.2", "10.42.3.6", 5, id="slash-29"),
    pytest.param("10.42.5.7/30", "10.42.5.6", "10.42.5.6", 1, id="slash-30-host-bits-set"),
])
def test_range_skips_network_gateway_and_broadcast(tmp_path, cidr, first, last, size):
    async def main():
        ipam = HostLocalIPAM(tmp_path, cidr)
        got = [await ipam.allocate(f"s{i}") for i in range(size)]
        assert got[0] == first and got[-1] == last and len(set(got)) == size
        assert str(ipam.gateway) not in got
        with pytest.raises(IPAMError, match=f"no IP addresses available in range set: {first}-{last}"):
            await ipam.allocate("one-too-many")
        assert len(ipam.in_use()) == size

    asyncio.run(main())


@pytest.mark.parametrize("cidr", [
    pytest.param("10.42.0.0/31", id="too-small"),
    pytest.param("fd00::/64", id="ipv6"),
])
def test_unusable_ranges_are_refused(tmp_path, cidr):
    with pytest.raises(ValueError):
        HostLocalIPAM(tmp_path, cidr)


def test_reservations_survive_a_new_object_and_release_by_sandbox(tmp_path):
    async def main():
        a = HostLocalIPAM(tmp_path, "10.42.0.0/24")
        ip1 = await a.allocate("sandbox-1")
        ip2 = await a.allocate("sandbox-2")
        b = HostLocalIPAM(tmp_path, "10.42.0.0/24")  # the agent restarted
        assert b.in_use() == {ip1: "sandbox-1", ip2: "sandbox-2"}
        assert await b.allocate("sandbox-1") == ip1   # a retried setup keeps its IP
        assert await b.lookup("sandbox-2") == ip2
        assert await b.release("sandbox-1") == [ip1]
        assert await b.release("sandbox-1") == []     # idempotent
        assert await b.lookup("sandbox-1") is None
        assert b.in_use() == {ip2: "sandbox-2"}
        assert (tmp_path / ip2).read_text() == "sandbox-2\neth0"  # host-local's file format

    asyncio.run(main())


def test_round_robin_does_not_reuse_a_freed_ip_at_once(tmp_path):
    async def main():
        ipam = HostLocalIPAM(tmp_path, "10.42.0.0/29")  # .2 .. .6
        assert await ipam.allocate("a") == "10.42.0.2"
        await ipam.release("a")
        assert await ipam.allocate("b") == "10.42.0.3"
        assert await HostLocalIPAM(tmp_path, "10.42.0.0/29").allocate("c") == "10.42.0.4"  # across restarts
        assert (tmp_path / LAST_RESERVED).read_text() == "10.42.0.4"
        assert [await ipam.allocate(x) for x in "def"] == ["10.42.0.5", "10.42.0.6", "10.42.0.2"]  # wraps
        with pytest.raises(IPAMError):
            await ipam.allocate("g")
        await ipam.release("d")
        assert await ipam.allocate("g") == "10.42.0.5"

    asyncio.run(main())


def test_a_garbled_marker_and_stray_files_are_tolerated(tmp_path):
    async def main():
        (tmp_path / LAST_RESERVED).write_text("not an ip")
        (tmp_path / "something-else").write_text("x")
        (tmp_path / "10.42.9.9").write_text("old-sandbox\neth0")  # from an earlier podCIDR
        ipam = HostLocalIPAM(tmp_path, "10.42.0.0/24")
        assert await ipam.allocate("a") == "10.42.0.2"
        assert ipam.in_use() == {"10.42.0.2": "a", "10.42.9.9": "old-sandbox"}
        assert await ipam.release("old-sandbox") == ["10.42.9.9"]

    asyncio.run(main())


CHILD = """
import asyncio, sys
from kubeling.kubelet.network.ipam import HostLocalIPAM
async def main():
    ipam = HostLocalIPAM(sys.argv[1], "10.42.0.0/24")
    await asyncio.gather(*(ipam.allocate(f"child{i}") for i in range(40)))
asyncio.run(main())
"""


def test_two_processes_never_get_the_same_ip(tmp_path):
    """Concurrent allocations from another process and from several event loops (threads) share
    the directory: the O_EXCL files and the flock keep every IP unique."""
    results: list[str] = []

    def run(prefix: str, n: int) -> None:
        async def main():
            ipam = HostLocalIPAM(tmp_path, "10.42.0.0/24")
            return await asyncio.gather(*(ipam.allocate(f"{prefix}{i}") for i in range(n)))
        results.extend(asyncio.run(main()))

    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)])
    threads = [threading.Thread(target=run, args=(f"t{k}-", 40)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert child.wait(timeout=60) == 0
    owners = reservations(tmp_path)
    assert len(owners) == 160 and len(results) == 120 and len(set(results)) == 120
    assert sum(1 for o in owners.values() if o.startswith("child")) == 40


def test_a_cancelled_allocate_has_finished_its_file_work_when_it_raises(tmp_path):
    """So a caller's undo (`release`) always comes after the reservation it must free."""
    async def main():
        ipam = HostLocalIPAM(tmp_path, "10.42.0.0/24")
        task = asyncio.create_task(ipam.allocate("a"))
        await asyncio.sleep(0)  # the file work is under way in its thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert list(ipam.in_use().values()) == ["a"]
        assert len(await ipam.release("a")) == 1 and ipam.in_use() == {}

    asyncio.run(main())
