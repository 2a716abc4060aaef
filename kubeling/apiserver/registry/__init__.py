"""The resource registry: one module per upstream resource, one table that names them all.

A resource's whole behaviour is its `Strategy` class, in ``registry/<group>/<resource>.py``
(upstream: ``pkg/registry/<group>/<resource>/strategy.go``): defaults, validation, the
status/spec split, printing, field selectors, version conversion, subresources and the hooks
around the store write. `REGISTRY` maps each stored (group, resource) to its strategy; every
served version of the resource (``extensions/v1beta1`` Deployments, ``autoscaling/v1``
HorizontalPodAutoscalers, ``events.k8s.io/v1`` Events) shares it. Custom resources get a
`CustomResourceStrategy` per CRD version from the CRD controller.

`GenericStore` (``generic.py``) is the one CRUD implementation; nothing else in the API server
touches `kubeling.storage`.
"""

from __future__ import annotations

from dataclasses import dataclass

# First: modules imported by the package's own dependencies (listwatch) must find these.
from kubeling.apiserver.registry.codec import decode, encode  # noqa: I001
from kubeling.apiserver.registry.context import Context, now_rfc3339

from kubeling.apiserver.registry.admissionregistration.mutatingwebhookconfiguration import (
    MutatingWebhookConfigurationStrategy,
)
from kubeling.apiserver.registry.admissionregistration.validatingwebhookconfiguration import (
    ValidatingWebhookConfigurationStrategy,
)
from kubeling.apiserver.registry.admissionregistration.mutatingadmissionpolicy import MutatingAdmissionPolicyStrategy
from kubeling.apiserver.registry.admissionregistration.mutatingadmissionpolicybinding import (
    MutatingAdmissionPolicyBindingStrategy,
)
from kubeling.apiserver.registry.admissionregistration.validatingadmissionpolicy import (
    ValidatingAdmissionPolicyStrategy,
)
from kubeling.apiserver.registry.admissionregistration.validatingadmissionpolicybinding import (
    ValidatingAdmissionPolicyBindingStrategy,
)
from kubeling.apiserver.registry.apiextensions.customresource import CustomResourceStrategy
from kubeling.apiserver.registry.apiextensions.customresourcedefinition import CustomResourceDefinitionStrategy
from kubeling.apiserver.registry.apiregistration.apiservice import APIServiceStrategy
from kubeling.apiserver.registry.apps.controllerrevision import ControllerRevisionStrategy
from kubeling.apiserver.registry.apps.daemonset import DaemonSetStrategy
from kubeling.apiserver.registry.apps.deployment import DeploymentStrategy
from kubeling.apiserver.registry.apps.replicaset import ReplicaSetStrategy
from kubeling.apiserver.registry.apps.statefulset import StatefulSetStrategy
from kubeling.apiserver.registry.authentication.selfsubjectreview import SelfSubjectReviewStrategy
from kubeling.apiserver.registry.authorization.selfsubjectaccessreview import SelfSubjectAccessReviewStrategy
from kubeling.apiserver.registry.authorization.selfsubjectrulesreview import SelfSubjectRulesReviewStrategy
from kubeling.apiserver.registry.authentication.tokenreview import TokenReviewStrategy
from kubeling.apiserver.registry.authorization.localsubjectaccessreview import LocalSubjectAccessReviewStrategy
from kubeling.apiserver.registry.authorization.subjectaccessreview import SubjectAccessReviewStrategy
from kubeling.apiserver.registry.autoscaling.horizontalpodautoscaler import HorizontalPodAutoscalerStrategy
from kubeling.apiserver.registry.batch.cronjob import CronJobStrategy
from kubeling.apiserver.registry.batch.job import JobStrategy
from kubeling.apiserver.registry.certificates.certificatesigningrequest import CertificateSigningRequestStrategy
from kubeling.apiserver.registry.coordination.lease import LeaseStrategy
from kubeling.apiserver.registry.core.binding import BindingStrategy
from kubeling.apiserver.registry.core.configmap import ConfigMapStrategy
from kubeling.apiserver.registry.core.endpoints import EndpointsStrategy
from kubeling.apiserver.registry.core.event import EventStrategy
from kubeling.apiserver.registry.core.limitrange import LimitRangeStrategy
from kubeling.apiserver.registry.core.namespace import NamespaceStrategy
from kubeling.apiserver.registry.core.node import NodeStrategy
from kubeling.apiserver.registry.core.persistentvolume import PersistentVolumeStrategy
from kubeling.apiserver.registry.core.persistentvolumeclaim import PersistentVolumeClaimStrategy
from kubeling.apiserver.registry.core.pod import PodStrategy
from kubeling.apiserver.registry.core.podtemplate import PodTemplateStrategy
from kubeling.apiserver.registry.core.replicationcontroller import ReplicationControllerStrategy
from kubeling.apiserver.registry.core.resourcequota import ResourceQuotaStrategy
from kubeling.apiserver.registry.core.secret import SecretStrategy
from kubeling.apiserver.registry.core.service import ServiceStrategy
from kubeling.apiserver.registry.core.serviceaccount import ServiceAccountStrategy
from kubeling.apiserver.registry.discovery.endpointslice import EndpointSliceStrategy
from kubeling.apiserver.registry.generic import GenericStore
from kubeling.apiserver.registry.networking.ingress import IngressStrategy
from kubeling.apiserver.registry.networking.ingressclass import IngressClassStrategy
from kubeling.apiserver.registry.networking.networkpolicy import NetworkPolicyStrategy
from kubeling.apiserver.registry.policy.poddisruptionbudget import PodDisruptionBudgetStrategy
from kubeling.apiserver.registry.rbac.clusterrole import ClusterRoleStrategy
from kubeling.apiserver.registry.rbac.clusterrolebinding import ClusterRoleBindingStrategy
from kubeling.apiserver.registry.rbac.role import RoleStrategy
from kubeling.apiserver.registry.rbac.rolebinding import RoleBindingStrategy
from kubeling.apiserver.registry.scheduling.priorityclass import PriorityClassStrategy
from kubeling.apiserver.registry.storage.storageclass import StorageClassStrategy
from kubeling.apiserver.registry.strategy import Strategy

