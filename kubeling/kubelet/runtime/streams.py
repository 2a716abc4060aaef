"""Streaming sessions of the runc runtime: ``exec`` (a ``runc exec`` child of the agent) and
``attach`` (a client of the container's shim socket), both as `runtime.StreamSession`.

exec with a tty: the agent opens a pty pair and runs ``runc exec --tty`` in the foreground on
its slave; runc puts the container's own pty in between and copies, and on SIGWINCH copies
the slave's size to it. So ``resize`` is TIOCSWINSZ on our master plus a SIGWINCH to runc, and
the exit code is runc's, which is the process's. (A detached ``runc exec -d`` would leave the
process to be reaped by whoever adopts it, and the agent is no subreaper.)

attach: the shim's frame protocol (see `shim`); ``stdin`` is an ordinary StreamWriter over a
pipe whose other end this module frames onto the socket, so callers see the same types for
exec and attach.

Contracts: ``close()`` is idempotent and never kills an attached container (only the exec'd
process); ``wait()`` may be called several times.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import termios
from pathlib import Path

FRAME = struct.Struct(">BI")
STDIN, STDOUT, STDERR, EXIT, RESIZE, STDIN_CLOSE = 0, 1, 2, 3, 4, 5


async def _pipe_writer(fd: int) -> asyncio.StreamWriter:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.streams.FlowControlMixin(loop=loop), os.fdopen(fd, "wb", buffering=0))
    return asyncio.StreamWriter(transport, protocol, None, loop)


def _pump_fd(fd: int, reader: asyncio.StreamReader) -> None:
    """Feed ``reader`` from a non-blocking fd (a pty master: EIO means the other side closed)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)

    def ready() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EIO:
                reader.set_exception(e)
            data = b""
        if data:
            reader.feed_data(data)
            return
        loop.remove_reader(fd)
        reader.feed_eof()

    loop.add_reader(fd, ready)


class ExecSession:
    """A ``runc exec`` process. ``pid_file`` names the exec'd process, which close() kills."""

    def __init__(self, proc: asyncio.subprocess.Process, pid_file: str, master: int = -1) -> None:
        self.proc = proc
        self.pid_file = pid_file
        self.master = master
        self.stdin = proc.stdin
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self._code: int | None = None

    @classmethod
    async def start(cls, argv: list[str], pid_file: str, *, tty: bool, stdin: bool) -> ExecSession:
        if not tty:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True)
            return cls(proc, pid_file)
        master, slave = os.openpty()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        finally:
            os.close(slave)
        session = cls(proc, pid_file, master)
        session.stdout = asyncio.StreamReader()
        session.stderr = None
        _pump_fd(master, session.stdout)
        session.stdin = await _pipe_writer(os.dup(master)) if stdin else None
        return session

    async def resize(self, width: int, height: int) -> None:
        if self.master < 0:
            return
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGWINCH)

    async def wait(self) -> int:
        if self._code is None:
            code = await self.proc.wait()
            self._code = 128 - code if code < 0 else code
        return self._code

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(Path(self.pid_file).read_text().strip()), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.wait()
        if self.stdin is not None:
            self.stdin.close()
        if self.master >= 0:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.master)
                os.close(self.master)
            self.master = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.pid_file)


class AttachSession:
    """A connection to a container's shim: output frames in, stdin and resize frames out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 tty: bool) -> None:
        self._reader = reader
        self._writer = writer
        self.stdout = asyncio.StreamReader()
        self.stderr = None if tty else asyncio.StreamReader()
        self.stdin: asyncio.StreamWriter | None = None
        self._exit = asyncio.get_running_loop().create_future()
        self._tasks = [asyncio.create_task(self._read_frames())]

    @classmethod
    async def connect(cls, socket_dir: str, *, tty: bool, stdin: bool) -> AttachSession:
        # Through /proc/self/fd: the socket's absolute path may be longer than sun_path allows.
        dir_fd = os.open(socket_dir, os.O_PATH | os.O_DIRECTORY)
        try:
            reader, writer = await asyncio.open_unix_connection(f"/proc/self/fd/{dir_fd}/attach.sock")
        finally:
            os.close(dir_fd)
        session = cls(reader, writer, tty=tty)
        if stdin:
            r, w = os.pipe()
            session.stdin = await _pipe_writer(w)
            session._tasks.append(asyncio.create_task(session._forward_stdin(r)))
        return session

    async def _read_frames(self) -> None:
        code = -1
        try:
            while True:
                kind, size = FRAME.unpack(await self._reader.readexactly(FRAME.size))
                payload = await self._reader.readexactly(size)
                if kind == STDOUT:
                    self.stdout.feed_data(payload)
                elif kind == STDERR and self.stderr is not None:
                    self.stderr.feed_data(payload)
                elif kind == EXIT:
                    code = int(payload)
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.stdout.feed_eof()
            if self.stderr is not None:
                self.stderr.feed_eof()
            if not self._exit.done():
                self._exit.set_result(code)

    async def _forward_stdin(self, fd: int) -> None:
        reader = asyncio.StreamReader()
        _pump_fd(fd, reader)
        try:
            while data := await reader.read(65536):
                self._writer.write(FRAME.pack(STDIN, len(data)) + data)
                await self._writer.drain()
            self._writer.write(FRAME.pack(STDIN_CLOSE, 0))
            await self._writer.drain()
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(ValueError):
                asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    async def resize(self, width: int, height: int) -> None:
        payload = struct.pack(">HH", width, height)
        self._writer.write(FRAME.pack(RESIZE, len(payload)) + payload)
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    async def wait(self) -> int:
        """The container's exit code (-1 if the connection closed before it exited)."""
        return await asyncio.shield(self._exit)

    async def close(self) -> None:
        if self.stdin is not None and not self.stdin.is_closing():
            self.stdin.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
