"""SubjectAccessReview (upstream ``pkg/registry/authorization/subjectaccessreview``): may the
user named in the spec do this? Answered by the authorizer, never stored."""

from kubeling.apiserver.registry.authorization.selfsubjectaccessreview import AccessReviewREST
from kubeling.apiserver.registry.strategy import Strategy


class SubjectAccessReviewStrategy(Strategy):
    group, resource, kind = "authorization.k8s.io", "subjectaccessreviews", "SubjectAccessReview"
    namespaced = False
    rest = AccessReviewREST
