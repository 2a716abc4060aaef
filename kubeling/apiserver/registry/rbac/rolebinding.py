"""RoleBindings (upstream ``pkg/registry/rbac/rolebinding``). Granted by the RBAC authorizer
(`kubeling.apiserver.rbac`); writes pass its escalation check (`kubeling.apiserver.rbac.escalation`)."""

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

    # the server's `rbac.escalation.EscalationCheck` (`rbac.install_escalation_checks`); None: unchecked
    escalation = None

    async def begin_create(self, store, served, obj, ctx):
        if self.escalation is not None:
            self.escalation.check_binding("rolebindings", obj, None, ctx)

    async def begin_update(self, store, served, new, old, ctx):
        if self.escalation is not None:
            self.escalation.check_binding("rolebindings", new, old, ctx)
