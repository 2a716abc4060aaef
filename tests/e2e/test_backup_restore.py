"""Acceptance 4 of issue 10: ``kubeling backup`` then ``kubeling restore`` round-trips 5,000
objects with the same resourceVersions.

A server (no controllers, so nothing else writes) gets 5,000 ConfigMaps from concurrent
clients; ``kubeling backup`` copies its state while it runs and its lock is held; the server
stops; ``kubeling restore`` puts the backup into a fresh data dir, where a new server starts.
Every object, its resourceVersion and the list's resourceVersion are the same as before.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp

import harness

N_OBJECTS = 5000
IN_FLIGHT = 40
NAMESPACE = "backup"


def kubeling(*args: str) -> subprocess.CompletedProcess:
    script = harness.VENV_BIN / "kubeling"
    cmd = [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; from kubeling.cli.main import main; sys.exit(main())"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


async def create_configmaps(cluster: harness.Cluster, n: int) -> None:
    url = f"{cluster.url}/api/v1/namespaces/{NAMESPACE}/configmaps"
    connector = aiohttp.TCPConnector(ssl=cluster.ssl_context(), limit=IN_FLIGHT)
    sem = asyncio.Semaphore(IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(i: int) -> None:
            body = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": f"cm-{i:05d}", "labels": {"batch": str(i % 7)}},
                    "data": {"i": str(i), "text": "x" * (i % 300)}}
            async with sem, session.post(url, json=body) as r:
                assert r.status == 201, (r.status, await r.text())

        await asyncio.gather(*(one(i) for i in range(n)))


def snapshot(cluster: harness.Cluster) -> tuple[str, dict[str, tuple[str, dict]]]:
    """(list resourceVersion, {name: (resourceVersion, data)}) of the namespace's ConfigMaps."""
    status, body = cluster.request("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps", timeout=60)
    assert status == 200, body[:300]
    doc = json.loads(body)
    return doc["metadata"]["resourceVersion"], {
        i["metadata"]["name"]: (i["metadata"]["resourceVersion"], i["data"]) for i in doc["items"]}


def test_backup_while_running_then_restore_into_a_fresh_data_dir(make_cluster, tmp_path):
    source = make_cluster(extra_args=("--controllers", "", "--disable-scheduler"))
    status, body = source.request("POST", "/api/v1/namespaces", json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}).encode(),
        headers={"Content-Type": "application/json"})
    assert status == 201, body
    asyncio.run(create_configmaps(source, N_OBJECTS))
    list_rv, before = snapshot(source)
    assert len(before) == N_OBJECTS

    backup_file = tmp_path / "snapshot.db"
    done = kubeling("backup", str(backup_file), "--data-dir", str(source.data_dir))
    assert done.returncode == 0, done.stderr
    assert source.running  # it ran beside the live server, which keeps its lock
    assert f"at revision {list_rv} " in done.stdout
    refused = kubeling("restore", str(backup_file), "--data-dir", str(source.data_dir))
    assert refused.returncode == 1 and "in use" in refused.stderr  # the server holds the lock
    source.stop()

    fresh = tmp_path / "restored"
    done = kubeling("restore", str(backup_file), "--data-dir", str(fresh))
    assert done.returncode == 0, done.stderr
    assert f"at revision {list_rv};" in done.stdout
    restored = harness.Cluster(fresh, extra_args=("--controllers", "", "--disable-scheduler"))
    try:
        restored.start()
        after_rv, after = snapshot(restored)
        # The store goes on from the backup's revision; the restored server's start may write
        # (its `default/kubernetes` Endpoints and EndpointSlice name its new port), never below it.
        assert int(after_rv) >= int(list_rv)
        assert after == before  # every name, resourceVersion and value
        # The restored cluster continues from the backup's revision.
        status, body = restored.request(
            "POST", f"/api/v1/namespaces/{NAMESPACE}/configmaps",
            json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "after-restore"}}).encode(),
            headers={"Content-Type": "application/json"})
        assert status == 201, body
        assert int(json.loads(body)["metadata"]["resourceVersion"]) > int(list_rv)
    finally:
        restored.stop()
        shutil.rmtree(Path(fresh), ignore_errors=True)
