"""The agent's load balancer over the API servers (`kubeling.kubelet.loadbalancer`), with plain
asyncio TCP servers on loopback as the API servers: each greets a connection with its name, then
echoes. Round trips, failover when the active one dies, a new server list, every server down
(a quick reset), recovery, health checks, and the saved list."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from kubeling.kubelet import loadbalancer as lbm
from kubeling.kubelet.loadbalancer import LoadBalancer

WAIT = 10.0


class Backend:
    """An API server stand-in: writes ``<name>\\n`` on every connection, then echoes."""

    def __init__(self, name: str, port: int = 0) -> None:
        self.name, self.port = name, port
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> "Backend":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            writer.write(self.name.encode() + b"\n")
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except (ConnectionError, OSError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def kill(self) -> None:
        """As a killed process: the listener goes, and every connection is reset."""
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        await self.server.wait_closed()
        self.server = None


async def connect(lb: LoadBalancer) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    """A client through the balancer: (the server that answered, reader, writer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    name = await asyncio.wait_for(reader.readline(), WAIT)
    return name.decode().strip(), reader, writer


async def round_trip(reader, writer, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), WAIT)


async def ended(reader: asyncio.StreamReader) -> bool:
    """The connection was cut (EOF or reset) within WAIT."""
    try:
        return await asyncio.wait_for(reader.read(1), WAIT) == b""
    except (ConnectionError, OSError):
        return True


