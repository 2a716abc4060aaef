"""A harness for controller unit tests: real controllers over a `FakeClient` and a `FakeClock`.

``ControllerHarness(controller_cls, *objs, workers=2, clock=None, **ctx_fields)`` seeds a
`FakeClient` with ``objs`` (pass the Namespaces the test needs, e.g. `NS`), builds one
`SharedInformerFactory` and one `ControllerContext` (``ctx_fields`` are its settings, e.g.
``node_monitor_grace_period=10.0``) and the controller. ``controller_cls`` may be a tuple of
classes: they then share the context, as in kube-controller-manager (the Deployment tests run the
ReplicaSet controller beside theirs); ``ctrl`` is the first one.

Contract:
- ``async with`` starts the informers and ``workers`` workers per controller and returns once they
  settled; leaving stops them, closes the recorders (flushing their Events) and the informers.
- ``settle()`` lets the event loop run until every controller's queue is empty, nothing is in a
  worker's hands and no informer handler is pending, for ``idle_rounds`` turns in a row. It never
  moves the clock, so delayed requeues stay parked until ``step()``. A controller that never
  settles within ``rounds`` turns fails the test (a busy loop is a bug, not something to wait out)
  unless ``must_settle`` is off: `FakeClient` stores a no-op update as a new resourceVersion and
  a watch event, where the API server drops it, so a controller that rewrites an unchanged status
  (the disruption controller's fail-safe) re-syncs itself here and only here.
- ``events()`` flushes the recorders first, so it sees every Event recorded so far; its tuples are
  ``event_fields`` (dotted paths into the Event), from ``event_namespace`` (None: all).

Subclass it per test file for the controller and the file's own helpers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kubeling.client.clock import FakeClock
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.fake import FakeClient
from kubeling.controllers.base import ControllerContext

NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}


def rfc3339(clock) -> str:
    """``clock``'s wall time as the API writes timestamps (whole seconds, UTC)."""
    return clock.wall().strftime("%Y-%m-%dT%H:%M:%SZ")


def _field(obj: dict, path: str):
    for part in path.split("."):
        obj = (obj or {}).get(part)
    return obj


class ControllerHarness:
    rounds = 3000
    idle_rounds = 30
    must_settle = True
    event_fields: tuple[str, ...] = ("reason", "message")
    event_namespace: str | None = "default"

    def __init__(self, controller_cls, *objs, workers: int = 2, clock: FakeClock | None = None,
                 **ctx_fields) -> None:
        self.clock = clock or FakeClock()
        self.client = FakeClient(*objs, clock=self.clock)
        self.factory = SharedInformerFactory(self.client, clock=self.clock)
        self.ctx = ControllerContext(self.client, self.factory, clock=self.clock, **ctx_fields)
        classes = controller_cls if isinstance(controller_cls, tuple) else (controller_cls,)
        self.controllers = [cls(self.ctx) for cls in classes]
        self.ctrl = self.controllers[0]
        self.workers = workers
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self):
        self.factory.start(self.stop)
        self.tasks = [asyncio.create_task(c.run(self.workers, self.stop)) for c in self.controllers]
        await self.settle()
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 2)
        for r in self._recorders():
            await r.close()
        await self.factory.shutdown()

    def _recorders(self) -> list:
        return [c.recorder for c in self.controllers if getattr(c, "recorder", None) is not None]

    def _busy(self) -> bool:
        return any(len(c.queue) or c.queue.processing() or any(r.pending() for _, r in c.registrations)
                   for c in self.controllers)

    async def settle(self) -> None:
        idle = 0
        for _ in range(self.rounds):
            await asyncio.sleep(0)
            idle = 0 if self._busy() else idle + 1
            if idle > self.idle_rounds:
                return
        if self.must_settle:
            raise AssertionError("the controller did not settle")

    async def step(self, seconds: float) -> None:
        """Move the clock (firing due timers and delayed requeues) and settle."""
        self.clock.step(seconds)
        await self.settle()

    def now(self) -> str:
        return rfc3339(self.clock)

    # -- reading the fake API ------------------------------------------------------------

    def list(self, resource: str, group: str = "", namespace: str | None = "default") -> list[dict]:
        res = self.client.tracker.resource(group, "v1", resource)
        return list(self.client.tracker.list(res, namespace, None, None))

    def get(self, resource: str, name: str, group: str = "apps", namespace: str | None = "default") -> dict:
        return self.client.object(group, "v1", resource, name, namespace)

    def pods(self, prefix: str = "") -> list[dict]:
        return [p for p in self.list("pods") if p["metadata"]["name"].startswith(prefix)]

    async def events(self) -> list[tuple]:
        for r in self._recorders():
            await r.flush()
        return [tuple(_field(e, f) for f in self.event_fields)
                for e in self.list("events", namespace=self.event_namespace)]

    # -- playing the other actors ----------------------------------------------------------

    async def edit(self, fn: Callable[[dict], None], resource: str, name: str, group: str = "apps",
                   namespace: str | None = "default") -> None:
        """Read-modify-write ``fn`` on an object, as a user's ``kubectl edit``; then settle."""
        obj = await self.client.get(group, "v1", resource, name, namespace=namespace)
        fn(obj)
        await self.client.update(group, "v1", resource, obj, namespace=namespace)
        await self.settle()

    async def mark_ready(self, name: str, ready: bool = True, phase: str = "Running",
                         since: str | None = None, settle: bool = True) -> None:
        """Play the kubelet: the pod reached ``phase`` with its Ready condition ``ready`` since
        ``since`` (default: now)."""
        pod = await self.client.get("", "v1", "pods", name, namespace="default")
        pod["status"] = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                                         "lastTransitionTime": since or self.now()}]}
        await self.client.update_status("", "v1", "pods", pod, namespace="default")
        if settle:
            await self.settle()
