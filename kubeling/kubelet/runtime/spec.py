"""OCI runtime ``config.json`` for the pause process and for containers (runtime-spec 1.0).

Pure functions from the CRI-shaped configs to a dict; the only file they read is the image's
``/etc/passwd`` and ``/etc/group`` (to resolve a user name), through the mounted rootfs.

Defaults are containerd's CRI plugin's: its capability set, its masked and read-only /proc
paths, ``/dev`` as a tmpfs with runc's default device nodes, ``/sys`` read-only, the sandbox's
``/dev/shm``, ``/etc/hosts``, ``/etc/resolv.conf`` and ``/etc/hostname`` bind-mounted from the
pod's files. A privileged container gets every capability, no masked paths, a read-write
``/sys`` and the host's devices.

Namespaces: the pod's net, ipc and uts namespaces are bind-mounted files (`namespaces`; only
ipc for hostNetwork) that a container joins by path; it has its own pid namespace (with
shareProcessNamespace the pause's, which only then runs) and mount namespace. Sandboxes made
before the pause-less layout have their ipc/uts namespaces owned by the pause, joined through
``/proc/<pause pid>/ns``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kubeling.kubelet.runtime import ContainerConfig, SandboxConfig

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# containerd's defaultUnixCaps: what an unprivileged container may do as root.
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
# Linux capability numbers 0..40 (capability.h order).
ALL_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON",
    "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]
DEFAULT_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
    "/sys/devices/virtual/powercap", "/proc/scsi",
]
DEFAULT_READONLY_PATHS = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]
PAUSE_ARGS = ["/bin/sh", "-c",
              # pid 1 of the pod: exits on TERM/INT (a trap is a handler, which pid 1 needs to
              # be signalled at all) and, waiting in a loop, reaps shareProcessNamespace orphans.
              "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]


def supported_caps() -> list[str]:
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = len(ALL_CAPS) - 1
    return ALL_CAPS[: last + 1]


def has_capability(name: str, status: str = "/proc/self/status") -> bool:
    """Whether this process holds capability ``name`` (e.g. "CAP_SYS_RESOURCE") effectively."""
    try:
        with open(status) as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return True
    return bool(eff >> ALL_CAPS.index(_cap_name(name)) & 1)


def restrict_oom_score_adj(preferred: int, path: str = "/proc/self/oom_score_adj") -> int:
    """containerd's ``restrict_oom_score_adj``: never below the runtime's own score.

    Lowering a score needs CAP_SYS_RESOURCE; without it (a container, a user namespace) the
    kernel refuses, runc's nsexec fails and the container could never start. So a Guaranteed
    container (-997) gets the runtime's own score there instead, as containerd does.
    """
    try:
        with open(path) as f:
            current = int(f.read().strip())
    except (OSError, ValueError):
        return preferred
    return max(preferred, current)


def _cap_name(name: str) -> str:
    name = name.upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def capabilities(add: list[str], drop: list[str], privileged: bool) -> list[str]:
    """The capability set after add/drop ("ALL" allowed in either), as containerd computes it:
    drop ALL empties the set before adds; add ALL gives every supported capability."""
    if privileged:
        return supported_caps()
    adds = {_cap_name(c) for c in add}
    drops = {_cap_name(c) for c in drop}
    caps = [] if "CAP_ALL" in drops else list(DEFAULT_CAPS)
    if "CAP_ALL" in adds:
        caps = supported_caps()
    caps += [c for c in sorted(adds) if c != "CAP_ALL" and c not in caps]
    return [c for c in caps if c not in drops]


def _read_db(rootfs: Path, name: str) -> list[list[str]]:
    try:
        text = (rootfs / "etc" / name).read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(rootfs: Path, image_user: str, run_as_user: int | None,
                 run_as_group: int | None, supplemental: list[int]) -> dict:
    """The OCI ``process.user``: runAsUser/Group win over the image's ``User``; a name is
    looked up in the image's /etc/passwd (and its groups in /etc/group), as containerd does."""
    passwd = _read_db(rootfs, "passwd")
    user_part, _, group_part = (image_user or "").partition(":")
    uid, gid, username = 0, None, ""
    if run_as_user is not None:
        uid = run_as_user
        user_part = ""
        group_part = ""
    elif user_part:
        if user_part.isdigit():
            uid = int(user_part)
        else:
            entry = next((e for e in passwd if e[0] == user_part and len(e) > 3), None)
            if entry is None:
                raise ValueError(f'unable to find user {user_part}: no matching entries in passwd file')
            uid, gid, username = int(entry[2]), int(entry[3]), entry[0]
    if not username:
        entry = next((e for e in passwd if len(e) > 3 and e[2] == str(uid)), None)
        if entry:
            username = entry[0]
            gid = int(entry[3]) if gid is None else gid
    groups = _read_db(rootfs, "group")
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            entry = next((e for e in groups if e[0] == group_part and len(e) > 2), None)
            if entry is None:
                raise ValueError(f'unable to find group {group_part}: no matching entries in group file')
            gid = int(entry[2])
    if run_as_group is not None:
        gid = run_as_group
    extra = list(supplemental)
    if username:
        extra += [int(e[2]) for e in groups
                  if len(e) > 3 and username in e[3].split(",") and e[2].isdigit()]
    user = {"uid": uid, "gid": gid or 0}
    extra = sorted(set(extra) - {user["gid"]})
    if extra:
        user["additionalGids"] = extra
    return user


