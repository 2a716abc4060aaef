"""Running the API server: storage, PKI, bootstrap objects, listeners, and the controller
manager, the scheduler, the node agent, the Ingress controller and the cluster DNS (`kubeling.dns`)
as supervised child processes.

Each child runs with an identity of its own, never ``system:masters`` (only ``admin.kubeconfig``
is): ``<data-dir>/scheduler.kubeconfig`` (``system:kube-scheduler``),
``controller-manager.kubeconfig`` (``system:kube-controller-manager``, with
``--use-service-account-credentials``: each controller writes as ``kube-system/<controller>``),
``dns.kubeconfig`` (``system:kubeling-dns``), ``ingress.kubeconfig`` (``system:kubeling-ingress``),
all 0600; the agent uses its node's (``agent/kubelet.kubeconfig``). The RBAC bootstrap policy binds
each to its role.

`run(options, stop)` owns everything it starts and tears it down in a shielded ``finally``, in
reverse order: the API server's own loops (CRD controller, admission caches, aggregator), the
controller-manager child, listeners, then the store (so that an acknowledged write is on disk
before the process exits).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import socket
from dataclasses import dataclass, field

from kubeling.api import errors
from kubeling.apiserver import audit, bootstrapdata, datadir, etcdsnapshots, join, memory, proxy, registry, serving
from kubeling.apiserver.aggregator import Aggregator
from kubeling.apiserver.app import APIServer, server_ssl_context
from kubeling.apiserver.cacher import Cacher
from kubeling.apiserver.certs import COMPONENTS, PKI, write_kubeconfig
from kubeling.apiserver.crd import CRDController
from kubeling.apiserver.datastore import open_store
from kubeling.apiserver.rbac import bootstrap as rbac_bootstrap
from kubeling.apiserver.endpointreconciler import LeaseEndpointReconciler
from kubeling.apiserver.registry import Context
from kubeling.cli._run import supervise_child
from kubeling.storage import encryption
from kubeling.storage.encryption import EncryptionConfig, EncryptionConfigError, TransformingStore
from kubeling.apiserver.secretsencrypt import SecretsEncrypt
from kubeling.storage.sqlite import SQLiteStore

log = logging.getLogger(__name__)

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass
class Options:
    data_dir: str = ".kubeling"
    bind_address: str = "127.0.0.1"
    secure_port: int = 6443
    insecure_port: int = 0
    token_auth_file: str | None = None
    # --anonymous-auth: requests without credentials are system:anonymous (False: 401)
    anonymous_auth: bool = True
    # --audit-policy-file / --audit-log-path ("-": stdout) / --audit-log-max{age,backup,size}
    audit_policy_file: str | None = None
    audit_log_path: str | None = None
    audit_log_maxage: int = 0
    audit_log_maxbackup: int = 0
    audit_log_maxsize: int = 0
    # --audit-webhook-config-file (a kubeconfig) and the batch settings: audit.WebhookBackend's
    # keyword arguments (mode, max_batch_size, max_batch_wait, buffer_size, initial_backoff)
    audit_webhook_config_file: str | None = None
    audit_webhook: dict = field(default_factory=dict)
    # --authorization-mode: the authorizer chain (kubeling.apiserver.authorizer)
    authorization_mode: tuple[str, ...] = ("Node", "RBAC")
    # --encryption-provider-config FILE (an EncryptionConfiguration), or k3s's --secrets-encryption
    # (<data-dir>/server/cred/encryption-config.json): encryption at rest (kubeling.storage.encryption)
    encryption_provider_config: str | None = None
    secrets_encryption: bool = False
    advertise_address: str = ""
    compact_interval: float = 300.0
    compact_keep: int = 1000
    # k3s's --datastore-endpoint (etcd: http(s)://host:2379[,...]; empty: SQLite in the data dir)
    # and --datastore-{cafile,certfile,keyfile} for its TLS (kubeling.apiserver.datastore)
    datastore_endpoint: str = ""
    datastore_cafile: str = ""
    datastore_certfile: str = ""
    datastore_keyfile: str = ""
    controllers: list[str] = field(default_factory=lambda: ["*"])
    request_timeout: float = 60.0
    max_requests_inflight: int = 400
    max_mutating_requests_inflight: int = 200
    service_cidr: str = "10.43.0.0/16"
    node_port_range: tuple[int, int] = (30000, 32767)
    # the node agent the server runs as a child (like k3s); agent=False is --disable-agent
    agent: bool = True
    agent_args: list[str] = field(default_factory=list)   # extra `kubeling agent` flags
    node_name: str = ""
    cluster_cidr: str = "10.42.0.0/16"
    # the scheduler child; scheduler=False is --disable-scheduler
    scheduler: bool = True
    # k3s's --kube-controller-manager-arg / --kube-scheduler-arg: flags passed to the children
    controller_manager_args: list[str] = field(default_factory=list)
    scheduler_args: list[str] = field(default_factory=list)
    # DefaultTolerationSeconds admission: how long pods tolerate a not-ready/unreachable node
    default_not_ready_toleration_seconds: int = 300
    default_unreachable_toleration_seconds: int = 300
    # --admission-control-config-file: an AdmissionConfiguration (PodSecurity's PodSecurityConfiguration)
    admission_control_config_file: str | None = None
    # k3s's --disable: packaged components not to run ("ingress"/"traefik": the ingress child;
    # "servicelb": the servicelb controller)
    disable: list[str] = field(default_factory=list)
    ingress_http_port: int = 80
    ingress_https_port: int = 443
    # the cluster DNS child ("coredns" in disable turns it off): the kube-dns Service's IP and zone
    cluster_dns: str = ""
    cluster_domain: str = "cluster.local"
    # k3s's --token / --token-file: the passphrase of the bootstrap data servers sharing a datastore
    # share (kubeling.apiserver.bootstrapdata), and the secret of a new node token
    token: str = ""
    token_file: str = ""
    # k3s's scheduled etcd snapshots (kubeling.apiserver.etcdsnapshots); on etcd only
    etcd_snapshot_schedule_cron: str = etcdsnapshots.DEFAULT_SCHEDULE
    etcd_snapshot_retention: int = etcdsnapshots.DEFAULT_RETENTION
    etcd_snapshot_dir: str = ""
    etcd_disable_snapshots: bool = False


def kubernetes_service_ip(service_cidr: str) -> str:
    """The first address of the service CIDR, as upstream gives the ``kubernetes`` Service."""
    return str(next(ipaddress.ip_network(service_cidr).hosts()))


async def bootstrap(api: APIServer, endpoints: LeaseEndpointReconciler | None = None) -> None:
    """Objects every cluster has: system namespaces, the `kubernetes` Service and its endpoints
    (``endpoints``' first round; one for the API server's own address when not given), the system
    priority classes and the bootstrap RBAC policy. Idempotent."""
    ctx = Context(user="system:apiserver", field_manager="kube-apiserver")

    async def ensure(group, version, resource, obj, namespace=None):
        served = api.resources.get(group, version, resource)
        try:
            await api.registry.get_raw(served, namespace, obj["metadata"]["name"])
            return  # as upstream's bootstrap controller: look first, create only what is missing
        except errors.StatusError as e:
            if e.code != 404:
                raise
        try:
            await api.registry.create(served, obj, Context(user=ctx.user, field_manager=ctx.field_manager,
                                                           namespace=namespace))
        except errors.StatusError as e:
            if e.reason != "AlreadyExists":
                raise

    for ns in SYSTEM_NAMESPACES:
        await ensure("", "v1", "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    port = api.secure_port
    await ensure("", "v1", "services", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": kubernetes_service_ip(api.config.service_cidr), "type": "ClusterIP", "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}},
        namespace="default")
    # its Endpoints and EndpointSlice are the API servers' own, as upstream's lease endpoint reconciler's
    await (endpoints or LeaseEndpointReconciler(api, api.registry.store, api.advertise_address, port)).reconcile()
    for name, value in (("system-node-critical", 2000001000), ("system-cluster-critical", 2000000000)):
        await ensure("scheduling.k8s.io", "v1", "priorityclasses", {
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
            "value": value, "description": "Used for system critical pods that must not be moved from their "
            "current node." if name == "system-node-critical" else "Used for system critical pods that must run "
            "in the cluster, but can be moved to another node if necessary."})
    # upstream's rbac/bootstrap-roles post-start hook: the default ClusterRoles and bindings
    await rbac_bootstrap.reconcile(api)


async def run(opts: Options, stop: asyncio.Event, *, on_ready=None) -> None:
    memory.configure()
    data = datadir.prepare(opts.data_dir)
    advertise = opts.advertise_address or (opts.bind_address if opts.bind_address not in ("0.0.0.0", "::")
                                           else primary_address())
    # the store first: servers sharing one hold the cluster's CA and keys in it (bootstrapdata)
    store = await open_store(opts, data)  # SQLite in the data dir, or etcd (--datastore-endpoint)
    try:
        pki, node_token, (encryption_path, encryption_config) = await local_secrets(opts, data, store, advertise)
    except BaseException:
        await store.close()
        raise
    datadir.secure(data)  # the state file SQLite just made (and its WAL) 0600, as every private file
    if encryption_config is not None:  # Secrets (and what else the configuration names) encrypted at rest
        store = TransformingStore(store, encryption_config)
    listeners: list[serving.Listener] = []
    tasks: list[asyncio.Task] = []
    cacher = Cacher(store)
    endpoints = None
    try:
        await cacher.start()
        api = APIServer(store, token_file=opts.token_auth_file, advertise_address=advertise,
                        secure_port=opts.secure_port, service_account_key_file=str(pki.service_account_key),
                        authorization_modes=opts.authorization_mode,
                        config=registry.Config(
                            service_cidr=opts.service_cidr, node_port_range=opts.node_port_range,
                            default_not_ready_toleration_seconds=opts.default_not_ready_toleration_seconds,
                            default_unreachable_toleration_seconds=opts.default_unreachable_toleration_seconds,
                            admission_control_config_file=opts.admission_control_config_file))
        api.scope.cacher = cacher
        api.anonymous_auth = opts.anonymous_auth
        api.auditor = audit_from_options(opts)
        tasks.append(asyncio.create_task(api.auditor.run(stop), name="audit"))
        api.secrets_encrypt = SecretsEncrypt(store, encryption_path) if encryption_config is not None else None
        api.scope.deps.kubelet = proxy.ensure_client_cert(pki)
        api.join = join.JoinHandler(pki, node_token, api.bootstrap_tokens)
        cacher.on_decode_error = api.report_undecodable
        crds = CRDController(api)
        await crds.start()
        await api.strategies[("", "services")].repair(api.registry, api.lookup("", "v1", "services"))
        endpoints = LeaseEndpointReconciler(api, store, advertise, opts.secure_port)
        await bootstrap(api, endpoints)
        aggregator = Aggregator(api)
        await aggregator.start()
        api.aggregator = aggregator
        filters = dict(request_timeout=opts.request_timeout, max_requests_inflight=opts.max_requests_inflight,
                       max_mutating_requests_inflight=opts.max_mutating_requests_inflight)
        secure = await serving.start(api.build_app(**filters), opts.bind_address, opts.secure_port,
                                     server_ssl_context(pki))
        listeners.append(secure)
        if opts.insecure_port:
            log.warning("serving WITHOUT authentication on http://127.0.0.1:%d (development only)",
                        opts.insecure_port)
            listeners.append(await serving.start(api.build_app(insecure=True, **filters), "127.0.0.1",
                                                 opts.insecure_port, limits=secure.limits))
        kubeconfig = data / "admin.kubeconfig"
        host = advertise if ":" not in advertise else f"[{advertise}]"
        url = f"https://{host}:{opts.secure_port}"
        write_kubeconfig(kubeconfig, url, pki)
        # every child but the agent (whose identity is its node's) gets a kubeconfig of its own,
        # bound by the RBAC bootstrap to its role: only admin.kubeconfig is system:masters
        own = {name: pki.write_component_kubeconfig(name, url) for name in COMPONENTS}
        api.ready = True
        tasks.append(asyncio.create_task(crds.run(stop), name="crd-controller"))
        tasks.append(asyncio.create_task(api.admission.run(stop), name="admission"))
        tasks.append(asyncio.create_task(aggregator.run(stop), name="aggregator"))
        tasks.append(asyncio.create_task(endpoints.run(stop), name="endpoint-reconciler"))
        if opts.datastore_endpoint and not opts.etcd_disable_snapshots:
            tasks.append(asyncio.create_task(snapshot_scheduler(opts).run(stop), name="etcd-snapshots"))
        if opts.controllers:
            # A child process: controllers are API clients, and a second interpreter keeps their
            # CPU off the API server's event loop.
            tasks.append(asyncio.create_task(supervise_child(
                ["controller-manager", "--kubeconfig", str(own["controller-manager"]),
                 "--use-service-account-credentials", *LEADER_ELECTION,
                 "--leader-elect-identity", leader_identity(data), "--controllers",
                 ",".join(opts.controllers + (["-servicelb"] if "servicelb" in opts.disable else [])),
                 "--cluster-cidr", opts.cluster_cidr,
                 "--service-cluster-ip-range", opts.service_cidr,
                 "--service-account-private-key-file", str(pki.service_account_key),
                 "--cluster-signing-cert-file", str(pki.ca_cert), "--cluster-signing-key-file", str(pki.dir / "ca.key"),
                 *opts.controller_manager_args], stop),
                name="controller-manager"))
        if opts.scheduler:
            tasks.append(asyncio.create_task(supervise_child(
                ["scheduler", "--kubeconfig", str(own["scheduler"]), *LEADER_ELECTION,
                 "--leader-elect-identity", leader_identity(data), *opts.scheduler_args], stop), name="scheduler"))
        if opts.agent:
            node = opts.node_name or socket.gethostname().lower()
            agent_kubeconfig = pki.write_node_kubeconfig(node, f"https://{host}:{opts.secure_port}")
            # kube-proxy and the network-policy controller run as themselves, as a joined agent's do
            agent_own = join.write_component_kubeconfigs(pki, f"https://{host}:{opts.secure_port}", data / "agent")
            tasks.append(asyncio.create_task(supervise_child(
                ["agent", "--kubeconfig", str(agent_kubeconfig), "--data-dir", str(data), "--node-name", node,
                 "--kube-proxy-kubeconfig", str(agent_own[join.KUBE_PROXY_USER]),
                 "--controller-kubeconfig", str(agent_own[join.CONTROLLER_USER]),
                 "--cluster-cidr", opts.cluster_cidr, "--service-cidr", opts.service_cidr,
                 *opts.agent_args], stop), name="agent"))
        if not {"ingress", "traefik"} & set(opts.disable) and (
                opts.agent or not ipaddress.ip_address(advertise).is_loopback):
            # the Ingress controller and its nginx, as k3s ships Traefik; a loopback control
            # plane with no agent (the e2e harness's) has no pods to route to: no ingress
            tasks.append(asyncio.create_task(supervise_child(
                ["ingress", "--kubeconfig", str(own["ingress"]), "--data-dir", str(data),
                 "--http-port", str(opts.ingress_http_port), "--https-port", str(opts.ingress_https_port),
                 "--bind-address", opts.bind_address, "--publish-address", advertise], stop), name="ingress"))
        if "coredns" not in opts.disable and (opts.agent or not ipaddress.ip_address(advertise).is_loopback):
            # cluster DNS (k3s's CoreDNS) on the advertise address; a loopback one is unreachable
            # through the cluster DNS IP's DNAT, so `kubeling dns` then takes the host's primary
            # address; a loopback control plane with no agent has no pods to serve: no DNS.
            dns_ip = opts.cluster_dns or str(ipaddress.ip_network(opts.service_cidr)[10])
            bind = [] if ipaddress.ip_address(advertise).is_loopback else ["--bind-address", advertise]
            tasks.append(asyncio.create_task(supervise_child(
                ["dns", "--kubeconfig", str(own["dns"]), *bind, "--cluster-dns", dns_ip,
                 "--cluster-domain", opts.cluster_domain, "--service-cidr", opts.service_cidr], stop), name="dns"))
        log.info("kubeling API server ready on https://%s:%d", host, opts.secure_port)
        if on_ready:
            on_ready(api, kubeconfig)
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not waiter and t.exception():
                raise t.exception()
    finally:
        await asyncio.shield(_shutdown(tasks, listeners, store, cacher, endpoints))


def snapshot_scheduler(opts: Options) -> etcdsnapshots.SnapshotScheduler:
    """k3s's scheduled snapshots of the etcd datastore, into --etcd-snapshot-dir."""
    store_args = ["--datastore-endpoint", opts.datastore_endpoint]
    for flag, value in (("--datastore-cafile", opts.datastore_cafile),
                        ("--datastore-certfile", opts.datastore_certfile),
                        ("--datastore-keyfile", opts.datastore_keyfile)):
        if value:
            store_args += [flag, value]
    where = ["--data-dir", opts.data_dir]
    for flag, value in (("--dir", opts.etcd_snapshot_dir), ("--node-name", opts.node_name)):
        if value:
            where += [flag, value]
    return etcdsnapshots.SnapshotScheduler(etcdsnapshots.parse_schedule(opts.etcd_snapshot_schedule_cron),
                                           opts.etcd_snapshot_retention, where, store_args)


