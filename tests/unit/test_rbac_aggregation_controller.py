"""The clusterrole-aggregation controller over the FakeClient: aggregationRule selectors fill rules."""

import asyncio

from controller_testing import ControllerHarness
from kubeling.apiserver.rbac import bootstrap
from kubeling.controllers.clusterroleaggregation import ClusterRoleAggregationController, aggregate

G = "rbac.authorization.k8s.io"


def role(name, rules=(), labels=None, selectors=None):
    obj = {"apiVersion": f"{G}/v1", "kind": "ClusterRole", "metadata": {"name": name, "labels": labels or {}},
           "rules": list(rules)}
    if selectors is not None:
        obj["aggregationRule"] = {"clusterRoleSelectors": selectors}
    return obj


R1 = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}
R2 = {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}
R3 = {"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"]}


def test_aggregate_orders_by_selector_then_name_and_dedupes():
    agg = role("agg", selectors=[{"matchLabels": {"a": "1"}}, {"matchLabels": {"b": "1"}}])
    roles = [agg, role("z", [R3], {"a": "1"}), role("y", [R1, R2], {"a": "1", "b": "1"}), role("x", [R1], {"b": "1"}),
             role("other", [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}])]
    assert aggregate(agg, roles) == [R1, R2, R3]


class Harness(ControllerHarness):
    def role(self, name):
        return self.client.object(G, "v1", "clusterroles", name, None)


def test_controller_fills_bootstrap_roles_and_follows_changes():
    async def main():
        async with Harness(ClusterRoleAggregationController, *bootstrap.cluster_roles()) as h:
            view, edit, admin = h.role("view"), h.role("edit"), h.role("admin")
            assert view["rules"] == bootstrap._VIEW
            assert edit["rules"] == bootstrap._EDIT + bootstrap._VIEW
            assert admin["rules"] == bootstrap._EDIT + bootstrap._VIEW + bootstrap._ADMIN  # "edit" sorts first
            # a CRD's role labelled aggregate-to-view reaches view, edit and admin
            crd_rule = {"verbs": ["get", "list", "watch"], "apiGroups": ["example.com"], "resources": ["widgets"]}
            await h.client.create(G, "v1", "clusterroles",
                                  role("widgets-view", [crd_rule], {bootstrap.AGGREGATE_TO + "view": "true"}))
            await h.settle()
            assert crd_rule in h.role("view")["rules"] and crd_rule in h.role("admin")["rules"]
            # and leaves when the label goes
            await h.edit(lambda o: o["metadata"]["labels"].clear(), "clusterroles", "widgets-view", group=G,
                         namespace=None)
            assert crd_rule not in h.role("view")["rules"] and crd_rule not in h.role("admin")["rules"]
            # a role without an aggregationRule is never touched
            assert h.role("system:aggregate-to-view")["rules"] == bootstrap._VIEW
    asyncio.run(main())
