"""The CRI log format: writer (line splitting, partial lines, rotation) and reader (tail, since,
timestamps, limit, follow across rotation), as `kubeling.kubelet.logs` documents them."""

from __future__ import annotations

import asyncio
import os

import pytest

from kubeling.kubelet import logs
from kubeling.kubelet.logs import CRILogWriter, LogOptions, read_logs


class Clock:
    """Nanoseconds, one second apart per call, from 2016-10-06T00:17:09Z."""

    def __init__(self, start: int = 1475713029 * 10**9, step: int = 10**9) -> None:
        self.now, self.step = start, step

    def __call__(self) -> int:
        self.now += self.step
        return self.now


@pytest.mark.parametrize("ns, text", [
    pytest.param(1475713029669794202, "2016-10-06T00:17:09.669794202Z", id="nanos"),
    pytest.param(1475713029669000000, "2016-10-06T00:17:09.669Z", id="trailing-zeros-dropped"),
    pytest.param(1475713029000000000, "2016-10-06T00:17:09Z", id="whole-second"),
])
def test_timestamps_are_rfc3339nano(ns, text):
    assert logs.format_timestamp(ns) == text
    assert logs.parse_timestamp(text) == ns


@pytest.mark.parametrize("line, expected", [
    pytest.param(b"2016-10-06T00:17:09.669794202Z stdout F hello world\n",
                 ("stdout", False, b"hello world"), id="full"),
    pytest.param(b"2016-10-06T00:17:09Z stderr P part", ("stderr", True, b"part"), id="partial"),
    pytest.param(b"2016-10-06T00:17:09Z stdout F ", ("stdout", False, b""), id="empty-line"),
])
def test_parse_line(line, expected):
    entry = logs.parse_line(line)
    assert (entry.stream, entry.partial, entry.content) == expected


@pytest.mark.parametrize("line", [
    pytest.param(b"garbage", id="garbage"),
    pytest.param(b"2016-10-06T00:17:09Z stdin F x", id="bad-stream"),
    pytest.param(b"2016-10-06T00:17:09Z stdout X x", id="bad-tag"),
])
def test_parse_line_rejects(line):
    with pytest.raises(ValueError):
        logs.parse_line(line)


def _entries(path):
    return [logs.parse_line(line) for line in open(path, "rb")]


def test_writer_splits_chunks_into_lines(tmp_path):
    path = tmp_path / "0.log"
    w = CRILogWriter(str(path), clock=Clock())
    w.write("stdout", b"hel")
    w.write("stdout", b"lo\nwor")
    w.write("stderr", b"oops\n")
    w.write("stdout", b"ld\n\nlast-no-newline")
    assert [(e.stream, e.content) for e in _entries(path)] == [
        ("stdout", b"hello"), ("stderr", b"oops"), ("stdout", b"world"), ("stdout", b"")]
    w.close()
    last = _entries(path)[-1]
    assert (last.content, last.partial) == (b"last-no-newline", False)   # F at EOF, as containerd
    assert path.read_bytes().startswith(b"2016-10-06T00:17:10Z stdout F hello\n")


def test_writer_marks_long_lines_partial(tmp_path):
    path = tmp_path / "0.log"
    w = CRILogWriter(str(path), clock=Clock())
    w.write("stdout", b"x" * (2 * logs.MAX_LINE + 10) + b"\n")
    w.close()
    got = [(e.partial, len(e.content)) for e in _entries(path)]
    assert got == [(True, logs.MAX_LINE), (True, logs.MAX_LINE), (False, 10)]


def test_writer_rotates_and_keeps_max_files(tmp_path):
    path = tmp_path / "0.log"
    w = CRILogWriter(str(path), max_size=200, max_files=3, clock=Clock(step=10**6))
    for i in range(40):
        w.write("stdout", b"line %02d padding padding\n" % i)
    w.close()
    rotated = logs.rotated_files(str(path))
    assert len(rotated) == 2                               # max_files counts the current file
    assert all(os.path.basename(r).startswith("0.log.20161006-0017") for r in rotated)
    sizes = [os.path.getsize(p) for p in rotated + [str(path)]]
    assert max(sizes) <= 200
    # the newest lines survive, in order, across the kept files
    contents = [e.content for p in rotated + [str(path)] for e in _entries(p)]
    assert contents[-1] == b"line 39 padding padding"
    assert contents == sorted(contents)


async def _read(path, opts, is_running=None):
    return b"".join([chunk async for chunk in read_logs(str(path), opts, is_running)])


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "0.log"
    w = CRILogWriter(str(path), clock=Clock())
    w.write("stdout", b"one\n")
    w.write("stderr", b"two\n")
    w.write("stdout", b"x" * (logs.MAX_LINE + 3) + b"\n")
    w.write("stdout", b"four\n")
    w.close()
    return path


@pytest.mark.parametrize("opts, expected", [
    pytest.param(LogOptions(), b"one\ntwo\n" + b"x" * (logs.MAX_LINE + 3) + b"\nfour\n", id="all"),
    pytest.param(LogOptions(tail=1), b"four\n", id="tail-1"),
    pytest.param(LogOptions(tail=2), b"xxx\nfour\n", id="tail-counts-entries-not-lines"),
    pytest.param(LogOptions(tail=0), b"", id="tail-0"),
    pytest.param(LogOptions(tail=100), b"one\ntwo\n" + b"x" * (logs.MAX_LINE + 3) + b"\nfour\n",
                 id="tail-more-than-all"),
    pytest.param(LogOptions(stream="stderr"), b"two\n", id="stderr-only"),
    pytest.param(LogOptions(limit_bytes=6), b"one\ntw", id="limit-bytes"),
    pytest.param(LogOptions(since_ns=(1475713029 + 2) * 10**9),
                 b"two\n" + b"x" * (logs.MAX_LINE + 3) + b"\nfour\n", id="since"),
    pytest.param(LogOptions(tail=1, timestamps=True), b"2016-10-06T00:17:14Z four\n",
                 id="timestamps"),
])
def test_read_logs(sample, opts, expected):
    assert asyncio.run(_read(sample, opts)) == expected


def test_follow_sees_new_lines_and_rotation_then_stops(tmp_path):
    path = tmp_path / "0.log"
    w = CRILogWriter(str(path), max_size=150, max_files=2)
    w.write("stdout", b"first\n")
    running = {"yes": True}

    async def is_running():
        return running["yes"]

    async def main():
        got = []

        async def follow():
            async for chunk in read_logs(str(path), LogOptions(follow=True), is_running):
                got.append(chunk)

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.2)
        for i in range(6):               # enough to rotate the 150-byte file at least once
            w.write("stdout", b"more %d ..............\n" % i)
            await asyncio.sleep(0.15)
        running["yes"] = False
        w.write("stdout", b"last\n")
        await asyncio.wait_for(task, 3)
        return b"".join(got)

    out = asyncio.run(main())
    w.close()
    assert logs.rotated_files(str(path)), "the file should have rotated"
    assert out.startswith(b"first\n") and out.endswith(b"last\n")
    assert out.count(b"more ") == 6
