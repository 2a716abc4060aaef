"""Serving ``exec`` and ``attach`` (upstream ``kubelet/pkg/cri/streaming/remotecommand``).

One session runner, two transports::

    WebSocket (wsstream.ChannelConn) ─┐
                                      ├─ CommandIO ─► run() ◄─► runtime StreamSession
    SPDY (spdyconn.SpdyConnection) ───┘

`run` starts the session (``runtime.exec`` or ``runtime.attach``), copies stdin in and
stdout/stderr out, forwards terminal resizes, waits for the process, lets the output drain, then
reports the outcome on the error channel/stream and closes the transport:

- v4 and later: a ``Status`` JSON, also on success (``{"metadata":{},"status":"Success"}``); a
  non-zero exit is reason ``NonZeroExitCode`` with the code in ``details.causes`` as
  ``{"reason": "ExitCode", "message": "3"}`` (kubectl and the Python client read it there);
- v1-v3: the error's text, and nothing on success.

If the client goes away first, the session is closed (the runtime decides what that means: an
exec'd process loses its stdin, an attached container keeps running). Attach reports success when
its stream ends, whatever the container's exit code, as upstream does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kubeling.kubelet.streaming import spdy, wsstream
from kubeling.kubelet.streaming.spdyconn import SpdyConnection, SpdyStream, StreamClosed

log = logging.getLogger(__name__)

STREAM_CREATION_TIMEOUT = 30.0   # upstream's streamCreationTimeout
# SPDY subprotocols for exec/attach (X-Stream-Protocol-Version), newest first.
SPDY_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")

TRUE = {"1", "t", "T", "true", "TRUE", "True"}


def parse_bool(value: str | None) -> bool:
    """Go's strconv.ParseBool truthy spellings; anything else is false."""
    return value in TRUE


@dataclass
class Options:
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False
    command: list[str] = field(default_factory=list)

    @classmethod
    def from_query(cls, query) -> Options:
        """Upstream's NewOptions: stderr is dropped with a tty (the terminal merges it)."""
        opts = cls(parse_bool(query.get("input") or query.get("stdin")),
                   parse_bool(query.get("output") or query.get("stdout")),
                   parse_bool(query.get("error") or query.get("stderr")),
                   parse_bool(query.get("tty")), list(query.getall("command", [])))
        if opts.tty and opts.stderr:
            opts.stderr = False
        return opts

    def check(self) -> str | None:
        if not (self.stdin or self.stdout or self.stderr):
            return "you must specify at least 1 of stdin, stdout, stderr"
        return None


def success_status() -> dict:
    return {"metadata": {}, "status": "Success"}


def exit_status(code: int, command: list[str]) -> dict:
    why = f"command '{' '.join(command)}' exited with {code}" if command else f"exit code {code}"
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: {why}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def internal_status(message: str) -> dict:
    return {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {message}",
            "reason": "InternalError", "details": {"causes": [{"message": message}]}, "code": 500}


class CommandIO:
    """What a transport gives the runner. ``read_stdin`` returns b"" at EOF, ``next_resize``
    None when no more come; ``closed`` is set when the client went away."""

    closed: asyncio.Event

    async def read_stdin(self) -> bytes: ...

    async def write_stdout(self, data: bytes) -> None: ...

    async def write_stderr(self, data: bytes) -> None: ...

    async def next_resize(self) -> tuple[int, int] | None: ...

    async def finish(self, status: dict) -> None:
        """Report ``status`` and close the transport."""

    async def close(self) -> None:
        """Close the transport without a report (the client is gone)."""


# -- the runner ----------------------------------------------------------------------------------

async def _copy_out(reader, write: Callable[[bytes], Awaitable[None]]) -> None:
    while True:
        chunk = await reader.read(32 * 1024)
        if not chunk:
            return
        await write(chunk)


async def _copy_in(io: CommandIO, writer) -> None:
    try:
        while True:
            data = await io.read_stdin()
            if not data:
                break
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()


async def _resizes(io: CommandIO, session) -> None:
    while (size := await io.next_resize()) is not None:
        with contextlib.suppress(Exception):
            await session.resize(*size)


