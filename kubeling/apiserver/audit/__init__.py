"""Audit logging, upstream's ``audit.k8s.io/v1`` (``k8s.io/apiserver/pkg/audit``).

- `policy`: the ``Policy`` file (``--audit-policy-file``): rules with levels None, Metadata,
  Request and RequestResponse, matched on users, userGroups, verbs, resources, namespaces and
  nonResourceURLs, and omitStages;
- `log`: the log backend (``--audit-log-path``, ``-`` for stdout) writing one JSON event per
  line from a writer thread, with lumberjack's rotation (``--audit-log-maxsize``,
  ``--audit-log-maxbackup``, ``--audit-log-maxage``);
- `filter`: the HTTP filter that builds the events (stages RequestReceived, ResponseStarted,
  ResponseComplete, Panic) and the ``Audit-Id`` response header.

- `webhook`: the webhook backend (``--audit-webhook-config-file``, batched), and the union of
  both backends when both are configured.

`from_options` builds the server's `Auditor` from the flags: no policy file, or neither a log
path nor a webhook, means nothing is audited (as upstream, which needs both a policy and a
backend).
"""

from __future__ import annotations

from kubeling.apiserver.audit.filter import Auditor
from kubeling.apiserver.audit.log import LogBackend
from kubeling.apiserver.audit.policy import PolicyError, load
from kubeling.apiserver.audit.webhook import UnionBackend, WebhookBackend, WebhookError

__all__ = ["Auditor", "LogBackend", "PolicyError", "WebhookBackend", "WebhookError", "from_options"]


def from_options(policy_file: str | None, log_path: str | None, *, max_age: int = 0, max_backup: int = 0,
                 max_size: int = 0, webhook_config_file: str | None = None,
                 webhook: dict | None = None) -> Auditor:
    """The auditor for ``--audit-policy-file``, ``--audit-log-*`` and ``--audit-webhook-*``
    (``webhook``: `WebhookBackend`'s keyword arguments); `PolicyError` for a bad policy,
    `WebhookError` for a bad webhook flag."""
    hook = WebhookBackend(webhook_config_file, **(webhook or {})) if webhook_config_file else None
    if not policy_file or not (log_path or hook):
        if policy_file:
            load(policy_file)   # still refuse a broken policy at start
        return Auditor()
    policy = load(policy_file)
    backends = []
    if log_path:
        backends.append(LogBackend(log_path, max_size_mb=max_size, max_backups=max_backup, max_age_days=max_age))
    if hook is not None:
        backends.append(hook)
    return Auditor(policy, backends[0] if len(backends) == 1 else UnionBackend(backends))
