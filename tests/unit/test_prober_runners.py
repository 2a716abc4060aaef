"""The probe runners against real peers: a local subprocess (exec), TCP listeners, a grpcio
health server; plus named ports, Go durations and the Prober's events and retries.
(httpGet has its own file, test_prober_http.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kubeling.kubelet.prober import results
from kubeling.kubelet.prober.exec import expand, expand_static, probe_exec
from kubeling.kubelet.prober.grpc import probe_grpc
from kubeling.kubelet.prober.probe import ProbeError, Result, go_duration, resolve_port
from kubeling.kubelet.prober.prober import Prober, kill_message
from kubeling.kubelet.prober.tcp import probe_tcp
from kubeling.kubelet.runtime import NotFound
from tests.support.ports import free_port


class LocalRuntime:
    """A test seam for ``RuntimeService.exec_sync``: runs the command as a local subprocess."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], float]] = []

    async def exec_sync(self, container_id, cmd, timeout):
        self.calls.append((container_id, cmd, timeout))
        if container_id == "gone":
            raise NotFound(f"container {container_id} not found")
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE,
                                                    start_new_session=True)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            # Kill the whole group, as a runtime kills the exec'd process tree.
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        return proc.returncode, out, err


# -- exec ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd, timeout, result, output", [
    pytest.param(["true"], 1, Result.SUCCESS, "", id="exit-0"),
    pytest.param(["sh", "-c", "echo out; echo err >&2; exit 1"], 1, Result.FAILURE, "out\nerr\n",
                 id="exit-1-stdout-then-stderr"),
    pytest.param(["sh", "-c", "sleep 5"], 0.3, Result.FAILURE, 'command "sh -c sleep 5" timed out',
                 id="timeout-is-failure"),
    pytest.param(["sh", "-c", "head -c 20000 /dev/zero | tr '\\0' x"], 1, Result.SUCCESS,
                 "x" * 10240, id="output-cut-at-10KiB"),
])
def test_exec_probe(cmd, timeout, result, output):
    started = time.monotonic()
    outcome = asyncio.run(probe_exec(LocalRuntime(), "c1", cmd, timeout))
    assert (outcome.result, outcome.output) == (result, output)
    assert time.monotonic() - started < 3


def test_exec_probe_runtime_fault_is_an_error():
    with pytest.raises(ProbeError, match="container gone not found"):
        asyncio.run(probe_exec(LocalRuntime(), "gone", ["true"], 1))


@pytest.mark.parametrize("text, want", [
    pytest.param("$(A)-$(B)", "1-", id="static-and-valueFrom"),
    pytest.param("$(MISSING)", "$(MISSING)", id="unknown-kept"),
    pytest.param("$$(A)", "$(A)", id="escaped"),
    pytest.param("cost $5 $(A", "cost $5 $(A", id="not-a-reference"),
    pytest.param("$(A)$", "1$", id="trailing-dollar"),
])
def test_expand(text, want):
    env = [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {}}}]
    assert expand_static([text], env) == [want]
    assert expand(text, {"A": "1", "B": ""}) == want


# -- ports and durations ------------------------------------------------------------------