async def eventually(cond, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def balancer(*backends: Backend, **kw) -> LoadBalancer:
    kw.setdefault("check_interval", 3600)        # checks only when a test asks (check_now)
    return LoadBalancer([b.address for b in backends], port=0, name="test", **kw)


def test_round_trips_go_to_the_first_server_and_back():
    async def main():
        a, b = await Backend("a").start(), await Backend("b").start()
        async with balancer(a, b) as lb:
            assert lb.url == f"https://127.0.0.1:{lb.port}" and lb.port != 0
            clients = [await connect(lb) for _ in range(5)]
            assert {name for name, _, _ in clients} == {"a"}
            for i, (_, r, w) in enumerate(clients):
                assert await round_trip(r, w, b"hello %d" % i) == b"hello %d" % i
            # 8 MB each way: flow control on both sides of the copy
            _, r, w = clients[0]
            payload = bytes(range(256)) * 32768
            writer_task = asyncio.create_task(round_trip(r, w, payload))
            assert await asyncio.wait_for(writer_task, 60) == payload
            assert lb.connections("127.0.0.1:%d" % a.port) == 5
            # half-close passes through: the client's EOF reaches the server, whose EOF comes back
            w.write_eof()
            assert await ended(r)
            for _, _, w in clients:
                w.close()
            await eventually(lambda: lb.connections() == 0, "every connection forgotten")
            assert lb.switches == []
        await a.kill()
        await b.kill()
    asyncio.run(main())


def test_failover_when_the_active_server_dies():
    async def main():
        a, b, c = [await Backend(n).start() for n in "abc"]
        async with balancer(a, b, c, dial_timeout=30) as lb:   # refused at once, never timed out
            clients = [await connect(lb) for _ in range(3)]
            assert {n for n, _, _ in clients} == {"a"}
            await a.kill()
            # the connections to it are cut: the clients see it at once
            for _, r, _ in clients:
                assert await ended(r)
            t0 = time.monotonic()
            name, r, w = await connect(lb)
            took = time.monotonic() - t0
            assert name == "b" and await round_trip(r, w, b"x") == b"x"
            assert took < 5.0, took                   # a refused dial, then the next server
            assert lb.active == b.address and a.address in lb.failed
            assert [(f, t) for _, f, t in lb.switches] == [(a.address, b.address)]
            # every later connection goes to b directly
            assert {(await connect(lb))[0] for _ in range(3)} == {"b"}
            # b dies too, with clients on it: they are cut, and c takes over
            await b.kill()
            assert await ended(r)
            assert (await connect(lb))[0] == "c"
            assert [t for _, _, t in lb.switches] == [b.address, c.address]
            w.close()
        await c.kill()
    asyncio.run(main())


def test_a_new_server_list_moves_the_connections():
    async def main():
        a, b, c = [await Backend(n).start() for n in "abc"]
        async with balancer(a) as lb:
            name, r, w = await connect(lb)
            assert name == "a"
            # as from the Endpoints: b and c; the default server a stays, last
            lb.update([b.address, c.address])
            assert lb.servers == [b.address, c.address, a.address]
            # a is still in the list and healthy: the active server stays, nothing is cut
            assert lb.active == a.address and await round_trip(r, w, b"still") == b"still"
            # an empty list is ignored (Endpoints with no addresses)
            lb.update([])
            assert lb.servers == [b.address, c.address, a.address]
            # a list that no longer has the active one (it is not a default: a new balancer)
        async with balancer(a, b) as lb:
            name, r, w = await connect(lb)
            assert name == "a"
            lb.defaults = [b.address]
            lb.update([c.address])
            assert lb.servers == [c.address, b.address]
            assert await ended(r)                     # cut: a left the list
            assert lb.active == c.address and (await connect(lb))[0] == "c"
            assert lb.switches[-1][1:] == (a.address, c.address)
        for x in (a, b, c):
            await x.kill()
    asyncio.run(main())


def test_every_server_down_is_refused_quickly_then_recovers():
    async def main():
        a, b = await Backend("a").start(), await Backend("b").start()
        async with balancer(a, b, dial_timeout=30) as lb:     # refused at once, never timed out
            assert (await connect(lb))[0] == "a"
            await a.kill()
            await b.kill()
            for _ in range(3):
                t0 = time.monotonic()
                reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
                assert await ended(reader)            # reset by the balancer: no server answers
                assert time.monotonic() - t0 < 5.0
                writer.close()
            assert lb.failed == {a.address, b.address}
            # b comes back on its port: the next connection reaches it (every server is tried when
            # none is healthy), and b is healthy again
            b2 = await Backend("b2", b.port).start()
            name, r, w = await connect(lb)
            assert name == "b2" and await round_trip(r, w, b"back") == b"back"
            assert lb.active == b.address and b.address not in lb.failed
            w.close()
            await b2.kill()
    asyncio.run(main())


def test_health_checks_fail_the_active_server_and_cut_its_connections():
    async def main():
        a, b = await Backend("a").start(), await Backend("b").start()
        healthy = {a.address: True, b.address: True}

        async def check(host, port):
            return healthy[f"{host}:{port}"]
        async with balancer(a, b, health_check=check) as lb:
            name, r, w = await connect(lb)
            assert name == "a"
            healthy[a.address] = False                # e.g. its /readyz says etcd is unreachable
            await lb.check_now()
            assert lb.active == a.address and not lb.failed    # one failed check is not enough
            await lb.check_now()
            assert lb.failed == {a.address} and lb.active == b.address
            assert await ended(r)                     # the clients move on
            assert (await connect(lb))[0] == "b"
            healthy[a.address] = True
            await lb.check_now()
            assert not lb.failed and lb.active == b.address    # no switch back while b is fine
            # every server fails its checks (a CA or readiness problem of them all): with nowhere
            # to go, the connections stay, and new ones still try every server
            name, r2, w2 = await connect(lb)
            healthy.update({a.address: False, b.address: False})
            await lb.check_now()
            await lb.check_now()
            assert lb.failed == {a.address, b.address} and lb.active == b.address
            assert await round_trip(r2, w2, b"kept") == b"kept"
            assert (await connect(lb))[0] == "b"
            w.close()
            w2.close()
        await a.kill()
        await b.kill()
    asyncio.run(main())


def test_periodic_tcp_checks_run_by_themselves():
    async def main():
        a, b = await Backend("a").start(), await Backend("b").start()
        async with balancer(a, b, check_interval=0.05) as lb:
            await a.kill()
            await eventually(lambda: lb.active == b.address, "the periodic checks to fail a")
            assert a.address in lb.failed
            a2 = await Backend("a2", a.port).start()
            await eventually(lambda: a.address not in lb.failed, "a healthy again")
            await a2.kill()
        await b.kill()
    asyncio.run(main())


def test_the_server_list_is_saved_for_the_next_start(tmp_path):
    async def main():
        async with LoadBalancer(["10.0.0.1:6443"], port=0, state_dir=tmp_path, check_interval=3600) as lb:
            lb.update(["10.0.0.2:6443", "10.0.0.3:6443"])
        saved = json.loads((tmp_path / lbm.STATE_FILE).read_text())
        assert saved["servers"] == ["10.0.0.2:6443", "10.0.0.3:6443", "10.0.0.1:6443"]
        assert saved["active"] == "10.0.0.1:6443" and saved["switches"] == 0
        again = LoadBalancer(["10.0.0.1:6443"], port=0, state_dir=tmp_path)
        assert again.servers == saved["servers"] and again.active == "10.0.0.1:6443"
        # another --server: the saved list is not used
        other = LoadBalancer(["10.9.9.9:6443"], port=0, state_dir=tmp_path)
        assert other.servers == ["10.9.9.9:6443"]
    asyncio.run(main())


def test_a_busy_port_is_an_error_unless_any_port_will_do():
    async def main():
        a = await Backend("a").start()
        async with balancer(a) as first:
            with pytest.raises(OSError):
                await LoadBalancer([a.address], port=first.port).start()
            async with LoadBalancer([a.address], port=first.port, any_port_if_busy=True) as second:
                assert second.port != first.port
                assert (await connect(second))[0] == "a"
        await a.kill()
    asyncio.run(main())


def test_addresses():
    assert lbm.server_addresses("https://10.0.0.1:6443, https://10.0.0.2:6443,https://[fd00::1]:6443") == [
        "10.0.0.1:6443", "10.0.0.2:6443", "[fd00::1]:6443"]
    assert lbm.server_addresses("https://k8s.example") == ["k8s.example:443"]
    with pytest.raises(ValueError):
        lbm.server_addresses("http://10.0.0.1:6443")
    assert lbm.split_address("[fd00::1]:6443") == ("fd00::1", 6443)
    endpoints = {"subsets": [{"addresses": [{"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}],
                              "notReadyAddresses": [{"ip": "10.0.0.9"}],
                              "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]}
    assert lbm.addresses_from_endpoints(endpoints) == ["10.0.0.2:6443", "10.0.0.3:6443"]
    assert lbm.addresses_from_endpoints({"subsets": []}) == [] == lbm.addresses_from_endpoints(None)


def test_readyz_check_against_a_real_tls_server(tmp_path):
    """The agent's check: /readyz over TLS verified with the cluster CA (kubeling's own PKI, whose
    serving certificate names 127.0.0.1, as the balancer needs)."""
    import ssl

    from kubeling.apiserver.certs import PKI
    pki, stranger = PKI(tmp_path / "a"), PKI(tmp_path / "b")
    pki.ensure()
    stranger.ensure()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.serving_cert, pki.serving_key)
    status = {"code": 200}

    async def main():
        async def handle(reader, writer):
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % status["code"])
                await writer.drain()
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        check = lbm.readyz_check(pki.ca_cert.read_bytes())
        try:
            assert await check("127.0.0.1", port) is True
            status["code"] = 401                          # serving, only not to anonymous users
            assert await check("127.0.0.1", port) is True
            status["code"] = 500                          # a failing readiness check
            assert await check("127.0.0.1", port) is False
            status["code"] = 200                          # a server of another cluster
            assert await lbm.readyz_check(stranger.ca_cert.read_bytes())("127.0.0.1", port) is False
        finally:
            server.close()
            await server.wait_closed()
        assert await check("127.0.0.1", port) is False    # nothing listens
    asyncio.run(main())
