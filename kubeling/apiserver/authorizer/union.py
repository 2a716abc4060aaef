"""The authorizer chain (upstream's ``authorizer/union``): each authorizer in turn; the first that
allows, or explicitly denies, decides. No opinion from all of them is a refusal.

``rules_for(user, namespace)`` is the union of what the authorizers that can list their rules
grant (upstream's union ``RulesFor``, used by SelfSubjectRulesReview and ``kubectl auth can-i
--list``).
"""

from __future__ import annotations

import logging

from kubeling.apiserver.auth import Attributes, Authorizer, Decision, UserInfo

log = logging.getLogger(__name__)


class ChainAuthorizer:
    def __init__(self, authorizers: list[Authorizer]) -> None:
        self.authorizers = authorizers

    def authorize(self, attrs: Attributes) -> Decision:
        reasons = []
        for a in self.authorizers:
            try:
                d = a.authorize(attrs)
            except Exception:  # noqa: BLE001 - an authorizer's fault never grants, never stops the chain
                log.exception("authorizer %s failed", type(a).__name__)
                continue
            if d.allowed or d.denied:
                return d
            if d.reason:
                reasons.append(d.reason)
        return Decision(False, "\n".join(reasons))

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[str]]:
        """Every rule the authorizers that can list theirs grant ``user`` in ``namespace``:
        (rules, resolution errors)."""
        rules: list[dict] = []
        errs: list[str] = []
        for a in self.authorizers:
            fn = getattr(a, "rules_for", None)
            if fn is not None:
                r, e = fn(user, namespace)
                rules += r
                errs += e
        return rules, errs