CONTAINER = {"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}


@pytest.mark.parametrize("port, want", [
    pytest.param(80, 80, id="number"),
    pytest.param("http", 8080, id="named"),
    pytest.param("9090", 9090, id="number-as-string"),
    pytest.param("metrics", 'strconv.Atoi: parsing "metrics": invalid syntax', id="unknown-name"),
    pytest.param(0, "invalid port number: 0", id="zero"),
    pytest.param(70000, "invalid port number: 70000", id="too-big"),
])
def test_resolve_port(port, want):
    if isinstance(want, int):
        assert resolve_port(port, CONTAINER) == want
    else:
        with pytest.raises(ProbeError) as e:
            resolve_port(port, CONTAINER)
        assert str(e.value) == want


@pytest.mark.parametrize("seconds, text", [
    pytest.param(1, "1s", id="1s"), pytest.param(60, "1m0s", id="1m"),
    pytest.param(90, "1m30s", id="90s"), pytest.param(3661, "1h1m1s", id="hour"),
    pytest.param(0.5, "500ms", id="ms"), pytest.param(1.5, "1.5s", id="fraction"),
])
def test_go_duration(seconds, text):
    assert go_duration(seconds) == text


# -- tcpSocket ----------------------------------------------------------------------------

def test_tcp_probe_success_and_refused():
    async def main():
        accepted = []
        server = await asyncio.start_server(lambda r, w: (accepted.append(1), w.close()),
                                            "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            ok = await probe_tcp("127.0.0.1", port, 1)
            await asyncio.sleep(0.05)
        finally:
            server.close()
            await server.wait_closed()
        dead = free_port()
        refused = await probe_tcp("127.0.0.1", dead, 1)
        return ok, accepted, refused, dead

    ok, accepted, refused, dead = asyncio.run(main())
    assert ok.result is Result.SUCCESS and accepted == [1]
    assert refused.result is Result.FAILURE
    assert refused.output == f"dial tcp 127.0.0.1:{dead}: connect: connection refused"


# -- grpc ---------------------------------------------------------------------------------

class SlowHealth(health.HealthServicer):
    def Check(self, request, context):
        time.sleep(1.0)
        return super().Check(request, context)


@pytest.fixture
def grpc_server():
    started = []

    def start(servicer=None):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        if servicer is not None:
            health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        started.append(server)
        return port

    yield start
    for server in started:
        server.stop(0).wait()


def _health() -> health.HealthServicer:
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("db", health_pb2.HealthCheckResponse.NOT_SERVING)
    return servicer


@pytest.mark.parametrize("service, result, output", [
    pytest.param("", Result.SUCCESS, "service healthy", id="serving"),
    pytest.param("db", Result.FAILURE, 'service unhealthy (responded with "NOT_SERVING")',
                 id="not-serving"),
    pytest.param("nope", Result.FAILURE, "error: health rpc probe failed: rpc error: code = NotFound "
                 "desc = ", id="unknown-service"),
])
def test_grpc_probe_against_grpcio_health_server(grpc_server, service, result, output):
    port = grpc_server(_health())
    outcome = asyncio.run(probe_grpc("127.0.0.1", port, service, 2))
    assert (outcome.result, outcome.output) == (result, output)


def test_grpc_probe_many_calls_keep_working(grpc_server):
    # Each probe is a new connection, so each starts a fresh HPACK table; run a few in parallel.
    port = grpc_server(_health())

    async def main():
        return await asyncio.gather(*(probe_grpc("127.0.0.1", port, "", 2) for _ in range(8)))

    assert {o.output for o in asyncio.run(main())} == {"service healthy"}


def test_grpc_probe_server_without_health_service(grpc_server):
    port = grpc_server(None)
    outcome = asyncio.run(probe_grpc("127.0.0.1", port, "", 2))
    assert outcome.result is Result.FAILURE
    assert outcome.output.startswith("error: this server does not implement the grpc health "
                                     "protocol (grpc.health.v1.Health): ")


def test_grpc_probe_rpc_timeout(grpc_server):
    servicer = SlowHealth()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    port = grpc_server(servicer)
    outcome = asyncio.run(probe_grpc("127.0.0.1", port, "", 0.5))
    assert outcome == outcome.__class__(Result.FAILURE, "timeout: health rpc did not complete within 500ms")


def test_grpc_probe_refused_waits_for_the_deadline():
    dead = free_port()
    started = time.monotonic()
    outcome = asyncio.run(probe_grpc("127.0.0.1", dead, "", 1))
    assert outcome.output == (f'timeout: failed to connect service "127.0.0.1:{dead}" within 1s: '
                              "context deadline exceeded")
    assert 0.9 < time.monotonic() - started < 2


def test_grpc_probe_peer_not_speaking_http2():
    async def main():
        async def http1(reader, writer):
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            writer.close()

        server = await asyncio.start_server(http1, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return port, await probe_grpc("127.0.0.1", port, "", 0.5)
        finally:
            server.close()
            await server.wait_closed()

    port, outcome = asyncio.run(main())
    assert outcome.output.startswith(f'timeout: failed to connect service "127.0.0.1:{port}"')


# -- Prober: dispatch, retries, events ----------------------------------------------------

POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}}


def _prober():
    events = []
    return Prober(LocalRuntime(), lambda pod, type_, reason, msg: events.append((type_, reason, msg))), events


@pytest.mark.parametrize("probe_type, spec, want, event", [
    pytest.param("liveness", {"exec": {"command": ["sh", "-c", "echo sick; exit 1"]}},
                 results.Result.FAILURE, ("Warning", "Unhealthy", "Liveness probe failed: sick\n"),
                 id="liveness-failed"),
    pytest.param("readiness", {"exec": {"command": ["sh", "-c", "echo $(GREETING)"]}},
                 results.Result.SUCCESS, None, id="readiness-ok-with-expansion"),
    pytest.param("startup", {"tcpSocket": {"port": "missing"}}, None,
                 ("Warning", "Unhealthy", ('Startup probe errored and resulted in unknown state: '
                  'strconv.Atoi: parsing "missing": invalid syntax')), id="startup-errored"),
    pytest.param("liveness", {}, None, ("Warning", "Unhealthy", ("Liveness probe errored and resulted "
                                        "in unknown state: missing probe handler for p_ns(u1):app")),
                 id="no-handler"),
])
def test_prober_results_and_events(probe_type, spec, want, event):
    prober, events = _prober()
    container = {"name": "app", "env": [{"name": "GREETING", "value": "hi"}],
                 f"{probe_type}Probe": spec or {"periodSeconds": 1}}
    got = asyncio.run(prober.probe(probe_type, POD, container, "c1", "127.0.0.1"))
    assert got == want
    assert events == ([event] if event else [])
    if spec.get("exec"):
        assert prober.runtime.calls[0][1][-1] in ("echo sick; exit 1", "echo hi")
    if want is None:
        # An error is retried: three attempts, one event.
        assert len(events) == 1


def test_kill_message():
    assert kill_message("liveness", "web") == "Container web failed liveness probe, will be restarted"
