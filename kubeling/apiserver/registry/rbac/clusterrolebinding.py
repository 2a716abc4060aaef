"""ClusterRoleBindings (upstream ``pkg/registry/rbac/clusterrolebinding``). Authorization by RBAC arrives with issue 9;
until then these are stored and served, but grant nothing."""

from kubeling.api.defaults import rbac as defaults
from kubeling.api.printers import other as printers
from kubeling.api.validation import meta
from kubeling.api.validation import rbac as validation
from kubeling.apiserver.registry.strategy import Strategy


class ClusterRoleBindingStrategy(Strategy):
    group, resource, kind = "rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding"
    namespaced = False
    name_rule = staticmethod(meta.name_is_path_segment)
    printer = printers.CLUSTER_ROLE_BINDING

    def defaults(self, obj):
        defaults.set_object_defaults_binding(obj)

    def validate(self, obj):
        return validation.validate_cluster_role_binding(obj)

    def validate_update(self, obj, old):
        return validation.validate_binding_update(obj, old)
