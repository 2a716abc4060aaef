"""MutatingWebhookConfigurations (upstream ``pkg/registry/admissionregistration/
mutatingwebhookconfiguration``): cluster-scoped; defaults (``reinvocationPolicy: Never`` too) and
validation in `webhook`. The MutatingAdmissionWebhook plugin (``apiserver/admission/webhook``)
calls them."""

from kubeling.apiserver.registry.admissionregistration import webhook
from kubeling.apiserver.registry.strategy import Strategy


class MutatingWebhookConfigurationStrategy(Strategy):
    group, resource, kind = "admissionregistration.k8s.io", "mutatingwebhookconfigurations", \
        "MutatingWebhookConfiguration"
    namespaced = False
    generation = True
    printer = webhook.PRINTER

    def defaults(self, obj):
        webhook.set_defaults(obj, mutating=True)

    def check(self, obj, old, served=None):
        errs = super().check(obj, old, served)
        return errs + webhook.validate_configuration(obj, old, mutating=True)
