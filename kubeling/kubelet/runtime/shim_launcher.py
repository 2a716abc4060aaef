"""`ShimLauncher`: starts a container's shim by asking this runtime's shim zygote to fork one.

The zygote (``python -I -S shim.py --zygote <fd> <padding>``, see shim.py) is started on the
first request and again whenever it is found gone; the request is one ``SOCK_SEQPACKET``
message (the shim.json path) carrying the write end of a pipe, and the answer is what the shim
writes on that pipe before closing it: one JSON line, as a shim started directly writes on its
stdout.

Contracts: `launch` is a coroutine and returns the answer's bytes (empty if the shim died
without one; a request the zygote died with before forking is sent again, to a new zygote); `close` ends the zygote (closing our end of the socket makes it exit) and reaps
it. Shims outlive both. A zygote is never shared between runtime objects.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
from pathlib import Path


class ShimLauncher:
    def __init__(self, python: str, shim: Path, root: Path) -> None:
        self.python = python
        self.shim = shim
        # room for a shim's "<root>/containers/<64 hex>/shim.json" in place of "--zygote <fd> _"
        self.padding = "_" * (len(str(root)) + 128)
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()   # starting and sending may run on several threads

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # A new session, as the shims have: a signal to the agent's group is not theirs.
            self._proc = subprocess.Popen(
                [self.python, "-I", "-S", str(self.shim), "--zygote", str(theirs.fileno()),
                 self.padding],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),), start_new_session=True)
        finally:
            theirs.close()
        self._sock = ours
        return ours

    def _send(self, cfg_path: str, answer_w: int) -> None:
        """Blocking (a thread): hand one request to the zygote, starting it if needed."""
        with self._lock:
            for attempt in (1, 2):
                if self._sock is None or self._proc is None or self._proc.poll() is not None:
                    self._stop_locked()
                    self._start()
                try:
                    socket.send_fds(self._sock, [cfg_path.encode()], [answer_w])
                    return
                except OSError:
                    self._stop_locked()   # it died under us: a new one, once
                    if attempt == 2:
                        raise

    async def launch(self, cfg_path: str) -> bytes:
        answer = await self._launch_once(cfg_path)
        if not answer and await asyncio.to_thread(self._died):
            # the zygote died with our request unread (no shim was forked): once more, anew
            answer = await self._launch_once(cfg_path)
        return answer

    def _died(self) -> bool:
        with self._lock:
            proc = self._proc
        if proc is None:
            return True
        try:
            proc.wait(0.5)    # its end of the pipe closes as it dies, a moment before it is reaped
            return True
        except subprocess.TimeoutExpired:
            return False

    async def _launch_once(self, cfg_path: str) -> bytes:
        r, w = os.pipe()
        pipe = os.fdopen(r, "rb", buffering=0)
        try:
            await asyncio.to_thread(self._send, cfg_path, w)
        except BaseException:
            pipe.close()
            raise
        finally:
            os.close(w)
        # read on the loop, not in a pool thread: 100 shims answering at once would hold every
        # worker thread of the default pool while runc runs
        reader = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            return await reader.read()
        finally:
            transport.close()

    def _stop_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._stop_locked()
