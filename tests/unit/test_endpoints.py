"""The REST endpoints in-process: URL parsing, query conversion, subresources, aggregated APIs and
the bytes of error bodies (an API server on the in-memory store, served on loopback)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from multidict import MultiDict

from kubeling.apiserver.endpoints.request import parse_path, query_bool

from inprocess import api_server, http


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("value, expected", [
    pytest.param(None, False, id="absent"),
    pytest.param("true", True, id="true"), pytest.param("True", True, id="True"),
    pytest.param("1", True, id="one"), pytest.param("", True, id="empty"), pytest.param("yes", True, id="yes"),
    pytest.param("false", False, id="false"), pytest.param("FALSE", False, id="FALSE"),
    pytest.param("0", False, id="zero"),
])
def test_query_bool_is_apimachinery_conversion(value, expected):
    q = MultiDict() if value is None else MultiDict([("watch", value)])
    assert query_bool(q, "watch") is expected


@pytest.mark.parametrize("path, want", [
    pytest.param("/api/v1/namespaces/default/services/svc:80/proxy/", ("services", "svc:80", "", "svc", "80", "/"),
                 id="service-port"),
    pytest.param("/api/v1/namespaces/default/services/https:svc:443/proxy/a/b",
                 ("services", "https:svc:443", "https", "svc", "443", "/a/b"), id="service-scheme"),
    pytest.param("/api/v1/nodes/n1/proxy/metrics", ("nodes", "n1", "", "n1", "", "/metrics"), id="node"),
    pytest.param("/api/v1/namespaces/proxy/pods/p:8080/proxy", ("pods", "p:8080", "", "p", "8080", "/"),
                 id="namespace-named-proxy"),
])
def test_proxy_paths(path, want):
    info = parse_path("GET", path, MultiDict())
    assert (info.resource, info.name, info.proxy_scheme, info.proxy_name, info.proxy_port, info.proxy_path) == want
    assert info.subresource == "proxy" and info.verb == "get"


def test_watch_true_is_a_watch():
    assert parse_path("GET", "/api/v1/pods", MultiDict([("watch", "True")])).verb == "watch"


def test_status_body_bytes_are_upstreams():
    async def main():
        api = await api_server()
        async with http(api) as c:
            r = await c.get("/api/v1/namespaces/default/configmaps/nope")
            body = await r.read()
        assert r.status == 404
        assert body == (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                        b'"message":"configmaps \\"nope\\" not found","reason":"NotFound",'
                        b'"details":{"name":"nope","kind":"configmaps"},"code":404}\n')
    run(main())


def test_force_true_apply_takes_ownership():
    async def main():
        api = await api_server()
        async with http(api) as c:
            url = "/api/v1/namespaces/default/configmaps/o"
            hdr = {"Content-Type": "application/apply-patch+yaml"}
            body = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"o"},"data":{"k":"a"}}'
            assert (await c.patch(url + "?fieldManager=a", data=body, headers=hdr)).status == 201
            body_b = body.replace(b'"a"', b'"b"')
            assert (await c.patch(url + "?fieldManager=b", data=body_b, headers=hdr)).status == 409
            r = await c.patch(url + "?fieldManager=b&force=True", data=body_b, headers=hdr)
            assert r.status == 200 and (await r.json())["data"] == {"k": "b"}
    run(main())


@pytest.mark.parametrize("path, code, text", [
    # the bootstrap's kubernetes Endpoints name 127.0.0.1:6443, where nothing listens in-process
    pytest.param("/api/v1/namespaces/default/services/kubernetes:443/proxy/", 503,
                 "error trying to reach service: dial tcp 127.0.0.1:6443", id="service-proxy"),
    pytest.param("/api/v1/namespaces/default/services/missing:80/proxy/", 404, 'services "missing" not found',
                 id="service-missing"),
    pytest.param("/api/v1/nodes/n1/proxy/metrics", 404, 'nodes "n1" not found', id="node-missing"),
])
def test_proxy_subresources_route_to_their_resource(path, code, text):
    async def main():
        api = await api_server()
        async with http(api) as c:
            r = await c.get(path)
            assert r.status == code and text in (await r.json())["message"]
    run(main())


def test_scale_subresource_reads_and_writes_replicas():
    async def main():
        api = await api_server()
        async with http(api) as c:
            dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                   "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                            "template": {"metadata": {"labels": {"a": "b"}},
                                         "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
            assert (await c.post("/apis/apps/v1/namespaces/default/deployments", json=dep)).status == 201
            url = "/apis/apps/v1/namespaces/default/deployments/d/scale"
            scale = await (await c.get(url)).json()
            assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 1 and scale["status"]["selector"] == "a=b"
            r = await c.patch(url, data=b'{"spec":{"replicas":4}}',
                              headers={"Content-Type": "application/merge-patch+json"})
            assert r.status == 200 and (await r.json())["spec"]["replicas"] == 4
            d = await (await c.get("/apis/apps/v1/namespaces/default/deployments/d")).json()
            assert d["spec"]["replicas"] == 4 and d["metadata"]["generation"] == 2
            r = await c.delete(url)
            assert r.status == 405
    run(main())


def test_binding_then_eviction_honours_the_budget():
    async def main():
        api = await api_server()
        async with http(api) as c:
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "x"}},
                   "spec": {"containers": [{"name": "c", "image": "i"}]}}
            assert (await c.post("/api/v1/namespaces/default/pods", json=pod)).status == 201
            binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"name": "n1"}}
            r = await c.post("/api/v1/namespaces/default/pods/p/binding", json=binding)
            assert r.status == 201
            again = await c.post("/api/v1/namespaces/default/pods/p/binding", json=binding)
            assert again.status == 409 and "already assigned" in (await again.json())["message"]
            # a Pending pod is evicted regardless of budgets (upstream): make it Running and Ready
            running = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
            r = await c.patch("/api/v1/namespaces/default/pods/p/status", json=running,
                              headers={"Content-Type": "application/merge-patch+json"})
            assert r.status == 200
            pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"},
                   "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}}
            assert (await c.post("/apis/policy/v1/namespaces/default/poddisruptionbudgets", json=pdb)).status == 201
            ev = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}}
            r = await c.post("/api/v1/namespaces/default/pods/p/eviction", json=ev)
            assert r.status == 429 and "disruption budget" in (await r.json())["message"]
    run(main())


def test_eviction_marks_the_pod_a_disruption_target_and_keeps_its_preconditions():
    async def main():
        api = await api_server()
        async with http(api) as c:
            base = "/api/v1/namespaces/default/pods"
            for name in ("q", "r"):
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}
                assert (await c.post(base, json=pod)).status == 201
            # a stale resourceVersion precondition: 409, and the pod is left as it was
            q = await (await c.get(f"{base}/q")).json()
            ev = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "q"},
                  "deleteOptions": {"preconditions": {"resourceVersion": "1"}}}
            r = await c.post(f"{base}/q/eviction", json=ev)
            assert r.status == 409 and "Precondition failed" in (await r.json())["message"]
            same = await (await c.get(f"{base}/q")).json()
            assert same["metadata"]["resourceVersion"] == q["metadata"]["resourceVersion"]
            # the current one: the condition is written first, and the delete still applies
            ev["deleteOptions"]["preconditions"]["resourceVersion"] = q["metadata"]["resourceVersion"]
            r = await c.post(f"{base}/q/eviction", json=ev)
            assert r.status == 201, await r.text()
            gone = await (await c.get(f"{base}/q")).json()
            assert gone["metadata"]["deletionTimestamp"]
            assert [(x["reason"], x["message"]) for x in gone["status"]["conditions"] if x["type"] == "DisruptionTarget"] \
                == [("EvictionByEvictionAPI", "Eviction API: evicting")]
            # a dry run changes nothing
            r = await c.post(f"{base}/r/eviction?dryRun=All", json={**ev, "metadata": {"name": "r"},
                                                                    "deleteOptions": {}})
            assert r.status == 201
            kept = await (await c.get(f"{base}/r")).json()
            assert not kept["metadata"].get("deletionTimestamp")
            assert not [x for x in (kept.get("status") or {}).get("conditions") or () if x["type"] == "DisruptionTarget"]
    run(main())


def test_apiservices_local_registered_and_remote_unavailable():
    async def main():
        api = await api_server()
        async with http(api) as c:
            local = await (await c.get("/apis/apiregistration.k8s.io/v1/apiservices/v1.apps")).json()
            assert local["spec"] == {"group": "apps", "version": "v1", "groupPriorityMinimum": 17800,
                                     "versionPriority": 15}
            remote = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                      "metadata": {"name": "v1beta1.metrics.k8s.io"},
                      "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                               "versionPriority": 100, "insecureSkipTLSVerify": True,
                               "service": {"namespace": "kube-system", "name": "metrics-server"}}}
            r = await c.post("/apis/apiregistration.k8s.io/v1/apiservices", json=remote)
            created = await r.json()
            assert r.status == 201 and created["spec"]["service"]["port"] == 443
            api.aggregator.apiservices[created["metadata"]["name"]] = created  # what its watch does
            await api.aggregator._update_condition(created)  # what its loop does
            got = await (await c.get("/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io")).json()
            cond = got["status"]["conditions"][0]
            assert (cond["status"], cond["reason"]) == ("False", "ServiceNotFound")
            r = await c.get("/apis/metrics.k8s.io/v1beta1/nodes")
            assert r.status == 503 and "v1beta1.metrics.k8s.io is not available" in (await r.json())["message"]
            groups = (await (await c.get("/apis")).json())["groups"]
            assert "metrics.k8s.io" in [g["name"] for g in groups]
            bad = {**remote, "metadata": {"name": "wrong"}}
            r = await c.post("/apis/apiregistration.k8s.io/v1/apiservices", json=bad)
            assert r.status == 422 and 'must be `spec.version+"."+spec.group`' in (await r.json())["message"]
    run(main())


def test_list_watch_and_field_selectors_go_through_the_strategy():
    async def main():
        api = await api_server()
        async with http(api) as c:
            r = await c.get("/api/v1/pods?fieldSelector=spec.host=n1")  # renamed by the pod strategy
            assert r.status == 200
            r = await c.get("/api/v1/configmaps?fieldSelector=spec.x=1")
            assert r.status == 400 and '"spec.x" is not a known field selector' in (await r.json())["message"]
            r = await c.get("/api/v1/configmaps?watch=1&timeoutSeconds=nan")
            assert r.status == 400
            body = await (await c.get("/api/v1/namespaces")).read()
            assert body.endswith(b"\n") and orjson.loads(body)["kind"] == "NamespaceList"
    run(main())


def test_an_undecodable_stored_value_is_left_out_with_a_warning_and_an_event():
    async def main():
        api = await api_server()
        async with http(api) as c:
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "good"}, "data": {"k": "v"}}
            assert (await c.post("/api/v1/namespaces/default/configmaps", json=cm)).status == 201
            ok, _ = await api.registry.store.create("/registry/core/configmaps/default/broken", b'{"metadata": ')
            assert ok
            await api.scope.cacher.wait_fresh(await api.registry.current_revision())
            r = await c.get("/api/v1/namespaces/default/configmaps")
            names = [i["metadata"]["name"] for i in (await r.json())["items"]]
            assert r.status == 200 and "good" in names and "broken" not in names
            assert "/registry/core/configmaps/default/broken" in r.headers["Warning"]
            r = await c.get("/api/v1/namespaces/default/configmaps/broken")
            assert r.status == 500 and "cannot be decoded" in (await r.json())["message"]
            for _ in range(50):  # the Event is written by a task of its own
                events = await (await c.get("/api/v1/namespaces/default/events?fieldSelector=reason=FailedToDecode")).json()
                if events["items"]:
                    break
                await asyncio.sleep(0.01)
            ev = events["items"][0]
            assert ev["type"] == "Warning" and ev["involvedObject"] == {
                "apiVersion": "v1", "kind": "ConfigMap", "name": "broken", "namespace": "default"}
    run(main())


def test_a_full_disk_is_507_and_fails_readyz_until_it_recovers():
    from kubeling.storage.interface import InsufficientStorageError

    async def main():
        api = await api_server()
        store = api.registry.store
        create, check = store.create, store.check

        async def full(*args, **kwargs):
            raise InsufficientStorageError("database or disk is full")
        store.create = full
        store.check = full  # what the SQLite store's check reports while its probe write fails
        async with http(api) as c:
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}}
            r = await c.post("/api/v1/namespaces/default/configmaps", json=cm)
            assert r.status == 507 and (await r.json())["reason"] == "InsufficientStorage"
            r = await c.get("/readyz?verbose")
            assert r.status == 500 and "[-]etcd failed" in await r.text()
            store.create, store.check = create, check
            assert (await c.post("/api/v1/namespaces/default/configmaps", json=cm)).status == 201
            assert (await c.get("/readyz")).status == 200
    run(main())
