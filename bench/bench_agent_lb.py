"""Cost of the agent's load balancer (`kubeling.kubelet.loadbalancer`): ``python bench/bench_agent_lb.py``.

A plain asyncio TCP sink on 127.0.0.1 is reached directly and through a `LoadBalancer` (all in one
process and one event loop: the sender, the balancer and the sink share a core, so the figures
are a lower bound for the balancer). Prints bulk throughput (512 MB, 64 KB writes) and the
mean time to open and close one connection (300 in a row), for both paths.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kubeling.kubelet.loadbalancer import LoadBalancer  # noqa: E402

TOTAL = 512 << 20
CONNECTS = 300


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    n = 0
    while data := await reader.read(1 << 16):
        n += len(data)
    writer.write(str(n).encode())
    await writer.drain()
    writer.close()


async def _push(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = b"x" * (1 << 16)
    t = time.perf_counter()
    for _ in range(TOTAL // len(chunk)):
        writer.write(chunk)
        await writer.drain()
    writer.write_eof()
    assert int(await reader.read()) == TOTAL
    writer.close()
    return time.perf_counter() - t


async def _connects(port: int) -> float:
    t = time.perf_counter()
    for _ in range(CONNECTS):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write_eof()
        await reader.read()
        writer.close()
    return (time.perf_counter() - t) / CONNECTS


async def main() -> None:
    server = await asyncio.start_server(_sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print("| path | throughput (MB/s) | connect + close (ms) |\n|---|---|---|")
    async with LoadBalancer([f"127.0.0.1:{port}"], port=0, check_interval=3600) as lb:
        for name, p in (("direct", port), ("through the balancer", lb.port)):
            took = await _push(p)
            per = await _connects(p)
            print(f"| {name} | {TOTAL / took / 1e6:.0f} | {per * 1e3:.2f} |")
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
