"""Ports for the servers that tests start: `free_port()`.

Why not ``bind(("127.0.0.1", 0))``: the kernel picks such a port from its ephemeral range
(``net.ipv4.ip_local_port_range``), the same range every outgoing connection takes its source
port from. Between the moment a test learns a port that way and the moment its server binds it,
any client on the machine (etcd's own gRPC gateway, a kubectl, another test's server) may take
it as a source port, and the server fails with ``EADDRINUSE``. `free_port` picks outside that
range instead, never hands one port out twice in a process, and checks that nothing listens on
it yet.
"""

from __future__ import annotations

import functools
import random
import socket
import threading

# below the usual ephemeral range (32768-60999), above the fixed ports a cluster uses
# (10250 kubelet, 10256-10259 proxy/controller manager/scheduler, 6443/6444) and below
# NodePorts (30000-32767)
LOW, HIGH = 15000, 29999

_given: set[int] = set()
_lock = threading.Lock()
_random = random.Random()   # not the global one: a test that seeds it must not repeat our picks


@functools.cache
def ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing is bound to, outside the ephemeral range, and not
    returned before by this process."""
    lo, hi = ephemeral_range()
    with _lock:
        for _ in range(2000):
            port = _random.randint(LOW, HIGH)
            if port in _given or lo <= port <= hi:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free port in {LOW}-{HIGH} outside the ephemeral range {lo}-{hi}")
