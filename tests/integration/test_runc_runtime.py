"""`RuncRuntime` with real runc, namespaces, cgroups and overlayfs (issue 6: Runtime; acceptance
6 OOMKilled, 9 re-adoption, 10 leaks, 11 isolation).

The image is a single layer built here from the static ``/usr/bin/busybox``; the images package
is not needed. Every test makes its own sandboxes under a module-wide agent root and a
``kl-t<pid>`` cgroup root, and removes them; the module ends with `cleanup_all` and asserts
that nothing leaked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubeling.kubelet import logs
from kubeling.kubelet.runtime import (
    ContainerConfig,
    ContainerState,
    CreateContainerError,
    Image,
    LinuxResources,
    RunContainerError,
    SandboxConfig,
    SandboxError,
    SandboxState,
    SecurityContext,
    namespaces,
)
from kubeling.kubelet.runtime.cleanup import _runc_ids, shim_pids, cleanup_all, leaks
from kubeling.kubelet.runtime.runc import RuncRuntime

APPLETS = ["sh", "sleep", "echo", "cat", "ps", "id", "nc", "httpd", "wget", "hostname", "touch",
           "tail", "seq", "stty", "head", "grep", "mount", "true", "ls", "wc", "trap", "readlink"]


def busybox_layer(path: Path) -> Path:
    (path / "bin").mkdir(parents=True)
    shutil.copy2("/usr/bin/busybox", path / "bin" / "busybox")
    for applet in APPLETS:
        (path / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "dev", "sys", "etc", "tmp", "www"):
        (path / d).mkdir()
    (path / "tmp").chmod(0o1777)
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "app:x:1000:1000::/tmp:/bin/sh\n")
    (path / "etc" / "group").write_text("root:x:0:\napp:x:1000:\n")
    (path / "www" / "index.html").write_text("hello from httpd\n")
    return path


@dataclass
class World:
    root: Path
    cgroup_root: str
    image: Image
    logs: Path
    runtimes: list[RuncRuntime] = field(default_factory=list)

    def runtime(self, **kw) -> RuncRuntime:
        rt = RuncRuntime(self.root, cgroup_root=self.cgroup_root, **kw)
        self.runtimes.append(rt)
        return rt

    def close_runtimes(self) -> None:
        """End the shim zygotes of this test's runtimes (their shims live on, as in the agent)."""
        runtimes, self.runtimes = self.runtimes, []
        for rt in runtimes:
            asyncio.run(rt.close())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("runc")
    w = World(root=base / "agent", cgroup_root=f"kl-t{os.getpid()}",
              image=Image(id="sha256:busybox", repo_tags=["busybox:test"],
                          config={"Env": ["PATH=/bin"]}, layers=[busybox_layer(base / "layer")]),
              logs=base / "logs")
    try:
        yield w
    finally:
        cleanup_all(w.root, w.cgroup_root)
    assert leaks(w.root, w.cgroup_root) == {"netns": 0, "runc": 0, "mounts": 0, "cgroups": 0, "shims": 0}


@pytest.fixture(autouse=True)
def _close_runtimes(world):
    yield
    world.close_runtimes()


_seq = iter(range(10**6))


def sandbox_config(**kw) -> SandboxConfig:
    n = next(_seq)
    kw.setdefault("hostname", f"pod-{n}")
    return SandboxConfig(uid=f"uid-{os.getpid()}-{n}", name=f"pod-{n}", namespace="default",
                         cgroup_parent=f"kubepods/burstable/poduid-{os.getpid()}-{n}", **kw)


@contextlib.asynccontextmanager
async def pod(rt: RuncRuntime, **kw):
    config = sandbox_config(**kw)
    sid = await rt.run_pod_sandbox(config)
    try:
        yield sid, config
    finally:
        await rt.remove_pod_sandbox(sid)


async def run(rt: RuncRuntime, world: World, sid: str, config: SandboxConfig, command: list[str],
              name: str = "c", **kw) -> str:
    kw.setdefault("log_path", str(world.logs / f"{config.namespace}_{config.name}_{config.uid}" / name / "0.log"))
    cid = await rt.create_container(sid, ContainerConfig(name=name, image=world.image,
                                                         command=command, **kw), config)
    await rt.start_container(cid)
    return cid


