"""MutatingAdmissionWebhook (upstream ``plugin/pkg/admission/webhook/mutating``): matching
webhooks are called one after the other, in the order of their configurations' names and then
their order within a configuration; each gets the object as the previous ones left it and may
answer a JSONPatch, applied at once (to the object in the version the webhook asked for, then
converted back and defaulted again, so that e.g. an added container gets its defaults; the
store's validation runs after admission, so a patch cannot store an invalid object).

Reinvocation (``reinvocationPolicy: IfNeeded``), as upstream: once a webhook changes the object,
every IfNeeded webhook called before it is due to be called again; after the first pass, those
are called once more, in order (a second pass only; changes in it reinvoke nothing). The
mutating plugins that run after this one in kubeling's chain change nothing a webhook sees, so
reinvocation stays inside the plugin.
"""

from __future__ import annotations

from kubeling.api import errors
from kubeling.api.patch import jsonpatch
from kubeling.apiserver.admission.webhook.client import CallError
from kubeling.apiserver.admission.webhook.dispatcher import Invocation, Webhook, denied


class MutatingAdmissionWebhook(Webhook):
    NAME = "MutatingAdmissionWebhook"
    RESOURCE = "mutatingwebhookconfigurations"
    MUTATING = True

    async def admit(self, attrs) -> None:
        invocations = await self.invocations(attrs)
        if not invocations:
            return
        invoked: list[str] = []          # IfNeeded webhooks called so far (their uids: config/name)
        reinvoke: set[str] = set()
        for inv in invocations:
            if await self._one(inv, attrs):
                reinvoke.update(invoked)
            if inv.hook.get("reinvocationPolicy") == "IfNeeded":
                invoked.append(_key(inv))
        if not reinvoke:
            return
        for inv in await self.invocations(attrs):
            if _key(inv) in reinvoke:
                await self._one(inv, attrs)

    async def _one(self, inv: Invocation, attrs) -> bool:
        """Call one webhook and apply its patch; True if the object changed."""
        obj, old = self.versioned(attrs.obj, inv.served), self.versioned(attrs.old, inv.served)
        try:
            response = await self.call(inv, attrs, obj, old)
        except CallError as e:
            err = self.failed(inv, str(e))
            if err is not None:
                raise err from None
            return False
        if response is None:
            return False
        if not response.get("allowed"):
            raise denied(inv.name, response.get("status"))
        patch = response.get("patch")
        if not patch or attrs.obj is None:
            return False
        try:
            ops = _decode_patch(patch)
            patched = jsonpatch.apply(obj, ops)
        except (ValueError, errors.StatusError) as e:
            why = e.message if isinstance(e, errors.StatusError) else str(e)
            raise errors.internal(f'admission webhook "{inv.name}" returned an invalid patch: {why}') from None
        if not isinstance(patched, dict) or jsonpatch.json_equal(patched, obj):
            return False
        stored = inv.served.strategy.to_storage(patched, inv.served)
        inv.served.strategy.defaults(stored)  # upstream decodes the patched object with defaulting
        attrs.obj.clear()
        attrs.obj.update(stored)
        return True


def _key(inv: Invocation) -> str:
    return f"{inv.config}/{inv.name}"


def _decode_patch(patch) -> list:
    import base64  # noqa: PLC0415

    import orjson  # noqa: PLC0415
    raw = base64.b64decode(patch, validate=True) if isinstance(patch, str) else bytes(patch)
    ops = orjson.loads(raw)
    if not isinstance(ops, list):
        raise ValueError("the patch is not a JSON array")
    return ops
