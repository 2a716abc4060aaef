"""Admission: the plugins every upstream cluster enables by default that matter here, in
upstream's order (see `chain` for how they run).

    NamespaceLifecycle        validating: no content in missing/terminating namespaces
    ServiceAccount            mutating: pods get a service account name
    Priority                  mutating: pods get their PriorityClass's priority
    DefaultTolerationSeconds  mutating: pods tolerate not-ready/unreachable for 300 s

Allocation of Service IPs and node ports is not admission: it lives in the service strategy, as
upstream's service REST storage does it.
"""

from __future__ import annotations

from kubeling.apiserver.admission.chain import Attributes, Chain
from kubeling.apiserver.admission.default_toleration_seconds import DefaultTolerationSeconds
from kubeling.apiserver.admission.namespace_lifecycle import NamespaceLifecycle
from kubeling.apiserver.admission.priority import Priority
from kubeling.apiserver.admission.service_account import ServiceAccount


def default_chain(store, lookup) -> Chain:
    """The chain `kubeling server` runs; ``store`` is the generic store, ``lookup`` finds a Served."""
    return Chain([
        NamespaceLifecycle(store, lookup),
        ServiceAccount(store, lookup),
        Priority(store, lookup),
        DefaultTolerationSeconds(),
    ])


__all__ = ["Attributes", "Chain", "default_chain"]
