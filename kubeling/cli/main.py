"""The ``kubeling`` command.

``kubeling server`` runs the API server and, as child processes, the controller manager, the
scheduler and the node agent (like k3s, one process tree). ``kubeling controller-manager``,
``kubeling scheduler`` and ``kubeling agent`` run each alone against any API server.
"""

from __future__ import annotations

import argparse
import sys

from kubeling.apiserver import server
from kubeling.cli import agent as agent_cli
from kubeling.cli import backup as backup_cli
from kubeling.cli import cluster as cluster_cli
from kubeling.cli import controller_manager as controller_manager_cli
from kubeling.cli import dns as dns_cli
from kubeling.cli import etcd_snapshot as etcd_snapshot_cli
from kubeling.cli import hollow as hollow_cli
from kubeling.cli import images as images_cli
from kubeling.cli import proxy as proxy_cli
from kubeling.cli import ingress as ingress_cli
from kubeling.cli import scheduler as scheduler_cli
from kubeling.cli import secrets_encrypt as secrets_encrypt_cli
from kubeling.cli import token as token_cli
from kubeling.cli._run import run_until_signalled


def _go_bool(text: str) -> bool:
    """A Go flag boolean (strconv.ParseBool): 1 t T TRUE true True / 0 f F FALSE false False."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=".kubeling", help="state, PKI and kubeconfig (default: .kubeling)")
    p.add_argument("--bind-address", default="127.0.0.1")
    p.add_argument("--secure-port", type=int, default=6443)
    p.add_argument("--insecure-port", type=int, default=0,
                   help="DEVELOPMENT ONLY: also serve plain HTTP without authentication on 127.0.0.1")
    p.add_argument("--advertise-address", default="")
    p.add_argument("--token-auth-file", default=None, help='CSV of token,user,uid,"group1,group2"')
    p.add_argument("--anonymous-auth", type=_go_bool, nargs="?", const=True, default=True, metavar="BOOL",
                   help="requests without credentials are system:anonymous (default true; false: 401)")
    p.add_argument("--audit-policy-file", default=None, help="an audit.k8s.io/v1 Policy (YAML or JSON)")
    p.add_argument("--audit-log-path", default=None, help="write audit events here as JSON lines ('-': stdout)")
    p.add_argument("--audit-log-maxage", type=int, default=0, help="days to keep rotated audit logs (0: forever)")
    p.add_argument("--audit-log-maxbackup", type=int, default=0, help="rotated audit logs to keep (0: all)")
    p.add_argument("--audit-log-maxsize", type=int, default=0,
                   help="megabytes an audit log may grow to before it is rotated (0: 100)")
    p.add_argument("--audit-webhook-config-file", default=None,
                   help="a kubeconfig naming the webhook audit events are POSTed to")
    p.add_argument("--audit-webhook-mode", default="batch", help="batch (the only mode built)")
    p.add_argument("--audit-webhook-batch-max-size", type=int, default=400, help="events per batch (default: 400)")
    p.add_argument("--audit-webhook-batch-max-wait", default="30s",
                   help="how long a batch waits to fill before it is sent (default: 30s)")
    p.add_argument("--audit-webhook-batch-buffer-size", type=int, default=10000,
                   help="events buffered before new ones are dropped (default: 10000)")
    p.add_argument("--audit-webhook-initial-backoff", default="10s",
                   help="wait before the first retry of a failed batch (default: 10s)")
    p.add_argument("--authorization-mode", default="Node,RBAC",
                   help="ordered authorizers: Node, RBAC, AlwaysAllow, AlwaysDeny (default: Node,RBAC)")
    p.add_argument("--encryption-provider-config", default=None, metavar="FILE",
                   help="an apiserver.config.k8s.io/v1 EncryptionConfiguration: how resources are encrypted at rest")
    p.add_argument("--secrets-encryption", action="store_true",
                   help="encrypt Secrets at rest with the key in <data-dir>/server/cred/encryption-config.json, "
                        "as k3s (made at the first start; see `kubeling secrets-encrypt`)")
    p.add_argument("--compact-interval", type=float, default=300.0, help="seconds between compactions")
    p.add_argument("--compact-keep", type=int, default=1000, help="revisions of history compaction keeps")
    p.add_argument("--datastore-endpoint", default="", metavar="URLS",
                   help="etcd endpoints, http(s)://host:2379[,...] (default: SQLite in the data dir)")
    p.add_argument("--datastore-cafile", default="", help="CA bundle that signs the etcd members' certificates")
    p.add_argument("--datastore-certfile", default="", help="client certificate for etcd")
    p.add_argument("--datastore-keyfile", default="", help="client key for etcd")
    p.add_argument("--etcd-snapshot-schedule-cron", default="0 */12 * * *", metavar="SPEC",
                   help="on etcd: when to take a snapshot, a cron expression in local time or '@every 6h' "
                        "(default: '0 */12 * * *')")
    p.add_argument("--etcd-snapshot-retention", type=int, default=5,
                   help="on etcd: how many scheduled snapshots to keep (default: 5)")
    p.add_argument("--etcd-snapshot-dir", default="", metavar="DIR",
                   help="on etcd: where snapshots go (default: <data-dir>/server/db/snapshots)")
    p.add_argument("--etcd-disable-snapshots", action="store_true", help="on etcd: take no scheduled snapshots")
    p.add_argument("--controllers", default="*", help="comma-separated controllers to run ('*' = all, '' = none)")
    p.add_argument("--request-timeout", default="1m0s",
                   help="deadline of a non-long-running request, a Go duration (default: 1m0s)")
    p.add_argument("--max-requests-inflight", type=int, default=400,
                   help="read-only requests served at once before 429 (default: 400)")
    p.add_argument("--max-mutating-requests-inflight", type=int, default=200,
                   help="mutating requests served at once before 429 (default: 200)")
    p.add_argument("--service-cluster-ip-range", default="10.43.0.0/16",
                   help="CIDR Service cluster IPs are allocated from (default: 10.43.0.0/16)")
    p.add_argument("--service-node-port-range", default="30000-32767",
                   help="port range NodePort Services take their node ports from (default: 30000-32767)")
    p.add_argument("--default-not-ready-toleration-seconds", type=int, default=300,
                   help="tolerationSeconds of the not-ready:NoExecute toleration every pod gets (default: 300)")
    p.add_argument("--default-unreachable-toleration-seconds", type=int, default=300,
                   help="tolerationSeconds of the unreachable:NoExecute toleration every pod gets (default: 300)")
    p.add_argument("--admission-control-config-file", default=None,
                   help="an AdmissionConfiguration (apiserver.config.k8s.io/v1) with the admission plugins' "
                        "configuration, e.g. PodSecurity's defaults and exemptions")
    p.add_argument("--disable-agent", action="store_true", help="run the control plane alone, with no node agent")
    p.add_argument("--disable-scheduler", action="store_true", help="do not run the scheduler")
    p.add_argument("--disable", action="append", default=[], metavar="COMPONENT",
                   help="do not run a packaged component, as k3s's --disable: ingress (alias traefik), coredns, servicelb "
                        "(repeatable)")
    p.add_argument("--ingress-http-port", type=int, default=80, help="port the ingress nginx serves HTTP on (default: 80)")
    p.add_argument("--ingress-https-port", type=int, default=443,
                   help="port the ingress nginx serves HTTPS on (default: 443)")
    p.add_argument("--kube-controller-manager-arg", action="append", default=[], metavar="FLAG=VALUE",
                   help="pass a flag to the controller manager, e.g. --node-monitor-grace-period=10s (repeatable)")
    p.add_argument("--kube-scheduler-arg", action="append", default=[], metavar="FLAG=VALUE",
                   help="pass a flag to the scheduler (repeatable)")
    p.add_argument("--node-name", default="", help="the name of the server's own node (default: the hostname)")
    p.add_argument("--token", default="",
                   help="servers sharing a datastore: the first server's token (its <data-dir>/server/token), which "
                        "opens the cluster CA and keys stored in the datastore; the secret of a new node token")
    p.add_argument("--token-file", default="", help="a file holding --token")
    agent_cli.agent_flags(p)
    p.add_argument("-v", "--verbose", action="store_true")


def _agent_args(args: argparse.Namespace) -> list[str]:
    """The `kubeling agent` flags the server passes on to its agent child."""
    out = ["--runtime", args.runtime, "--kubelet-port", str(args.kubelet_port),
           "--cluster-domain", args.cluster_domain, "--cgroup-root", args.cgroup_root]
    for flag, value in (("--node-ip", args.node_ip), ("--pod-cidr", args.pod_cidr), ("--cluster-dns", args.cluster_dns),
                        ("--registry-config", args.registry_config)):
        if value:
            out += [flag, value]
    for label in args.node_label:
        out += ["--node-label", label]
    if args.disable_default_registry_endpoint:
        out.append("--disable-default-registry-endpoint")
    out += ["--flannel-backend", args.flannel_backend]
    for flag in ("disable_network_policy", "disable_kube_proxy"):
        if getattr(args, flag):
            out.append("--" + flag.replace("_", "-"))
    for flag in args.kube_proxy_arg:
        out += ["--kube-proxy-arg", flag]
    if args.verbose:
        out.append("--verbose")
    return out


def _passthrough(flags: list[str]) -> list[str]:
    """k3s's ``--kube-*-arg``: ``name=value`` or ``--name=value`` becomes ``--name=value``."""
    return [f if f.startswith("--") else f"--{f}" for f in flags]


