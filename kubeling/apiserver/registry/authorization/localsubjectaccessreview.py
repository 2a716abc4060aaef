"""LocalSubjectAccessReview (upstream ``pkg/registry/authorization/localsubjectaccessreview``):
may the user named in the spec do this in this namespace? A namespaced SubjectAccessReview:
``spec.resourceAttributes.namespace`` must be the request's namespace, and nonResourceAttributes
are refused. Answered by the authorizer (`AccessReviewREST`), never stored."""

from kubeling.apiserver.registry.authorization.selfsubjectaccessreview import AccessReviewREST
from kubeling.apiserver.registry.strategy import Strategy


class LocalSubjectAccessReviewStrategy(Strategy):
    group, resource, kind = "authorization.k8s.io", "localsubjectaccessreviews", "LocalSubjectAccessReview"
    namespaced = True
    rest = AccessReviewREST
