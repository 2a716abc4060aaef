"""The per-container supervisor (containerd's shim, reduced): ``python -I -S shim.py <shim.json>``.

Why a separate process: a container must outlive the agent (the agent restarts and re-adopts
it), its output must keep reaching the CRI log file meanwhile, and someone must reap its init
and keep the exit status. So each container (and each sandbox's pause) gets one shim that:

1. forks away from the agent (the agent's child exits at once, so the agent never waits on a
   long-lived process) into its own session, with **no** parent-death signal, and becomes a
   child subreaper, so the container's init is re-parented to it when runc exits;
2. runs ``runc run --detach`` (``runc create`` if the config says ``"start": false``: the
   agent then runs ``runc start``) with pipes as the container's stdio (or a console socket for
   a tty) and reports ``{"pid": N}`` or ``{"error": msg}`` as one JSON line on its stdout,
   which it then closes: that line is the agent's ``start_container`` handshake; one runc
   process per container rather than two (create, start) is a good part of a pod's start-up CPU;
3. until the init exits: copies stdout/stderr into the CRI log (`logs.CRILogWriter`, rotating)
   and to attached clients, and serves ``attach.sock`` in the container dir;
4. reaps the init, reads the memory cgroup's OOM kill count, and writes ``status.json``
   atomically: ``{"exit_code", "signal", "finished_at", "reason", "oom_killed"}``; then exits.

The attach protocol on ``attach.sock``: frames of ``>BI`` (kind, length) then the payload.
Shim to client: 1 stdout, 2 stderr, 3 exit (payload: the exit code in ASCII, last frame).
Client to shim: 0 stdin data, 4 resize (``>HH`` columns, rows), 5 stdin closed.

Started one of two ways: ``python -I -S shim.py <shim.json>`` (the answer line on its stdout),
or forked by a **zygote**, ``python -I -S shim.py --zygote <fd> <runc root>``: one process per
agent runtime that has imported everything a shim needs and, for each request on the
``SOCK_SEQPACKET`` socket ``fd`` (a message: the shim.json path, with the write end of the
answer pipe attached as SCM_RIGHTS), forks a shim that answers on that pipe. A fork of a small
idle process costs ~1 ms where a fresh interpreter with its imports costs ~30 ms of CPU per
container; with 100 pods starting at once that was a fifth of the node's work. The zygote
exits when the socket's other end closes (its agent is gone); its shims do not (they are in
sessions of their own and were re-parented). The zygote's last argument is room (padding) for
its shims' command lines: each rewrites its own to ``python -I -S shim.py <shim.json>``, as if
started directly, so ``ps`` and every leak check tell them apart; the zygote shows as
``python -I -S shim.py --zygote``.

Contracts: standard library only (``-I -S`` keeps start-up near 10 ms, and the agent's venv may
be gone while containers run); it never raises past ``main`` without writing a status; it touches
only the files named in its config.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import importlib.util
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import termios
import time

PR_SET_CHILD_SUBREAPER = 36
FRAME = struct.Struct(">BI")
STDIN, STDOUT, STDERR, EXIT, RESIZE, STDIN_CLOSE = 0, 1, 2, 3, 4, 5
DRAIN_AFTER_EXIT = 2.0   # seconds to keep reading output after init exits (shared pid ns)


def _load_logs():
    """``kubeling/kubelet/logs.py`` by path: the package itself is not importable under -I -S."""
    if "kubeling_cri_logs" in sys.modules:   # loaded by the zygote before it forked
        return sys.modules["kubeling_cri_logs"]
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "logs.py")
    spec = importlib.util.spec_from_file_location("kubeling_cri_logs", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def oom_kills(memory_cgroup: str) -> int:
    """The cgroup v1 ``oom_kill`` counter (kernel >= 4.13), falling back to under_oom."""
    try:
        with open(os.path.join(memory_cgroup, "memory.oom_control")) as f:
            fields = dict(line.split() for line in f if line.strip())
    except OSError:
        return 0
    return int(fields.get("oom_kill", fields.get("under_oom", 0)))


def recv_fd(sock: socket.socket) -> int:
    _, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("i")))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            return struct.unpack("i", data[:4])[0]
    raise RuntimeError("console socket: no file descriptor received")


def runc_error(cfg: dict, fallback: str) -> str:
    """The last error runc logged (its ``--log`` is JSON lines), else ``fallback``."""
    try:
        with open(cfg["runc_log"], "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return fallback
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("error", "fatal"):
            return entry.get("msg", fallback)
    return fallback


class Shim:
    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.tty = bool(cfg.get("tty"))
        self.sel = selectors.DefaultSelector()
        self.outputs: dict[int, str] = {}        # fd -> stream
        self.stdin_fd = -1                      # the container's stdin (pipe or pty master)
        self.stdin_pending = b""
        self.clients: dict[socket.socket, bytes] = {}   # client -> unparsed input
        self.pid = 0
        self.status: int | None = None
        self.logs = None
        if cfg.get("log_path"):
            logs = _load_logs()
            self.logs = logs.CRILogWriter(cfg["log_path"], cfg.get("log_max_size", logs.DEFAULT_MAX_SIZE),
                                          cfg.get("log_max_files", logs.DEFAULT_MAX_FILES))

    # -- create ----------------------------------------------------------------------------
    def create(self) -> None:
        cfg = self.cfg
        verb = ["run", "--detach"] if cfg.get("start", True) else ["create"]
        self.verb = verb[0]
        cmd = [cfg["runc"], "--root", cfg["runc_root"], "--log", cfg["runc_log"],
               "--log-format", "json", *verb, "--bundle", cfg["bundle"],
               "--pid-file", cfg["pid_file"]]
        devnull = os.open(os.devnull, os.O_RDWR)
        if self.tty:
            self._create_tty(cmd, devnull)
        else:
            self._create_pipes(cmd, devnull)
        os.close(devnull)
        with open(cfg["pid_file"]) as f:
            self.pid = int(f.read().strip())

    def _create_pipes(self, cmd: list[str], devnull: int) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r = devnull
        if self.cfg.get("stdin"):
            in_r, self.stdin_fd = os.pipe()
        proc = subprocess.Popen(cmd + [self.cfg["id"]], stdin=in_r, stdout=out_w, stderr=err_w,
                                close_fds=True)
        rc = proc.wait()
        for fd in (out_w, err_w) + ((in_r,) if in_r != devnull else ()):
            os.close(fd)
        self.outputs = {out_r: "stdout", err_r: "stderr"}
        if rc != 0:
            raise RuntimeError(runc_error(self.cfg, f"runc {self.verb} exited with {rc}"))

    def _create_tty(self, cmd: list[str], devnull: int) -> None:
        import tempfile  # only here: every import is on each container's start-up path

        # A short path: unix socket paths are limited to 108 bytes, agent roots are not.
        tmp = tempfile.mkdtemp(prefix="kl-console-")
        path = os.path.join(tmp, "c.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(1)
            listener.settimeout(0.05)
            proc = subprocess.Popen(cmd + ["--console-socket", path, self.cfg["id"]],
                                    stdin=devnull, stdout=devnull, stderr=devnull, close_fds=True)
            master = -1
            while master < 0:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    if proc.poll() is not None:
                        break
                    continue
                with conn:
                    conn.settimeout(10)
                    master = recv_fd(conn)
            rc = proc.wait()
            if rc != 0 or master < 0:
                raise RuntimeError(runc_error(self.cfg, f"runc {self.verb} exited with {rc}"))
        finally:
            listener.close()
            os.unlink(path) if os.path.exists(path) else None
            os.rmdir(tmp)
        self.outputs = {master: "stdout"}
        self.stdin_fd = master if self.cfg.get("stdin") else -1

    # -- serve -----------------------------------------------------------------------------
    def listen(self) -> socket.socket:
        """Bind ``attach.sock``: before the answer, since the container already runs then and
        the agent may attach as soon as it has the answer."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Relative bind after chdir: the container dir's absolute path may exceed 108 bytes.
        sock_name = os.path.basename(self.cfg["socket_path"])
        if os.path.exists(sock_name):
            os.unlink(sock_name)
        listener.bind(sock_name)
        listener.listen(16)
        listener.setblocking(False)
        return listener

    def serve(self, wakeup_r: int, listener: socket.socket) -> None:
        for fd in self.outputs:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, "output")
        if self.stdin_fd >= 0 and not self.tty:
            os.set_blocking(self.stdin_fd, False)
        self.sel.register(listener, selectors.EVENT_READ, "listen")
        self.sel.register(wakeup_r, selectors.EVENT_READ, "signal")
        self.reap()
        deadline = None
        while self.outputs or self.status is None:
            if self.status is not None and deadline is None:
                deadline = time.monotonic() + DRAIN_AFTER_EXIT
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if deadline is not None and timeout == 0:
                break
            for key, events in self.sel.select(timeout):
                self.dispatch(key, events, wakeup_r)
        self.sel.unregister(listener)
        listener.close()
        os.unlink(os.path.basename(self.cfg["socket_path"]))

    def dispatch(self, key, events, wakeup_r: int) -> None:
        kind = key.data
        if kind == "signal":
            try:
                while os.read(wakeup_r, 512):
                    pass
            except BlockingIOError:
                pass
            self.reap()
        elif kind == "output":
            self.read_output(key.fd)
        elif kind == "listen":
            try:
                conn, _ = key.fileobj.accept()
            except BlockingIOError:
                return
            conn.setblocking(True)
            conn.settimeout(1.0)     # a client that stops reading is dropped, not waited for
            self.clients[conn] = b""
            self.sel.register(conn, selectors.EVENT_READ, "client")
        elif kind == "client":
            self.read_client(key.fileobj)
        elif kind == "stdin":
            self.flush_stdin()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.status = status

    def read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as e:          # EIO: the pty's last slave closed
            if e.errno != errno.EIO:
                raise
            data = b""
        stream = self.outputs[fd]
        if not data:
            self.sel.unregister(fd)
            del self.outputs[fd]
            if fd != self.stdin_fd:
                os.close(fd)
            return
        if self.logs:
            self.logs.write(stream, data)
        self.broadcast(STDOUT if stream == "stdout" else STDERR, data)

    def broadcast(self, kind: int, data: bytes) -> None:
        frame = FRAME.pack(kind, len(data)) + data
        for conn in list(self.clients):
            try:
                conn.sendall(frame)
            except OSError:
                self.drop_client(conn)

    def read_client(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.drop_client(conn)
            return
        buf = self.clients[conn] + data
        while len(buf) >= FRAME.size:
            kind, size = FRAME.unpack_from(buf)
            if len(buf) < FRAME.size + size:
                break
            payload = buf[FRAME.size:FRAME.size + size]
            buf = buf[FRAME.size + size:]
            self.client_frame(kind, payload)
        if conn in self.clients:
            self.clients[conn] = buf

    def client_frame(self, kind: int, payload: bytes) -> None:
        if kind == STDIN and self.stdin_fd >= 0:
            self.stdin_pending += payload
            self.flush_stdin()
        elif kind == RESIZE and self.tty and len(payload) == 4:
            cols, rows = struct.unpack(">HH", payload)
            master = next(iter(self.outputs), -1)
            if master >= 0:
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        elif kind == STDIN_CLOSE and self.cfg.get("stdin_once"):
            self.close_stdin()

    def flush_stdin(self) -> None:
        if self.stdin_fd < 0:
            return
        try:
            while self.stdin_pending:
                n = os.write(self.stdin_fd, self.stdin_pending)
                self.stdin_pending = self.stdin_pending[n:]
        except BlockingIOError:
            pass
        except OSError:               # the container closed its stdin
            self.stdin_pending = b""
        registered = self.stdin_fd in self.sel.get_map()
        if self.tty:
            return  # the master is registered for reading already; writes to it rarely block
        if self.stdin_pending and not registered:
            self.sel.register(self.stdin_fd, selectors.EVENT_WRITE, "stdin")
        elif not self.stdin_pending and registered:
            self.sel.unregister(self.stdin_fd)

    def close_stdin(self) -> None:
        if self.stdin_fd < 0:
            return
        if self.tty:
            os.write(self.stdin_fd, b"\x04")   # EOF for a terminal is ^D, not a close
        else:
            if self.stdin_fd in self.sel.get_map():
                self.sel.unregister(self.stdin_fd)
            os.close(self.stdin_fd)
        self.stdin_fd = -1

    def drop_client(self, conn: socket.socket) -> None:
        if conn in self.clients:
            del self.clients[conn]
            self.sel.unregister(conn)
            conn.close()
            if self.cfg.get("stdin_once"):
                self.close_stdin()

    # -- finish ----------------------------------------------------------------------------
    def finish(self) -> dict:
        if self.logs:
            self.logs.close()
        status = self.status if self.status is not None else 0
        code = os.waitstatus_to_exitcode(status)
        sig = -code if code < 0 else 0
        exit_code = 128 + sig if sig else code
        oom = oom_kills(self.cfg.get("memory_cgroup", "")) > 0 if self.cfg.get("memory_cgroup") else False
        reason = "OOMKilled" if oom else ("Completed" if exit_code == 0 else "Error")
        record = {"exit_code": exit_code, "signal": sig, "finished_at": time.time(),
                  "reason": reason, "oom_killed": oom}
        write_atomic(self.cfg["status_path"], json.dumps(record).encode())
        self.broadcast(EXIT, str(exit_code).encode())
        for conn in list(self.clients):
            conn.close()
        return record


def set_cmdline(words: list[str]) -> bool:
    """Rewrite this process's ``/proc/self/cmdline`` in place (within the original argument
    area, whose bounds are fields 48 and 49 of /proc/self/stat); False if it does not fit."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])
    data = b"\0".join(w.encode() for w in words) + b"\0"
    if not start or len(data) > end - start:
        return False
    ctypes.memmove(start, data.ljust(end - start, b"\0"), end - start)
    return True


def zygote(sock_fd: int) -> int:
    """Fork a shim for each request until the agent's end of ``sock_fd`` closes."""
    conn = socket.socket(fileno=sock_fd)
    os.chdir("/")
    head = sys.orig_argv[:sys.orig_argv.index("--zygote")]   # python -I -S .../shim.py
    set_cmdline([*head, "--zygote"])
    _load_logs()
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        except InterruptedError:
            continue
        if not msg:
            return 0
        if not fds:
            continue
        answer = fds[0]
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                conn.close()
                os.dup2(answer, 1)
                os.close(answer)
                set_cmdline([*head, msg.decode()])
                code = main(["shim.py", msg.decode()])
            finally:
                os._exit(code)
        os.close(answer)
        os.waitpid(pid, 0)   # main() forks the shim away and this child exits at once


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "--zygote":   # --zygote <fd> <room for shims' argv>
        return zygote(int(argv[2]))
    with open(argv[1]) as f:
        cfg = json.load(f)
    # Detach from the agent: its child exits now, the grandchild is the shim.
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    os.chdir(os.path.dirname(cfg["socket_path"]))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_r, False)
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)   # only the container's end ends the shim
    shim_log = os.open(cfg["shim_log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(shim_log, 2)
    try:
        shim = Shim(cfg)
        shim.create()
        listener = shim.listen()
    except Exception as e:  # noqa: BLE001 - every failure must reach the agent as text
        os.write(1, json.dumps({"error": str(e)}).encode() + b"\n")
        return 1
    os.write(1, json.dumps({"pid": shim.pid, "shim_pid": os.getpid()}).encode() + b"\n")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)       # closes the handshake pipe: the agent sees EOF
    try:
        shim.serve(wakeup_r, listener)
    finally:
        shim.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
