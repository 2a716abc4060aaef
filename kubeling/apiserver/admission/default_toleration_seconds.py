"""DefaultTolerationSeconds (upstream ``plugin/pkg/admission/defaulttolerationseconds``): a new
pod tolerates the ``not-ready`` and ``unreachable`` NoExecute taints for 300 s, unless it already
tolerates them (or tolerates everything), so that a node's failure evicts it after five minutes."""

from __future__ import annotations

TOLERATION_SECONDS = 300
TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


class DefaultTolerationSeconds:
    NAME = "DefaultTolerationSeconds"

    def handles(self, attrs) -> bool:
        return attrs.operation == "CREATE" and attrs.is_("", "pods") and not attrs.subresource

    async def admit(self, attrs) -> None:
        tols = attrs.obj.setdefault("spec", {}).setdefault("tolerations", [])
        if any(t.get("operator") == "Exists" and not t.get("key") for t in tols):
            return
        for key in TAINTS:
            if not any(t.get("key") == key and t.get("effect") in ("NoExecute", None, "") for t in tols):
                tols.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": TOLERATION_SECONDS})
