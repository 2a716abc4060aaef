"""A pod sandbox's files: the managed ``/etc/hosts``, ``resolv.conf`` and the hostname file
(its namespaces are `namespaces`'s).

- ``etc-hosts`` is the kubelet's managed hosts file (``pods/<uid>/etc-hosts``): the header
  comment, the localhost lines, the pod IP with its hostname, then the hostAliases block.
  hostNetwork pods get the node's /etc/hosts under a "(host network)" header, as upstream.
- ``resolv.conf`` comes from the `DNSConfig` the kubelet computed; hostNetwork pods with no
  DNS config of their own get the node's file.

Contracts: the file writers block briefly (small files) and may run on the loop.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from kubeling.kubelet.runtime import DNSConfig, SandboxConfig
from kubeling.kubelet.runtime.records import write_atomic

CLONE_NEWNET = 0x40000000

HOSTS_HEADER = "# Kubernetes-managed hosts file.\n"
HOSTS_HEADER_HOST_NETWORK = "# Kubernetes-managed hosts file (host network).\n"
LOCALHOST_LINES = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def hosts_file(config: SandboxConfig, ip: str, node_hosts: str = "/etc/hosts") -> str:
    if config.host_network:
        try:
            body = Path(node_hosts).read_text()
        except OSError:
            body = ""
        text = HOSTS_HEADER_HOST_NETWORK + body
    else:
        text = HOSTS_HEADER + LOCALHOST_LINES
        if ip:
            text += f"{ip}\t{config.hostname or config.name}\n"
    if config.host_aliases:
        text += "\n# Entries added by HostAliases.\n"
        for alias_ip, names in config.host_aliases:
            text += alias_ip + "\t" + "\t".join(names) + "\n"
    return text


def resolv_conf(config: SandboxConfig, node_resolv: str = "/etc/resolv.conf") -> str:
    dns: DNSConfig = config.dns
    if not (dns.servers or dns.searches or dns.options):
        try:
            return Path(node_resolv).read_text()
        except OSError:
            return ""
    lines = [f"nameserver {s}" for s in dns.servers]
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def write_pod_files(pod_dir: Path, sandbox_dir: Path, config: SandboxConfig, ip: str) -> None:
    pod_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(pod_dir / "etc-hosts", hosts_file(config, ip).encode())
    write_atomic(pod_dir / "resolv.conf", resolv_conf(config).encode())
    write_atomic(sandbox_dir / "hostname", (pod_hostname(config) + "\n").encode())


def pod_hostname(config: SandboxConfig) -> str:
    """The pod's hostname: spec.hostname or its name; the node's with hostNetwork."""
    return os.uname().nodename if config.host_network else (config.hostname or config.name)


def connect_in_netns(netns_path: str, port: int, timeout: float = 5.0):
    """A TCP socket connected to 127.0.0.1:``port`` inside ``netns_path``.

    Blocking: runs the setns in a thread of its own (never a pool thread, which would stay
    in the pod's namespace afterwards); a socket keeps the namespace it was created in.
    """
    import socket

    result: dict = {}

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(netns_path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns_path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            sock.setblocking(False)
            result["sock"] = sock
        except OSError as e:
            result["error"] = e

    thread = threading.Thread(target=work, name=f"portforward-{port}", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["sock"]
