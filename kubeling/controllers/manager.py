"""The controller manager: runs the enabled controllers as API clients of one server.

``kubeling server`` starts it as a supervised child process (``kubeling controller-manager``);
it can as well run alone against any API server. Controllers talk to the API server only over
HTTP, through `kubeling.client`.

Start-up, as upstream's kube-controller-manager::

    REST client ─▶ SharedInformerFactory ─▶ construct every enabled controller (handlers only)
                 ─▶ factory.start(stop)    ─▶ controller.run(WORKERS, stop) for each, concurrently

Building every controller before starting the factory means an informer two controllers share
lists once and both see its initial objects as adds.

Failure model: a controller's ``run`` that raises (a crashed worker), or returns before stop,
or an informer that crashes, stops every other controller (drained, shielded) and makes `run`
raise. The process then exits non-zero and its supervisor restarts it with fresh caches: a crash
escalates, it never vanishes, and no half-working controller keeps running.

Credentials (``--use-service-account-credentials``, as upstream's flag; ``kubeling server`` turns
it on): the shared informers and leader election use the manager's own identity (its kubeconfig:
``system:kube-controller-manager``), while each controller gets its own `RESTClient` that writes
as the service account ``kube-system/<account>`` (`bootstrap_controllers.SERVICE_ACCOUNTS`; the
RBAC bootstrap binds ``system:controller:<account>`` to it). The manager creates a missing
account and gets its tokens with TokenRequest, refreshed before they expire
(`kubeling.client.satoken`). A Forbidden answer to a controller is logged as an error and
recorded as a Warning Event ``Forbidden`` on that service account, so a missing permission is
never silent. Without the flag every controller shares the manager's client.

Leader election (``--leader-elect``, off by default): the manager campaigns for the Lease
``kube-system/kube-controller-manager`` and builds the factory and the controllers only once it
leads, as upstream does. Losing the lease stops them and makes `run` raise `LeadershipLost`, so
the process restarts and stands again (upstream exits too).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import socket
import time
import uuid
from dataclasses import dataclass

from kubeling.client import kubeconfig as kc
from kubeling.apiserver.rbac.bootstrap_controllers import service_account_for
from kubeling.client.clock import REAL_CLOCK, Clock
from kubeling.client.events import EventRecorder
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.leaderelection import LeaderElector
from kubeling.client.rest import RESTClient
from kubeling.client.satoken import ServiceAccountRESTClient, ServiceAccountTokenSource
from kubeling.controllers.base import Controller, ControllerContext
from kubeling.controllers.disruption import DisruptionController
from kubeling.controllers.daemonset import DaemonSetsController
from kubeling.controllers.garbagecollector import GarbageCollector
from kubeling.controllers.namespace import NamespaceController
from kubeling.controllers.nodeipam import NodeIPAMController
from kubeling.controllers.nodelifecycle import NodeLifecycleController
from kubeling.controllers.tainteviction import TaintEvictionController
from kubeling.controllers.rootcacertpublisher import RootCACertPublisher
from kubeling.controllers.resourcequota import ResourceQuotaController
from kubeling.controllers.serviceaccount import ServiceAccountsController
from kubeling.controllers.serviceaccount_token import TokensController
from kubeling.controllers.statefulset import StatefulSetController
from kubeling.controllers.replicaset import ReplicaSetController
from kubeling.controllers.replication import ReplicationManager
from kubeling.controllers.deployment import DeploymentController
from kubeling.controllers.job import JobController
from kubeling.controllers.cronjob import CronJobController
from kubeling.controllers.ttlafterfinished import TTLAfterFinishedController
from kubeling.controllers.podgc import PodGCController
from kubeling.controllers.endpoints import EndpointController
from kubeling.controllers.endpointslice import EndpointSliceController
from kubeling.controllers.endpointslicemirroring import EndpointSliceMirroringController
from kubeling.controllers.servicelb import ServiceLBController
from kubeling.controllers.clusterroleaggregation import ClusterRoleAggregationController
from kubeling.controllers.certificates.approver import CSRApprovingController
from kubeling.controllers.certificates.cleaner import CSRCleanerController
from kubeling.controllers.certificates.signer import CSRSigningController
from kubeling.controllers.bootstrap.tokencleaner import TokenCleaner

log = logging.getLogger(__name__)

# name -> controller class; explicit, no import-time discovery. Names are upstream's.
# One controller per line: each new controller adds its own line.
REGISTRY: dict[str, type[Controller]] = {c.NAME: c for c in (
    GarbageCollector,
    NamespaceController,
    ServiceAccountsController,
    RootCACertPublisher,
    NodeIPAMController,
    NodeLifecycleController,
    TaintEvictionController,
    DisruptionController,
    TokensController,
    ResourceQuotaController,
    StatefulSetController,
    DaemonSetsController,
    ReplicaSetController,
    ReplicationManager,
    DeploymentController,
    JobController,
    CronJobController,
    TTLAfterFinishedController,
    PodGCController,
    EndpointController,
    EndpointSliceController,
    EndpointSliceMirroringController,
    ServiceLBController,
    ClusterRoleAggregationController,
    CSRSigningController,
    CSRApprovingController,
    CSRCleanerController,
    TokenCleaner,
)}

LEASE_NAMESPACE = "kube-system"
LEASE_NAME = "kube-controller-manager"

__all__ = ["REGISTRY", "ControllerContext", "LeaderElection", "LeadershipLost", "enabled", "run",
           "run_controllers", "serve"]


class LeadershipLost(Exception):
    """The manager stopped leading while it was meant to keep running."""


@dataclass
class LeaderElection:
    """``--leader-elect`` settings (upstream's defaults)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    identity: str = ""

    def holder(self) -> str:
        return self.identity or f"{socket.gethostname()}_{uuid.uuid4()}"

    @classmethod
    def from_args(cls, args) -> "LeaderElection | None":
        """The settings of ``add_leader_election_flags``' flags; None without ``--leader-elect``."""
        if not getattr(args, "leader_elect", False):
            return None
        return cls(lease_duration=args.leader_elect_lease_duration, renew_deadline=args.leader_elect_renew_deadline,
                   retry_period=args.leader_elect_retry_period, identity=args.leader_elect_identity or "")


def add_leader_election_flags(p, lease: str) -> None:
    """Upstream's ``--leader-elect*`` flags (Go durations, upstream's defaults), for the controller
    manager and the scheduler."""
    from kubeling.apiserver.filters.timeout import parse_go_duration

    def duration(flag: str):
        def parse(text: str) -> float:
            try:
                value = float(parse_go_duration(text))
            except Exception as e:  # noqa: BLE001 - any parse failure is a usage error
                raise argparse.ArgumentTypeError(f"{flag}: {getattr(e, 'message', e)}")
            if value <= 0:
                raise argparse.ArgumentTypeError(f"{flag}: must be positive")
            return value
        return parse

    p.add_argument("--leader-elect", action="store_true", help=f"run only while holding the Lease {lease}")
    p.add_argument("--leader-elect-identity", default="",
                   help="this candidate's holder identity (default: <hostname>_<random uuid>); `kubeling server` "
                        "passes one stable per data dir, so a restarted server resumes leading at once")
    p.add_argument("--leader-elect-lease-duration", type=duration("--leader-elect-lease-duration"), default=15.0,
                   metavar="DURATION", help="how long a standby waits after the last renewal it saw (default 15s)")
    p.add_argument("--leader-elect-renew-deadline", type=duration("--leader-elect-renew-deadline"), default=10.0,
                   metavar="DURATION", help="how long the leader retries renewing before it stops leading "
                                            "(default 10s)")
    p.add_argument("--leader-elect-retry-period", type=duration("--leader-elect-retry-period"), default=2.0,
                   metavar="DURATION", help="between two tries to acquire or renew (default 2s)")


def enabled(selection: list[str]) -> list[str]:
    """Upstream's ``--controllers``: ``*`` is every controller, ``foo`` enables, ``-foo`` disables."""
    if "*" in selection:
        return [n for n in REGISTRY if f"-{n}" not in selection]
    return [n for n in selection if n in REGISTRY]


SA_NAMESPACE = "kube-system"
FORBIDDEN_LOG_INTERVAL = 60.0  # seconds between two error lines for the same denial


class ServiceAccountClients:
    """Upstream's SAControllerClientBuilder: one `RESTClient` per controller, writing as that
    controller's service account (see the module docstring)."""

    def __init__(self, cfg: kc.Config, root: RESTClient) -> None:
        self.cfg = cfg
        self.root = root
        self.sources: dict[str, ServiceAccountTokenSource] = {}
        self.clients: list[ServiceAccountRESTClient] = []
        self.recorder = EventRecorder(root, "kube-controller-manager")
        self._logged: dict[tuple[str, str], float] = {}
        self._prefetch: list[asyncio.Task] = []

    @staticmethod
    async def _first_token(source: ServiceAccountTokenSource) -> None:
        try:
            await source.token()
        except Exception as e:  # noqa: BLE001 - the controller's first request asks again
            log.warning("service account %s: no token yet: %s", source.username, e)

    def client_for(self, controller: str):
        account = service_account_for(controller)
        if account is None:
            return self.root
        source = self.sources.get(account)
        if source is None:
            source = self.sources[account] = ServiceAccountTokenSource(self.root, SA_NAMESPACE, account)
            # as upstream's ClientOrDie at start-up: the account and its first token now, not at the
            # first write (a failure here is retried by that write)
            self._prefetch.append(asyncio.get_running_loop().create_task(self._first_token(source)))
        client = ServiceAccountRESTClient.for_service_account(
            self.cfg, source, component=f"kube-controller-manager/{controller}",
            on_forbidden=lambda method, path, message: self.forbidden(controller, account, method, path, message))
        self.clients.append(client)
        return client

    def forbidden(self, controller: str, account: str, method: str, path: str, message: str) -> None:
        """A controller was refused: an error line (at most once a minute per denial) and a Warning
        Event on its service account. Refusals that are not authorization (a terminating
        namespace) are the controller's business."""
        if " cannot " not in message:
            return
        now = time.monotonic()
        key = (account, message)
        if now - self._logged.get(key, -FORBIDDEN_LOG_INTERVAL) >= FORBIDDEN_LOG_INTERVAL:
            self._logged[key] = now
            log.error("controller %s (service account %s/%s) is forbidden: %s %s: %s", controller, SA_NAMESPACE,
                      account, method, path, message)
        self.recorder.event({"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": account, "namespace": SA_NAMESPACE}},
                            "Warning", "Forbidden", f"controller {controller}: {message}")

    async def close(self) -> None:
        for t in self._prefetch:
            t.cancel()
        await asyncio.gather(*self._prefetch, return_exceptions=True)
        await self.recorder.close()
        for c in self.clients:
            await c.close()


