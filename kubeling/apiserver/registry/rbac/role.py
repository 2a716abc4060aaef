"""Roles (upstream ``pkg/registry/rbac/role``). Granted by the RBAC authorizer
(`kubeling.apiserver.rbac`); writes pass its escalation check (`kubeling.apiserver.rbac.escalation`)."""

from kubeling.api.validation import meta
from kubeling.api.validation import rbac as validation
from kubeling.apiserver.registry.strategy import Strategy


class RoleStrategy(Strategy):
    group, resource, kind = "rbac.authorization.k8s.io", "roles", "Role"
    name_rule = staticmethod(meta.name_is_path_segment)

    def validate(self, obj):
        return validation.validate_role(obj)

    # the server's `rbac.escalation.EscalationCheck` (`rbac.install_escalation_checks`); None: unchecked
    escalation = None

    async def begin_create(self, store, served, obj, ctx):
        if self.escalation is not None:
            self.escalation.check_role("roles", obj, None, ctx)

    async def begin_update(self, store, served, new, old, ctx):
        if self.escalation is not None:
            self.escalation.check_role("roles", new, old, ctx)
