"""How a long-running ``kubeling`` command runs its asyncio body.

``run_until_signalled(body, verbose=...)`` logs to stderr (DEBUG with ``-v``), starts an event
loop (uvloop when installed), and calls ``await body(stop)`` with an `asyncio.Event` that
SIGTERM and SIGINT set: the body drains and returns when it is set, as every component's
``run(stop)`` does. Exceptions from the body propagate to the caller.

``supervise_child(args, stop)`` runs ``kubeling <args>`` as a child process, restarted with
backoff when it dies and stopped at ``stop``: the server's controller manager, scheduler and
agent, and the agent's kube-proxy.

The node agent does not use ``run_until_signalled``: it forks children, which would inherit the wakeup fd of
`loop.add_signal_handler` (see `kubeling.cli.agent.install_stop_handlers`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


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


async def supervise_child(args: list[str], stop: asyncio.Event) -> None:
    """Run ``kubeling <args>`` as a child; restart it with backoff if it dies; SIGTERM it at stop."""
    delay = 1.0
    while not stop.is_set():
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "kubeling.cli.main", *args,
                                                    stdin=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_parent)
        try:
            waiter = asyncio.create_task(stop.wait())
            exited = asyncio.create_task(proc.wait())
            await asyncio.wait([waiter, exited], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if exited.done():
                log.warning("%s exited with %s; restarting in %.0fs", args[0], proc.returncode, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when its parent dies, even by SIGKILL (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
