"""``--authorization-mode=AlwaysAllow`` and ``AlwaysDeny`` (upstream's ``authorizerfactory``)."""

from __future__ import annotations

from kubeling.apiserver.auth import Attributes, Decision, UserInfo


class AlwaysAllowAuthorizer:
    def authorize(self, attrs: Attributes) -> Decision:
        return Decision(True, "")

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[str]]:
        return [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                {"verbs": ["*"], "nonResourceURLs": ["*"]}], []


class AlwaysDenyAuthorizer:
    def authorize(self, attrs: Attributes) -> Decision:
        return Decision(False, "Everything is forbidden.", denied=True)

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[str]]:
        return [], []
