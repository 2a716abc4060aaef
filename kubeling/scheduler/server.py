"""The scheduler process (upstream's ``cmd/kube-scheduler/app/server.go``): ``kubeling scheduler``.

::

    kubeconfig ─▶ RESTClient ─▶ SharedInformerFactory ─▶ Scheduler (handlers only) ─▶ factory.start
              ─▶ Scheduler.run(stop)        (with --leader-elect: only while holding the Lease)

Failure model, as the controller manager's: an informer that crashes stops the scheduler and
makes `run` raise, so the process exits and its supervisor restarts it with fresh caches.
With ``--leader-elect`` the scheduler campaigns for the Lease ``kube-system/kube-scheduler`` and
builds its caches only once it leads; losing the lease raises `LeadershipLost` (upstream exits).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubeling.client import kubeconfig as kc
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.leaderelection import LeaderElector
from kubeling.client.rest import RESTClient
from kubeling.controllers.manager import LeaderElection, LeadershipLost
from kubeling.scheduler.scheduler import COMPONENT, Scheduler

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-system"
LEASE_NAME = "kube-scheduler"


def load_config(path: str | None) -> dict:
    """A ``KubeSchedulerConfiguration`` file (YAML or JSON); {} without one."""
    if not path:
        return {}
    import yaml
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    kind = doc.get("kind")
    if kind and kind != "KubeSchedulerConfiguration":
        raise ValueError(f"{path}: expected a KubeSchedulerConfiguration, got {kind}")
    return doc


async def run(args: Any, stop: asyncio.Event) -> None:
    """``args``: the CLI's namespace (kubeconfig, leader_elect, config)."""
    cfg = kc.load(args.kubeconfig)
    # bindings and status writes come in bursts: upstream's scheduler runs at qps 50/burst 100 by
    # default and is usually raised; the API server here is local
    client = RESTClient.from_config(cfg, component="kube-scheduler", qps=5000, burst=10000)
    config = load_config(getattr(args, "config", None))
    election = LeaderElection.from_args(args)
    # the Lease gets a client (a connection pool) of its own, as upstream's leader-election
    # client: renewals must not wait behind a burst of bindings on a busy API server
    election_client = RESTClient.from_config(cfg, component="kube-scheduler/leader-election") if election else None
    try:
        await serve(client, stop, config=config, leader_election=election, election_client=election_client)
    finally:
        await client.close()
        if election_client is not None:
            await election_client.close()


async def serve(client: Any, stop: asyncio.Event, *, config: dict | None = None,
                leader_election: LeaderElection | None = None, election_client: Any = None) -> None:
    """Schedule over ``client`` until ``stop`` - while leading, if ``leader_election`` (whose
    Lease is written through ``election_client``, default ``client``)."""
    if leader_election is None:
        await run_scheduler(client, stop, config=config)
        return
    le = leader_election
    identity = le.holder()

    async def lead(lost: asyncio.Event) -> None:
        log.info("leading as %s", identity)
        await run_scheduler(client, lost, config=config)

    elector = LeaderElector(election_client or client, LEASE_NAMESPACE, LEASE_NAME, identity, lease_duration=le.lease_duration,
                            renew_deadline=le.renew_deadline, retry_period=le.retry_period,
                            on_started_leading=lead,
                            on_new_leader=lambda who: log.info("the leader is %s", who))
    await elector.run(stop)
    if not stop.is_set():
        raise LeadershipLost(f"{identity} lost the lease {LEASE_NAMESPACE}/{LEASE_NAME}")


async def run_scheduler(client: Any, stop: asyncio.Event, *, config: dict | None = None, clock=None) -> None:
    """Build the factory and the scheduler, run until ``stop``; raises if an informer crashes."""
    halt = asyncio.Event()
    factory = SharedInformerFactory(client, clock=clock)
    kw = {"clock": clock} if clock is not None else {}
    sched = Scheduler(client, factory, config=config, **kw)
    factory.start(halt)
    task = asyncio.create_task(sched.run(halt), name=COMPONENT)
    stopper = asyncio.create_task(stop.wait())
    crashed = factory.failure()
    failure: BaseException | None = None
    try:
        done, _ = await asyncio.wait([stopper, crashed, task], return_when=asyncio.FIRST_COMPLETED)
        if crashed in done:
            failure = crashed.exception() or RuntimeError("an informer crashed")
        elif task in done and not stop.is_set():
            failure = (task.exception() if not task.cancelled() else None) or \
                RuntimeError("the scheduler returned before stop")
    finally:
        halt.set()
        stopper.cancel()
        await asyncio.shield(asyncio.gather(task, return_exceptions=True))
        await asyncio.shield(factory.shutdown())
        await asyncio.shield(sched.recorder.close())
    if failure is not None:
        log.error("scheduler stopping: %s", failure)
        raise failure
