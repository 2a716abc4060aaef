"""How a long-running ``kubeling`` command runs its asyncio body.

``run_until_signalled(body, verbose=...)`` logs to stderr (DEBUG with ``-v``), starts an event
loop (uvloop when installed), and calls ``await body(stop)`` with an `asyncio.Event` that
SIGTERM and SIGINT set: the body drains and returns when it is set, as every component's
``run(stop)`` does. Exceptions from the body propagate to the caller.

The node agent does not use it: it forks children, which would inherit the wakeup fd of
`loop.add_signal_handler` (see `kubeling.cli.agent.install_stop_handlers`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable


def log_to_stderr(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def run(coro: Awaitable[None]) -> None:
    """uvloop when available: it doubles the API server's request rate (bench/RESULTS.md)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


def run_until_signalled(body: Callable[[asyncio.Event], Awaitable[None]], *, verbose: bool = False) -> None:
    log_to_stderr(verbose)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await body(stop)

    run(main())
