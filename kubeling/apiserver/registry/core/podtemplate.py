"""PodTemplates (upstream ``pkg/registry/core/podtemplate``)."""

from kubeling.api.defaults import core as defaults
from kubeling.api.printers import core as printers
from kubeling.api.validation import core as validation
from kubeling.apiserver.registry.strategy import Strategy


class PodTemplateStrategy(Strategy):
    group, resource, kind = "", "podtemplates", "PodTemplate"
    printer = printers.POD_TEMPLATE

    def defaults(self, obj):
        defaults.set_object_defaults_pod_template(obj)

    def validate(self, obj):
        return validation.validate_pod_template_kind(obj)
