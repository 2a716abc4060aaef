"""``kubeling server`` and a bad data directory (issue 10: findings 5, 9 and 11).

Each case starts a real server with the harness on a data dir that cannot be used and checks
that it exits non-zero with one clear line on stderr, no traceback, and nothing half-written:
- a read-only data dir, and a data dir path that is a file;
- a state file that exists but is empty: refused (with how to restore), never a new cluster;
- a restart on a full disk: refused without leaving partial or temp files; once space is freed
  the same data dir starts with every object intact.
Read-only mounts and small disks are tmpfs mounts made (as root) for the test and unmounted in
``finally``. The server log goes outside the data dir, since the data dir cannot take it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest

import harness


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, capture_output=True)


def fill_disk(path: Path) -> None:
    with open(path, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError:
                    break


def failed_start(cluster: harness.Cluster, log: Path) -> tuple[int, str]:
    """Start a server that must not come up; return (exit code, what it wrote)."""
    cluster.log_path = log
    with pytest.raises(harness.ServerNotReady):
        cluster.start()
    code = cluster.proc.returncode
    cluster.stop()
    assert code is not None and code != 0
    output = log.read_text()
    return code, output[output.rindex("=== harness: starting"):].split("\n", 1)[1]


def assert_one_clear_line(output: str, *expected: str) -> None:
    """No traceback, and the last line the server wrote says what is wrong."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "the server exited without a word"
    for text in expected:
        assert text in lines[-1], output


def test_read_only_data_dir(tmp_path):
    with tmpfs(tmp_path / "ro", "1m") as ro:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True, capture_output=True)
        _, output = failed_start(harness.Cluster(ro, startup_timeout=30), tmp_path / "server.log")
        assert_one_clear_line(output, f"data directory {ro} is not writable: Read-only file system")


def test_data_dir_is_a_file(tmp_path):
    path = tmp_path / "not-a-dir"
    cluster = harness.Cluster(tmp_path / "unused", startup_timeout=30)
    path.write_text("x")
    cluster.data_dir = path
    _, output = failed_start(cluster, tmp_path / "server.log")
    assert_one_clear_line(output, f"data directory {path} is not a directory")


def test_empty_state_file_is_refused_not_a_new_cluster(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "state.db").write_bytes(b"")
    _, output = failed_start(harness.Cluster(data, startup_timeout=30), tmp_path / "server.log")
    assert_one_clear_line(output, "state.db", "empty", "kubeling restore")
    assert (data / "state.db").stat().st_size == 0
    assert not (data / "admin.kubeconfig").exists()


def test_restart_on_a_full_disk_leaves_nothing_half_written(tmp_path):
    with tmpfs(tmp_path / "disk", "24m") as disk:
        log = tmp_path / "server.log"
        cluster = harness.Cluster(disk / "data", extra_args=("--controllers", "", "--disable-scheduler"),
                                  startup_timeout=60)
        cluster.log_path = log
        cluster.start()
        status, body = cluster.request(
            "POST", "/api/v1/namespaces/default/configmaps",
            json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"},
                        "data": {"k": "v"}}).encode(), headers={"Content-Type": "application/json"})
        assert status == 201, body
        kept = json.loads(body)
        cluster.stop()
        files = sorted(p.name for p in cluster.data_dir.rglob("*"))
        fill_disk(disk / "filler")
        _, output = failed_start(cluster, log)
        assert_one_clear_line(output, "space")
        assert [p.name for p in cluster.data_dir.rglob("*") if p.name.endswith(".tmp")] == []
        assert sorted(p.name for p in cluster.data_dir.rglob("*")
                      if not p.name.endswith(("-wal", "-shm"))) == \
            [f for f in files if not f.endswith(("-wal", "-shm"))]
        (disk / "filler").unlink()
        cluster.start()
        try:
            status, body = cluster.request("GET", "/api/v1/namespaces/default/configmaps/keep")
            assert status == 200, body
            got = json.loads(body)
            assert got["metadata"]["resourceVersion"] == kept["metadata"]["resourceVersion"]
            assert got["data"] == {"k": "v"}
        finally:
            cluster.stop()
