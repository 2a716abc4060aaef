"""The nginx process: one master under our supervision (``daemon off``), its config on disk.

Contracts:

- ``NginxProcess(prefix, binary)``: nginx runs with ``-p <prefix> -c <prefix>/nginx.conf -e
  stderr``; its pid file, temp directories and certificates all live under ``prefix``. Its
  stderr lines are logged as ``nginx: ...``.
- ``test(text)`` writes the text to a scratch file and runs ``nginx -t`` on it: (ok, message).
- ``apply(text)`` replaces nginx.conf atomically (write + rename) only after ``test`` passed,
  then starts nginx if it is not running or sends the master SIGHUP: nginx starts new workers
  with the new configuration while the old ones finish the requests they hold (graceful, no
  connection dropped). A config that fails the test never replaces the good one on disk.
- ``ensure_running()`` starts nginx with the config on disk; if it exits at once (a port taken,
  say) it returns False with nginx's own reason, and the caller retries later. The master gets
  SIGTERM if this process dies (PR_SET_PDEATHSIG), so a killed controller leaves no nginx.
- ``stop()`` asks the master to quit gracefully (SIGQUIT), then SIGTERM, then SIGKILL, and
  waits; afterwards no nginx process of ours is left and its listening sockets are closed.
- A stale master from a previous controller (pid file names a live nginx of this prefix) is
  stopped before the first start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from pathlib import Path

from kubeling.cli._run import _die_with_parent

log = logging.getLogger(__name__)

NGINX = "/usr/sbin/nginx"


class NginxProcess:
    def __init__(self, prefix: Path | str, binary: str = NGINX) -> None:
        self.prefix = Path(prefix)
        self.binary = binary
        self.conf = self.prefix / "nginx.conf"
        self.pid_file = self.prefix / "nginx.pid"
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task | None = None
        self._recent: list[str] = []
        self.reloads = 0
        for sub in ("tmp", "certs", "logs"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.prefix / "certs", 0o700)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running else None

    def _argv(self, conf: Path, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.prefix) + "/", "-c", str(conf), "-e", "stderr", *extra]

    async def test(self, text: str) -> tuple[bool, str]:
        scratch = self.prefix / "nginx.conf.test"
        scratch.write_text(text)
        proc = await asyncio.create_subprocess_exec(*self._argv(scratch, "-t", "-q"), stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        try:
            scratch.unlink()
        except OSError:
            pass
        return proc.returncode == 0, error_message(out.decode(errors="replace").replace(str(scratch), "nginx.conf"))

    async def apply(self, text: str) -> tuple[bool, str]:
        ok, message = await self.test(text)
        if not ok:
            return False, message
        tmp = self.conf.with_name(".nginx.conf.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.conf)
        if self.running:
            os.kill(self.proc.pid, signal.SIGHUP)
            self.reloads += 1
        return True, ""

    def _stop_stale(self) -> None:
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            return
        if "nginx" in cmdline and str(self.prefix) in cmdline:
            log.warning("stopping a stale nginx master (pid %d) left by a previous controller", pid)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    async def ensure_running(self) -> tuple[bool, str]:
        if self.running:
            return True, ""
        if self.proc is None:
            self._stop_stale()
        self._recent = []
        self.proc = await asyncio.create_subprocess_exec(*self._argv(self.conf), stdin=asyncio.subprocess.DEVNULL,
                                                         stdout=asyncio.subprocess.DEVNULL,
                                                         stderr=asyncio.subprocess.PIPE, preexec_fn=_die_with_parent)
        self._stderr_task = asyncio.create_task(self._pump(self.proc))
        # nginx binds its listeners before it writes the pid file; a taken port makes it retry
        # for ~2.5 s and exit.
        for _ in range(100):
            if self.proc.returncode is not None:
                break
            if self._pid_file_names(self.proc.pid):
                return True, ""
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), 0.05)
            except asyncio.TimeoutError:
                pass
        if self.proc.returncode is None:
            return True, ""
        await asyncio.sleep(0)   # let the pump read the last lines
        if self._stderr_task:
            await asyncio.wait([self._stderr_task], timeout=1)
        why = next((line for line in self._recent if "[emerg]" in line), "")
        return False, error_message(why) if why else f"nginx exited with code {self.proc.returncode}"

    def _pid_file_names(self, pid: int) -> bool:
        try:
            return int(self.pid_file.read_text().strip()) == pid
        except (OSError, ValueError):
            return False

    async def _pump(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while True:
            line = await proc.stderr.readline()
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            self._recent = (self._recent + [text])[-20:]
            log.warning("nginx: %s", text) if ("[emerg]" in text or "[alert]" in text or "[crit]" in text
                                                or "[error]" in text) else log.info("nginx: %s", text)

    async def wait_exited(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def stop(self, grace: float = 5.0) -> None:
        proc = self.proc
        if proc is None:
            return
        workers = children(proc.pid)
        for sig, wait in ((signal.SIGQUIT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.returncode is not None:
                break
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                await asyncio.wait_for(proc.wait(), wait)
            except asyncio.TimeoutError:
                continue
        for pid in workers:
            # a worker of a master that had to be killed could outlive it: make sure none does
            if Path(f"/proc/{pid}").exists() and _is_nginx(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._stderr_task is not None:
            await asyncio.wait([self._stderr_task], timeout=2)
        try:
            self.pid_file.unlink()
        except OSError:
            pass


_LOG_PREFIX = re.compile(r"^(nginx: )?\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#\d+: ")


def error_message(output: str) -> str:
    """nginx's error lines without time and pid (so that one fault reads the same every time)."""
    lines = [_LOG_PREFIX.sub(r"\2 ", line) for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("[emerg]", "[alert]", "[crit]", "[error]"))]
    return "; ".join(errors or lines)


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (nginx's workers, for its master)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                out.append(int(entry))
    return out


def _is_nginx(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "nginx"
    except OSError:
        return False
