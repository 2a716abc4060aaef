"""DefaultTolerationSeconds (upstream ``plugin/pkg/admission/defaulttolerationseconds``): a new
pod tolerates the ``not-ready`` and ``unreachable`` NoExecute taints for 300 s, unless it already
tolerates them (or tolerates everything), so that a node's failure evicts it after five minutes.

The two durations are the API server's ``--default-not-ready-toleration-seconds`` and
``--default-unreachable-toleration-seconds`` (upstream's flags, 300 each)."""

from __future__ import annotations

TOLERATION_SECONDS = 300
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
TAINTS = (NOT_READY, UNREACHABLE)


class DefaultTolerationSeconds:
    NAME = "DefaultTolerationSeconds"

    def __init__(self, not_ready_seconds: int = TOLERATION_SECONDS,
                 unreachable_seconds: int = TOLERATION_SECONDS) -> None:
        self.seconds = {NOT_READY: not_ready_seconds, UNREACHABLE: unreachable_seconds}

    def handles(self, attrs) -> bool:
        return attrs.operation == "CREATE" and attrs.is_("", "pods") and not attrs.subresource

    async def admit(self, attrs) -> None:
        tols = attrs.obj.setdefault("spec", {}).setdefault("tolerations", [])
        for key in TAINTS:
            # as upstream: an empty key matches every key, an empty effect every effect
            if not any(t.get("key") in (key, None, "") and t.get("effect") in ("NoExecute", None, "") for t in tols):
                tols.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": self.seconds[key]})
