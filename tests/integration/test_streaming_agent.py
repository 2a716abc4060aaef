"""The streaming path end to end, short of runc: clients -> the API server (in-process, plain
HTTP, so every request is an administrator's) -> its upgrade-aware proxy -> the agent's HTTPS
server (real TLS, client-certificate auth) -> an `AgentHost` whose runtime runs local processes.
Driven by the real ``kubernetes`` Python client (``stream()``, ``portforward()``, logs).

`ProcessRuntime` is the test seam of the runtime boundary: a "container" is a long-running local
process (its output written to a CRI log file by `CRILogWriter`, as the runc shim does), ``exec``
runs a subprocess with pipes (or a pty with ``tty``), ``attach`` speaks to the container
process's own stdin/stdout, and ``port_forward`` dials 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import ssl
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from kubernetes import client as k8s
from kubernetes.stream import portforward, stream

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from inprocess import api_server, http  # noqa: E402

from kubeling.apiserver import proxy  # noqa: E402
from kubeling.apiserver.certs import PKI  # noqa: E402
from kubeling.client.rest import RESTClient  # noqa: E402
from kubeling.client.transport import AiohttpTransport  # noqa: E402
from kubeling.kubelet.logs import CRILogWriter  # noqa: E402
from kubeling.kubelet.runtime import ContainerState, ContainerStatus  # noqa: E402
from kubeling.kubelet.server import AgentServer  # noqa: E402

KUBECTL = {"1.32": ("/usr/lib/google-cloud-sdk/bin/kubectl.1.32", "/usr/bin/kubectl"),
           "1.33": (str(Path(sys.executable).parent / "kubectl"),)}


def kubectl_path(version: str) -> str:
    for candidate in KUBECTL[version]:
        if Path(candidate).exists():
            return candidate
    raise FileNotFoundError(f"kubectl {version} is not installed")


class ProcSession:
    """A `runtime.StreamSession` over a local subprocess (or an attached container process)."""

    def __init__(self, proc, stdin, stdout, stderr, *, owned: bool, master_fd: int | None = None) -> None:
        self.proc, self.stdin, self.stdout, self.stderr = proc, stdin, stdout, stderr
        self.owned, self.master_fd = owned, master_fd
        self.sizes: list[tuple[int, int]] = []

    async def resize(self, width: int, height: int) -> None:
        self.sizes.append((width, height))

    async def wait(self) -> int:
        return await self.proc.wait()

    async def close(self) -> None:
        if self.owned and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@dataclass
class Container:
    id: str
    name: str
    log_path: str
    proc: asyncio.subprocess.Process | None = None
    attach_out: asyncio.Queue = field(default_factory=asyncio.Queue)
    pump: asyncio.Task | None = None


class ProcessRuntime:
    name = "process"

    def __init__(self) -> None:
        self.containers: dict[str, Container] = {}
        self.sessions: list[ProcSession] = []

    async def start(self, name: str, command: list[str], log_path: Path) -> Container:
        """A "container": ``command`` with its stdin open (for attach) and its output logged."""
        cid = uuid.uuid4().hex
        c = self.containers[cid] = Container(cid, name, str(log_path))
        c.proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE,
                                                      stdout=asyncio.subprocess.PIPE,
                                                      stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        writer = CRILogWriter(str(log_path))

        async def pump() -> None:
            try:
                while chunk := await c.proc.stdout.read(4096):
                    writer.write("stdout", chunk)
                    c.attach_out.put_nowait(chunk)
            finally:
                writer.close()
                c.attach_out.put_nowait(b"")
        c.pump = asyncio.create_task(pump())
        return c

    async def container_status(self, container_id: str) -> ContainerStatus:
        c = self.containers[container_id]
        running = c.proc is not None and c.proc.returncode is None
        return ContainerStatus(id=c.id, sandbox_id="sandbox", name=c.name, attempt=0,
                               state=ContainerState.RUNNING if running else ContainerState.EXITED,
                               log_path=c.log_path)

    async def exec(self, container_id: str, cmd: list[str], *, tty: bool, stdin: bool) -> ProcSession:
        if container_id not in self.containers:
            raise RuntimeError(f"container {container_id} not found")
        if tty:
            master, slave = pty.openpty()
            proc = await asyncio.create_subprocess_exec(*cmd, stdin=slave, stdout=slave, stderr=slave,
                                                        start_new_session=True)
            os.close(slave)
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(master, "rb", 0))
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.streams.FlowControlMixin(loop=loop), os.fdopen(os.dup(master), "wb", 0))
            writer = asyncio.StreamWriter(transport, protocol, None, loop)
            session = ProcSession(proc, writer if stdin else None, reader, None, owned=True, master_fd=master)
        else:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            session = ProcSession(proc, proc.stdin, proc.stdout, proc.stderr, owned=True)
        self.sessions.append(session)
        return session

    async def attach(self, container_id: str, *, tty: bool, stdin: bool) -> ProcSession:
        c = self.containers[container_id]
        out = asyncio.StreamReader()

        async def feed() -> None:
            while chunk := await c.attach_out.get():
                out.feed_data(chunk)
            out.feed_eof()
        asyncio.create_task(feed())

        class Attached:
            async def wait(self_inner):
                return await c.proc.wait()
        session = ProcSession(Attached(), c.proc.stdin if stdin else None, out, None, owned=False)
        self.sessions.append(session)
        return session

    async def port_forward(self, sandbox_id: str, port: int):
        return await asyncio.open_connection("127.0.0.1", port)

    async def close(self) -> None:
        for c in self.containers.values():
            if c.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, 9)      # the container's whole process group, as runc kill
                await c.proc.wait()
            if c.pump is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(c.pump, 2)
        for s in self.sessions:
            await s.close()


class Host:
    """An `AgentHost` over `ProcessRuntime`: pods are what the test put in ``pods``."""

    def __init__(self, root: Path, node_name: str = "node-1") -> None:
        self.root = root
        self.node_name = node_name
        self.runtime = ProcessRuntime()
        self.pods: dict[tuple[str, str], dict] = {}
        self.ids: dict[tuple[str, str, str], str] = {}

    def find_pod(self, namespace: str, name: str) -> dict | None:
        return self.pods.get((namespace, name))

    def container_id(self, pod: dict, container_name: str) -> str | None:
        m = pod["metadata"]
        return self.ids.get((m["namespace"], m["name"], container_name))

    def sandbox_id(self, pod: dict) -> str | None:
        return "sandbox"

    def log_dir(self, pod: dict) -> Path:
        m = pod["metadata"]
        return self.root / "logs" / "pods" / f"{m['namespace']}_{m['name']}_{m['uid']}"

    async def stats_summary(self) -> dict:
        return {"node": {"nodeName": self.node_name, "cpu": {"usageNanoCores": 1}}, "pods": []}

    async def metrics_resource(self) -> str:
        return "# HELP node_cpu_usage_seconds_total x\n# TYPE node_cpu_usage_seconds_total counter\n" \
               "node_cpu_usage_seconds_total 1.5\n"

    def running_pods(self) -> list[dict]:
        return list(self.pods.values())


@dataclass
class Stack:
    url: str
    client: RESTClient
    host: Host
    agent: AgentServer
    pki: PKI
    tmp: Path

    async def add_pod(self, name: str, containers: dict[str, list[str]], *, status: dict | None = None,
                      namespace: str = "default") -> dict:
        """A pod bound to the node, its containers started as local processes."""
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
               "spec": {"nodeName": self.host.node_name,
                        "containers": [{"name": c, "image": "busybox"} for c in containers]}}
        pod = await self.client.create("", "v1", "pods", pod, namespace=namespace)
        statuses = []
        for cname, command in containers.items():
            if not command:
                statuses.append({"name": cname, "restartCount": 0, "ready": False, "image": "busybox",
                                 "imageID": "", "state": {"waiting": {"reason": "ContainerCreating"}}})
                continue
            log = self.host.log_dir(pod) / cname / "0.log"
            c = await self.host.runtime.start(cname, command, log)
            self.host.ids[(namespace, name, cname)] = c.id
            statuses.append({"name": cname, "restartCount": 0, "ready": True, "image": "busybox", "imageID": "",
                             "containerID": f"process://{c.id}",
                             "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}})
        pod["status"] = status or {"phase": "Running", "containerStatuses": statuses}
        pod = await self.client.update_status("", "v1", "pods", pod, namespace=namespace)
        self.host.pods[(namespace, name)] = pod
        return pod


@contextlib.asynccontextmanager
async def stack(tmp: Path):
    pki = PKI(tmp / "data", hosts=["127.0.0.1"])
    pki.ensure()
    api = await api_server()
    api.scope.deps.kubelet = proxy.ensure_client_cert(pki)
    host = Host(tmp / "agent")
    agent = AgentServer(host, bind="127.0.0.1", port=0, cert=tmp / "agent" / "pki" / "kubelet.crt",
                        key=tmp / "agent" / "pki" / "kubelet.key", client_ca=pki.ca_cert)
    await agent.start()
    try:
        async with http(api) as server:
            url = f"http://127.0.0.1:{server.port}"
            client = RESTClient(AiohttpTransport(url))
            await client.create("", "v1", "nodes", {
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": host.node_name},
                "status": {"addresses": [{"type": "Hostname", "address": "localhost"},
                                         {"type": "InternalIP", "address": "127.0.0.1"}],
                           "daemonEndpoints": {"kubeletEndpoint": {"Port": agent.port}}}})
            try:
                yield Stack(url, client, host, agent, pki, tmp)
            finally:
                await client.close()
    finally:
        await agent.close()
        await host.runtime.close()


# -- helpers -------------------------------------------------------------------------------------

def core(url: str) -> k8s.CoreV1Api:
    cfg = k8s.Configuration(host=url)
    return k8s.CoreV1Api(k8s.ApiClient(cfg))


@contextlib.asynccontextmanager
async def tcp_server(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def http_hello(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from the pod\n")
    await writer.drain()
    writer.close()


SHELL_LOOP = ["sh", "-c", 'echo started; while read l; do echo "got $l"; done']


# -- exec and attach ------------------------------------------------------------------------------

def test_python_client_exec_reports_streams_and_exit_code(tmp_path):
    async def main():
        async with stack(tmp_path) as st:
            await st.add_pod("p1", {"main": SHELL_LOOP})
            api = core(st.url)

            def run():
                ws = stream(api.connect_get_namespaced_pod_exec, "p1", "default",
                            command=["sh", "-c", "echo out; echo err >&2; exit 3"],
                            stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False)
                ws.run_forever(timeout=20)
                return ws.subprotocol, ws.read_stdout(), ws.read_stderr(), ws.returncode
            protocol, out, err, code = await asyncio.to_thread(run)
            assert protocol == "v5.channel.k8s.io"
            assert (out, err, code) == ("out\n", "err\n", 3)
    asyncio.run(main())


def test_python_client_exec_with_stdin_closed_by_the_v5_signal(tmp_path):
    async def main():
        async with stack(tmp_path) as st:
            await st.add_pod("p1", {"main": SHELL_LOOP})
            api = core(st.url)

            def run():
                ws = stream(api.connect_get_namespaced_pod_exec, "p1", "default", command=["sh", "-c", "wc -c; cat"],
                            stdout=True, stderr=True, stdin=True, tty=False, _preload_content=False)
                ws.write_stdin("0123456789")
                ws.close_channel(0)          # v5: stdin ends, so wc can answer
                ws.run_forever(timeout=20)
                return ws.read_stdout(), ws.returncode
            out, code = await asyncio.to_thread(run)
            assert out.strip() == "10" and code == 0
    asyncio.run(main())


def test_python_client_port_forward_over_websocket_channels(tmp_path):
    async def main():
        async with stack(tmp_path) as st, tcp_server(echo) as port:
            await st.add_pod("p1", {"main": SHELL_LOOP})
            api = core(st.url)

            def run():
                pf = portforward(api.connect_get_namespaced_pod_portforward, "p1", "default", ports=str(port))
                sock = pf.socket(port)
                sock.settimeout(10)
                sock.sendall(b"x" * 200_000)
                got = b""
                while len(got) < 200_000:
                    got += sock.recv(65536)
                sock.close()
                return got, pf.error(port)
            got, error = await asyncio.to_thread(run)
            assert got == b"x" * 200_000 and error is None
    asyncio.run(main())


def test_port_forward_to_a_closed_port_reports_the_error(tmp_path):
    async def main():
        async with stack(tmp_path) as st:
            await st.add_pod("p1", {"main": SHELL_LOOP})
            async with tcp_server(echo) as port:
                pass                                       # now nothing listens there
            api = core(st.url)

            def run():
                pf = portforward(api.connect_get_namespaced_pod_portforward, "p1", "default", ports=str(port))
                sock = pf.socket(port)
                sock.settimeout(10)
                data = sock.recv(10)
                return data, pf.error(port)
            data, error = await asyncio.to_thread(run)
            assert data == b""
            assert error.startswith(f"error forwarding port {port} to pod p1_default, uid ")
    asyncio.run(main())


def test_python_client_exec_with_a_tty_forwards_resizes(tmp_path):
    async def main():
        async with stack(tmp_path) as st:
            await st.add_pod("p1", {"main": SHELL_LOOP})
            api = core(st.url)

            def run():
                ws = stream(api.connect_get_namespaced_pod_exec, "p1", "default",
                            command=["sh", "-c", "read x; echo got-$x"], stdout=True, stderr=True, stdin=True,
                            tty=True, _preload_content=False)
                ws.write_channel(4, json.dumps({"Width": 132, "Height": 43}))
                ws.write_stdin("hi\n")
                ws.run_forever(timeout=20)
                return ws.read_stdout(), ws.read_stderr(), ws.returncode
            out, err, code = await asyncio.to_thread(run)
            assert "got-hi" in out and err == "" and code == 0       # a tty merges stderr into stdout
            assert st.host.runtime.sessions[-1].sizes == [(132, 43)]
    asyncio.run(main())


# -- logs -----------------------------------------------------------------------------------------

def test_logs_tail_timestamps_limit_and_upstream_errors(tmp_path):
    async def main():
        async with stack(tmp_path) as st:
            await st.add_pod("p1", {"main": ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; sleep 30"],
                                    "waits": []})
            api = core(st.url)
            await asyncio.sleep(0.3)

            def logs(**kw):
                return api.read_namespaced_pod_log("p1", "default", **kw)
            assert await asyncio.to_thread(logs, container="main") == "".join(f"line{i}\n" for i in range(1, 6))
            assert await asyncio.to_thread(logs, container="main", tail_lines=2) == "line4\nline5\n"
            assert await asyncio.to_thread(logs, container="main", limit_bytes=8) == "line1\nli"
            stamped = (await asyncio.to_thread(logs, container="main", timestamps=True, tail_lines=1)).split(" ")
            assert stamped[0].endswith("Z") and stamped[1] == "line5\n"
            for kw, code, message in [
                ({"container": "waits"}, 400, 'container "waits" in pod "p1" is waiting to start: ContainerCreating'),
                ({"container": "main", "previous": True}, 400,
                 'previous terminated container "main" in pod "p1" not found'),
                ({}, 400, "a container name must be specified for pod p1, choose one of: [main waits]"),
                ({"container": "nope"}, 400, "container nope is not valid for pod p1"),
            ]:
                with pytest.raises(k8s.ApiException) as e:
                    await asyncio.to_thread(logs, **kw)
                assert (e.value.status, json.loads(e.value.body)["message"]) == (code, message)
    asyncio.run(main())


def test_logs_follow_streams_new_lines_and_ends_with_the_container(tmp_path):
    async def main():
        async with stack(tmp_path) as st:
            await st.add_pod("p1", {"main": SHELL_LOOP})
            c = st.host.runtime.containers[st.host.ids[("default", "p1", "main")]]
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{st.url}/api/v1/namespaces/default/pods/p1/log",
                                       params={"follow": "true"}) as resp:
                    assert resp.status == 200
                    assert await asyncio.wait_for(resp.content.readline(), 10) == b"started\n"
                    c.proc.stdin.write(b"later\n")
                    assert await asyncio.wait_for(resp.content.readline(), 10) == b"got later\n"
                    c.proc.stdin.close()                    # the container ends: so does the follow
                    assert await asyncio.wait_for(resp.content.read(), 15) == b""
    asyncio.run(main())


# -- the agent's own endpoint ---------------------------------------------------------------------

def test_agent_requires_a_cluster_client_certificate(tmp_path):
    async def main():
        async with stack(tmp_path) as st:
            base = f"https://127.0.0.1:{st.agent.port}"

            def ctx(cert=None):
                c = ssl.create_default_context()
                c.check_hostname, c.verify_mode = False, ssl.CERT_NONE
                if cert:
                    c.load_cert_chain(*cert)
                return c
            other = (tmp_path / "u.crt", tmp_path / "u.key")
            st.pki.issue_client(*other, "jane", ["developers"])
            kc = st.host.root.parent / "data" / "pki"
            admin = (kc / "apiserver-kubelet-client.crt", kc / "apiserver-kubelet-client.key")
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{base}/healthz", ssl=ctx()) as r:
                    assert r.status == 401
                async with s.get(f"{base}/stats/summary", ssl=ctx(other)) as r:
                    assert r.status == 403
                    assert await r.text() == ("Forbidden (user=jane, verb=get, resource=nodes, "
                                              "subresource=stats)")
                async with s.get(f"{base}/healthz", ssl=ctx(admin)) as r:
                    assert (r.status, await r.text()) == (200, "ok")
                # nodes/proxy reaches any path of the agent through the API server
                async with s.get(f"{st.url}/api/v1/nodes/node-1/proxy/stats/summary") as r:
                    assert r.status == 200 and (await r.json())["node"]["nodeName"] == "node-1"
                async with s.get(f"{st.url}/api/v1/nodes/node-1/proxy/metrics/resource") as r:
                    assert "node_cpu_usage_seconds_total 1.5" in await r.text()
    asyncio.run(main())


def test_unreachable_agent_and_unscheduled_pod_answer_as_upstream(tmp_path):
    async def main():
        async with stack(tmp_path) as st:
            await st.add_pod("p1", {"main": SHELL_LOOP})
            await st.client.create("", "v1", "pods", {"metadata": {"name": "pending", "namespace": "default"},
                                                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
                                   namespace="default")
            port = st.agent.port
            await st.agent.close()
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{st.url}/api/v1/namespaces/default/pods/p1/log") as r:
                    body = await r.json()
                    assert r.status == 500 and "reason" not in body
                    assert body["message"] == (f'Get "https://127.0.0.1:{port}/containerLogs/default/p1/main": '
                                               f"dial tcp 127.0.0.1:{port}: connect: connection refused")
                async with s.get(f"{st.url}/api/v1/namespaces/default/pods/pending/log") as r:
                    assert (r.status, await r.read()) == (200, b"")
                async with s.post(f"{st.url}/api/v1/namespaces/default/pods/pending/exec",
                                  params={"command": "true", "stdout": "1"}) as r:
                    assert r.status == 400
                    assert (await r.json())["message"] == "pod pending does not have a host assigned"
    asyncio.run(main())