async def run(io: CommandIO, opts: Options, start: Callable[[], Awaitable], *, attach: bool = False) -> None:
    """Run one exec/attach session to its end; never raises for client or process outcomes."""
    try:
        session = await start()
    except Exception as e:  # noqa: BLE001 - any runtime failure is reported to the client
        await io.finish(internal_status(str(e) or type(e).__name__))
        return
    helpers: list[asyncio.Task] = []
    outputs: list[asyncio.Task] = []
    try:
        if opts.stdin and session.stdin is not None:
            helpers.append(asyncio.create_task(_copy_in(io, session.stdin)))
        if opts.tty:
            helpers.append(asyncio.create_task(_resizes(io, session)))
        if opts.stdout and session.stdout is not None:
            outputs.append(asyncio.create_task(_copy_out(session.stdout, io.write_stdout)))
        if opts.stderr and session.stderr is not None:
            outputs.append(asyncio.create_task(_copy_out(session.stderr, io.write_stderr)))
        waiter = asyncio.create_task(session.wait())
        gone = asyncio.create_task(io.closed.wait())
        helpers.append(gone)
        await asyncio.wait([waiter, gone], return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():   # the client went away: end the session, report nothing
            waiter.cancel()
            await io.close()
            return
        code = waiter.result()
        # The process ended; its pipes reach EOF once every holder closed them.
        pending = set(outputs)
        while pending and not gone.done():
            _, pending = await asyncio.wait(pending | {gone}, return_when=asyncio.FIRST_COMPLETED)
            pending.discard(gone)
        status = success_status() if attach or code == 0 else exit_status(code, opts.command)
        await io.finish(status)
    except (StreamClosed, ConnectionError):
        pass
    finally:
        for t in helpers + outputs:
            t.cancel()
        with contextlib.suppress(Exception):
            await session.close()


# -- WebSocket transport -------------------------------------------------------------------------

class WebSocketIO(CommandIO):
    def __init__(self, conn: wsstream.ChannelConn, opts: Options) -> None:
        self.conn, self.opts = conn, opts
        self.closed = asyncio.Event()
        self._stdin: asyncio.Queue[bytes] = asyncio.Queue()
        self._resize: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._receive())

    async def start(self) -> None:
        # Upstream writes an empty message on the lowest writable channel so that the client
        # knows the streams are ready.
        first = wsstream.STDOUT if self.opts.stdout else wsstream.STDERR if self.opts.stderr else wsstream.ERROR
        await self.conn.send(first, b"")

    async def _receive(self) -> None:
        try:
            while (got := await self.conn.receive()) is not None:
                channel, data = got
                if channel == wsstream.STDIN:
                    self._stdin.put_nowait(data if data is not None else b"")
                elif channel == wsstream.RESIZE and data:
                    size = _parse_resize(data)
                    if size:
                        self._resize.put_nowait(size)
        finally:
            self._stdin.put_nowait(b"")
            self._resize.put_nowait(None)
            self.closed.set()

    async def read_stdin(self) -> bytes:
        data = await self._stdin.get()
        if not data:
            self._stdin.put_nowait(b"")   # EOF stays EOF
        return data

    async def write_stdout(self, data: bytes) -> None:
        await self.conn.send(wsstream.STDOUT, data)

    async def write_stderr(self, data: bytes) -> None:
        await self.conn.send(wsstream.STDERR, data)

    async def next_resize(self) -> tuple[int, int] | None:
        size = await self._resize.get()
        if size is None:
            self._resize.put_nowait(None)
        return size

    async def finish(self, status: dict) -> None:
        try:
            if self.conn.version >= 4:
                await self.conn.send(wsstream.ERROR, json.dumps(status, separators=(",", ":")).encode())
            elif status.get("status") != "Success":
                await self.conn.send(wsstream.ERROR, status.get("message", "").encode())
        except (ConnectionError, RuntimeError):
            pass
        await self.close()

    async def close(self) -> None:
        await self.conn.close()
        self._reader.cancel()


def _parse_resize(data: bytes) -> tuple[int, int] | None:
    try:
        size = json.loads(data)
        return int(size.get("Width", 0)), int(size.get("Height", 0))
    except (ValueError, TypeError, AttributeError):
        return None


# -- SPDY transport ------------------------------------------------------------------------------

class SpdyIO(CommandIO):
    """Streams named by their ``streamType`` header: error, stdin, stdout, stderr, resize."""

    def __init__(self, conn: SpdyConnection, protocol: str, opts: Options) -> None:
        self.conn, self.protocol, self.opts = conn, protocol, opts
        self.version = wsstream.version_of(protocol)
        self.streams: dict[str, SpdyStream] = {}
        self.closed = asyncio.Event()
        self._resize_buf = b""

    def expected(self) -> set[str]:
        want = {"error"}
        for name, on in (("stdin", self.opts.stdin), ("stdout", self.opts.stdout), ("stderr", self.opts.stderr)):
            if on:
                want.add(name)
        if self.opts.tty and self.version >= 3:
            want.add("resize")
        return want

    async def collect(self, timeout: float = STREAM_CREATION_TIMEOUT) -> bool:
        """Accept the client's streams until every expected one is open (False on timeout)."""
        want = self.expected()

        async def gather() -> bool:
            while not want <= self.streams.keys():
                stream = await self.conn.accept()
                if stream is None:
                    return False
                self.streams[stream.header("streamtype")] = stream
            return True

        try:
            return await asyncio.wait_for(gather(), timeout)
        except asyncio.TimeoutError:
            return False

    def watch_connection(self, serve_task: asyncio.Task) -> None:
        serve_task.add_done_callback(lambda _t: self.closed.set())

    async def read_stdin(self) -> bytes:
        stream = self.streams.get("stdin")
        return await stream.read() if stream else b""

    async def write_stdout(self, data: bytes) -> None:
        await self.streams["stdout"].write(data)

    async def write_stderr(self, data: bytes) -> None:
        await self.streams["stderr"].write(data)

    async def next_resize(self) -> tuple[int, int] | None:
        stream = self.streams.get("resize")
        if stream is None:
            return None
        while b"\n" not in self._resize_buf:   # client-go writes one JSON object per line
            data = await stream.read()
            if not data:
                return None
            self._resize_buf += data
        line, self._resize_buf = self._resize_buf.split(b"\n", 1)
        return _parse_resize(line) or await self.next_resize()

    async def finish(self, status: dict) -> None:
        error = self.streams.get("error")
        try:
            if error is not None:
                if self.version >= 4:
                    await error.write(json.dumps(status, separators=(",", ":")).encode())
                elif status.get("status") != "Success":
                    await error.write(status.get("message", "").encode())
            for stream in self.streams.values():
                await stream.close()
        except StreamClosed:
            pass
        await self.close()

    async def close(self) -> None:
        await self.conn.close(spdy.GOAWAY_OK)
