"""ServiceAccount (upstream ``plugin/pkg/admission/serviceaccount``), the part that needs no
tokens: a pod that names no service account gets ``default`` (and the deprecated
``serviceAccount`` alias). Requiring that the account exists and mounting its token arrive with
TokenRequest (issue 9)."""

from __future__ import annotations


class ServiceAccount:
    NAME = "ServiceAccount"

    def handles(self, attrs) -> bool:
        return attrs.operation == "CREATE" and attrs.is_("", "pods") and not attrs.subresource

    async def admit(self, attrs) -> None:
        spec = attrs.obj.setdefault("spec", {})
        if not spec.get("serviceAccountName"):
            spec["serviceAccountName"] = spec.get("serviceAccount") or "default"
        spec["serviceAccount"] = spec["serviceAccountName"]