async def wait_exited(rt: RuncRuntime, cid: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        st = await rt.container_status(cid)
        if st.state == ContainerState.EXITED or time.monotonic() > deadline:
            return st
        await asyncio.sleep(0.05)


def log_text(path: str) -> str:
    return "".join(logs.render(logs.parse_line(line), logs.LogOptions()).decode()
                   for line in open(path, "rb"))


@pytest.mark.parametrize("command, share, exit_code, reason", [
    pytest.param(["sh", "-c", "echo done"], False, 0, "Completed", id="completed"),
    pytest.param(["sh", "-c", "exit 7"], False, 7, "Error", id="error"),
    # Not pid 1 of its namespace (which no signal from inside can kill): dies of SIGKILL.
    pytest.param(["sh", "-c", "kill -9 $$"], True, 137, "Error", id="signal-is-128-plus"),
])
def test_exit_status_and_reason(world, command, share, exit_code, reason):
    async def main():
        rt = world.runtime()
        async with pod(rt, share_process_namespace=share) as (sid, config):
            cid = await run(rt, world, sid, config, command)
            st = await wait_exited(rt, cid)
            assert (st.state, st.exit_code, st.reason) == (ContainerState.EXITED, exit_code, reason)
            assert st.started_at <= st.finished_at and st.created_at <= st.started_at
    asyncio.run(main())


def test_two_containers_share_localhost_and_port_forward(world):
    async def main():
        rt = world.runtime()
        async with pod(rt) as (sid, config):
            await run(rt, world, sid, config, ["httpd", "-f", "-p", "8080", "-h", "/www"], name="web")
            client = await run(rt, world, sid, config, [
                "sh", "-c", ("for i in $(seq 1 50); do wget -q -O - http://127.0.0.1:8080/ && exit 0;"
                             " sleep 0.1; done; exit 1")], name="client")
            st = await wait_exited(rt, client)
            assert st.exit_code == 0
            assert log_text(st.log_path) == "hello from httpd\n"
            reader, writer = await rt.port_forward(sid, 8080)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            await writer.drain()
            reply = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert reply.startswith(b"HTTP/1.") and reply.endswith(b"hello from httpd\n")
            status = await rt.pod_sandbox_status(sid)
            assert status.state == SandboxState.READY and status.netns_path.startswith("/run/netns/kl-")
    asyncio.run(main())


def test_start_error_is_run_container_error(world):
    async def main():
        rt = world.runtime()
        async with pod(rt) as (sid, config):
            cid = await rt.create_container(sid, ContainerConfig(
                name="bad", image=world.image, command=["/no/such/binary"]), config)
            with pytest.raises(RunContainerError, match="no such file"):
                await rt.start_container(cid)
            st = await rt.container_status(cid)
            assert (st.state, st.exit_code, st.reason) == (ContainerState.EXITED, 128, "StartError")
    asyncio.run(main())


def test_memory_limit_gives_oomkilled(world):
    async def main():
        rt = world.runtime()
        async with pod(rt) as (sid, config):
            # tail buffers /dev/zero looking for a newline that never comes: unbounded memory.
            cid = await run(rt, world, sid, config, ["tail", "/dev/zero"],
                            resources=LinuxResources(memory_limit_bytes=16 << 20))
            st = await wait_exited(rt, cid, 20)
            assert (st.state, st.exit_code, st.reason) == (ContainerState.EXITED, 137, "OOMKilled")
    asyncio.run(main())


def cgroup_file(world: World, controller: str, sid: str, config: SandboxConfig, cid: str, name: str) -> str:
    path = Path("/sys/fs/cgroup", controller, world.cgroup_root, config.cgroup_parent, cid, name)
    return path.read_text().strip()


def test_cpu_quota_shares_and_pids_limit(world):
    async def main():
        rt = world.runtime()
        async with pod(rt) as (sid, config):
            cid = await run(rt, world, sid, config, [
                "sh", "-c", ("for i in $(seq 1 10); do sleep 30 & done; sleep 0.5; echo running:"
                             "$(ps -o pid | wc -l); sleep 30")],
                resources=LinuxResources(cpu_period=100000, cpu_quota=20000, cpu_shares=204,
                                         pids_limit=6))
            assert cgroup_file(world, "cpu", sid, config, cid, "cpu.cfs_quota_us") == "20000"
            assert cgroup_file(world, "cpu", sid, config, cid, "cpu.cfs_period_us") == "100000"
            assert cgroup_file(world, "cpu", sid, config, cid, "cpu.shares") == "204"
            assert cgroup_file(world, "pids", sid, config, cid, "pids.max") == "6"
            await asyncio.sleep(1.5)
            text = log_text((await rt.container_status(cid)).log_path)
            assert "can't fork" in text or "Resource temporarily unavailable" in text
            assert int(cgroup_file(world, "pids", sid, config, cid, "pids.current")) <= 6
            stats = await rt.container_stats(cid)
            assert stats.cpu_usage_core_nanoseconds > 0 and stats.memory_working_set_bytes > 0
            assert (await rt.sandbox_stats(sid)).memory_usage_bytes >= stats.memory_usage_bytes
    asyncio.run(main())


@pytest.mark.parametrize("security, command, expect_code, expect_text", [
    pytest.param(SecurityContext(run_as_user=1000, run_as_group=1000), ["sh", "-c", "id"], 0,
                 "uid=1000(app) gid=1000(app)", id="runAsUser"),
    pytest.param(SecurityContext(readonly_rootfs=True), ["sh", "-c", "touch /x"], 1,
                 "Read-only file system", id="readOnlyRootFilesystem"),
    pytest.param(SecurityContext(readonly_rootfs=True), ["sh", "-c", "touch /tmp/../etc/hosts && echo ok"],
                 0, "ok", id="readonly-rootfs-keeps-etc-hosts-writable"),
    pytest.param(SecurityContext(capabilities_drop=["ALL"]), ["sh", "-c", "touch /x && chown 5 /x"], 1,
                 "Operation not permitted", id="drop-ALL-removes-CHOWN"),
    pytest.param(SecurityContext(), ["sh", "-c", "hostname new"], 1, "", id="no-SYS_ADMIN-by-default"),
])
def test_security_context_enforced(world, security, command, expect_code, expect_text):
    async def main():
        rt = world.runtime()
        async with pod(rt) as (sid, config):
            cid = await run(rt, world, sid, config, command, security=security)
            st = await wait_exited(rt, cid)
            assert st.exit_code == expect_code
            assert expect_text in log_text(st.log_path)
    asyncio.run(main())


ALLOWED_MOUNTS = {"/", "/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/dev/shm", "/etc/hosts",
                  "/etc/resolv.conf", "/etc/hostname"}


@pytest.mark.parametrize("share, expect_pause", [
    pytest.param(False, False, id="own-pid-namespace"),
    pytest.param(True, True, id="shareProcessNamespace"),
])
def test_isolation_processes_and_mounts(world, share, expect_pause):
    async def main():
        rt = world.runtime()
        async with pod(rt, share_process_namespace=share) as (sid, config):
            cid = await run(rt, world, sid, config, ["sleep", "30"])
            _, out, _ = await rt.exec_sync(cid, ["ps", "-o", "pid,args"], 5)
            procs = out.decode().splitlines()[1:]
            assert any("sleep 30" in p for p in procs)
            assert any("sleep 3600" in p for p in procs) is expect_pause
            assert len(procs) == (4 if share else 2)   # (+ pause sh and its sleep) + ps itself
            if not share:
                assert procs[0].split()[0] == "1"
            _, out, _ = await rt.exec_sync(cid, ["cat", "/proc/self/mountinfo"], 5)
            points = {line.split()[4] for line in out.decode().splitlines()}
            masked = {"/proc/" + p.split("/proc/")[-1] for p in points if p.startswith("/proc/")}
            assert points - masked - {p for p in points if p.startswith("/sys/")} <= ALLOWED_MOUNTS
            assert not any(p.startswith(("/work", "/mnt", "/run", "/home")) for p in points)
            _, out, _ = await rt.exec_sync(cid, ["hostname"], 5)
            assert out.decode().strip() == config.hostname
    asyncio.run(main())


def test_stop_with_grace_period(world):
    async def main():
        rt = world.runtime()
        async with pod(rt) as (sid, config):
            stubborn = await run(rt, world, sid, config, ["sh", "-c", "trap '' TERM; sleep 100"], name="a")
            polite = await run(rt, world, sid, config,
                               ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"], name="b")
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            await rt.stop_container(polite, 5)
            polite_took = time.monotonic() - t0
            t0 = time.monotonic()
            await rt.stop_container(stubborn, 1.0)
            stubborn_took = time.monotonic() - t0
            # bounds that show the grace period at work (polite: well under its 5 s; stubborn: its
            # 1 s, then SIGKILL), loose enough for runc calls on a loaded machine
            assert polite_took < 4.0 and (await rt.container_status(polite)).exit_code == 0
            assert 1.0 <= stubborn_took < 8.0
            assert (await rt.container_status(stubborn)).exit_code == 137
            await rt.stop_container(stubborn, 1.0)   # idempotent
            await rt.stop_pod_sandbox(sid)
            assert (await rt.pod_sandbox_status(sid)).state == SandboxState.NOTREADY
            await rt.stop_pod_sandbox(sid)
    asyncio.run(main())


def test_new_runtime_object_readopts_running_and_exited(world):
    async def main():
        rt = world.runtime()
        config = sandbox_config()
        sid = await rt.run_pod_sandbox(config)
        try:
            keeps = await run(rt, world, sid, config,
                              ["sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done"],
                              name="keeps")
            ends = await run(rt, world, sid, config, ["sh", "-c", "sleep 0.5; exit 4"], name="ends")
            before = await rt.container_status(keeps)
            await rt.close()
            del rt
            await asyncio.sleep(1.0)         # "ends" exits while no runtime object exists
            fresh = world.runtime()
            after = await fresh.container_status(keeps)
            assert after.state == ContainerState.RUNNING
            assert (after.pid, after.started_at, after.created_at) == (before.pid, before.started_at,
                                                                       before.created_at)
            ended = await fresh.container_status(ends)
            assert (ended.state, ended.exit_code) == (ContainerState.EXITED, 4)
            assert [s.id for s in await fresh.list_pod_sandboxes() if s.id == sid] == [sid]
            assert {c.id for c in await fresh.list_containers(sid)} == {keeps, ends}
            lines = log_text(after.log_path).count("tick")
            await asyncio.sleep(0.5)
            assert log_text(after.log_path).count("tick") > lines    # the shim still logs
            await fresh.stop_container(keeps, 1)
            assert (await fresh.container_status(keeps)).state == ContainerState.EXITED
        finally:
            await world.runtime().remove_pod_sandbox(sid)
    asyncio.run(main())


def test_log_rotation_by_the_shim(world):
    async def main():
        rt = world.runtime(log_max_size=4096, log_max_files=3)
        async with pod(rt) as (sid, config):
            cid = await run(rt, world, sid, config,
                            ["sh", "-c", "for i in $(seq 1 400); do echo line-$i-padding-padding; done"])
            st = await wait_exited(rt, cid)
            assert st.exit_code == 0
            rotated = logs.rotated_files(st.log_path)
            assert len(rotated) == 2
            assert all(os.path.getsize(p) <= 4096 for p in rotated + [st.log_path])
            assert log_text(st.log_path).splitlines()[-1] == "line-400-padding-padding"
    asyncio.run(main())


def test_no_leaks_after_20_cycles(world):
    async def main():
        rt = world.runtime()
        for _ in range(20):
            async with pod(rt) as (sid, config):
                cid = await run(rt, world, sid, config, ["sleep", "30"])
                await rt.stop_container(cid, 0)
                await rt.remove_container(cid)
                await run(rt, world, sid, config, ["sleep", "30"], name="left-for-sandbox-removal")
        assert await rt.list_pod_sandboxes() == [] and await rt.list_containers() == []
    asyncio.run(main())
    assert leaks(world.root, world.cgroup_root) == {"netns": 0, "runc": 0, "mounts": 0, "cgroups": 0,
                                                    "shims": 0}


class RecordingNetwork:
    """A network plugin that wires nothing but records the calls the runtime makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def setup(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> str:
        assert Path(netns_path).exists()
        self.calls.append(("setup", sandbox_id, netns_path))
        return "10.244.0.7"

    async def teardown(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> None:
        self.calls.append(("teardown", sandbox_id, netns_path))


def test_network_plugin_ip_lands_in_status_and_hosts_file(world):
    async def main():
        net = RecordingNetwork()
        rt = world.runtime(network=net)
        config = sandbox_config(host_aliases=[("10.1.2.3", ["foo.remote"])])
        sid = await rt.run_pod_sandbox(config)
        status = await rt.pod_sandbox_status(sid)
        assert status.ip == "10.244.0.7"
        cid = await run(rt, world, sid, config, ["cat", "/etc/hosts"])
        text = log_text((await wait_exited(rt, cid)).log_path)
        assert f"10.244.0.7\t{config.hostname}\n" in text and "10.1.2.3\tfoo.remote\n" in text
        await rt.stop_pod_sandbox(sid)
        await rt.remove_pod_sandbox(sid)
        assert net.calls == [("setup", sid, status.netns_path), ("teardown", sid, status.netns_path)]
        await rt.remove_pod_sandbox(sid)          # idempotent
        await rt.remove_container(cid)
        await rt.stop_container(cid, 1)
    asyncio.run(main())


def test_host_network_sandbox(world):
    async def main():
        net = RecordingNetwork()
        rt = world.runtime(network=net)
        async with pod(rt, host_network=True) as (sid, config):
            status = await rt.pod_sandbox_status(sid)
            assert (status.netns_path, status.ip, net.calls) == ("", "", [])
            cid = await run(rt, world, sid, config, ["sh", "-c", "hostname; cat /etc/resolv.conf"])
            text = log_text((await wait_exited(rt, cid)).log_path)
            assert text.startswith(os.uname().nodename + "\n")
            assert Path("/etc/resolv.conf").read_text() in text
    asyncio.run(main())


def _ns_inodes(text: str) -> dict[str, int]:
    """``readlink /proc/self/ns/<kind>`` output lines ("ipc:[4026532301]") as {kind: inode}."""
    out = {}
    for line in text.split():
        kind, _, rest = line.partition(":[")
        out[kind] = int(rest.rstrip("]"))
    return out


@pytest.mark.parametrize("host_network, shared", [
    pytest.param(False, ("ipc", "uts", "net"), id="pod-network"),
    pytest.param(True, ("ipc",), id="host-network"),
])
def test_sandbox_is_namespaces_without_a_pause(world, host_network, shared):
    """No runc container and no shim for the sandbox: its namespaces are bind-mounted files that
    both containers join (and that the node does not share), with the pod's hostname."""
    async def main():
        rt = world.runtime()
        async with pod(rt, host_network=host_network) as (sid, config):
            rec = rt.layout.load_sandbox(sid)
            assert rec.pid == 0 and namespaces.held(rec.ipc_path)
            assert bool(rec.uts_path) is bool(rec.netns_path) is not host_network
            assert (await rt.pod_sandbox_status(sid)).state == SandboxState.READY
            assert sid not in _runc_ids(rt.layout, "runc")
            assert not any(sid in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
                           for p in shim_pids(world.root))
            files = {"ipc": rec.ipc_path, "uts": rec.uts_path, "net": rec.netns_path}
            seen = []
            for name in ("a", "b"):
                cid = await run(rt, world, sid, config, [
                    "sh", "-c", "for k in ipc uts net; do readlink /proc/self/ns/$k; done; hostname"],
                    name=name)
                lines = log_text((await wait_exited(rt, cid)).log_path).split()
                seen.append((_ns_inodes(" ".join(lines[:3])), lines[3]))
            assert seen[0] == seen[1]
            inodes, hostname = seen[0]
            for kind in ("ipc", "uts", "net"):
                host = os.stat(f"/proc/self/ns/{kind}").st_ino
                if kind in shared:
                    assert inodes[kind] == os.stat(files[kind]).st_ino != host
                else:
                    assert inodes[kind] == host
            assert hostname == (os.uname().nodename if host_network else config.hostname)
        assert not Path(rec.ipc_path).exists() and not namespaces.held(rec.netns_path)
    asyncio.run(main())


def test_sandbox_sysctls_are_the_pods_only(world):
    async def main():
        rt = world.runtime()
        host_start = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()
        sysctls = {"net.ipv4.ip_unprivileged_port_start": "81", "kernel.shm_rmid_forced": "1"}
        async with pod(rt, sysctls=sysctls) as (sid, config):
            cid = await run(rt, world, sid, config, [
                "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start", "/proc/sys/kernel/shm_rmid_forced"])
            assert log_text((await wait_exited(rt, cid)).log_path).split() == ["81", "1"]
        assert Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text() == host_start
        before = set(rt.layout.sandbox_ids())
        with pytest.raises(SandboxError, match="not in a separate kernel namespace"):
            await rt.run_pod_sandbox(sandbox_config(sysctls={"kernel.panic": "5"}))
        assert set(rt.layout.sandbox_ids()) == before   # nothing made, nothing left
    asyncio.run(main())


def test_sandbox_whose_namespaces_are_gone_is_not_ready(world):
    """As after a reboot (the bind mounts are gone): NOTREADY, no new container, still removable."""
    async def main():
        rt = world.runtime()
        config = sandbox_config()
        sid = await rt.run_pod_sandbox(config)
        try:
            rec = rt.layout.load_sandbox(sid)
            namespaces.release(namespaces.PodNamespaces(ipc=rec.ipc_path))
            assert (await rt.pod_sandbox_status(sid)).state == SandboxState.NOTREADY
            assert [s.state for s in await world.runtime().list_pod_sandboxes() if s.id == sid] == \
                [SandboxState.NOTREADY]
            with pytest.raises(CreateContainerError, match="not ready"):
                await rt.create_container(sid, ContainerConfig(name="c", image=world.image,
                                                               command=["true"]), config)
        finally:
            await rt.remove_pod_sandbox(sid)
        assert not Path(rec.netns_path).exists() and sid not in rt.layout.sandbox_ids()
    asyncio.run(main())


def _my_zygotes() -> list[int]:
    """This test process's shim zygotes (each shows as ``python -I -S shim.py --zygote``)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and argv[-2:][0].endswith(b"shim.py") and argv[-1] == b"--zygote":
            found.append(int(entry))
    return found


def test_shims_are_forked_by_one_zygote_and_outlive_it(world):
    """One zygote per runtime object forks every shim, which shows as if started directly; a
    zygote found dead is replaced; closing the runtime ends its zygote, never the shims (their
    containers keep running and logging)."""
    async def main():
        rt = world.runtime()
        async with pod(rt) as (sid, config):
            # other modules' runtimes in this pytest process may hold zygotes of their own: only
            # the zygotes that appear from here on are this runtime's
            older = set(_my_zygotes())
            first = await run(rt, world, sid, config, ["sh", "-c", "while :; do echo tick; sleep 0.1; done"],
                              name="first")
            zygotes = set(_my_zygotes()) - older
            assert len(zygotes) == 1
            os.kill(zygotes.pop(), 9)                 # found dead at the next start: replaced
            second = await run(rt, world, sid, config, ["sleep", "30"], name="second")
            mine = set(_my_zygotes()) - older
            assert len(mine) == 1 and not mine & zygotes
            recs = [rt.layout.load_container(c) for c in (first, second)]
            assert {r.shim_pid for r in recs} <= set(shim_pids(world.root))
            argv = Path(f"/proc/{recs[0].shim_pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            assert argv[-2].endswith(b"shim.py") and argv[-1] == str(
                rt.layout.container_dir(first).resolve() / "shim.json").encode()
            await rt.close()
            assert not mine & set(_my_zygotes())
            fresh = world.runtime()
            st = await fresh.container_status(first)
            assert st.state == ContainerState.RUNNING
            ticks = log_text(st.log_path).count("tick")
            deadline = time.monotonic() + 20          # a tick every 0.1 s, on a loaded machine too
            while log_text(st.log_path).count("tick") <= ticks and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert log_text(st.log_path).count("tick") > ticks
            await fresh.close()
    asyncio.run(main())
