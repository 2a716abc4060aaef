"""kubeling.client against the real API server, started as a subprocess on 127.0.0.1."""

import asyncio
import subprocess
import sys
import time
import uuid

import pytest

from kubeling.client import kubeconfig
from kubeling.client.events import EventRecorder
from kubeling.client.exceptions import ResourceExpired, TransportError, is_conflict, is_not_found
from kubeling.client.informer import Informer
from kubeling.client.leaderelection import LeaderElector
from kubeling.client.rest import RESTClient
from kubeling.client.store import DeletedFinalStateUnknown
from kubeling.api.errors import StatusError
from kubeling.controllers import manager
from tests.support.ports import free_port


def _start(data, *extra):
    """Start ``kubeling server`` on a free loopback port; yield its admin kubeconfig path."""
    port = free_port()
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "kubeling.cli.main", "server", "--data-dir", str(data),
                             "--secure-port", str(port), "--bind-address", "127.0.0.1", "--controllers", "", "--disable-scheduler", "--disable-agent",
                             *extra], stdout=log, stderr=subprocess.STDOUT)
    kc = data / "admin.kubeconfig"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{(data / 'server.log').read_text()[-4000:]}")
            if kc.exists() and asyncio.run(_ready(str(kc))):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in 60s:\n{(data / 'server.log').read_text()[-4000:]}")
            time.sleep(0.2)
        yield str(kc)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from _start(tmp_path_factory.mktemp("kubeling"))


@pytest.fixture(scope="module")
def compacting_server(tmp_path_factory):
    """A server that compacts away all but the last revision every 0.2s."""
    yield from _start(tmp_path_factory.mktemp("kubeling-compact"), "--compact-interval", "0.2",
                      "--compact-keep", "1")


async def _ready(kc: str) -> bool:
    try:
        async with RESTClient.from_kubeconfig(kc, component="test") as c:
            await c.get("", "v1", "namespaces", "default")
        return True
    except (TransportError, StatusError, kubeconfig.ConfigError):
        return False


async def _namespace(c: RESTClient) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    await c.create("", "v1", "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def _cm(name, ns, **data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns,
                                                                  "labels": {"app": "live"}}, "data": data}


def test_rest_crud_and_errors(server):
    async def main():
        async with RESTClient.from_kubeconfig(server, component="test") as c:
            ns = await _namespace(c)
            created = await c.create("", "v1", "configmaps", _cm("a", ns, k="1"))
            assert created["metadata"]["uid"] and created["data"] == {"k": "1"}
            got = await c.get("", "v1", "configmaps", "a", namespace=ns)
            assert got["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]

            got["data"]["k"] = "2"
            updated = await c.update("", "v1", "configmaps", got)
            assert updated["data"]["k"] == "2"
            with pytest.raises(StatusError) as ei:  # stale resourceVersion
                await c.update("", "v1", "configmaps", got)
            assert ei.value.code == 409 and is_conflict(ei.value)
            with pytest.raises(StatusError) as ei:
                await c.create("", "v1", "configmaps", _cm("a", ns))
            assert ei.value.code == 409 and ei.value.reason == "AlreadyExists"

            p = await c.patch("", "v1", "configmaps", "a", {"data": {"m": "merge"}}, namespace=ns)
            assert p["data"] == {"k": "2", "m": "merge"}
            p = await c.patch("", "v1", "configmaps", "a", [{"op": "remove", "path": "/data/m"}], namespace=ns,
                              patch_type="json")
            assert p["data"] == {"k": "2"}
            p = await c.patch("", "v1", "configmaps", "a", {"data": {"s": "sm"}}, namespace=ns,
                              patch_type="strategic")
            assert p["data"]["s"] == "sm"
            applied = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": ns},
                       "data": {"x": "applied"}}
            p = await c.patch("", "v1", "configmaps", "b", applied, namespace=ns, patch_type="apply",
                              field_manager="live-test", force=True)
            assert p["data"] == {"x": "applied"}

            lst = await c.list("", "v1", "configmaps", namespace=ns, label_selector="app=live")
            assert [i["metadata"]["name"] for i in lst["items"]] == ["a"]
            page = await c.list("", "v1", "configmaps", namespace=ns, limit=1)
            assert len(page["items"]) == 1 and page["metadata"].get("continue")

            await c.delete("", "v1", "configmaps", "a", namespace=ns, propagation_policy="Background")
            with pytest.raises(StatusError) as ei:
                await c.get("", "v1", "configmaps", "a", namespace=ns)
            assert ei.value.code == 404 and is_not_found(ei.value)
            assert 'configmaps "a" not found' in ei.value.message

    asyncio.run(main())


