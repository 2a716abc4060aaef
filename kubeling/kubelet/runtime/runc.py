"""`RuncRuntime`: the `RuntimeService` over runc, one shim process per container (forked by
this object's shim zygote, see `shim_launcher`).

    sandbox:    namespaces (net, ipc, uts: bind-mounted files, see `namespaces`)
                -> network.setup (pod IP) -> etc-hosts, resolv.conf, hostname, shm
                [-> with shareProcessNamespace only: pause bundle -> shim (runc run --detach)]
    container:  create_container  = overlay rootfs + config.json + record (CREATED)
                start_container   = shim (runc run --detach) (RUNNING)
                the shim writes status.json when the process ends (EXITED)

As containerd's CRI plugin, the runc container is made at start: a bad command fails
``start_container`` with `RunContainerError` (the kubelet's RunContainerError / StartError),
and the container is left EXITED with exit code 128 and reason "StartError".

The network plugin (``network=``) is anything with::

    async def setup(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> str
        # wire the pod's netns, return its IP
    async def teardown(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> None
        # undo setup; idempotent

Neither is called for hostNetwork sandboxes (the pod has the node's network).

A sandbox is READY while it is not stopped and its namespace files are still held (and its
pause, if it has one, lives): after a reboot the mounts are gone and the kubelet makes a new one.

Concurrency: operations on one sandbox or container are serialised by a per-id lock; others
run in parallel. All state is on disk (`records`), so any number of `RuncRuntime` objects over
one root see the same world, and a new one after an agent restart re-adopts everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Protocol

import orjson

from kubeling.kubelet.runtime import (
    ContainerConfig,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    CreateContainerError,
    NotFound,
    PodSandboxStatus,
    RunContainerError,
    SandboxConfig,
    SandboxError,
    SandboxState,
    StreamSession,
    cgroups,
    namespaces,
    rootfs,
    spec,
)
from kubeling.kubelet.runtime import sandbox as podfiles
from kubeling.kubelet.runtime.records import (
    ContainerRecord,
    Layout,
    SandboxRecord,
    alive,
    process_start_time,
    write_atomic,
)
from kubeling.kubelet.runtime.shim_launcher import ShimLauncher
from kubeling.kubelet.runtime.streams import AttachSession, ExecSession

SHIM = Path(__file__).with_name("shim.py")
DEFAULT_LOG_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_LOG_MAX_FILES = 5


class NetworkPlugin(Protocol):
    async def setup(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> str: ...

    async def teardown(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> None: ...


def _sandbox_config(data: dict) -> SandboxConfig:
    from kubeling.kubelet.runtime import DNSConfig, PortMapping

    data = dict(data)
    data["dns"] = DNSConfig(**data.get("dns", {}))
    data["port_mappings"] = [PortMapping(**p) for p in data.get("port_mappings", [])]
    data["host_aliases"] = [(ip, list(names)) for ip, names in data.get("host_aliases", [])]
    return SandboxConfig(**data)


def _signal_name(value) -> str:
    """An image's StopSignal ("SIGQUIT", "QUIT", "3") as runc kill takes it."""
    text = str(value or "SIGTERM").upper()
    if text.isdigit():
        return signal.Signals(int(text)).name
    return text if text.startswith("SIG") else "SIG" + text


