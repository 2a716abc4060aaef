"""Admission webhooks (upstream ``plugin/pkg/admission/webhook``): `MutatingAdmissionWebhook` and
`ValidatingAdmissionWebhook`, which call the webhooks of the MutatingWebhookConfigurations and
ValidatingWebhookConfigurations over HTTPS with ``AdmissionReview`` v1.

    rules.py       which requests a webhook's rules and selectors match
    client.py      the HTTPS call (url or service, caBundle, timeout)
    dispatcher.py  the shared core: configuration cache, matching, the review, errors
    mutating.py    sequential calls, JSONPatch, reinvocation
    validating.py  parallel calls
"""

from kubeling.apiserver.admission.webhook.mutating import MutatingAdmissionWebhook
from kubeling.apiserver.admission.webhook.validating import ValidatingAdmissionWebhook

__all__ = ["MutatingAdmissionWebhook", "ValidatingAdmissionWebhook"]
