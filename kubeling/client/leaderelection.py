"""Leader election on a ``coordination.k8s.io/v1`` Lease, like client-go's ``tools/leaderelection``.

Several replicas run a `LeaderElector` with the same lease and different
identities; at most one of them *leads* at a time (given clocks that run at
roughly the same rate — no synchronised wall clocks are needed).

Protocol (every write is a compare-and-swap on the Lease's resourceVersion, so
two candidates can never both win the same round):

- **Acquire**: every ``retry_period`` (jittered up to ×2.2) read the Lease. If it
  does not exist, create it naming us. If another holder is named and the record
  changed less than its ``leaseDurationSeconds`` ago *as measured by our own
  clock since we first saw that version*, back off. Otherwise write ourselves as
  holder (``acquireTime`` now, ``leaseTransitions`` + 1).
- **Renew**: while leading, every ``retry_period`` write a fresh ``renewTime``.
  If no renewal succeeds for ``renew_deadline`` seconds, leadership is lost.
- **Release**: when ``stop`` is set while leading (and ``release_on_cancel``), the
  holder is cleared with ``leaseDurationSeconds: 1`` so a successor need not
  wait out the lease.

Callbacks and their order:

- ``on_new_leader(identity)`` whenever the observed holder changes (any candidate);
- ``on_started_leading(lost: asyncio.Event)`` runs as a task once we lead; the
  event is set when leadership ends — it fits a component's ``run(stop)``;
- if that task ends on its own, we step down (and release); if it raised,
  ``run`` re-raises its exception after stepping down;
- when leadership ends: ``lost`` is set, the task gets up to ``renew_deadline``
  seconds to return (then it is cancelled), the lease is released, and
  ``on_stopped_leading()`` is called. ``run`` then returns: like client-go,
  an elector leads at most once; loop around ``run`` to stand again.

Timing requirement: ``lease_duration > renew_deadline > 1.2 * retry_period``, and
``lease_duration >= 1`` (the Lease stores whole seconds).
Callbacks may be plain or async. Requests go through ``client`` (`RESTClient`
or anything with its ``get``/``create``/``update``), so tests use a fake.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import random
from typing import Any, Callable

from kubeling.api.errors import StatusError
from kubeling.client.clock import REAL_CLOCK, Clock
from kubeling.client.exceptions import TransportError

log = logging.getLogger(__name__)

GROUP, VERSION, RESOURCE = "coordination.k8s.io", "v1", "leases"
JITTER_FACTOR = 1.2


def micro_time(dt) -> str:
    """A metav1.MicroTime: RFC 3339 with microseconds, in UTC."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _call(fn: Callable | None, *args: Any) -> Any:
    if fn is None:
        return None
    result = fn(*args)
    if inspect.isawaitable(result):
        return await result
    return result


