"""The privileged group (upstream's ``authorizerfactory.NewPrivilegedGroups(system:masters)``,
which kube-apiserver puts before every ``--authorization-mode``): ``system:masters`` may do
anything, whatever the modes."""

from __future__ import annotations

from kubeling.apiserver.auth import Attributes, Decision, UserInfo

PRIVILEGED_GROUP = "system:masters"


class MastersAuthorizer:
    def authorize(self, attrs: Attributes) -> Decision:
        if PRIVILEGED_GROUP in attrs.user.groups:
            return Decision(True, "")
        return Decision(False, "")

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[str]]:
        if PRIVILEGED_GROUP in user.groups:
            return [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                    {"verbs": ["*"], "nonResourceURLs": ["*"]}], []
        return [], []