def _base_mounts(privileged: bool) -> list[dict]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "rw" if privileged else "ro"]},
    ]


def _bind(dest: str, source: str, readonly: bool, propagation: str = "rprivate") -> dict:
    options = ["rbind", propagation]
    options.append("ro" if readonly else "rw")
    return {"destination": dest, "type": "bind", "source": source, "options": options}


def host_devices() -> list[dict]:
    """Every device node of the host's /dev, for privileged containers."""
    found = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if d not in ("pts", "shm", "mqueue", "fd")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                found.append({"path": path, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                              "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                              "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                              "gid": st.st_gid})
    return found


def _resources(res, memsw: bool) -> dict:
    out: dict = {"devices": [{"allow": False, "access": "rwm"}]}
    cpu = {}
    if res.cpu_shares:
        cpu["shares"] = res.cpu_shares
    if res.cpu_quota:
        cpu["quota"] = res.cpu_quota
    if res.cpu_period:
        cpu["period"] = res.cpu_period
    if cpu:
        out["cpu"] = cpu
    if res.memory_limit_bytes:
        out["memory"] = {"limit": res.memory_limit_bytes}
        if memsw:   # no swap beyond the limit, as containerd sets it
            out["memory"]["swap"] = res.memory_limit_bytes
    if res.pids_limit:
        out["pids"] = {"limit": res.pids_limit}
    return out


def pause_spec(config: SandboxConfig, rootfs: Path, cgroups_path: str, netns_path: str,
               hostname: str, *, ipc_path: str = "", uts_path: str = "") -> dict:
    """The pause process: the init of the pod's shared pid namespace.

    With ``ipc_path`` (the pause-less sandbox made the pod's namespaces already, see
    `namespaces`) it joins ipc, uts and net by path and owns only the pid namespace; without,
    it owns ipc and uts too, and the hostname and sysctls are set through it.
    """
    namespaces = [{"type": "pid"}, {"type": "mount"}]
    joined = bool(ipc_path)
    if joined:
        namespaces.append({"type": "ipc", "path": ipc_path})
        if not config.host_network:
            namespaces += [{"type": "uts", "path": uts_path}, {"type": "network", "path": netns_path}]
    else:
        namespaces.append({"type": "ipc"})
        if not config.host_network:
            namespaces += [{"type": "uts"}, {"type": "network", "path": netns_path}]
    spec = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": PAUSE_ARGS,
            "env": [f"PATH={DEFAULT_PATH}"], "cwd": "/",
            "capabilities": {k: [] for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "mounts": _base_mounts(False),
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": cgroups_path,
            "resources": {"devices": [{"allow": False, "access": "rwm"}], "cpu": {"shares": 2}},
            "sysctl": {} if joined else dict(config.sysctls),
            "maskedPaths": DEFAULT_MASKED_PATHS,
            "readonlyPaths": DEFAULT_READONLY_PATHS,
        },
    }
    if not config.host_network and not joined:
        spec["hostname"] = hostname
    return spec


