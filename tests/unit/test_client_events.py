"""EventRecorder against a recording fake client."""

import asyncio
import copy
import logging

from kubeling.api.errors import forbidden_status as forbidden, internal, not_found
from kubeling.client.clock import FakeClock
from kubeling.client.events import COMBINED_PREFIX, EventRecorder
from kubeling.client.exceptions import TransportError

POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "resourceVersion": "42"}}
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "u-n"}}


class FakeEvents:
    def __init__(self):
        self.events: dict[tuple[str, str], dict] = {}
        self.calls: list[tuple] = []
        self.failures: list[Exception] = []
        self.gate: asyncio.Event | None = None

    async def _maybe_fail(self):
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)

    async def create(self, group, version, resource, obj, *, namespace=None):
        self.calls.append(("create", obj["metadata"]["name"]))
        await self._maybe_fail()
        self.events[(namespace, obj["metadata"]["name"])] = copy.deepcopy(obj)
        return obj

    async def patch(self, group, version, resource, name, patch, *, namespace=None, patch_type="merge"):
        self.calls.append(("patch", name))
        assert patch_type == "merge"
        await self._maybe_fail()
        if (namespace, name) not in self.events:
            raise not_found("events", "", name)
        self.events[(namespace, name)].update(patch)
        return self.events[(namespace, name)]


def run(main):
    asyncio.run(main())


def test_event_shape():
    async def main():
        api, clock = FakeEvents(), FakeClock()
        rec = EventRecorder(api, "deployment-controller", "host-a", clock=clock)
        rec.event(POD, "Normal", "Scheduled", "Successfully assigned shop/web-1 to n1")
        await rec.flush()
        [(ns, name)] = api.events
        ev = api.events[(ns, name)]
        assert ns == "shop" and name.startswith("web-1.")
        assert ev["involvedObject"] == {"kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "u-1",
                                        "apiVersion": "v1", "resourceVersion": "42"}
        assert ev["source"] == {"component": "deployment-controller", "host": "host-a"}
        assert (ev["reportingComponent"], ev["reportingInstance"]) == ("deployment-controller", "host-a")
        assert (ev["type"], ev["reason"], ev["count"]) == ("Normal", "Scheduled", 1)
        assert ev["firstTimestamp"] == ev["lastTimestamp"] == "2024-01-01T00:00:00Z"
        await rec.close()

    run(main)


def test_cluster_scoped_objects_get_default_namespace_and_references_work():
    async def main():
        api = FakeEvents()
        rec = EventRecorder(api, "kubelet", clock=FakeClock())
        rec.event(NODE, "Warning", "NodeNotReady", "down")
        rec.event({"kind": "Node", "name": "n2", "uid": "u2"}, "Normal", "Starting", "up")
        await rec.flush()
        assert sorted(ns for ns, _ in api.events) == ["default", "default"]
        names = sorted(e["involvedObject"]["name"] for e in api.events.values())
        assert names == ["n1", "n2"]
        await rec.close()

    run(main)


def test_repeats_bump_count_with_a_patch():
    async def main():
        api, clock = FakeEvents(), FakeClock()
        rec = EventRecorder(api, "c", clock=clock)
        rec.event(POD, "Warning", "BackOff", "Back-off restarting failed container")
        await rec.flush()
        clock.step(30)
        rec.event(POD, "Warning", "BackOff", "Back-off restarting failed container")
        rec.event(POD, "Warning", "BackOff", "Back-off restarting failed container")
        rec.event(POD, "Warning", "Other", "different reason: a new event")
        await rec.flush()
        assert [c[0] for c in api.calls] == ["create", "patch", "patch", "create"]
        backoff = next(e for e in api.events.values() if e["reason"] == "BackOff")
        assert backoff["count"] == 3
        assert backoff["firstTimestamp"] == "2024-01-01T00:00:00Z"
        assert backoff["lastTimestamp"] == "2024-01-01T00:00:30Z"
        await rec.close()

    run(main)


def test_similar_events_are_aggregated():
    async def main():
        api = FakeEvents()
        rec = EventRecorder(api, "c", clock=FakeClock())
        for i in range(14):
            rec.event(POD, "Warning", "FailedMount", f"volume {i} failed")
        await rec.flush()
        creates = [e for e in api.events.values()]
        combined = [e for e in creates if e["message"].startswith(COMBINED_PREFIX)]
        assert len(creates) == 11, "10 distinct events, then one combined event"
        assert len(combined) == 1 and combined[0]["count"] == 4
        assert combined[0]["message"] == COMBINED_PREFIX + "volume 13 failed"
        await rec.close()

    run(main)


