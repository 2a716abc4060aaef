"""Audit logging, upstream's ``audit.k8s.io/v1`` (``k8s.io/apiserver/pkg/audit``).

- `policy`: the ``Policy`` file (``--audit-policy-file``): rules with levels None, Metadata,
  Request and RequestResponse, matched on users, userGroups, verbs, resources, namespaces and
  nonResourceURLs, and omitStages;
- `log`: the log backend (``--audit-log-path``, ``-`` for stdout) writing one JSON event per
  line from a writer thread, with lumberjack's rotation (``--audit-log-maxsize``,
  ``--audit-log-maxbackup``, ``--audit-log-maxage``);
- `filter`: the HTTP filter that builds the events (stages RequestReceived, ResponseStarted,
  ResponseComplete, Panic) and the ``Audit-Id`` response header.

`from_options` builds the server's `Auditor` from the flags: no policy file or no log path
means nothing is audited (as upstream, which needs both a policy and a backend).
"""

from __future__ import annotations

from kubeling.apiserver.audit.filter import Auditor
from kubeling.apiserver.audit.log import LogBackend
from kubeling.apiserver.audit.policy import PolicyError, load

__all__ = ["Auditor", "LogBackend", "PolicyError", "from_options"]


def from_options(policy_file: str | None, log_path: str | None, *, max_age: int = 0, max_backup: int = 0,
                 max_size: int = 0) -> Auditor:
    """The auditor for ``--audit-policy-file`` and ``--audit-log-*``; `PolicyError` for a bad policy."""
    if not policy_file or not log_path:
        if policy_file:
            load(policy_file)   # still refuse a broken policy at start
        return Auditor()
    policy = load(policy_file)
    return Auditor(policy, LogBackend(log_path, max_size_mb=max_size, max_backups=max_backup, max_age_days=max_age))