class LeaderElector:
    """Campaign for, hold, and release one Lease. See the module docstring."""

    def __init__(self, client: Any, lease_namespace: str, lease_name: str, identity: str, *,
                 lease_duration: float = 15, renew_deadline: float = 10, retry_period: float = 2,
                 on_started_leading: Callable | None = None, on_stopped_leading: Callable | None = None,
                 on_new_leader: Callable | None = None, release_on_cancel: bool = True,
                 clock: Clock | None = None) -> None:
        if not identity:
            raise ValueError("identity must not be empty")
        if lease_duration < 1:
            # The Lease stores whole seconds: a shorter lease would be written as 0 and look expired.
            raise ValueError("lease_duration must be at least 1 second")
        if not lease_duration > renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if not renew_deadline > JITTER_FACTOR * retry_period:
            raise ValueError(f"renew_deadline must be greater than {JITTER_FACTOR} * retry_period")
        if retry_period <= 0:
            raise ValueError("retry_period must be positive")
        self.client = client
        self.namespace, self.name, self.identity = lease_namespace, lease_name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.on_started_leading, self.on_stopped_leading = on_started_leading, on_stopped_leading
        self.on_new_leader = on_new_leader
        self.release_on_cancel = release_on_cancel
        self._clock = clock or REAL_CLOCK
        self._observed: dict = {}  # last Lease spec seen
        self._observed_rv = ""
        self._observed_time = 0.0  # our monotonic clock when _observed last changed
        self._reported_leader: str | None = None

    # -- state ------------------------------------------------------------

    def get_leader(self) -> str:
        """The holder we last observed ("" if none)."""
        return self._observed.get("holderIdentity") or ""

    def is_leader(self) -> bool:
        return self.get_leader() == self.identity and \
            self._clock.now() < self._observed_time + self.lease_duration

    # -- main loop --------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        if not await self._acquire(stop):
            return
        lost = asyncio.Event()
        leading = asyncio.get_running_loop().create_task(_call(self.on_started_leading, lost))
        release = False
        failure: BaseException | None = None
        try:
            release = await self._renew(stop, leading)
        finally:
            lost.set()
            failure = await self._end_leading_task(leading)
            if release and self.release_on_cancel:
                await asyncio.shield(self._release())
            try:
                await _call(self.on_stopped_leading)
            except Exception:
                log.exception("leader election %s/%s: on_stopped_leading failed", self.namespace, self.name)
        if failure is not None:
            raise failure  # the leader's work crashed: escalate, never vanish silently

    async def _end_leading_task(self, task: asyncio.Task) -> BaseException | None:
        if not task.done():
            done, _ = await asyncio.wait([task], timeout=self.renew_deadline)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return None
        if task.cancelled():
            return None
        return task.exception()

    async def _acquire(self, stop: asyncio.Event) -> bool:
        log.info("leader election: %s attempting to acquire lease %s/%s", self.identity, self.namespace,
                 self.name)
        while not stop.is_set():
            if await self._try_acquire_or_renew():
                log.info("leader election: %s acquired lease %s/%s", self.identity, self.namespace, self.name)
                return True
            if await self._sleep_or_stop(self.retry_period * (1 + JITTER_FACTOR * random.random()), stop):
                break
        return False

    async def _renew(self, stop: asyncio.Event, leading: asyncio.Task) -> bool:
        """Renew until ``stop`` is set or the leading task ends (return True: release),
        or until a renewal deadline passes (return False: lost)."""
        while True:
            deadline = self._clock.now() + self.renew_deadline
            while True:
                remaining = deadline - self._clock.now()
                try:
                    ok = await asyncio.wait_for(self._try_acquire_or_renew(), max(remaining, 0.001))
                except asyncio.TimeoutError:
                    ok = False
                if ok:
                    break
                if self._clock.now() >= deadline:
                    log.warning("leader election: %s failed to renew lease %s/%s within %ss; stepping down",
                                self.identity, self.namespace, self.name, self.renew_deadline)
                    return False
                if await self._sleep_or_stop(min(self.retry_period, max(deadline - self._clock.now(), 0)),
                                             stop, leading):
                    return True
            if await self._sleep_or_stop(self.retry_period, stop, leading):
                return True

    async def _sleep_or_stop(self, delay: float, stop: asyncio.Event, leading: asyncio.Task | None = None) -> bool:
        """Sleep ``delay``; True if ``stop`` was set (or the leading task ended) first."""
        if stop.is_set():
            return True
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        stopper = asyncio.ensure_future(stop.wait())
        waits = [sleeper, stopper] + ([leading] if leading is not None else [])
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()
        return stop.is_set() or (leading is not None and leading.done())

    # -- one round --------------------------------------------------------

    async def _try_acquire_or_renew(self) -> bool:
        now = self._clock.wall()
        desired = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                   "acquireTime": micro_time(now), "renewTime": micro_time(now), "leaseTransitions": 0}
        try:
            lease = await self.client.get(GROUP, VERSION, RESOURCE, self.name, namespace=self.namespace)
        except StatusError as e:
            if e.code != 404:
                log.warning("leader election: reading lease %s/%s: %s", self.namespace, self.name, e)
                return False
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": desired}
            return await self._write("create", body)
        except TransportError as e:
            log.warning("leader election: reading lease %s/%s: %s", self.namespace, self.name, e)
            return False

        spec = lease.get("spec") or {}
        self._observe(spec, (lease.get("metadata") or {}).get("resourceVersion", ""))
        holder = spec.get("holderIdentity") or ""
        duration = spec.get("leaseDurationSeconds") or 0
        if holder and holder != self.identity and self._clock.now() < self._observed_time + duration:
            return False  # someone else holds an unexpired lease
        if holder == self.identity:
            desired["acquireTime"] = spec.get("acquireTime") or desired["acquireTime"]
            desired["leaseTransitions"] = spec.get("leaseTransitions") or 0
        else:
            desired["leaseTransitions"] = (spec.get("leaseTransitions") or 0) + 1
        updated = copy.deepcopy(lease)
        updated["spec"] = {**spec, **desired}
        return await self._write("update", updated)

    async def _write(self, verb: str, lease: dict) -> bool:
        try:
            if verb == "create":
                result = await self.client.create(GROUP, VERSION, RESOURCE, lease, namespace=self.namespace)
            else:
                result = await self.client.update(GROUP, VERSION, RESOURCE, lease, namespace=self.namespace)
        except StatusError as e:
            if e.code != 409:  # 409: another candidate won this round; not worth a warning
                log.warning("leader election: %s lease %s/%s: %s", verb, self.namespace, self.name, e)
            return False
        except TransportError as e:
            log.warning("leader election: %s lease %s/%s: %s", verb, self.namespace, self.name, e)
            return False
        self._observe(result.get("spec") or lease["spec"],
                      (result.get("metadata") or {}).get("resourceVersion", ""), force=True)
        return True

    def _observe(self, spec: dict, rv: str, force: bool = False) -> None:
        # Expiry is measured from when *we* saw the record change, not from its
        # renewTime, so candidates with skewed wall clocks still agree.
        if force or spec != self._observed or rv != self._observed_rv:
            self._observed = copy.deepcopy(spec)
            self._observed_rv = rv
            self._observed_time = self._clock.now()
        leader = spec.get("holderIdentity") or ""
        if leader != self._reported_leader:
            self._reported_leader = leader
            if leader and self.on_new_leader is not None:
                try:
                    result = self.on_new_leader(leader)
                    if inspect.isawaitable(result):
                        asyncio.ensure_future(result)
                except Exception:
                    log.exception("leader election: on_new_leader failed")

    async def _release(self) -> None:
        try:
            lease = await self.client.get(GROUP, VERSION, RESOURCE, self.name, namespace=self.namespace)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            now = micro_time(self._clock.wall())
            lease = copy.deepcopy(lease)
            lease["spec"] = {"leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now,
                             "leaseTransitions": spec.get("leaseTransitions") or 0}
            await self.client.update(GROUP, VERSION, RESOURCE, lease, namespace=self.namespace)
            self._observe(lease["spec"], "", force=True)
            log.info("leader election: %s released lease %s/%s", self.identity, self.namespace, self.name)
        except (StatusError, TransportError) as e:
            log.warning("leader election: releasing lease %s/%s: %s", self.namespace, self.name, e)