def _port_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        first, last = int(lo), int(hi or lo)
    except ValueError:
        raise SystemExit(f"kubeling server: --service-node-port-range: {text!r} is not a range like 30000-32767")
    if not (0 < first <= last < 65536):
        raise SystemExit(f"kubeling server: --service-node-port-range: {text!r} is not a valid port range")
    return first, last


def _snapshot_schedule(text: str) -> str:
    from kubeling.apiserver.etcdsnapshots import parse_schedule
    try:
        parse_schedule(text)
    except ValueError as e:
        raise SystemExit(f"kubeling server: --etcd-snapshot-schedule-cron: {e}")
    return text


def _positive(flag: str, value: int) -> int:
    if value < 1:
        raise SystemExit(f"kubeling server: {flag} must be at least 1")
    return value


def _go_duration(flag: str, text: str) -> float:
    from kubeling.apiserver.filters.timeout import parse_go_duration
    try:
        return float(parse_go_duration(text))
    except Exception as e:  # noqa: BLE001 - any parse failure is a usage error
        raise SystemExit(f"kubeling server: {flag}: {getattr(e, 'message', e)}")


def _duration(text: str) -> float:
    seconds = _go_duration("--request-timeout", text)
    if seconds <= 0:
        raise SystemExit("kubeling server: --request-timeout must be positive")
    return seconds


