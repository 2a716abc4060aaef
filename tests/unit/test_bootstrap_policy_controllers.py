"""The controllers' bootstrap roles (upstream's controller_policy) and the per-controller
service account credentials of the controller manager.

- every controller the manager runs has an account, and every account a ``system:controller:``
  role bound to ``kube-system/<account>``;
- running the controllers in-process, each writing through a client that the RBAC authorizer
  (fed the bootstrap policy) checks as its service account, nothing is denied, while a write
  outside a role is;
- `ServiceAccountTokenSource` creates a missing account, requests a token with TokenRequest and
  asks again once 80% of its life passed or after a 401;
- `ServiceAccountClients.forbidden` logs and records an Event for authorization denials only.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from inprocess import api_server, ctx
from kubeling.api.errors import StatusError
from kubeling.apiserver.auth import Attributes, UserInfo
from kubeling.apiserver.rbac import RBACAuthorizer, StaticSource
from kubeling.apiserver.rbac import bootstrap, bootstrap_controllers
from kubeling.client.fake import FakeClient
from kubeling.client.satoken import ServiceAccountTokenSource
from kubeling.controllers import manager

NAMESPACES = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ("default", "kube-system")]


def policy_authorizer() -> RBACAuthorizer:
    return RBACAuthorizer(StaticSource({
        "clusterroles": bootstrap.cluster_roles(), "clusterrolebindings": bootstrap.cluster_role_bindings(),
        "roles": bootstrap.roles(), "rolebindings": bootstrap.role_bindings()}))


def sa_user(account: str) -> UserInfo:
    return UserInfo(f"system:serviceaccount:kube-system:{account}",
                    groups=("system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"))


def allowed(authz, user, verb, group, resource, namespace="", name="", subresource="") -> bool:
    return authz.authorize(Attributes(user=user, verb=verb, resource_request=True, group=group, version="v1",
                                      resource=resource, subresource=subresource, namespace=namespace,
                                      name=name)).allowed


def test_bootstrap_policy_every_controller_has_an_account_and_a_role():
    roles = {r["metadata"]["name"]: r for r in bootstrap.cluster_roles()}
    bindings = {b["metadata"]["name"]: b for b in bootstrap.cluster_role_bindings()}
    assert len(roles) == len(bootstrap.CLUSTER_ROLES)   # no name twice
    # upstream keeps a few controllers' roles namespaced (kube-system), e.g. the token cleaner's
    ns_roles = {r["metadata"]["name"]: r for r in bootstrap.roles() if r["metadata"]["namespace"] == "kube-system"}
    ns_bindings = {b["metadata"]["name"]: b for b in bootstrap.role_bindings()
                   if b["metadata"]["namespace"] == "kube-system"}
    for name in manager.REGISTRY:
        assert name in bootstrap_controllers.SERVICE_ACCOUNTS, f"controller {name} has no service account"
        account = bootstrap_controllers.SERVICE_ACCOUNTS[name]
        if account is None:
            continue
        role = roles.get(f"system:controller:{account}") or ns_roles[f"system:controller:{account}"]
        assert role["rules"]
        assert role["metadata"]["labels"] == {"kubernetes.io/bootstrapping": "rbac-defaults"}
        binding = bindings.get(f"system:controller:{account}") or ns_bindings[f"system:controller:{account}"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": "kube-system", "name": account}]
        assert binding["roleRef"]["name"] == f"system:controller:{account}"
        assert binding["roleRef"]["kind"] == role["kind"]


def test_bootstrap_policy_component_roles_grant_as_upstream():
    authz = policy_authorizer()
    sched = UserInfo("system:kube-scheduler", groups=("system:authenticated",))
    assert allowed(authz, sched, "create", "", "pods", "default", "p", "binding")
    assert allowed(authz, sched, "update", "coordination.k8s.io", "leases", "kube-system", "kube-scheduler")
    assert not allowed(authz, sched, "update", "coordination.k8s.io", "leases", "kube-system", "other")
    assert allowed(authz, sched, "update", "", "persistentvolumeclaims", "default", "c")   # volume-scheduler
    assert not allowed(authz, sched, "create", "", "pods", "default")
    assert not allowed(authz, sched, "get", "", "secrets", "default", "s")
    kcm = UserInfo("system:kube-controller-manager", groups=("system:authenticated",))
    assert allowed(authz, kcm, "watch", "apps", "deployments")
    assert allowed(authz, kcm, "create", "", "serviceaccounts", "kube-system", "x", "token")
    assert not allowed(authz, kcm, "create", "apps", "replicasets", "default")
    proxy = UserInfo("system:kube-proxy", groups=("system:authenticated",))
    assert allowed(authz, proxy, "list", "discovery.k8s.io", "endpointslices")
    assert not allowed(authz, proxy, "list", "", "secrets")
    dns = UserInfo("system:kubeling-dns", groups=("system:authenticated",))
    assert allowed(authz, dns, "create", "", "services", "kube-system")      # its namespaced Role
    assert not allowed(authz, dns, "create", "", "services", "default")
    bootstrapper = UserInfo("system:bootstrap:abcdef", groups=("system:bootstrappers", "system:authenticated"))
    assert allowed(authz, bootstrapper, "create", "certificates.k8s.io", "certificatesigningrequests")
    assert allowed(authz, bootstrapper, "create", "certificates.k8s.io", "certificatesigningrequests", "", "",
                   "nodeclient")
    assert not allowed(authz, bootstrapper, "create", "certificates.k8s.io", "certificatesigningrequests", "", "",
                       "selfnodeclient")
    node = UserInfo("system:node:n1", groups=("system:nodes", "system:authenticated"))
    assert allowed(authz, node, "create", "certificates.k8s.io", "certificatesigningrequests", "", "",
                   "selfnodeclient")
    assert not allowed(authz, node, "get", "", "secrets", "default", "s")   # system:node is not bound
    dep = sa_user("deployment-controller")
    assert allowed(authz, dep, "create", "apps", "replicasets", "default")
    assert not allowed(authz, dep, "create", "", "pods", "default")


class AuthorizingClient:
    """The shared fake, with every call checked as ``user`` against the bootstrap policy (what the
    API server does for a controller writing with its service account token)."""

    VERBS = {"get": "get", "list": "list", "create": "create", "update": "update", "patch": "patch",
             "delete": "delete", "delete_collection": "deletecollection"}

    def __init__(self, fake: FakeClient, authz: RBACAuthorizer, user: UserInfo, denials: list) -> None:
        self._fake, self._authz, self._user, self._denials = fake, authz, user, denials

    def __getattr__(self, attr):
        target = getattr(self._fake, attr)
        if attr == "update_status":
            async def update_status(group, version, resource, obj, *, namespace=None, field_manager=None):
                return await self.update(group, version, resource, obj, namespace=namespace, subresource="status",
                                         field_manager=field_manager)
            return update_status
        if attr not in self.VERBS:
            return target

        async def call(group, version, resource, *args, **kwargs):
            ns = kwargs.get("namespace")
            name = ""
            if attr in ("get", "patch", "delete") and args:
                name = args[0]
            elif attr == "update" and args:
                name = (args[0].get("metadata") or {}).get("name", "")
                ns = ns if ns is not None else (args[0].get("metadata") or {}).get("namespace")
            elif attr == "create" and args:
                ns = ns if ns is not None else (args[0].get("metadata") or {}).get("namespace")
                name = kwargs.get("name") or "" if kwargs.get("subresource") else ""
            sub = kwargs.get("subresource") or ""
            attrs = Attributes(user=self._user, verb=self.VERBS[attr], resource_request=True, group=group,
                               version=version, resource=resource, subresource=sub, namespace=ns or "", name=name)
            if not self._authz.authorize(attrs).allowed:
                self._denials.append((self._user.name, attr, group, resource, sub, ns))
                raise StatusError(403, "Forbidden", f'User "{self._user.name}" cannot {attr} {resource}')
            return await target(group, version, resource, *args, **kwargs)
        return call


def test_bootstrap_policy_controllers_run_with_their_own_roles():
    async def until(pred, timeout=5.0):
        async def loop():
            while not pred():
                await asyncio.sleep(0.01)
        await asyncio.wait_for(loop(), timeout)

    async def main():
        fake = FakeClient(*NAMESPACES)
        authz = policy_authorizer()
        denials: list = []
        used: dict[str, str] = {}

        def client_for(name):
            account = bootstrap_controllers.service_account_for(name)
            if account is None:
                return fake
            used[name] = account
            return AuthorizingClient(fake, authz, sa_user(account), denials)

        stop = asyncio.Event()
        names = manager.enabled(["*"])
        task = asyncio.create_task(manager.run_controllers(fake, names, stop, ca_pem="CA", client_for=client_for))
        await fake.create("", "v1", "namespaces", {"metadata": {"name": "team"}})
        await fake.create("apps", "v1", "deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "team"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
        await until(lambda: fake.object("", "v1", "serviceaccounts", "default", "team") is not None
                    and fake.object("", "v1", "configmaps", "kube-root-ca.crt", "team") is not None
                    and len([a for a in fake.filter_actions("create", "pods")]) >= 2)
        assert used["deployment"] == "deployment-controller" and used["replicaset"] == "replicaset-controller"
        stop.set()
        await asyncio.wait_for(task, 5)
        assert denials == []
        # a write outside the role is refused by the same check
        rogue = AuthorizingClient(fake, authz, sa_user("deployment-controller"), denials)
        with pytest.raises(StatusError) as e:
            await rogue.create("", "v1", "pods", {"metadata": {"name": "x", "namespace": "team"}})
        assert e.value.code == 403

    asyncio.run(main())


def test_ident_token_source_creates_account_and_refreshes():
    async def main():
        fake = FakeClient(*NAMESPACES)
        issued = []
        now = [1000.0]

        def token_request(action):
            if action.subresource != "token":
                return None
            issued.append(action.name)
            return {"kind": "TokenRequest", "status": {"token": f"tok{len(issued)}",
                                                       "expirationTimestamp": "1970-01-01T01:16:40Z"}}  # 4600

        fake.prepend_reactor("create", "serviceaccounts", token_request)
        src = ServiceAccountTokenSource(fake, "kube-system", "job-controller", now=lambda: now[0])
        assert await src.token() == "tok1"
        assert fake.object("", "v1", "serviceaccounts", "job-controller", "kube-system") is not None
        assert fake.filter_actions("create", "serviceaccounts")[-1].obj["spec"] == {"expirationSeconds": 3600}
        now[0] = 1000 + 0.79 * 3600
        assert await src.token() == "tok1"          # still fresh
        now[0] = 1000 + 0.81 * 3600
        assert await src.token() == "tok2"          # 80% of its life: a new one
        src.invalidate()
        assert await src.token() == "tok3"          # after a 401
        assert issued == ["job-controller"] * 3
        assert src.username == "system:serviceaccount:kube-system:job-controller"

    asyncio.run(main())


def test_ident_forbidden_is_logged_and_recorded(caplog):
    async def main():
        fake = FakeClient(*NAMESPACES)
        clients = manager.ServiceAccountClients(None, fake)
        with caplog.at_level(logging.ERROR, logger="kubeling.controllers.manager"):
            msg = ('replicasets.apps is forbidden: User "system:serviceaccount:kube-system:deployment-controller" '
                   'cannot create resource "replicasets" in API group "apps" in the namespace "default"')
            clients.forbidden("deployment", "deployment-controller", "POST", "/apis/apps/v1/x", msg)
            clients.forbidden("deployment", "deployment-controller", "POST", "/apis/apps/v1/x", msg)
            # an admission refusal (a terminating namespace) is the controller's business
            clients.forbidden("replicaset", "replicaset-controller", "POST", "/api/v1/x",
                              "unable to create new content in namespace x because it is being terminated")
        await clients.recorder.flush()
        events = [a.obj for a in fake.filter_actions("create", "events")]
        assert len(events) == 1
        assert events[0]["reason"] == "Forbidden" and events[0]["type"] == "Warning"
        assert events[0]["involvedObject"]["kind"] == "ServiceAccount"
        assert events[0]["involvedObject"]["name"] == "deployment-controller"
        assert events[0]["metadata"]["namespace"] == "kube-system"
        errors = [r for r in caplog.records if "is forbidden" in r.getMessage()]
        assert len(errors) == 1   # once a minute per denial
        await clients.close()

    asyncio.run(main())


def test_bootstrap_policy_node_controllers_run_with_node_controller_role():
    """A node that stops reporting and one with a NoExecute taint: node lifecycle (status, taints,
    pod conditions), nodeipam and taint eviction write as ``kube-system/node-controller``."""
    async def until(pred, what, timeout=10.0):
        async def loop():
            while not pred():
                await asyncio.sleep(0.02)
        try:
            await asyncio.wait_for(loop(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"not within {timeout}s: {what}; denials {denials}") from None

    old = "2020-01-01T00:00:00Z"

    def node(name, taints=()):
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "creationTimestamp": old},
                "spec": {"taints": list(taints)},
                "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": old,
                                           "lastTransitionTime": old}]}}

    def pod(name, node_name):
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "x"}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}

    denials: list = []

    async def main():
        fake = FakeClient(*NAMESPACES, node("n1"), node("n2", [{"key": "example.com/broken", "effect": "NoExecute"}]),
                          pod("p1", "n1"), pod("p2", "n2"))
        authz = policy_authorizer()
        writers: set = set()

        def client_for(name):
            account = bootstrap_controllers.service_account_for(name)
            writers.add(account)
            return AuthorizingClient(fake, authz, sa_user(account), denials)

        stop = asyncio.Event()
        task = asyncio.create_task(manager.run_controllers(
            fake, ["nodelifecycle", "taint-eviction-controller", "nodeipam"], stop, client_for=client_for,
            settings=dict(node_monitor_period=0.05, node_monitor_grace_period=0.2, node_startup_grace_period=0.2,
                          cluster_cidr="10.42.0.0/16")))

        def n1():
            return fake.object("", "v1", "nodes", "n1") or {}

        await until(lambda: any(t.get("key") == "node.kubernetes.io/unreachable"
                                for t in (n1().get("spec") or {}).get("taints") or []), "n1 tainted unreachable")
        await until(lambda: [c["status"] for c in n1()["status"]["conditions"] if c["type"] == "Ready"] == ["Unknown"],
                    "n1 Ready=Unknown")
        await until(lambda: (fake.object("", "v1", "pods", "p1", "default") or {}).get("status", {}).get(
            "conditions", [{}])[0].get("status") == "False", "p1 not ready")
        await until(lambda: fake.object("", "v1", "pods", "p2", "default") is None, "p2 evicted by its node's taint")
        await until(lambda: n1()["spec"].get("podCIDR", "").startswith("10.42."), "n1's podCIDR")
        stop.set()
        await asyncio.wait_for(task, 5)
        assert writers == {"node-controller"}
        assert denials == []

    asyncio.run(main())


def test_bootstrap_policy_reconciles_namespaced_roles_and_component_bindings():
    """At start every object of the policy exists; a namespaced Role and a component binding are
    reconciled like the ClusterRoles (missing rules and subjects back, autoupdate=false left)."""
    async def main():
        api = await api_server()
        reg = api.registry
        served = {r: api.lookup("rbac.authorization.k8s.io", "v1", r)
                  for r in ("clusterroles", "clusterrolebindings", "roles", "rolebindings")}
        for spec in bootstrap.cluster_roles():
            await reg.get_raw(served["clusterroles"], None, spec["metadata"]["name"])
        for spec in bootstrap.cluster_role_bindings():
            await reg.get_raw(served["clusterrolebindings"], None, spec["metadata"]["name"])
        role = await reg.get_raw(served["roles"], "kube-system", "system:kubeling-dns")
        assert role["rules"] == bootstrap.roles()[0]["rules"]
        rb = await reg.get_raw(served["rolebindings"], "kube-system", "system:kubeling-dns")
        assert rb["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                   "name": "system:kubeling-dns"}]

        role["rules"] = []
        await reg.update(served["roles"], "kube-system", "system:kubeling-dns", role, ctx("kube-system"))
        sched = await reg.get_raw(served["clusterrolebindings"], None, "system:kube-scheduler")
        sched["subjects"] = []
        await reg.update(served["clusterrolebindings"], None, "system:kube-scheduler", sched, ctx())
        kcm = await reg.get_raw(served["clusterroles"], None, "system:kube-controller-manager")
        kcm["rules"] = []
        kcm["metadata"]["annotations"][bootstrap.AUTOUPDATE] = "false"
        await reg.update(served["clusterroles"], None, "system:kube-controller-manager", kcm, ctx())

        await bootstrap.reconcile(api)
        role = await reg.get_raw(served["roles"], "kube-system", "system:kubeling-dns")
        assert role["rules"] == bootstrap.roles()[0]["rules"]
        sched = await reg.get_raw(served["clusterrolebindings"], None, "system:kube-scheduler")
        assert [s["name"] for s in sched["subjects"]] == ["system:kube-scheduler"]
        kcm = await reg.get_raw(served["clusterroles"], None, "system:kube-controller-manager")
        assert kcm["rules"] == []   # the administrator's choice stays

    asyncio.run(main())
