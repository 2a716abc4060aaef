"""Admission: the plugins every upstream cluster enables by default that matter here, in
upstream's order (see `chain` for how they run).

    NamespaceLifecycle        validating: no content in missing/terminating namespaces
    LimitRanger               both: LimitRange defaults and bounds for pods and PVCs
    ServiceAccount            mutating: pods get a service account name
    NodeRestriction           a node writes only its own Node, Lease, CSINode, pods' status (noderestriction.py)
    Priority                  mutating: pods get their PriorityClass's priority
    DefaultTolerationSeconds  mutating: pods tolerate not-ready/unreachable for 300 s
    PodSecurity               validating: Pod Security Standards by namespace labels (podsecurity/)
    MutatingAdmissionWebhook  mutating: MutatingWebhookConfigurations' webhooks (webhook/)
    ValidatingAdmissionWebhook validating: ValidatingWebhookConfigurations' webhooks (webhook/)
    ResourceQuota             validating: refuse what exceeds a quota, charge what it admits

Allocation of Service IPs and node ports is not admission: it lives in the service strategy, as
upstream's service REST storage does it.
"""

from __future__ import annotations

from kubeling.apiserver.admission.chain import Attributes, Chain
from kubeling.apiserver.admission.default_toleration_seconds import (
    DefaultTolerationSeconds,
)
from kubeling.apiserver.admission.limitranger import LimitRanger
from kubeling.apiserver.admission.mutatingadmissionpolicy import MutatingAdmissionPolicy
from kubeling.apiserver.admission.namespace_lifecycle import NamespaceLifecycle
from kubeling.apiserver.admission.noderestriction import NodeRestriction
from kubeling.apiserver.admission.podsecurity import PodSecurity, load as load_pod_security_configuration
from kubeling.apiserver.admission.priority import Priority
from kubeling.apiserver.admission.resourcequota import ResourceQuota
from kubeling.apiserver.admission.service_account import ServiceAccount
from kubeling.apiserver.admission.validatingadmissionpolicy import ValidatingAdmissionPolicy
from kubeling.apiserver.admission.webhook import MutatingAdmissionWebhook, ValidatingAdmissionWebhook


def default_chain(store, lookup, config=None) -> Chain:
    """The chain `kubeling server` runs; ``store`` is the generic store, ``lookup`` finds a Served,
    ``config`` (a `registry.Config`) carries the plugins' flags."""
    not_ready = getattr(config, "default_not_ready_toleration_seconds", 300)
    unreachable = getattr(config, "default_unreachable_toleration_seconds", 300)
    return Chain([
        NamespaceLifecycle(store, lookup),
        LimitRanger(store, lookup),
        ServiceAccount(store, lookup),
        NodeRestriction(),
        Priority(store, lookup),
        DefaultTolerationSeconds(not_ready, unreachable),
        PodSecurity(store, lookup, load_pod_security_configuration(
            getattr(config, "admission_control_config_file", None))),
        MutatingAdmissionPolicy(store, lookup),
        MutatingAdmissionWebhook(store, lookup),
        ValidatingAdmissionPolicy(store, lookup),
        ValidatingAdmissionWebhook(store, lookup),
        ResourceQuota(store, lookup),
    ])


__all__ = ["Attributes", "Chain", "default_chain"]