class RuncRuntime:
    name = "runc"

    def __init__(self, root: Path, *, cgroup_root: str = "kubeling", network: NetworkPlugin | None = None,
                 runc: str = "runc", pause_binary: str = "/usr/bin/busybox",
                 log_max_size: int = DEFAULT_LOG_MAX_SIZE, log_max_files: int = DEFAULT_LOG_MAX_FILES,
                 python: str = sys.executable) -> None:
        self.layout = Layout(Path(root))
        self.layout.make()
        self.cgroup_root = cgroup_root.strip("/")
        self.network = network
        self.runc = runc
        self.pause_binary = pause_binary
        self.log_max_size = log_max_size
        self.log_max_files = log_max_files
        self.python = python
        self._shims = ShimLauncher(python, SHIM, self.layout.root.resolve())
        self._locks: dict[str, asyncio.Lock] = {}
        self._sandbox_of: dict[str, str] = {}     # container id -> its sandbox id
        self._sandbox_cache: dict[str, SandboxRecord] = {}   # id -> record, see _save_sandbox
        self._memsw = cgroups.controller_dir("memory", "/").joinpath("memory.memsw.limit_in_bytes").exists()
        # without CAP_SYS_RESOURCE no container may score below us (see spec.restrict_oom_score_adj)
        self._restrict_oom = not spec.has_capability("CAP_SYS_RESOURCE")

    # -- helpers ---------------------------------------------------------------------------
    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _runc(self, *args: str, check: bool = True) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            self.runc, "--root", str(self.layout.runc_root), *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        text = out.decode(errors="replace").strip()
        if check and proc.returncode != 0:
            raise RuntimeError(text or f"runc {args[0]} exited with {proc.returncode}")
        return proc.returncode, text

    async def _start_shim(self, obj_id: str, obj_dir: Path, *, log_path: str, tty: bool,
                          stdin: bool, stdin_once: bool, cgroups_path: str) -> tuple[int, int]:
        """Run ``runc run --detach`` under a new shim; (container pid, shim pid)."""
        cfg = {
            "start": True,
            "id": obj_id, "runc": self.runc, "runc_root": str(self.layout.runc_root),
            "bundle": str(obj_dir), "log_path": log_path, "log_max_size": self.log_max_size,
            "log_max_files": self.log_max_files, "tty": tty, "stdin": stdin,
            "stdin_once": stdin_once, "status_path": str(obj_dir / "status.json"),
            "socket_path": str(obj_dir / "attach.sock"), "pid_file": str(obj_dir / "init.pid"),
            "runc_log": str(obj_dir / "runc.log"), "shim_log": str(obj_dir / "shim.log"),
            "memory_cgroup": str(cgroups.controller_dir("memory", cgroups_path)),
        }
        await asyncio.to_thread(write_atomic, obj_dir / "shim.json", orjson.dumps(cfg))
        out = await self._shims.launch(str(obj_dir / "shim.json"))
        try:
            answer = orjson.loads(out.splitlines()[0]) if out.strip() else {}
        except orjson.JSONDecodeError:
            answer = {"error": out.decode(errors="replace")}
        if "pid" not in answer:
            raise RuntimeError(answer.get("error") or "the shim exited without an answer")
        return answer["pid"], answer.get("shim_pid", 0)

    def _sandbox(self, sandbox_id: str) -> SandboxRecord:
        rec = self.layout.load_sandbox(sandbox_id)
        if rec is None:
            raise NotFound(f"pod sandbox {sandbox_id} not found")
        return rec

    def _container(self, container_id: str) -> ContainerRecord:
        rec = self.layout.load_container(container_id)
        if rec is None:
            raise NotFound(f"container {container_id} not found")
        return rec

    async def _wait_exit(self, obj_dir: Path, pid: int, pid_start: int, timeout: float) -> bool:
        """Until the shim wrote the exit status (True) or ``timeout`` (False). A process that
        is gone with no shim left to report it counts as exited too."""
        deadline = time.monotonic() + timeout
        gone_since = None
        while True:
            if (obj_dir / "status.json").exists():
                return True
            if not alive(pid, pid_start):
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > 1.0:
                    return True   # the shim should have written by now: it is gone as well
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)

    # -- RuntimeService: sandboxes ---------------------------------------------------------
    async def version(self) -> dict:
        _, text = await self._runc("--version", check=False)
        first = text.splitlines()[0] if text else "runc version unknown"
        return {"version": "0.1.0", "runtime_name": "runc",
                "runtime_version": first.split()[-1], "runtime_api_version": "v1"}

    async def run_pod_sandbox(self, config: SandboxConfig) -> str:
        sandbox_id = secrets.token_hex(32)
        sdir = self.layout.sandbox_dir(sandbox_id)
        sdir.mkdir(parents=True)
        rec = SandboxRecord(id=sandbox_id, uid=config.uid, name=config.name,
                            namespace=config.namespace, attempt=config.attempt,
                            created_at=time.time(), config=orjson.loads(orjson.dumps(config)),
                            cgroup_parent=cgroups.join(self.cgroup_root, config.cgroup_parent))
        async with self._lock(sandbox_id):
            try:
                await self._save_sandbox(rec)   # first, so that a failure below is cleaned up
                ns = await asyncio.to_thread(
                    namespaces.create, sandbox_id, sdir, host_network=config.host_network,
                    hostname=podfiles.pod_hostname(config), sysctls=config.sysctls)
                rec.netns_path, rec.ipc_path, rec.uts_path = ns.net, ns.ipc, ns.uts
                await self._save_sandbox(rec)
                if not config.host_network and self.network is not None:
                    rec.ip = await self.network.setup(sandbox_id, rec.netns_path, config)
                    await self._save_sandbox(rec)
                await asyncio.to_thread(self._prepare_sandbox_files, rec, config)
                if config.share_process_namespace:
                    # a shared pid namespace needs an init: only then is there a pause process
                    cg = cgroups.join(rec.cgroup_parent, sandbox_id)
                    pid, _ = await self._start_shim(sandbox_id, sdir, log_path="", tty=False,
                                                    stdin=False, stdin_once=False, cgroups_path=cg)
                    rec.pid, rec.pid_start = pid, process_start_time(pid)
                    await self._save_sandbox(rec)
            except Exception as e:
                await self._remove_sandbox(rec)
                raise SandboxError(f"failed to create pod sandbox: {e}") from e
        return sandbox_id

    def _prepare_sandbox_files(self, rec: SandboxRecord, config: SandboxConfig) -> None:
        sdir = self.layout.sandbox_dir(rec.id)
        podfiles.write_pod_files(self.layout.pod_dir(rec.uid), sdir, config, rec.ip)
        rootfs.mount_shm(sdir / "shm")
        if not config.share_process_namespace:
            return
        pause = rootfs.ensure_pause_rootfs(self.layout.pause_rootfs, self.pause_binary)
        oci = spec.pause_spec(config, pause, cgroups.join(rec.cgroup_parent, rec.id),
                              rec.netns_path, podfiles.pod_hostname(config),
                              ipc_path=rec.ipc_path, uts_path=rec.uts_path)
        write_atomic(sdir / "config.json", orjson.dumps(oci))

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        rec = self.layout.load_sandbox(sandbox_id)
        if rec is None:
            return
        for c in await self.list_containers(sandbox_id):
            await self.stop_container(c.id, 0)
        async with self._lock(sandbox_id):
            await self._stop_sandbox(rec)

    async def _stop_sandbox(self, rec: SandboxRecord) -> None:
        sdir = self.layout.sandbox_dir(rec.id)
        if rec.pid and alive(rec.pid, rec.pid_start):
            await self._runc("kill", rec.id, "KILL", check=False)
            await self._wait_exit(sdir, rec.pid, rec.pid_start, 10)
        if not rec.stopped:
            if self.network is not None and rec.netns_path and rec.ip:
                await self.network.teardown(rec.id, rec.netns_path, _sandbox_config(rec.config))
            rec.stopped = True
            if sdir.exists():
                await self._save_sandbox(rec)

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        rec = self.layout.load_sandbox(sandbox_id)
        if rec is None:
            if self.layout.sandbox_dir(sandbox_id).exists():   # a broken record: still remove
                await asyncio.to_thread(rootfs.remove_tree, self.layout.sandbox_dir(sandbox_id))
            return
        for c in await self.list_containers(sandbox_id):
            await self.remove_container(c.id)
        async with self._lock(sandbox_id):
            await self._remove_sandbox(rec)
        self._locks.pop(sandbox_id, None)

    async def _remove_sandbox(self, rec: SandboxRecord) -> None:
        await self._stop_sandbox(rec)
        if rec.pid or (self.layout.sandbox_dir(rec.id) / "shim.json").exists():
            await self._runc("delete", "--force", rec.id, check=False)
        await asyncio.to_thread(namespaces.release, namespaces.PodNamespaces(
            net=rec.netns_path, ipc=rec.ipc_path, uts=rec.uts_path))
        others = [s for s in self.layout.sandbox_ids() if s != rec.id]
        sharing = [r for r in map(self.layout.load_sandbox, others) if r is not None]
        await asyncio.to_thread(self._remove_sandbox_files, rec, sharing)

    def _remove_sandbox_files(self, rec: SandboxRecord, others: list[SandboxRecord]) -> None:
        cgroups.remove(cgroups.join(rec.cgroup_parent, rec.id))
        if rec.cgroup_parent.strip("/") != self.cgroup_root and \
                not any(o.cgroup_parent == rec.cgroup_parent for o in others):
            cgroups.remove(rec.cgroup_parent)
        if not any(o.uid == rec.uid for o in others):
            pod_dir = self.layout.pod_dir(rec.uid)
            for name in ("etc-hosts", "resolv.conf"):
                with contextlib.suppress(FileNotFoundError):
                    (pod_dir / name).unlink()
            with contextlib.suppress(OSError):
                pod_dir.rmdir()
        rootfs.remove_tree(self.layout.sandbox_dir(rec.id))

    @staticmethod
    def _sandbox_ready(rec: SandboxRecord) -> bool:
        if rec.stopped or not (rec.pid or rec.ipc_path):
            return False   # stopped, or still being made
        if rec.pid and not alive(rec.pid, rec.pid_start):
            return False
        # a record from before the pause-less layout has no ipc_path: its pause holds all
        return not rec.ipc_path or (namespaces.held(rec.ipc_path) and
                                    (not rec.netns_path or namespaces.held(rec.netns_path)))

    def _sandbox_status(self, rec: SandboxRecord) -> PodSandboxStatus:
        ready = self._sandbox_ready(rec)
        return PodSandboxStatus(
            id=rec.id, uid=rec.uid, name=rec.name, namespace=rec.namespace, attempt=rec.attempt,
            state=SandboxState.READY if ready else SandboxState.NOTREADY,
            created_at=rec.created_at, ip=rec.ip, netns_path=rec.netns_path,
            labels=dict(rec.config.get("labels", {})),
            annotations=dict(rec.config.get("annotations", {})))

    async def pod_sandbox_status(self, sandbox_id: str) -> PodSandboxStatus:
        return self._sandbox_status(self._sandbox(sandbox_id))

    async def list_pod_sandboxes(self, uid: str | None = None) -> list[PodSandboxStatus]:
        ids = self.layout.sandbox_ids()
        for gone in set(self._sandbox_cache) - set(ids):
            del self._sandbox_cache[gone]
        out = []
        for sid in ids:
            rec = self._sandbox_cache.get(sid)
            if rec is None:
                rec = self.layout.load_sandbox(sid)
                if rec is None:
                    continue
                self._sandbox_cache[sid] = rec
            if uid is None or rec.uid == uid:
                out.append(self._sandbox_status(rec))
        return out

    async def _save_sandbox(self, rec: SandboxRecord) -> None:
        """Write a sandbox record, and keep it as the cached copy: this object is the only writer
        of its sandboxes' records, so the cache never goes stale (a new runtime object starts
        empty and reads them from disk)."""
        await asyncio.to_thread(self.layout.save_sandbox, rec)
        self._sandbox_cache[rec.id] = rec

    # -- RuntimeService: containers --------------------------------------------------------
    async def create_container(self, sandbox_id: str, config: ContainerConfig,
                               sandbox: SandboxConfig) -> str:
        srec = self._sandbox(sandbox_id)
        if not self._sandbox_ready(srec):
            raise CreateContainerError(f"pod sandbox {sandbox_id} is not ready")
        container_id = secrets.token_hex(32)
        cdir = self.layout.container_dir(container_id)
        cdir.mkdir(parents=True)
        image_cfg = config.image.config or {}
        rec = ContainerRecord(
            id=container_id, sandbox_id=sandbox_id, name=config.name, attempt=config.attempt,
            created_at=time.time(), image=config.image.id, image_ref=config.image_ref,
            log_path=config.log_path,
            cgroups_path=cgroups.join(srec.cgroup_parent, container_id),
            stop_signal=_signal_name(image_cfg.get("StopSignal")), tty=config.tty,
            stdin=config.stdin, shares_pid=sandbox.share_process_namespace,
            labels=dict(config.labels), annotations=dict(config.annotations))
        try:
            await asyncio.to_thread(self.layout.save_container, rec)
            await asyncio.to_thread(self._make_bundle, rec, srec, config, sandbox)
        except Exception as e:
            await asyncio.to_thread(rootfs.remove_tree, cdir)
            raise CreateContainerError(f"failed to create container {config.name}: {e}") from e
        return container_id

    def _make_bundle(self, rec: ContainerRecord, srec: SandboxRecord, config: ContainerConfig,
                     sandbox: SandboxConfig) -> None:
        cdir = self.layout.container_dir(rec.id)
        rootfs.mount_overlay(config.image.layers, cdir / "upper", cdir / "work", cdir / "rootfs")
        oci = spec.container_spec(
            config, sandbox, rootfs=cdir / "rootfs", cgroups_path=rec.cgroups_path,
            pause_pid=srec.pid, netns_path=srec.netns_path,
            sandbox_dir=self.layout.sandbox_dir(srec.id), pod_dir=self.layout.pod_dir(srec.uid),
            memsw=self._memsw, restrict_oom=self._restrict_oom, ipc_path=srec.ipc_path,
            uts_path=srec.uts_path)
        write_atomic(cdir / "config.json", orjson.dumps(oci))
        write_atomic(cdir / "stdin_once", b"1" if config.stdin_once else b"")

    async def start_container(self, container_id: str) -> None:
        async with self._lock(container_id):
            rec = self._container(container_id)
            cdir = self.layout.container_dir(container_id)
            if rec.started_at or rec.pid:
                raise RunContainerError(f"container {container_id} was already started")
            try:
                srec = self._sandbox(rec.sandbox_id)
                if not self._sandbox_ready(srec):
                    raise RuntimeError(f"pod sandbox {rec.sandbox_id} is not ready")
                stdin_once = (cdir / "stdin_once").read_bytes() == b"1"
                started = time.time()   # before: a quick process may finish before runc returns
                pid, shim = await self._start_shim(
                    container_id, cdir, log_path=rec.log_path, tty=rec.tty, stdin=rec.stdin,
                    stdin_once=stdin_once, cgroups_path=rec.cgroups_path)
                rec.pid, rec.pid_start = pid, process_start_time(pid)
                rec.shim_pid, rec.shim_start = shim, process_start_time(shim)
                rec.started_at = started
                await asyncio.to_thread(self.layout.save_container, rec)
            except Exception as e:
                message = str(e)
                await self._runc("delete", "--force", container_id, check=False)
                status = {"exit_code": 128, "signal": 0, "finished_at": time.time(),
                          "reason": "StartError", "message": message, "oom_killed": False}
                await asyncio.to_thread(write_atomic, cdir / "status.json", orjson.dumps(status))
                raise RunContainerError(message) from e

    async def stop_container(self, container_id: str, timeout: float) -> None:
        async with self._lock(container_id):
            rec = self.layout.load_container(container_id)
            if rec is None:
                return
            cdir = self.layout.container_dir(container_id)
            if not rec.pid or (cdir / "status.json").exists():
                return   # never started (stays CREATED, as containerd) or already exited
            if timeout > 0:
                await self._runc("kill", container_id, rec.stop_signal, check=False)
                if await self._wait_exit(cdir, rec.pid, rec.pid_start, timeout):
                    return
            # --all: with a shared pid namespace the init's children are not killed with it.
            await self._runc("kill", *(["--all"] if rec.shares_pid else []), container_id,
                             "KILL", check=False)
            await self._wait_exit(cdir, rec.pid, rec.pid_start, 10)

    async def remove_container(self, container_id: str) -> None:
        async with self._lock(container_id):
            cdir = self.layout.container_dir(container_id)
            if not cdir.exists():
                return
            rec = self.layout.load_container(container_id)
            await self._runc("delete", "--force", container_id, check=False)
            if rec is not None and rec.pid:
                await self._wait_exit(cdir, rec.pid, rec.pid_start, 5)
                await self._wait_shim_gone(cdir)
            await asyncio.to_thread(self._remove_container_files, rec, cdir)
        self._locks.pop(container_id, None)

    async def _wait_shim_gone(self, cdir: Path, timeout: float = 3.0) -> None:
        """The shim unlinks attach.sock as it ends: wait for that before removing its dir."""
        deadline = time.monotonic() + timeout
        while (cdir / "attach.sock").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def _remove_container_files(self, rec: ContainerRecord | None, cdir: Path) -> None:
        if rec is not None:
            cgroups.remove(rec.cgroups_path)
        rootfs.remove_tree(cdir)

    def _container_status(self, container_id: str) -> ContainerStatus:
        rec = self.layout.load_container(container_id)
        if rec is None:
            if not self.layout.container_dir(container_id).exists():
                raise NotFound(f"container {container_id} not found")
            return ContainerStatus(id=container_id, sandbox_id="", name="", attempt=0,
                                   state=ContainerState.UNKNOWN, message="broken record")
        st = ContainerStatus(
            id=rec.id, sandbox_id=rec.sandbox_id, name=rec.name, attempt=rec.attempt,
            state=ContainerState.CREATED, image=rec.image, image_ref=rec.image_ref,
            created_at=rec.created_at, started_at=rec.started_at, log_path=rec.log_path,
            labels=dict(rec.labels), annotations=dict(rec.annotations))
        exit_status = self.layout.exit_status(self.layout.container_dir(rec.id))
        if exit_status is not None:
            st.state = ContainerState.EXITED
            st.exit_code = exit_status.get("exit_code", 0)
            st.finished_at = exit_status.get("finished_at", 0.0)
            st.reason = exit_status.get("reason", "")
            st.message = exit_status.get("message", "")
        elif rec.pid and alive(rec.pid, rec.pid_start):
            st.state = ContainerState.RUNNING if rec.started_at else ContainerState.CREATED
            st.pid = rec.pid
        elif rec.pid and alive(rec.shim_pid, rec.shim_start):
            st.state = ContainerState.RUNNING   # ended a moment ago; the shim is recording it
        elif rec.pid:
            # Gone with nobody to record how (the shim died too, e.g. the node rebooted).
            st.state = ContainerState.EXITED
            st.exit_code = 255
            st.reason = "Error"
            st.message = "the container's exit status was lost"
        return st

    async def container_status(self, container_id: str) -> ContainerStatus:
        return self._container_status(container_id)

    async def list_containers(self, sandbox_id: str | None = None) -> list[ContainerStatus]:
        out = []
        ids = self.layout.container_ids()
        for cid in list(self._sandbox_of):
            if cid not in ids:
                del self._sandbox_of[cid]
        for cid in ids:
            # a container's sandbox never changes: once known, other sandboxes' containers are
            # skipped without reading their records (each pod worker lists its own sandbox)
            if sandbox_id is not None and self._sandbox_of.get(cid, sandbox_id) != sandbox_id:
                continue
            with contextlib.suppress(NotFound):
                st = self._container_status(cid)
                if st.sandbox_id:
                    self._sandbox_of[cid] = st.sandbox_id
                if sandbox_id is None or st.sandbox_id == sandbox_id:
                    out.append(st)
        return out

    # -- streaming -------------------------------------------------------------------------
    def _running(self, container_id: str) -> ContainerRecord:
        rec = self._container(container_id)
        if self._container_status(container_id).state != ContainerState.RUNNING:
            raise RunContainerError(f"container {container_id} is not running")
        return rec

    def _exec_argv(self, container_id: str, cmd: list[str], pid_file: str, tty: bool) -> list[str]:
        return [self.runc, "--root", str(self.layout.runc_root), "exec", "--pid-file", pid_file,
                *(["--tty"] if tty else []), container_id, *cmd]

    async def exec_sync(self, container_id: str, cmd: list[str],
                        timeout: float) -> tuple[int, bytes, bytes]:
        self._running(container_id)
        pid_file = str(self.layout.container_dir(container_id) / f"exec-{secrets.token_hex(6)}.pid")
        session = await ExecSession.start(self._exec_argv(container_id, cmd, pid_file, False),
                                          pid_file, tty=False, stdin=False)
        try:
            out, err = await asyncio.wait_for(
                asyncio.gather(session.stdout.read(), session.stderr.read()), timeout or None)
            return await session.wait(), out, err
        finally:
            await session.close()

    async def exec(self, container_id: str, cmd: list[str], *, tty: bool,
                   stdin: bool) -> StreamSession:
        self._running(container_id)
        pid_file = str(self.layout.container_dir(container_id) / f"exec-{secrets.token_hex(6)}.pid")
        return await ExecSession.start(self._exec_argv(container_id, cmd, pid_file, tty),
                                       pid_file, tty=tty, stdin=stdin)

    async def attach(self, container_id: str, *, tty: bool, stdin: bool) -> StreamSession:
        rec = self._running(container_id)
        return await AttachSession.connect(str(self.layout.container_dir(container_id)),
                                           tty=rec.tty, stdin=stdin and rec.stdin)

    async def port_forward(self, sandbox_id: str,
                           port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        rec = self._sandbox(sandbox_id)
        if rec.netns_path:
            sock = await asyncio.to_thread(podfiles.connect_in_netns, rec.netns_path, port)
            return await asyncio.open_connection(sock=sock)
        return await asyncio.open_connection("127.0.0.1", port)   # hostNetwork: the node's

    # -- stats -----------------------------------------------------------------------------
    async def container_stats(self, container_id: str) -> ContainerStats:
        rec = self._container(container_id)
        upper = self.layout.container_dir(container_id) / "upper"
        use, size = await asyncio.to_thread(
            lambda: (cgroups.usage(rec.cgroups_path), _tree_size(upper)))
        return ContainerStats(id=container_id, timestamp=time.time(),
                              cpu_usage_core_nanoseconds=use.cpu_usage_ns,
                              memory_working_set_bytes=use.memory_working_set,
                              memory_usage_bytes=use.memory_usage, memory_rss_bytes=use.memory_rss,
                              writable_layer_bytes=size)

    async def sandbox_stats(self, sandbox_id: str) -> ContainerStats:
        rec = self._sandbox(sandbox_id)
        use = await asyncio.to_thread(cgroups.usage, rec.cgroup_parent)
        return ContainerStats(id=sandbox_id, timestamp=time.time(),
                              cpu_usage_core_nanoseconds=use.cpu_usage_ns,
                              memory_working_set_bytes=use.memory_working_set,
                              memory_usage_bytes=use.memory_usage, memory_rss_bytes=use.memory_rss)

    async def close(self) -> None:
        self._locks.clear()
        await asyncio.to_thread(self._shims.close)


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total