async def local_secrets(opts: Options, data, store, advertise: str):
    """The PKI, the node token and the encryption configuration, made on the first start. On a
    datastore other servers may share (not SQLite), they are the cluster's: read from the
    datastore's bootstrap data, or stored there by the first server (`bootstrapdata`)."""
    def make():
        pki = PKI(data, hosts=[advertise, opts.bind_address])
        pki.ensure()
        # <data-dir>/server/node-token: `kubeling agent --token`
        node_token = join.ensure_token(data, pki, secret=secret)
        return pki, node_token, encryption_at_rest(opts, data)

    if isinstance(store, SQLiteStore):
        secret = bootstrapdata.parse_passphrase(opts.token)[0] if opts.token else ""
        if opts.token_file:
            secret = bootstrapdata.passphrase_from("", opts.token_file, data)[0]
        return make()
    secret, ca_hash, given = bootstrapdata.passphrase_from(opts.token, opts.token_file, data)
    shared = bootstrapdata.BootstrapData(store, data, secret, given=given, ca_hash=ca_hash, config={
        "service-cluster-ip-range": opts.service_cidr, "service-node-port-range": list(opts.node_port_range),
        "cluster-cidr": opts.cluster_cidr, "secrets-encryption": opts.secrets_encryption})
    return await bootstrapdata.reconcile(shared, make)


