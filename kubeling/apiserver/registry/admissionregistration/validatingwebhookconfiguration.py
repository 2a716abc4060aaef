"""ValidatingWebhookConfigurations (upstream ``pkg/registry/admissionregistration/
validatingwebhookconfiguration``): cluster-scoped; defaults and validation in `webhook`.
The ValidatingAdmissionWebhook plugin (``apiserver/admission/webhook``) calls them."""

from kubeling.apiserver.registry.admissionregistration import webhook
from kubeling.apiserver.registry.strategy import Strategy


class ValidatingWebhookConfigurationStrategy(Strategy):
    group, resource, kind = "admissionregistration.k8s.io", "validatingwebhookconfigurations", \
        "ValidatingWebhookConfiguration"
    namespaced = False
    generation = True
    printer = webhook.PRINTER

    def defaults(self, obj):
        webhook.set_defaults(obj, mutating=False)

    def check(self, obj, old, served=None):
        errs = super().check(obj, old, served)
        return errs + webhook.validate_configuration(obj, old, mutating=False)
