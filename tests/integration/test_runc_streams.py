"""exec, attach and their terminals against real runc containers (issue 6, acceptance 5: exec
exit code, ``exec -i``, attach, resize). Fixtures and helpers come from test_runc_runtime."""

from __future__ import annotations

import asyncio

import pytest
import test_runc_runtime
from test_runc_runtime import pod, run, wait_exited

world = test_runc_runtime.world   # the module-scoped fixture: its own agent root per module


async def read_until(reader: asyncio.StreamReader, needle: bytes, timeout: float = 5.0) -> bytes:
    buf = b""
    async def loop():
        nonlocal buf
        while needle not in buf:
            chunk = await reader.read(4096)
            if not chunk:
                break
            buf += chunk
    await asyncio.wait_for(loop(), timeout)
    return buf


def test_exec_sync_exit_code_output_and_timeout(world):
    async def main():
        rt = world.runtime()
        async with pod(rt) as (sid, config):
            cid = await run(rt, world, sid, config, ["sleep", "60"])
            code, out, err = await rt.exec_sync(cid, ["sh", "-c", "echo out; echo err >&2; exit 3"], 5)
            assert (code, out, err) == (3, b"out\n", b"err\n")
            with pytest.raises(asyncio.TimeoutError):
                await rt.exec_sync(cid, ["sleep", "30"], 0.5)
            _, out, _ = await rt.exec_sync(cid, ["ps", "-o", "args"], 5)
            assert b"sleep 30" not in out       # the timed-out process was killed
    asyncio.run(main())


def test_exec_with_stdin(world):
    async def main():
        rt = world.runtime()
        async with pod(rt) as (sid, config):
            cid = await run(rt, world, sid, config, ["sleep", "60"])
            session = await rt.exec(cid, ["sh", "-c", "cat; exit 5"], tty=False, stdin=True)
            session.stdin.write(b"through stdin\n")
            await session.stdin.drain()
            session.stdin.close()
            assert await asyncio.wait_for(session.stdout.read(), 5) == b"through stdin\n"
            assert await session.wait() == 5
            await session.close()
    asyncio.run(main())


def test_exec_tty_resize(world):
    async def main():
        rt = world.runtime()
        async with pod(rt) as (sid, config):
            cid = await run(rt, world, sid, config, ["sleep", "60"])
            session = await rt.exec(cid, ["sh"], tty=True, stdin=True)
            assert session.stderr is None
            await session.resize(123, 45)
            await asyncio.sleep(0.2)
            session.stdin.write(b"stty size; tty; exit 2\n")
            await session.stdin.drain()
            out = await read_until(session.stdout, b"/dev/pts/")
            assert b"45 123" in out
            assert await asyncio.wait_for(session.wait(), 5) == 2
            await session.close()
    asyncio.run(main())


def test_attach_stdin_and_output(world):
    async def main():
        rt = world.runtime()
        async with pod(rt) as (sid, config):
            cid = await run(rt, world, sid, config,
                            ["sh", "-c", "while read l; do echo got:$l; echo err:$l >&2; done; exit 9"],
                            stdin=True, stdin_once=True)
            session = await rt.attach(cid, tty=False, stdin=True)
            session.stdin.write(b"hello\n")
            await session.stdin.drain()
            assert b"got:hello" in await read_until(session.stdout, b"got:hello")
            assert b"err:hello" in await read_until(session.stderr, b"err:hello")
            session.stdin.close()                  # stdinOnce: the container's stdin closes too
            assert await asyncio.wait_for(session.wait(), 5) == 9
            await session.close()
            st = await wait_exited(rt, cid)
            assert st.exit_code == 9
    asyncio.run(main())


def test_attach_tty_resize(world):
    async def main():
        rt = world.runtime()
        async with pod(rt) as (sid, config):
            cid = await run(rt, world, sid, config, ["sh"], stdin=True, tty=True)
            session = await rt.attach(cid, tty=True, stdin=True)
            await session.resize(100, 30)
            await asyncio.sleep(0.2)
            session.stdin.write(b"stty size\n")
            await session.stdin.drain()
            assert b"30 100" in await read_until(session.stdout, b"30 100")
            await session.close()                  # detaching leaves the container running
            assert (await rt.container_status(cid)).state.value == "running"
    asyncio.run(main())