def test_watch_from_resource_version(server):
    async def main():
        async with RESTClient.from_kubeconfig(server, component="test") as c:
            ns = await _namespace(c)
            rv = (await c.list("", "v1", "configmaps", namespace=ns))["metadata"]["resourceVersion"]
            seen = []

            async def watch():
                async with c.watch("", "v1", "configmaps", namespace=ns, resource_version=rv) as w:
                    async for typ, obj in w:
                        if typ == "BOOKMARK":
                            continue
                        seen.append((typ, obj["metadata"]["name"], obj.get("data")))
                        if typ == "DELETED":
                            return

            task = asyncio.create_task(watch())
            await c.create("", "v1", "configmaps", _cm("w", ns, v="1"))
            await c.patch("", "v1", "configmaps", "w", {"data": {"v": "2"}}, namespace=ns)
            await c.delete("", "v1", "configmaps", "w", namespace=ns)
            await asyncio.wait_for(task, 10)
            assert [s[:2] for s in seen] == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
            assert seen[1][2] == {"v": "2"}

    asyncio.run(main())


def test_informer_syncs_and_delivers_events(server):
    async def main():
        async with RESTClient.from_kubeconfig(server, component="test") as c:
            ns = await _namespace(c)
            for n in ("pre-1", "pre-2", "pre-3"):
                await c.create("", "v1", "configmaps", _cm(n, ns))
            inf = Informer(c, "", "v1", "configmaps", namespace=ns, page_size=2)
            events = []
            inf.add_handler(on_add=lambda o: events.append(("add", o["metadata"]["name"])),
                            on_update=lambda old, new: events.append(("update", new["metadata"]["name"])),
                            on_delete=lambda o: events.append(
                                ("delete", o.key if isinstance(o, DeletedFinalStateUnknown) else
                                 o["metadata"]["name"])))
            stop = asyncio.Event()
            task = asyncio.create_task(inf.run(stop))
            try:
                assert await inf.wait_for_sync(10)
                assert sorted(inf.indexer.list_keys()) == [f"{ns}/pre-1", f"{ns}/pre-2", f"{ns}/pre-3"]
                assert inf.get(f"{ns}/pre-1")["kind"] == "ConfigMap"
                await c.create("", "v1", "configmaps", _cm("live", ns))
                await c.patch("", "v1", "configmaps", "live", {"data": {"a": "b"}}, namespace=ns)
                await c.delete("", "v1", "configmaps", "pre-1", namespace=ns)

                async def until():
                    while ("delete", "pre-1") not in events:
                        await asyncio.sleep(0.05)
                await asyncio.wait_for(until(), 10)
                assert events[:3] == [("add", "pre-1"), ("add", "pre-2"), ("add", "pre-3")]
                assert events[3:] == [("add", "live"), ("update", "live"), ("delete", "pre-1")]
                assert inf.get(f"{ns}/live")["data"] == {"a": "b"}
                assert inf.get(f"{ns}/pre-1") is None
                assert len(inf.by_index("namespace", ns)) == 3
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_leader_election_two_electors(server):
    async def main():
        async with RESTClient.from_kubeconfig(server, component="a") as ca, \
                RESTClient.from_kubeconfig(server, component="b") as cb:
            ns = await _namespace(ca)
            leading: list[str] = []

            def candidate(client, ident):
                async def started(lost):
                    leading.append(ident)
                    await lost.wait()
                return LeaderElector(client, ns, "lock", ident, lease_duration=4, renew_deadline=3,
                                     retry_period=0.5, on_started_leading=started)

            a, b = candidate(ca, "a"), candidate(cb, "b")
            stop_a, stop_b = asyncio.Event(), asyncio.Event()
            ta = asyncio.create_task(a.run(stop_a))
            await asyncio.sleep(0.5)
            tb = asyncio.create_task(b.run(stop_b))
            await asyncio.sleep(2)
            assert leading == ["a"]
            lease = await ca.get("coordination.k8s.io", "v1", "leases", "lock", namespace=ns)
            assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["leaseDurationSeconds"] == 4
            stop_a.set()
            await asyncio.wait_for(ta, 10)

            async def until_b():
                while leading != ["a", "b"]:
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(until_b(), 5)  # a released: b need not wait out the lease
            lease = await ca.get("coordination.k8s.io", "v1", "leases", "lock", namespace=ns)
            assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
            stop_b.set()
            await asyncio.wait_for(tb, 10)

    asyncio.run(main())


