"""CustomResourceDefinitions (upstream ``apiextensions-apiserver/pkg/registry/
customresourcedefinition``): cluster-scoped, status (conditions, acceptedNames, storedVersions,
set by the CRD controller in ``kubeling/apiserver/crd.py``), generation. Every
``x-kubernetes-validations`` rule of its schemas must compile (`celvalidation.compile_errors`)."""

from kubeling.api.defaults import apiextensions as defaults
from kubeling.api.validation import apiextensions as validation
from kubeling.apiserver.registry.apiextensions.celvalidation import compile_errors
from kubeling.apiserver.registry.strategy import Strategy
from kubeling.apiserver.registry.subresources import status_subresources


class CustomResourceDefinitionStrategy(Strategy):
    group, resource, kind = "apiextensions.k8s.io", "customresourcedefinitions", "CustomResourceDefinition"
    namespaced = False
    generation = True
    status_subresource = True
    subresources = status_subresources()

    def initial_status(self, obj):
        return {"conditions": [], "acceptedNames": {"plural": "", "kind": ""}, "storedVersions": []}

    def defaults(self, obj):
        defaults.set_object_defaults_crd(obj)

    def validate(self, obj):
        return validation.validate_crd(obj) + compile_errors(obj)

    def validate_update(self, obj, old):
        return validation.validate_crd_update(obj, old)