def test_spam_filter_drops_floods_per_object():
    async def main():
        api, clock = FakeEvents(), FakeClock()
        rec = EventRecorder(api, "c", clock=clock)
        for _ in range(40):
            rec.event(POD, "Normal", "Pulled", "same")
        rec.event(NODE, "Normal", "Pulled", "another object is not throttled")
        await rec.flush()
        pod_ev = next(e for e in api.events.values() if e["involvedObject"]["kind"] == "Pod")
        assert pod_ev["count"] == 25
        assert any(e["involvedObject"]["kind"] == "Node" for e in api.events.values())
        clock.step(300)  # one token back
        rec.event(POD, "Normal", "Pulled", "same")
        await rec.flush()
        assert pod_ev["count"] == 26
        await rec.close()

    run(main)


def test_event_never_blocks_and_writes_in_background():
    async def main():
        api = FakeEvents()
        api.gate = asyncio.Event()
        rec = EventRecorder(api, "c", clock=FakeClock())
        rec.event(POD, "Normal", "A", "one")
        rec.event(POD, "Normal", "B", "two")
        assert api.events == {}, "event() returns before anything is written"
        api.gate.set()
        await rec.flush()
        assert [e["reason"] for e in sorted(api.events.values(), key=lambda e: e["metadata"]["name"])] == ["A", "B"]
        await rec.close()

    run(main)


def test_failures_are_logged_never_raised(caplog):
    async def main():
        api, clock = FakeEvents(), FakeClock()
        api.failures = [forbidden("events", "", "x", "nope")]
        rec = EventRecorder(api, "c", clock=clock)
        rec.event(POD, "Normal", "A", "dropped on 403")
        rec.event(POD, "Bogus", "A", "bad type")
        rec.event({"metadata": {"name": "no-kind"}}, "Normal", "A", "no kind")
        rec.eventf(POD, "Normal", "B", "%d replicas", 3)
        await rec.flush()
        assert [e["message"] for e in api.events.values()] == ["3 replicas"]
        await rec.close()
        rec.event(POD, "Normal", "C", "after close")  # dropped, no error

    with caplog.at_level(logging.WARNING):
        run(main)
    assert "unsupported event type" in caplog.text
    assert "writing event failed" in caplog.text


def test_temporary_failures_are_retried():
    async def main():
        api, clock = FakeEvents(), FakeClock()
        api.failures = [TransportError("reset"), internal("etcd down")]
        rec = EventRecorder(api, "c", clock=clock, retry_interval=1)
        rec.event(POD, "Normal", "A", "eventually")
        for _ in range(3):
            await asyncio.sleep(0.01)
            clock.step(1)
        await rec.flush()
        assert len(api.events) == 1 and [c[0] for c in api.calls] == ["create"] * 3
        await rec.close()

    run(main)


def test_patch_of_expired_event_recreates_it():
    async def main():
        api = FakeEvents()
        rec = EventRecorder(api, "c", clock=FakeClock())
        rec.event(POD, "Normal", "A", "same")
        await rec.flush()
        api.events.clear()  # the Event's TTL ran out
        rec.event(POD, "Normal", "A", "same")
        await rec.flush()
        assert [c[0] for c in api.calls] == ["create", "patch", "create"]
        [ev] = api.events.values()
        assert ev["count"] == 2
        await rec.close()

    run(main)


def test_event_names_are_unique_within_one_tick():
    async def main():
        api = FakeEvents()
        rec = EventRecorder(api, "c", clock=FakeClock())
        rec.event(POD, "Normal", "A", "one")
        rec.event(POD, "Normal", "B", "two")
        await rec.flush()
        assert len(api.events) == 2
        await rec.close()

    run(main)


def test_events_about_different_objects_are_written_concurrently_and_per_object_in_order():
    class Slow(FakeEvents):
        def __init__(self):
            super().__init__()
            self.in_flight = self.peak = 0

        async def create(self, group, version, resource, obj, *, namespace=None):
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            await asyncio.sleep(0.01)
            self.in_flight -= 1
            return await super().create(group, version, resource, obj, namespace=namespace)

    async def main():
        client = Slow()
        rec = EventRecorder(client, "default-scheduler", workers=4)
        pods = [{**POD, "metadata": {**POD["metadata"], "name": f"p{i}", "uid": f"u{i}"}} for i in range(16)]
        for p in pods:
            rec.event(p, "Normal", "Scheduled", "first")
            rec.event(p, "Normal", "Started", "second")
        await rec.close()
        assert client.peak > 1 and len(client.events) == 32
        for p in pods:   # per object, in the order recorded
            names = [e["reason"] for e in client.events.values() if e["involvedObject"]["name"] == p["metadata"]["name"]]
            assert names == ["Scheduled", "Started"]
    asyncio.run(main())
