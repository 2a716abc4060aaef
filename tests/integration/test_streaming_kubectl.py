"""Real kubectl 1.32 and 1.33 through the API server's proxy to the agent's server (the stack of
`test_streaming_agent`), over both transports kubectl speaks: WebSockets (its default: v5
channels for exec/attach/cp, SPDY tunnelled in WebSocket for port-forward) and the plain SPDY/3.1
upgrade it falls back to (forced here with its KUBECTL_*_WEBSOCKETS switches)."""

from __future__ import annotations

import asyncio
import os

import pytest

from test_streaming_agent import SHELL_LOOP, http_hello, kubectl_path, stack, tcp_server

from tests.support.ports import free_port

TRANSPORTS = {"websocket": {}, "spdy": {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false",
                                       "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}}
CASES = [pytest.param(v, t, id=f"{v}-{t}") for v in ("1.32", "1.33") for t in TRANSPORTS]


class Kubectl:
    def __init__(self, version: str, transport: str, url: str, tmp) -> None:
        self.binary = kubectl_path(version)
        (tmp / "kubeconfig").write_text("")
        self.env = {**os.environ, "KUBECONFIG": str(tmp / "kubeconfig"), **TRANSPORTS[transport]}
        self.base = ["--server", url, "--cache-dir", str(tmp / "cache")]

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(self.binary, *self.base, *args, env=self.env,
                                                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)

    async def run(self, *args: str, input: bytes = b"", timeout: float = 60) -> tuple[int, str, str]:
        proc = await self.start(*args)
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("version,transport", CASES)
def test_kubectl_exec_attach_cp_and_logs(tmp_path, version, transport):
    async def main():
        async with stack(tmp_path) as st:
            await st.add_pod("p1", {"main": SHELL_LOOP})
            k = Kubectl(version, transport, st.url, tmp_path)

            code, out, err = await k.run("exec", "p1", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3")
            assert (code, out, err) == (3, "hi\n", "oops\ncommand terminated with exit code 3\n")

            code, out, _ = await k.run("exec", "-i", "p1", "--", "sh", "-c", "wc -c", input=b"hello")
            assert (code, out.strip()) == (0, "5")

            code, out, _ = await k.run("logs", "p1", "--tail=1")
            assert (code, out) == (0, "started\n")

            # cp both ways: kubectl runs tar through exec (here on this machine, in tmp_path).
            src, dest = tmp_path / "src.txt", tmp_path / "in-pod"
            src.write_text("payload\n" * 1000)
            dest.mkdir()
            code, _, err = await k.run("cp", str(src), f"p1:{dest}/copied.txt")
            assert code == 0, err
            assert (dest / "copied.txt").read_text() == src.read_text()
            back = tmp_path / "back.txt"
            code, _, err = await k.run("cp", f"p1:{dest}/copied.txt", str(back))
            assert code == 0, err
            assert back.read_text() == src.read_text()

            # attach with stdin: the container's loop answers, then ends when stdin closes
            code, out, err = await k.run("attach", "-i", "p1", "-c", "main", input=b"a\nb\n")
            assert code == 0, err
            assert out.endswith("got a\ngot b\n")
    asyncio.run(main())


@pytest.mark.parametrize("version,transport", CASES)
def test_kubectl_port_forward_and_logs_follow(tmp_path, version, transport):
    async def main():
        async with stack(tmp_path) as st, tcp_server(http_hello) as remote:
            await st.add_pod("p1", {"main": SHELL_LOOP})
            k = Kubectl(version, transport, st.url, tmp_path)
            local = free_port()
            pf = await k.start("port-forward", "pod/p1", f"{local}:{remote}")
            try:
                line = await asyncio.wait_for(pf.stdout.readline(), 30)
                assert line.decode().startswith(f"Forwarding from 127.0.0.1:{local} -> {remote}")
                for _ in range(3):     # several connections over one port-forward session
                    curl = await asyncio.create_subprocess_exec(
                        "curl", "-sS", "--max-time", "20", f"http://127.0.0.1:{local}/",
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                    out, err = await curl.communicate()
                    assert (curl.returncode, out) == (0, b"hello from the pod\n"), err
            finally:
                pf.terminate()
                await pf.wait()

            follow = await k.start("logs", "-f", "p1")
            try:
                assert await asyncio.wait_for(follow.stdout.readline(), 30) == b"started\n"
                c = st.host.runtime.containers[st.host.ids[("default", "p1", "main")]]
                c.proc.stdin.write(b"more\n")
                assert await asyncio.wait_for(follow.stdout.readline(), 30) == b"got more\n"
                c.proc.stdin.close()                      # the container ends, and so does -f
                assert await asyncio.wait_for(follow.wait(), 30) == 0
            finally:
                if follow.returncode is None:
                    follow.kill()
                    await follow.wait()
    asyncio.run(main())
