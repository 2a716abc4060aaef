"""ClusterRoles (upstream ``pkg/registry/rbac/clusterrole``). Authorization by RBAC arrives with issue 9;
until then these are stored and served, but grant nothing."""

from kubeling.api.validation import meta
from kubeling.api.validation import rbac as validation
from kubeling.apiserver.registry.strategy import Strategy


class ClusterRoleStrategy(Strategy):
    group, resource, kind = "rbac.authorization.k8s.io", "clusterroles", "ClusterRole"
    namespaced = False
    name_rule = staticmethod(meta.name_is_path_segment)

    def validate(self, obj):
        return validation.validate_cluster_role(obj)