def encryption_at_rest(opts: Options, data) -> tuple[str, EncryptionConfig | None]:
    """The encryption configuration's path and contents: ``--encryption-provider-config``, or
    k3s's managed ``<data-dir>/server/cred/encryption-config.json`` with ``--secrets-encryption``
    (made at the first start); ("", None) without either."""
    if opts.encryption_provider_config:
        path = opts.encryption_provider_config
    elif opts.secrets_encryption:
        path = str(encryption.ensure_k3s_config(data))
    else:
        return "", None
    try:
        return path, EncryptionConfig.load(path)
    except EncryptionConfigError as e:
        raise datadir.DataDirError(f"--encryption-provider-config: {e}") from None


def audit_from_options(opts: Options) -> audit.Auditor:
    """The audit filter of ``--audit-policy-file`` and ``--audit-log-*`` (a bad policy stops the start)."""
    try:
        return audit.from_options(opts.audit_policy_file, opts.audit_log_path, max_age=opts.audit_log_maxage,
                                  max_backup=opts.audit_log_maxbackup, max_size=opts.audit_log_maxsize,
                                  webhook_config_file=opts.audit_webhook_config_file, webhook=opts.audit_webhook)
    except audit.PolicyError as e:
        raise datadir.DataDirError(f"--audit-policy-file: {e}") from None
    except audit.WebhookError as e:
        raise datadir.DataDirError(str(e)) from None
    except OSError as e:
        raise datadir.DataDirError(f"--audit-log-path: {e}") from None


