"""A pod's shared namespaces held by bind mounts, not by a process (the pause-less sandbox).

A sandbox's network, IPC and UTS namespaces are made once, in a thread of the agent that
``unshare``s them, sets the pod's hostname and sysctls in them, brings the loopback up, and
bind-mounts its ``/proc/<tid>/ns/<type>`` files onto paths; then the thread ends and only the
mounts keep the namespaces alive, exactly as ``ip netns add`` keeps a network namespace. The app
containers join them by path in their runc config. So a sandbox costs no runc container, no
shim and no ``ip`` subprocess; a pause process is still run where the pod needs an init to
share (``shareProcessNamespace``), and it joins these same namespaces.

Paths:
- network: ``/run/netns/kl-<first 16 chars of the sandbox id>`` (host-global, as ``ip netns``
  names it, so ``ip netns list`` shows it and two agents never collide); ``/run/netns`` is made a
  shared mount first, as ``ip netns add`` does, so the namespace is seen from other mount
  namespaces made later;
- ipc and uts: ``<sandbox dir>/ns/ipc`` and ``ns/uts``, under the agent's root (removing the
  sandbox dir unmounts them; ``kubeling node cleanup`` finds them as mounts under the root).

hostNetwork pods get only an IPC namespace: their containers share it, and use the node's
network and UTS namespaces.

Contracts: `create` and `release` block (thread start, mount(2)); call them through
``asyncio.to_thread``. `create` undoes what it did when it fails. `release` is idempotent.
`held(path)` is True while ``path`` is a bind mount of a namespace (it is no longer after a
reboot, or once released): a sandbox whose namespaces are not held is not ready.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

NETNS_DIR = Path("/run/netns")
NETNS_PREFIX = "kl-"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_netns_dir_lock = threading.Lock()
_netns_dir_ready = False
# every namespace file, wherever it is bind-mounted, lives on the one nsfs superblock
NSFS_DEV = os.stat("/proc/self/ns/net").st_dev


def netns_name(sandbox_id: str) -> str:
    return NETNS_PREFIX + sandbox_id[:16]


@dataclass
class PodNamespaces:
    net: str = ""      # "" for hostNetwork
    ipc: str = ""
    uts: str = ""      # "" for hostNetwork


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, flags: int) -> None:
    _check(_libc.mount(source.encode(), target.encode(), b"none", flags, None),
           f"mount {source} on {target}")


def _is_mount_point(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def _shared_netns_dir() -> None:
    """``/run/netns`` as ``ip netns add`` leaves it: a mount point of its own, shared."""
    global _netns_dir_ready
    with _netns_dir_lock:
        if _netns_dir_ready:
            return
        NETNS_DIR.mkdir(parents=True, exist_ok=True)
        if not _is_mount_point(NETNS_DIR):
            _mount(str(NETNS_DIR), str(NETNS_DIR), MS_BIND | MS_REC)
            _mount("", str(NETNS_DIR), MS_SHARED | MS_REC)
        _netns_dir_ready = True


def held(path: str) -> bool:
    """True if ``path`` is (a bind mount of) a namespace file."""
    try:
        return bool(path) and os.stat(path).st_dev == NSFS_DEV
    except OSError:
        return False


def _loopback_up() -> None:
    # a socket belongs to the network namespace of the thread that made it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


# The namespaced sysctls (as runc allows them): anything else is the node's, never the pod's.
IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                         "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})
UTS_SYSCTLS = frozenset({"kernel.hostname", "kernel.domainname"})


def sysctl_path(key: str, host_network: bool) -> str:
    """The /proc/sys file of a pod sysctl, or ValueError when it is not the pod's to set.

    Names may be dotted (``net.ipv4.conf.eth0/100.rp_filter``: a slash inside a component) or
    slashed (``net/ipv4/conf/eth0.100/rp_filter``), as Kubernetes allows both.
    """
    dotted = key
    first = next((c for c in key if c in "./"), ".")
    if first == "/":
        dotted = key.translate(str.maketrans("./", "/."))
    parts = dotted.split(".")
    files = [p.replace("/", ".") for p in parts]   # a slash in a dotted component is a dot
    if any(f in ("", ".", "..") for f in files):
        raise ValueError(f"sysctl {key!r}: not a sysctl name")
    if dotted in IPC_SYSCTLS or dotted.startswith("fs.mqueue."):
        pass
    elif dotted.startswith("net.") or dotted in UTS_SYSCTLS:
        if host_network:
            raise ValueError(f"sysctl {key!r} is not allowed in the host's network or UTS namespace")
    else:
        raise ValueError(f"sysctl {key!r} is not in a separate kernel namespace")
    return "/proc/sys/" + "/".join(files)


def _write_sysctls(sysctls: dict[str, str], host_network: bool) -> None:
    # /proc/sys/net, the IPC and the UTS keys resolve to the namespaces of the writing thread
    for key, value in sysctls.items():
        path = sysctl_path(key, host_network)
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError as e:
            raise OSError(e.errno, f"sysctl {key}={value}: {e.strerror}") from None


def _in_new_namespaces(flags: int, hostname: str, sysctls: dict[str, str],
                       targets: dict[str, str]) -> None:
    """Body of the short-lived thread: unshare, configure, bind-mount the namespace files."""
    _check(_libc.unshare(flags), "unshare")
    if flags & CLONE_NEWUTS:
        name = hostname.encode()
        _check(_libc.sethostname(name, len(name)), f"sethostname {hostname}")
    if flags & CLONE_NEWNET:
        _loopback_up()
    _write_sysctls(sysctls, not flags & CLONE_NEWNET)
    tid = threading.get_native_id()
    for kind, target in targets.items():
        # O_EXCL: a file already there is another sandbox's (or a leftover): never reuse it
        os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
        _mount(f"/proc/self/task/{tid}/ns/{kind}", target, MS_BIND)


def create(sandbox_id: str, sandbox_dir: Path, *, host_network: bool, hostname: str,
           sysctls: dict[str, str] | None = None) -> PodNamespaces:
    """Make the pod's namespaces (see the module docstring); blocking."""
    for key in sysctls or {}:
        sysctl_path(key, host_network)   # refused before anything is made
    ns_dir = sandbox_dir / "ns"
    ns_dir.mkdir(parents=True, exist_ok=True)
    made = PodNamespaces(ipc=str(ns_dir / "ipc"))
    flags = CLONE_NEWIPC
    targets = {"ipc": made.ipc}
    if not host_network:
        _shared_netns_dir()
        made.net, made.uts = str(NETNS_DIR / netns_name(sandbox_id)), str(ns_dir / "uts")
        flags |= CLONE_NEWNET | CLONE_NEWUTS
        targets.update(net=made.net, uts=made.uts)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            _in_new_namespaces(flags, hostname, dict(sysctls or {}), targets)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            failure.append(e)

    # A thread of its own (never a pool thread, which would stay in the pod's namespaces and
    # run the next task there); the namespaces outlive it through the bind mounts.
    thread = threading.Thread(target=work, name=f"podns-{sandbox_id[:12]}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        release(made)
        raise failure[0]
    return made


def _release_file(path: str) -> None:
    if not path:
        return
    while _libc.umount2(path.encode(), MNT_DETACH) == 0:
        pass   # stacked mounts: peel every one
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOENT):
        raise OSError(err, f"umount {path}: {os.strerror(err)}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def release(ns: PodNamespaces) -> None:
    """Unmount and remove the namespace files (the namespaces end with their last user)."""
    for path in (ns.net, ns.ipc, ns.uts):
        _release_file(path)
