"""APIServices (upstream ``kube-aggregator/pkg/registry/apiservice``): cluster-scoped, named
``<version>.<group>``, with an ``Available`` condition in status.

Every built-in group version has a *local* APIService (no ``spec.service``), registered at start
(`kubeling.apiserver.aggregator`); an extension API server (metrics-server, ...) registers one
that names its Service, and the aggregator's availability controller reports whether it can be
reached.
"""

from kubeling.api.defaults import apiregistration as defaults
from kubeling.api.printers import other as printers
from kubeling.api.validation import apiregistration as validation
from kubeling.api.validation import validate_meta
from kubeling.apiserver.registry.strategy import Strategy
from kubeling.apiserver.registry.subresources import status_subresources


class APIServiceStrategy(Strategy):
    group, resource, kind = "apiregistration.k8s.io", "apiservices", "APIService"
    namespaced = False
    printer = printers.APISERVICE
    status_subresource = True
    subresources = status_subresources()

    def defaults(self, obj):
        defaults.set_object_defaults_apiservice(obj)

    def check(self, obj, old, served=None):
        rule = validation.apiservice_name_rule(obj.get("spec") or {})
        errs = validate_meta(obj, False, old, rule)
        return errs + validation.validate_apiservice(obj) + validation.validate_apiservice_status(obj)
