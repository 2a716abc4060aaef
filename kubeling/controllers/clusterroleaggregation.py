"""ClusterRole aggregation controller: an ``aggregationRule`` fills a ClusterRole's ``rules``.

Upstream's ``pkg/controller/clusterroleaggregation`` (``--controllers`` name
``clusterrole-aggregation``). The key is the name of a ClusterRole with an ``aggregationRule``.
Any ClusterRole added, changed or deleted enqueues every aggregated ClusterRole (one label change
can move a role in or out of any of them), as upstream does.

``sync(name)``: for each ``clusterRoleSelectors`` entry in order, the ClusterRoles it matches,
sorted by name, the aggregated role itself left out, contribute each rule not already gathered
(equal rules once). When the gathered list differs from ``rules``, the role is updated with it;
a role that is not aggregated (any more) is left alone. A selector that does not parse is an
Event on the role and the role is left as it is. A 409 (the cache is behind) is retried by the
queue; a 404 means the role went away.
"""

from __future__ import annotations

import copy
import logging

from kubeling.api import labels
from kubeling.client import is_not_found
from kubeling.controllers.base import Controller, ControllerContext

log = logging.getLogger(__name__)

GROUP = "rbac.authorization.k8s.io"
MANAGER = "clusterrole-aggregation-controller"


def aggregate(role: dict, all_roles: list[dict]) -> list[dict]:
    """The rules ``role``'s aggregationRule gathers from ``all_roles`` (raises
    `labels.SelectorError` for a selector that does not parse)."""
    gathered: list[dict] = []
    name = role["metadata"]["name"]
    for sel in (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or ():
        selector = labels.from_label_selector(sel)
        matched = sorted((r for r in all_roles if selector.matches(r["metadata"].get("labels"))),
                         key=lambda r: r["metadata"]["name"])
        for other in matched:
            if other["metadata"]["name"] == name:
                continue
            for rule in other.get("rules") or ():
                if rule not in gathered:
                    gathered.append(rule)
    return gathered


class ClusterRoleAggregationController(Controller):
    NAME = "clusterrole-aggregation"
    WORKERS = 5  # upstream's default concurrency for this controller

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.roles = ctx.informers.informer_for(GROUP, "v1", "clusterroles")
        self.recorder = ctx.recorder(MANAGER)
        self.handle(self.roles, on_add=lambda o: self._enqueue_all(), on_update=lambda old, new: self._enqueue_all(),
                    on_delete=lambda o: self._enqueue_all())

    def _enqueue_all(self) -> None:
        for r in self.roles.list():
            if r.get("aggregationRule"):
                self.queue.add(r["metadata"]["name"])

    async def sync(self, name: str) -> None:
        role = self.roles.get(name)
        if role is None or not role.get("aggregationRule"):
            return
        try:
            rules = aggregate(role, self.roles.list())
        except labels.SelectorError as e:
            self.recorder.event(role, "Warning", "InvalidSelector", f"aggregationRule: {e}")
            return
        if rules == (role.get("rules") or []):
            return
        updated = copy.deepcopy(role)  # the cached object is shared: change a copy
        updated["rules"] = copy.deepcopy(rules)
        try:
            await self.client.update(GROUP, "v1", "clusterroles", updated, field_manager=MANAGER)
            log.info("%s: ClusterRole %s now has %d rules", self.NAME, name, len(rules))
        except Exception as e:
            if is_not_found(e):
                return
            raise  # a 409 (the cache is behind) included: the queue retries with backoff