def container_spec(config: ContainerConfig, sandbox: SandboxConfig, *, rootfs: Path,
                   cgroups_path: str, pause_pid: int, netns_path: str, sandbox_dir: Path,
                   pod_dir: Path, memsw: bool, restrict_oom: bool = False, ipc_path: str = "",
                   uts_path: str = "") -> dict:
    """A container's config; it joins the pod's ipc/uts namespaces by ``ipc_path``/``uts_path``
    when given (the pause-less sandbox), else the pause's (``pause_pid``), whose pid namespace
    it shares with shareProcessNamespace."""
    image = config.image.config or {}
    sec = config.security
    args = config.command or list(image.get("Entrypoint") or []) + list(image.get("Cmd") or [])
    if not args:
        raise ValueError("no command specified")
    env: dict[str, str] = {}
    for item in image.get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOSTNAME"] = (sandbox_dir / "hostname").read_text().strip() \
        if (sandbox_dir / "hostname").exists() else sandbox.hostname
    for k, v in config.env:
        env[k] = v
    if config.tty:
        env.setdefault("TERM", "xterm")
    caps = capabilities(sec.capabilities_add, sec.capabilities_drop, sec.privileged)
    user = resolve_user(rootfs, image.get("User", ""), sec.run_as_user, sec.run_as_group,
                        sec.supplemental_groups)
    process = {
        "terminal": config.tty,
        "user": user,
        "args": args,
        "env": [f"{k}={v}" for k, v in env.items()],
        "cwd": config.working_dir or image.get("WorkingDir") or "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": bool(sec.no_new_privs) and not sec.privileged,
        "rlimits": [],
    }
    oom_adj = config.resources.oom_score_adj
    if restrict_oom:
        oom_adj = restrict_oom_score_adj(oom_adj)
    if oom_adj:
        process["oomScoreAdj"] = oom_adj
    mounts = _base_mounts(sec.privileged)
    mounts.append(_bind("/dev/shm", str(sandbox_dir / "shm"), False))
    mounts.append(_bind("/etc/hosts", str(pod_dir / "etc-hosts"), False))
    mounts.append(_bind("/etc/resolv.conf", str(pod_dir / "resolv.conf"), False))
    mounts.append(_bind("/etc/hostname", str(sandbox_dir / "hostname"), False))
    propagations = set()
    for m in config.mounts:
        prop = {"rshared": "rshared", "rslave": "rslave"}.get(m.propagation, "rprivate")
        propagations.add(prop)
        mounts.append(_bind(m.container_path, m.host_path, m.readonly, prop))
    pid_ns = {"type": "pid"}
    if sandbox.share_process_namespace:
        pid_ns["path"] = f"/proc/{pause_pid}/ns/pid"
    namespaces = [pid_ns, {"type": "mount"},
                  {"type": "ipc", "path": ipc_path or f"/proc/{pause_pid}/ns/ipc"}]
    if not sandbox.host_network:
        namespaces += [{"type": "uts", "path": uts_path or f"/proc/{pause_pid}/ns/uts"},
                       {"type": "network", "path": netns_path}]
    linux: dict = {
        "namespaces": namespaces,
        "cgroupsPath": cgroups_path,
        "resources": _resources(config.resources, memsw),
    }
    if "rshared" in propagations:
        linux["rootfsPropagation"] = "rshared"
    elif "rslave" in propagations:
        linux["rootfsPropagation"] = "rslave"
    if sec.privileged:
        linux["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
        linux["devices"] = host_devices()
    else:
        linux["maskedPaths"] = DEFAULT_MASKED_PATHS if sec.masked_paths is None else sec.masked_paths
        linux["readonlyPaths"] = (DEFAULT_READONLY_PATHS if sec.readonly_paths is None
                                  else sec.readonly_paths)
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": str(rootfs), "readonly": sec.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
        "annotations": dict(config.annotations),
    }
