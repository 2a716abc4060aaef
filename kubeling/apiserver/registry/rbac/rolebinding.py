"""RoleBindings (upstream ``pkg/registry/rbac/rolebinding``). Authorization by RBAC arrives with issue 9;
until then these are stored and served, but grant nothing."""

from kubeling.api.defaults import rbac as defaults
from kubeling.api.printers import other as printers
from kubeling.api.validation import meta
from kubeling.api.validation import rbac as validation
from kubeling.apiserver.registry.strategy import Strategy


class RoleBindingStrategy(Strategy):
    group, resource, kind = "rbac.authorization.k8s.io", "rolebindings", "RoleBinding"
    name_rule = staticmethod(meta.name_is_path_segment)
    printer = printers.ROLE_BINDING

    def defaults(self, obj):
        defaults.set_object_defaults_binding(obj)

    def validate(self, obj):
        return validation.validate_role_binding(obj)

    def validate_update(self, obj, old):
        return validation.validate_binding_update(obj, old)