async def run(kubeconfig: str, stop: asyncio.Event, selection: list[str],
              leader_election: LeaderElection | None = None, settings: dict | None = None, *,
              use_service_account_credentials: bool = False) -> None:
    """Run the controllers named by ``selection`` until ``stop``; raises if one crashes."""
    names = enabled(selection)
    unknown = [n for n in selection if n.lstrip("-") not in REGISTRY and n != "*"]
    if unknown:
        log.warning("unknown controllers ignored: %s", ", ".join(unknown))
    if not names:
        await stop.wait()
        return
    cfg = kc.load(kubeconfig)
    client = RESTClient.from_config(cfg, component="kube-controller-manager")
    ca_pem = (cfg.certificate_authority_data or b"").decode()
    sa_clients = ServiceAccountClients(cfg, client) if use_service_account_credentials else None
    try:
        await serve(client, names, stop, ca_pem=ca_pem, leader_election=leader_election, settings=settings,
                    client_for=sa_clients.client_for if sa_clients else None)
    finally:
        if sa_clients is not None:
            await sa_clients.close()
        await client.close()


async def serve(client, names: list[str], stop: asyncio.Event, *, ca_pem: str = "",
                leader_election: LeaderElection | None = None, settings: dict | None = None,
                client_for=None) -> None:
    """Run the named controllers over ``client`` until ``stop`` — while leading, if ``leader_election``.
    ``client_for(name)``, if given, is the client controller ``name`` writes with."""
    if leader_election is None:
        await run_controllers(client, names, stop, ca_pem=ca_pem, settings=settings, client_for=client_for)
        return
    le = leader_election
    identity = le.holder()

    async def lead(lost: asyncio.Event) -> None:
        log.info("leading as %s", identity)
        await run_controllers(client, names, lost, ca_pem=ca_pem, settings=settings, client_for=client_for)

    elector = LeaderElector(client, LEASE_NAMESPACE, LEASE_NAME, identity, lease_duration=le.lease_duration,
                            renew_deadline=le.renew_deadline, retry_period=le.retry_period,
                            on_started_leading=lead,
                            on_new_leader=lambda who: log.info("the leader is %s", who))
    await elector.run(stop)
    if not stop.is_set():
        raise LeadershipLost(f"{identity} lost the lease {LEASE_NAMESPACE}/{LEASE_NAME}")


