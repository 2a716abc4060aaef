"""`NodeLease`: the node's heartbeat, a ``coordination.k8s.io/v1`` Lease in ``kube-node-lease``
(upstream's node lease controller, ``component-helpers/apimachinery/lease``).

The node lifecycle controller reads ``spec.renewTime`` to tell a live node from a dead one; a
Lease is a few hundred bytes, so renewing it every 10 s is cheap where a full NodeStatus write
would not be. Node status itself is written only when it changes (`nodestatus`).

The Lease::

    metadata: {name: <node>, namespace: kube-node-lease,
               ownerReferences: [{apiVersion: v1, kind: Node, name: <node>, uid: <node uid>}]}
    spec:     {holderIdentity: <node>, leaseDurationSeconds: 40, renewTime: <MicroTime>}

The owner reference makes the garbage collector delete the Lease with its Node.

Loop (`run`): every ``renew_interval`` (a quarter of the duration, jittered up to 4 %) call
`sync`:
- with a Lease from the previous round, update it directly (no GET: nobody else writes it);
- otherwise, or when that failed, *ensure* it: GET, CREATE when missing; failures are retried
  with backoff (200 ms doubling to 7 s) until it exists or ``stop`` is set;
- an update is tried up to 5 times in a row; a 409 Conflict re-reads the Lease first; from the
  second failure on, ``on_repeated_failure()`` is called (the kubelet uses it to drop its
  connections, as upstream does, in case one is stuck).

``clock`` is a `kubeling.client.clock.Clock`: ``wall()`` stamps renewTime, ``sleep()`` waits.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from collections.abc import Callable
from typing import Any

from kubeling.api.errors import StatusError
from kubeling.client.clock import REAL_CLOCK, Clock, sleep_or_stop
from kubeling.client.exceptions import TransportError
from kubeling.client.leaderelection import micro_time

log = logging.getLogger(__name__)

GROUP, VERSION, RESOURCE = "coordination.k8s.io", "v1", "leases"
NAMESPACE = "kube-node-lease"
LEASE_DURATION = 40
RENEW_FRACTION = 0.25
JITTER = 0.04
MAX_UPDATE_RETRIES = 5
BACKOFF_START, BACKOFF_MAX = 0.1, 7.0

_FAULTS = (StatusError, TransportError, OSError, asyncio.TimeoutError)


class NodeLease:
    """Create and renew one node's Lease. See the module docstring."""

    def __init__(self, client: Any, node_name: str, *, lease_duration: int = LEASE_DURATION,
                 renew_interval: float | None = None, namespace: str = NAMESPACE,
                 on_repeated_failure: Callable[[], None] | None = None, clock: Clock | None = None) -> None:
        self.client = client
        self.node_name = node_name
        self.namespace = namespace
        self.lease_duration = int(lease_duration)
        self.renew_interval = renew_interval if renew_interval is not None else lease_duration * RENEW_FRACTION
        self.on_repeated_failure = on_repeated_failure
        self.clock = clock or REAL_CLOCK
        self.latest: dict | None = None  # the Lease as our last write left it

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sync(stop)
            # Sliding: the interval counts from the end of a round, so a slow API server
            # is not hammered by rounds that queue up behind each other.
            if await self._sleep(self.renew_interval * (1 + JITTER * random.random()), stop):
                return

    async def sync(self, stop: asyncio.Event | None = None) -> None:
        """One heartbeat round: renew, or ensure the Lease exists (creating counts as renewing)."""
        if self.latest is not None:
            if await self._retry_update(self.latest, stop):
                return
            log.info("node lease %s: renewing the last known lease failed; reading it again", self.node_name)
        lease, created = await self._backoff_ensure(stop)
        self.latest = lease
        if lease is not None and not created and not await self._retry_update(lease, stop):
            log.error("node lease %s: not renewed, will retry in %ss", self.node_name, self.renew_interval)

    # -- steps -----------------------------------------------------------------------------------

    async def _backoff_ensure(self, stop: asyncio.Event | None) -> tuple[dict | None, bool]:
        delay = BACKOFF_START
        while True:
            try:
                return await self._ensure()
            except _FAULTS as e:
                delay = min(2 * delay, BACKOFF_MAX)
                log.error("node lease %s: failed to ensure the lease exists, retrying in %.1fs: %s",
                          self.node_name, delay, e)
            if await self._sleep(delay, stop):
                return None, False

    async def _ensure(self) -> tuple[dict, bool]:
        try:
            return await self.client.get(GROUP, VERSION, RESOURCE, self.node_name, namespace=self.namespace), False
        except StatusError as e:
            if e.code != 404:
                raise
        lease = await self._desired(None)
        return await self.client.create(GROUP, VERSION, RESOURCE, lease, namespace=self.namespace), True

    async def _retry_update(self, base: dict, stop: asyncio.Event | None) -> bool:
        for attempt in range(MAX_UPDATE_RETRIES):
            try:
                self.latest = await self.client.update(GROUP, VERSION, RESOURCE, await self._desired(base),
                                                       namespace=self.namespace)
                return True
            except _FAULTS as e:
                log.error("node lease %s: failed to renew: %s", self.node_name, e)
                if isinstance(e, StatusError) and e.code == 409:
                    # Someone else wrote it (or our copy is stale): renew from the current one.
                    fresh, _ = await self._backoff_ensure(stop)
                    if fresh is None:
                        return False
                    base = fresh
                    continue
                if isinstance(e, StatusError) and e.code == 404:
                    return False  # deleted under us: the ensure step recreates it
                if attempt > 0 and self.on_repeated_failure is not None:
                    self.on_repeated_failure()
        return False

    async def _desired(self, base: dict | None) -> dict:
        if base is None:
            lease = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Lease",
                     "metadata": {"name": self.node_name, "namespace": self.namespace},
                     "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": self.lease_duration}}
        else:
            lease = copy.deepcopy(base)
        lease["spec"]["renewTime"] = micro_time(self.clock.wall())
        await self._set_owner(lease)
        return lease

    async def _set_owner(self, lease: dict) -> None:
        """Point the Lease at its Node, once the Node exists (the kubelet may start first)."""
        meta = lease["metadata"]
        if meta.get("ownerReferences"):
            return
        try:
            node = await self.client.get("", "v1", "nodes", self.node_name)
        except _FAULTS as e:
            log.info("node lease %s: no owner reference yet (node not readable: %s)", self.node_name, e)
            return
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": self.node_name,
                                    "uid": node["metadata"]["uid"]}]

    async def _sleep(self, delay: float, stop: asyncio.Event | None) -> bool:
        """Sleep ``delay`` on the clock; True if ``stop`` was set first."""
        return await sleep_or_stop(self.clock, delay, stop)
