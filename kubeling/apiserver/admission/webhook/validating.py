"""ValidatingAdmissionWebhook (upstream ``plugin/pkg/admission/webhook/validating``): every
matching webhook of every ValidatingWebhookConfiguration is called, all at once; the first
refusal or (under ``failurePolicy: Fail``) call failure, in the webhooks' order, answers the
request. See `dispatcher` for matching, the request and the errors."""

from __future__ import annotations

import asyncio

from kubeling.api import errors
from kubeling.apiserver.admission.webhook.client import CallError
from kubeling.apiserver.admission.webhook.dispatcher import Invocation, Webhook, denied


class ValidatingAdmissionWebhook(Webhook):
    NAME = "ValidatingAdmissionWebhook"
    RESOURCE = "validatingwebhookconfigurations"
    MUTATING = False

    async def validate(self, attrs) -> None:
        invocations = await self.invocations(attrs)
        if not invocations:
            return
        versions: dict[int, tuple] = {}
        for inv in invocations:  # one conversion per version, shared (read-only) by the calls
            key = id(inv.served)
            if key not in versions:
                versions[key] = (self.versioned(attrs.obj, inv.served), self.versioned(attrs.old, inv.served))
        results = await asyncio.gather(*(self._one(inv, attrs, *versions[id(inv.served)]) for inv in invocations))
        for err in results:
            if err is not None:
                raise err

    async def _one(self, inv: Invocation, attrs, obj, old) -> errors.StatusError | None:
        try:
            response = await self.call(inv, attrs, obj, old)
        except CallError as e:
            return self.failed(inv, str(e))
        except errors.StatusError as e:
            return e
        if response is not None and not response.get("allowed"):
            return denied(inv.name, response.get("status"))
        return None
