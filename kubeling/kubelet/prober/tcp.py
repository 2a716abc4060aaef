"""tcpSocket probes: success if a TCP connection opens within the timeout.

The connection is closed at once; nothing is sent. Messages are Go's dial errors
(``dial tcp 10.42.0.5:6379: connect: connection refused``, ``... i/o timeout``).
"""

from __future__ import annotations

import asyncio

from kubeling.kubelet.prober.probe import Outcome, Result, dial_error, join_host_port


async def probe_tcp(host: str, port: int, timeout: float) -> Outcome:
    addr = join_host_port(host, port)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return Outcome(Result.FAILURE, f"dial tcp {addr}: i/o timeout")
    except OSError as e:
        return Outcome(Result.FAILURE, dial_error(addr, e, host))
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass  # a reset on close says nothing about whether the port accepted us
    return Outcome(Result.SUCCESS)