def _authorization_modes(text: str) -> tuple[str, ...]:
    from kubeling.apiserver.authorizer import parse_modes
    try:
        return parse_modes(text)
    except ValueError as e:
        raise SystemExit(f"kubeling server: --authorization-mode: {e}")


def _admission_config(path: str | None) -> str | None:
    """The --admission-control-config-file, read once here so that a bad one is a usage error."""
    from kubeling.apiserver.admission.podsecurity.config import ConfigError, load
    try:
        load(path)
    except ConfigError as e:
        raise SystemExit(f"kubeling server: --admission-control-config-file: {e}")
    return path


def _cidr(text: str) -> str:
    import ipaddress
    try:
        net = ipaddress.ip_network(text)
    except ValueError as e:
        raise SystemExit(f"kubeling server: --service-cluster-ip-range: {e}")
    if net.num_addresses < 8:
        raise SystemExit(f"kubeling server: --service-cluster-ip-range: {text} is too small")
    return str(net)


def cmd_server(args: argparse.Namespace) -> int:
    opts = server.Options(data_dir=args.data_dir, bind_address=args.bind_address, secure_port=args.secure_port,
                          insecure_port=args.insecure_port, token_auth_file=args.token_auth_file,
                          anonymous_auth=args.anonymous_auth, audit_policy_file=args.audit_policy_file,
                          audit_log_path=args.audit_log_path, audit_log_maxage=args.audit_log_maxage,
                          audit_log_maxbackup=args.audit_log_maxbackup, audit_log_maxsize=args.audit_log_maxsize,
                          audit_webhook_config_file=args.audit_webhook_config_file,
                          audit_webhook=dict(mode=args.audit_webhook_mode,
                                             max_batch_size=args.audit_webhook_batch_max_size,
                                             max_batch_wait=_go_duration("--audit-webhook-batch-max-wait",
                                                                         args.audit_webhook_batch_max_wait),
                                             buffer_size=args.audit_webhook_batch_buffer_size,
                                             initial_backoff=_go_duration("--audit-webhook-initial-backoff",
                                                                          args.audit_webhook_initial_backoff)),
                          authorization_mode=_authorization_modes(args.authorization_mode),
                          encryption_provider_config=args.encryption_provider_config,
                          secrets_encryption=args.secrets_encryption,
                          advertise_address=args.advertise_address, compact_interval=args.compact_interval,
                          compact_keep=args.compact_keep,
                          datastore_endpoint=args.datastore_endpoint, datastore_cafile=args.datastore_cafile,
                          datastore_certfile=args.datastore_certfile, datastore_keyfile=args.datastore_keyfile,
                          controllers=[c for c in args.controllers.split(",") if c],
                          request_timeout=_duration(args.request_timeout),
                          max_requests_inflight=args.max_requests_inflight,
                          max_mutating_requests_inflight=args.max_mutating_requests_inflight,
                          service_cidr=_cidr(args.service_cluster_ip_range),
                          node_port_range=_port_range(args.service_node_port_range),
                          agent=not args.disable_agent, agent_args=_agent_args(args), node_name=args.node_name,
                          cluster_cidr=args.cluster_cidr, scheduler=not args.disable_scheduler,
                          controller_manager_args=_passthrough(args.kube_controller_manager_arg),
                          scheduler_args=_passthrough(args.kube_scheduler_arg),
                          default_not_ready_toleration_seconds=args.default_not_ready_toleration_seconds,
                          default_unreachable_toleration_seconds=args.default_unreachable_toleration_seconds,
                          admission_control_config_file=_admission_config(args.admission_control_config_file),
                          disable=[c.strip() for d in args.disable for c in d.split(",") if c.strip()],
                          ingress_http_port=args.ingress_http_port, ingress_https_port=args.ingress_https_port,
                          cluster_dns=args.cluster_dns, cluster_domain=args.cluster_domain,
                          token=args.token, token_file=args.token_file,
                          etcd_snapshot_schedule_cron=_snapshot_schedule(args.etcd_snapshot_schedule_cron),
                          etcd_snapshot_retention=_positive("--etcd-snapshot-retention", args.etcd_snapshot_retention),
                          etcd_snapshot_dir=args.etcd_snapshot_dir, etcd_disable_snapshots=args.etcd_disable_snapshots)

    def ready(api, kubeconfig) -> None:
        print(f"kubeling: ready. export KUBECONFIG={kubeconfig.resolve()}", file=sys.stderr, flush=True)

    from kubeling.apiserver.datadir import DataDirError
    from kubeling.storage import StorageError
    try:
        run_until_signalled(lambda stop: server.run(opts, stop, on_ready=ready), verbose=args.verbose)
    except (DataDirError, StorageError) as e:
        print(f"kubeling server: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubeling", description="A real Kubernetes, written in Python")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("server", help="run the API server and controllers")
    _server_args(p)
    p.set_defaults(func=cmd_server)
    controller_manager_cli.add_subcommands(sub)  # controller-manager
    scheduler_cli.add_subcommands(sub)  # scheduler
    backup_cli.add_parsers(sub)  # backup, restore, doctor
    etcd_snapshot_cli.add_subcommands(sub)  # etcd-snapshot save/list/delete/prune/restore
    agent_cli.add_subcommands(sub)  # agent, node cleanup
    images_cli.add_subcommands(sub)  # images import, images ls
    hollow_cli.add_subcommands(sub)  # hollow-nodes
    ingress_cli.add_subcommands(sub)  # ingress
    dns_cli.add_subcommands(sub)  # dns
    secrets_encrypt_cli.add_subcommands(sub)  # secrets-encrypt
    token_cli.add_subcommands(sub)  # token create/list/delete
    cluster_cli.add_subcommands(sub)  # cluster up/down/status/node
    proxy_cli.add_subcommands(sub)  # proxy (kube-proxy)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