# (group, resource) of the stored resource -> its strategy. Explicit, no import-time discovery.
REGISTRY: dict[tuple[str, str], type[Strategy]] = {
    ("", "pods"): PodStrategy,
    ("", "bindings"): BindingStrategy,
    ("", "namespaces"): NamespaceStrategy,
    ("", "nodes"): NodeStrategy,
    ("", "services"): ServiceStrategy,
    ("", "endpoints"): EndpointsStrategy,
    ("", "configmaps"): ConfigMapStrategy,
    ("", "secrets"): SecretStrategy,
    ("", "serviceaccounts"): ServiceAccountStrategy,
    ("", "events"): EventStrategy,
    ("", "persistentvolumes"): PersistentVolumeStrategy,
    ("", "persistentvolumeclaims"): PersistentVolumeClaimStrategy,
    ("", "resourcequotas"): ResourceQuotaStrategy,
    ("", "limitranges"): LimitRangeStrategy,
    ("", "replicationcontrollers"): ReplicationControllerStrategy,
    ("", "podtemplates"): PodTemplateStrategy,
    ("apps", "deployments"): DeploymentStrategy,
    ("apps", "replicasets"): ReplicaSetStrategy,
    ("apps", "daemonsets"): DaemonSetStrategy,
    ("apps", "statefulsets"): StatefulSetStrategy,
    ("apps", "controllerrevisions"): ControllerRevisionStrategy,
    ("batch", "jobs"): JobStrategy,
    ("batch", "cronjobs"): CronJobStrategy,
    ("autoscaling", "horizontalpodautoscalers"): HorizontalPodAutoscalerStrategy,
    ("networking.k8s.io", "ingresses"): IngressStrategy,
    ("networking.k8s.io", "ingressclasses"): IngressClassStrategy,
    ("networking.k8s.io", "networkpolicies"): NetworkPolicyStrategy,
    ("storage.k8s.io", "storageclasses"): StorageClassStrategy,
    ("policy", "poddisruptionbudgets"): PodDisruptionBudgetStrategy,
    ("rbac.authorization.k8s.io", "roles"): RoleStrategy,
    ("rbac.authorization.k8s.io", "rolebindings"): RoleBindingStrategy,
    ("rbac.authorization.k8s.io", "clusterroles"): ClusterRoleStrategy,
    ("rbac.authorization.k8s.io", "clusterrolebindings"): ClusterRoleBindingStrategy,
    ("coordination.k8s.io", "leases"): LeaseStrategy,
    ("discovery.k8s.io", "endpointslices"): EndpointSliceStrategy,
    ("scheduling.k8s.io", "priorityclasses"): PriorityClassStrategy,
    ("authorization.k8s.io", "selfsubjectaccessreviews"): SelfSubjectAccessReviewStrategy,
    ("authorization.k8s.io", "subjectaccessreviews"): SubjectAccessReviewStrategy,
    ("authorization.k8s.io", "localsubjectaccessreviews"): LocalSubjectAccessReviewStrategy,
    ("authentication.k8s.io", "tokenreviews"): TokenReviewStrategy,
    ("authorization.k8s.io", "selfsubjectrulesreviews"): SelfSubjectRulesReviewStrategy,
    ("authentication.k8s.io", "selfsubjectreviews"): SelfSubjectReviewStrategy,
    ("certificates.k8s.io", "certificatesigningrequests"): CertificateSigningRequestStrategy,
    ("apiextensions.k8s.io", "customresourcedefinitions"): CustomResourceDefinitionStrategy,
    ("apiregistration.k8s.io", "apiservices"): APIServiceStrategy,
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): ValidatingWebhookConfigurationStrategy,
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): MutatingWebhookConfigurationStrategy,
    ("admissionregistration.k8s.io", "validatingadmissionpolicies"): ValidatingAdmissionPolicyStrategy,
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"): ValidatingAdmissionPolicyBindingStrategy,
    ("admissionregistration.k8s.io", "mutatingadmissionpolicies"): MutatingAdmissionPolicyStrategy,
    ("admissionregistration.k8s.io", "mutatingadmissionpolicybindings"): MutatingAdmissionPolicyBindingStrategy,
}


@dataclass(frozen=True)
class Config:
    """Per-server settings strategies read (never module globals: tests run several servers)."""

    service_cidr: str = "10.43.0.0/16"
    node_port_range: tuple[int, int] = (30000, 32767)
    # admission's DefaultTolerationSeconds (--default-not-ready/unreachable-toleration-seconds)
    default_not_ready_toleration_seconds: int = 300
    default_unreachable_toleration_seconds: int = 300
    # --admission-control-config-file: upstream's AdmissionConfiguration (PodSecurity reads its entry)
    admission_control_config_file: str | None = None


def strategies(config: Config | None = None) -> dict[tuple[str, str], Strategy]:
    """One strategy instance per stored resource, for one server."""
    config = config or Config()
    return {key: cls(config) for key, cls in REGISTRY.items()}


__all__ = ["REGISTRY", "Config", "Context", "CustomResourceStrategy", "GenericStore", "Strategy", "decode",
           "encode", "now_rfc3339", "strategies"]
