"""The outcome of one probe run, and the small rules every runner shares.

A runner returns an `Outcome` for anything the target did (refused, timed out, answered 500,
exited 1): those are *results*, never exceptions. It raises `ProbeError` only when the probe
could not be attempted at all (a named port the container does not declare, a probe with no
handler); upstream calls those "errored" and reports them differently.

Messages are worded as upstream's Go code words them, because they reach users verbatim in
``Unhealthy`` events (``kubectl describe``): hence `go_duration` and `dial_error`.
"""

from __future__ import annotations

import enum
import errno
import os
import re
import socket
from dataclasses import dataclass

# Upstream reads at most this much of a probe's output (exec) or response body (httpGet).
MAX_OUTPUT = 10 * 1024

# The Kubernetes version the user agents claim (``kube-probe/1.33``).
KUBE_MAJOR_MINOR = "1.33"

_ATOI = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts


class Result(str, enum.Enum):
    """A single run's verdict (upstream's ``probe.Result``)."""

    SUCCESS = "success"
    WARNING = "warning"     # counts as success, but is reported (an unfollowed redirect)
    FAILURE = "failure"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Outcome:
    result: Result
    output: str = ""


class ProbeError(Exception):
    """The probe could not be run at all; the message is upstream's error text."""


def resolve_port(port: int | str, container: dict) -> int:
    """A probe or hook port: a number, a named container port, or a number written as a string."""
    if isinstance(port, bool) or not isinstance(port, (int, str)):
        raise ProbeError(f"intOrString had no kind: {port!r}")
    if isinstance(port, str):
        named = [p.get("containerPort") for p in container.get("ports") or [] if p.get("name") == port]
        if named:
            number = int(named[0])
        elif _ATOI.fullmatch(port):
            # Upstream's last resort: a number that was written as a string.
            number = int(port)
        else:
            raise ProbeError(f'strconv.Atoi: parsing "{port}": invalid syntax')
    else:
        number = port
    if 0 < number < 65536:
        return number
    raise ProbeError(f"invalid port number: {number}")


def go_duration(seconds: float) -> str:
    """Format a duration as Go's ``time.Duration.String`` does: ``1s``, ``1m30s``, ``500ms``."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms >= 1 else f"{seconds * 1e6:g}µs"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


def join_host_port(host: str, port: int) -> str:
    """Go's ``net.JoinHostPort``: IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def errno_text(err: OSError) -> str:
    """Go's ``syscall.Errno`` wording: the C library's text with a lower-case first letter."""
    if isinstance(err, (TimeoutError, socket.timeout)) and not err.errno:
        return "i/o timeout"
    if err.errno:
        text = os.strerror(err.errno)
        return text[:1].lower() + text[1:]
    return str(err) or type(err).__name__


def dial_error(addr: str, err: BaseException, host: str = "") -> str:
    """The message of a failed ``net.Dial("tcp", addr)`` (``dial tcp 10.0.0.5:80: connect: ...``)."""
    if isinstance(err, socket.gaierror):
        return f"dial tcp: lookup {host}: no such host"
    if isinstance(err, TimeoutError) and not getattr(err, "errno", None):
        return f"dial tcp {addr}: i/o timeout"
    if isinstance(err, OSError) and err.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH,
                                                   errno.ENETUNREACH, errno.ECONNRESET,
                                                   errno.ETIMEDOUT):
        return f"dial tcp {addr}: connect: {errno_text(err)}"
    if isinstance(err, OSError):
        return f"dial tcp {addr}: {errno_text(err)}"
    return f"dial tcp {addr}: {err}"