async def run_controllers(client, names: list[str], stop: asyncio.Event, *, ca_pem: str = "",
                          clock: Clock | None = None, registry: dict[str, type[Controller]] | None = None,
                          settings: dict | None = None, client_for=None) -> None:
    """Build one factory and the named controllers, start them, run until ``stop``; see the module docstring.
    The factory lists and watches over ``client``; each controller writes over ``client_for(name)``
    (default: ``client`` too)."""
    registry = REGISTRY if registry is None else registry
    halt = asyncio.Event()  # stops everything: set by ``stop`` or by a crash
    factory = SharedInformerFactory(client, clock=clock)
    ctx = ControllerContext(client, factory, ca_pem=ca_pem, clock=clock or REAL_CLOCK, **(settings or {}))
    controllers = [registry[n](ctx if client_for is None else dataclasses.replace(ctx, client=client_for(n)))
                   for n in names]
    factory.start(halt)
    tasks = {asyncio.create_task(c.run(c.WORKERS, halt), name=f"controller-{c.NAME}"): c for c in controllers}
    stopper = asyncio.create_task(stop.wait())
    crashed = factory.failure()
    failure: BaseException | None = None
    try:
        done, _ = await asyncio.wait([stopper, crashed, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if not stopper.done():
            failure = _first_failure(done, tasks, crashed)
            log.error("stopping every controller: %s", failure)
    finally:
        halt.set()
        stopper.cancel()
        results = await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
        await asyncio.shield(factory.shutdown())
        for c, r in zip(tasks.values(), results):
            if isinstance(r, Exception) and failure is None and not stop.is_set():
                failure = r
            elif isinstance(r, Exception):
                log.error("controller %s ended with %r", c.NAME, r)
    if failure is not None:
        raise failure


def _first_failure(done, tasks: dict, crashed: asyncio.Future) -> BaseException:
    if crashed.done():
        return crashed.exception() or RuntimeError("an informer crashed")
    for t in done:
        if t in tasks:
            if t.cancelled():
                return RuntimeError(f"controller {tasks[t].NAME} was cancelled")
            return t.exception() or RuntimeError(f"controller {tasks[t].NAME} returned before stop")
    return RuntimeError("a controller stopped")