def test_event_recorder_writes_and_bumps_count(server):
    async def main():
        async with RESTClient.from_kubeconfig(server, component="test") as c:
            ns = await _namespace(c)
            cm = await c.create("", "v1", "configmaps", _cm("subject", ns))
            rec = EventRecorder(c, "live-test", "host-1")
            rec.event(cm, "Normal", "Synced", "configmap synced")
            rec.event(cm, "Normal", "Synced", "configmap synced")
            rec.event(cm, "Warning", "Failed", "something broke")
            await rec.close()
            evs = await c.list("", "v1", "events", namespace=ns,
                               field_selector="involvedObject.name=subject")
            by_reason = {e["reason"]: e for e in evs["items"]}
            assert set(by_reason) == {"Synced", "Failed"}
            synced = by_reason["Synced"]
            assert synced["count"] == 2 and synced["type"] == "Normal"
            assert synced["involvedObject"]["uid"] == cm["metadata"]["uid"]
            assert synced["source"] == {"component": "live-test", "host": "host-1"}
            assert by_reason["Failed"]["count"] == 1

    asyncio.run(main())


def test_compacted_history_is_resource_expired_and_informer_relists(compacting_server):
    async def main():
        async with RESTClient.from_kubeconfig(compacting_server, component="test") as c:
            ns = await _namespace(c)
            for n in ("a", "b", "c"):
                await c.create("", "v1", "configmaps", _cm(n, ns))
            page = await c.list("", "v1", "configmaps", namespace=ns, limit=1)
            old_rv = page["metadata"]["resourceVersion"]
            for n in ("d", "e"):
                await c.create("", "v1", "configmaps", _cm(n, ns))
            await asyncio.sleep(1.0)  # several compactions
            with pytest.raises(ResourceExpired):
                async with c.watch("", "v1", "configmaps", namespace=ns, resource_version=old_rv) as w:
                    async for _ in w:
                        pass
            with pytest.raises(ResourceExpired):
                await c.list("", "v1", "configmaps", namespace=ns, limit=1, continue_=page["metadata"]["continue"])

            # An informer paging through a compacting store still ends with the full set.
            inf = Informer(c, "", "v1", "configmaps", namespace=ns, page_size=1)
            stop = asyncio.Event()
            task = asyncio.create_task(inf.run(stop))
            try:
                assert await inf.wait_for_sync(10)
                assert sorted(inf.indexer.list_keys()) == [f"{ns}/{n}" for n in "abcde"]
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_controllers_in_process_on_one_shared_factory(server):
    """The controller manager's controllers against the real server: their field-selector informers,
    the root CA, garbage collection and namespace deletion."""
    async def main():
        cfg = kubeconfig.load(server)
        async with RESTClient.from_config(cfg, component="test-controllers") as c:
            stop = asyncio.Event()
            task = asyncio.create_task(manager.run_controllers(
                c, manager.enabled(["*"]), stop, ca_pem=cfg.certificate_authority_data.decode()))

            async def until(check, timeout=20):
                async def loop():
                    while True:
                        try:
                            if await check():
                                return
                        except StatusError as e:
                            if not is_not_found(e):
                                raise
                        await asyncio.sleep(0.1)
                await asyncio.wait_for(loop(), timeout)

            try:
                ns = await _namespace(c)
                await until(lambda: c.get("", "v1", "serviceaccounts", "default", namespace=ns))
                await until(lambda: c.get("", "v1", "configmaps", "kube-root-ca.crt", namespace=ns))
                owner = await c.create("", "v1", "configmaps", _cm("owner", ns))
                dep = _cm("dependent", ns)
                dep["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                                                       "uid": owner["metadata"]["uid"]}]
                await c.create("", "v1", "configmaps", dep)
                await c.delete("", "v1", "configmaps", "owner", namespace=ns, propagation_policy="Background")

                async def dependent_gone():
                    try:
                        await c.get("", "v1", "configmaps", "dependent", namespace=ns)
                    except StatusError as e:
                        return is_not_found(e)
                    return False
                await until(dependent_gone)
                await c.delete("", "v1", "namespaces", ns)

                async def namespace_gone():
                    try:
                        await c.get("", "v1", "namespaces", ns)
                    except StatusError as e:
                        return is_not_found(e)
                    return False
                await until(namespace_gone, 30)
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)

    asyncio.run(main())