def primary_address() -> str:
    """What a server bound to every address advertises when not told (k3s: the node IP): the
    address of the default route's interface, so that pods reach it through the `kubernetes`
    Service; 127.0.0.1 on a host with no default route."""
    from kubeling.kubelet.agent import route_source
    return route_source("https://127.0.0.1:6443")


# The controller manager's and the scheduler's leader election as `kubeling server` runs them:
# shorter than upstream's 15s/10s/2s defaults, so that a standby in another server takes over
# within 15 s of the leader's death (lease + up to two jittered retries: 10 + 2 x 2.2 s at most).
# `--kube-controller-manager-arg` / `--kube-scheduler-arg` come later on the command line and win.
LEADER_ELECTION = ("--leader-elect", "--leader-elect-lease-duration", "10s", "--leader-elect-renew-deadline", "8s",
                   "--leader-elect-retry-period", "1s")


def leader_identity(data) -> str:
    """A leader-election identity stable for this server's data dir: a restarted server finds
    itself still named in the Lease and leads again at once, while a second server (another data
    dir or host) stands by."""
    digest = hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:10]
    return f"{socket.gethostname()}_{digest}"


async def _shutdown(tasks, listeners, store, cacher, endpoints=None) -> None:
    if endpoints is not None:
        # first, as upstream's shutdown hook: the other servers' addresses only, from now on
        try:
            await asyncio.wait_for(endpoints.remove(), 5)
        except (asyncio.TimeoutError, Exception) as e:  # noqa: BLE001 - the lease then expires by itself
            log.warning("removing this server from the kubernetes Service's endpoints: %s", e or "timed out")
    for t in tasks:
        t.cancel()
    for t in tasks:
        try:
            await t
        except (asyncio.CancelledError, Exception):  # noqa: BLE001
            pass
    await cacher.stop()  # ends every watch, so the listeners drain at once
    for listener in reversed(listeners):
        await listener.close()
    await store.close()
