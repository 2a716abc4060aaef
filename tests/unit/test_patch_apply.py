"""Server-side apply: merge, ownership, pruning, conflicts and the client-side apply migration."""

import copy
import time

import orjson
import pytest

from kubeling.api import errors, schema
from kubeling.api.patch import apply, managedfields
from kubeling.api.patch.fieldpath import FieldSet, parse_path

T0, T1, T2 = "2024-05-01T10:00:00Z", "2024-05-01T11:00:00Z", "2024-05-01T12:00:00Z"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@pytest.fixture(scope="module")
def schemas():
    return schema.get()


@pytest.fixture(scope="module")
def node(schemas):
    return schemas.for_gvk("apps", "v1", "Deployment")


def config(replicas=1, containers=None, labels=None, **spec):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": labels or {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": containers or [{"name": "nginx", "image": "nginx:1"}]}},
                     **spec}}


def ssa(schemas, node, live, cfg, manager="kubectl", force=False, when=T0, **kw):
    return apply.apply(live, cfg, manager, force, node, schemas, "apps/v1", now=when, **kw)


def update(schemas, node, old, new, manager, when=T1):
    managedfields.update(old, new, manager, "Update", "apps/v1", node=node, schemas=schemas, now=when)
    return new


def entry(obj, manager, operation="Apply"):
    [e] = [e for e in obj["metadata"]["managedFields"] if e["manager"] == manager and e["operation"] == operation]
    return e


def containers(obj):
    return obj["spec"]["template"]["spec"]["containers"]


def test_create_on_apply(schemas, node):
    obj = ssa(schemas, node, None, config())
    assert obj["spec"]["replicas"] == 1 and obj["metadata"]["name"] == "web"
    e = entry(obj, "kubectl")
    assert {k: e[k] for k in ("operation", "apiVersion", "time", "fieldsType")} == \
        {"operation": "Apply", "apiVersion": "apps/v1", "time": T0, "fieldsType": "FieldsV1"}
    assert e["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"] == {'k:{"name":"nginx"}': {
        ".": {}, "f:image": {}, "f:name": {}}}
    assert "f:name" not in e["fieldsV1"]["f:metadata"]  # identity is never owned


def test_reapplying_the_same_config_changes_nothing(schemas, node):
    first = ssa(schemas, node, None, config())
    again = ssa(schemas, node, first, config(), when=T2)
    assert again == first  # including the entry's time


def test_inputs_are_not_modified(schemas, node):
    live = ssa(schemas, node, None, config(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}))
    cfg = config(replicas=2)
    snapshot = copy.deepcopy((live, cfg))
    ssa(schemas, node, live, cfg, when=T1)
    assert (live, cfg) == snapshot


def test_conflict_with_an_update_manager_then_force(schemas, node):
    live = ssa(schemas, node, None, config(replicas=1))
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    update(schemas, node, live, scaled, "kubectl-scale")
    with pytest.raises(errors.StatusError) as exc:
        ssa(schemas, node, scaled, config(replicas=2), manager="helm", when=T2)
    err = exc.value
    assert (err.code, err.reason) == (409, "Conflict")
    assert err.message == 'Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas'
    assert err.details == {"causes": [{"reason": "FieldManagerConflict",
                                       "message": 'conflict with "kubectl-scale" using apps/v1',
                                       "field": ".spec.replicas"}]}
    forced = ssa(schemas, node, scaled, config(replicas=2), manager="helm", force=True, when=T2)
    assert forced["spec"]["replicas"] == 2
    managers = {e["manager"] for e in forced["metadata"]["managedFields"]}
    assert "kubectl-scale" not in managers  # it owned nothing else
    assert "f:replicas" in entry(forced, "helm")["fieldsV1"]["f:spec"]


def test_conflicts_between_appliers_are_listed_per_manager(schemas, node):
    live = ssa(schemas, node, None, config(replicas=1), manager="alice")
    with pytest.raises(errors.StatusError) as exc:
        ssa(schemas, node, live, config(replicas=3, containers=[{"name": "nginx", "image": "nginx:2"}]),
            manager="bob")
    assert exc.value.message == ('Apply failed with 2 conflicts: conflicts with "alice":\n'
                                 "- .spec.replicas\n"
                                 '- .spec.template.spec.containers[name="nginx"].image')
    assert [c["field"] for c in exc.value.details["causes"]] == \
        [".spec.replicas", '.spec.template.spec.containers[name="nginx"].image']


def test_same_value_is_shared_not_a_conflict(schemas, node):
    live = ssa(schemas, node, None, config(replicas=3), manager="alice")
    both = ssa(schemas, node, live, config(replicas=3), manager="bob", when=T1)
    assert "f:replicas" in entry(both, "alice")["fieldsV1"]["f:spec"]
    assert "f:replicas" in entry(both, "bob")["fieldsV1"]["f:spec"]


def test_atomic_selector_conflicts_as_a_whole(schemas, node):
    live = ssa(schemas, node, None, config(), manager="alice")
    cfg = config()
    cfg["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "x"}}
    with pytest.raises(errors.StatusError) as exc:
        ssa(schemas, node, live, cfg, manager="bob")
    assert [c["field"] for c in exc.value.details["causes"]] == [".spec.selector"]


def test_field_no_longer_applied_is_removed(schemas, node):
    live = ssa(schemas, node, None, config(labels={"app": "web", "tier": "front"}, minReadySeconds=5))
    again = ssa(schemas, node, live, config(labels={"app": "web"}), when=T1)
    assert again["metadata"]["labels"] == {"app": "web"}
    assert "minReadySeconds" not in again["spec"]
    assert "f:tier" not in entry(again, "kubectl")["fieldsV1"]["f:metadata"]["f:labels"]


def test_field_no_longer_applied_stays_if_someone_else_owns_it(schemas, node):
    live = ssa(schemas, node, None, config(labels={"app": "web", "tier": "front"}))
    shared = ssa(schemas, node, live, config(labels={"tier": "front"}), manager="other", when=T1)
    again = ssa(schemas, node, shared, config(labels={"app": "web"}), when=T2)
    assert again["metadata"]["labels"] == {"app": "web", "tier": "front"}


def test_unowned_defaults_under_a_dropped_struct_go_with_it(schemas, node):
    live = ssa(schemas, node, None, config(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}))
    live["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = "25%"  # as defaulting would add
    switched = ssa(schemas, node, live, config(strategy={"type": "Recreate"}), when=T1)
    assert switched["spec"]["strategy"] == {"type": "Recreate"}


def test_map_list_items_owned_by_different_managers(schemas, node):
    live = ssa(schemas, node, None, config(containers=[{"name": "app", "image": "app:1"},
                                                       {"name": "sidecar", "image": "log:1"}]), manager="helm")
    injected = ssa(schemas, node, live, config(containers=[{"name": "proxy", "image": "envoy"}]), manager="injector",
                   when=T1)
    assert [c["name"] for c in containers(injected)] == ["app", "sidecar", "proxy"]
    upgraded = ssa(schemas, node, injected, config(containers=[{"name": "app", "image": "app:2"}]), manager="helm",
                   when=T2)
    assert containers(upgraded) == [{"name": "app", "image": "app:2"}, {"name": "proxy", "image": "envoy"}]
    assert list(entry(upgraded, "injector")["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]) == \
        ['k:{"name":"proxy"}']


def test_ports_keyed_by_container_port_and_protocol(schemas, node):
    ports = [{"containerPort": 53, "protocol": "TCP"}, {"containerPort": 53, "protocol": "UDP"}]
    live = ssa(schemas, node, None, config(containers=[{"name": "dns", "image": "coredns", "ports": ports}]))
    assert containers(live)[0]["ports"] == ports
    keys = entry(live, "kubectl")["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"][
        'k:{"name":"dns"}']["f:ports"]
    assert set(keys) == {'k:{"containerPort":53,"protocol":"TCP"}', 'k:{"containerPort":53,"protocol":"UDP"}'}
    # A port without protocol is keyed as the (defaulted) TCP one; dropping UDP prunes only that item, and the
    # protocol field nobody applies any more goes too (defaulting brings it back, as upstream).
    again = ssa(schemas, node, live, config(containers=[{"name": "dns", "image": "coredns",
                                                         "ports": [{"containerPort": 53, "name": "dns-tcp"}]}]),
                when=T1)
    assert containers(again)[0]["ports"] == [{"containerPort": 53, "name": "dns-tcp"}]


def test_list_order_follows_the_config(schemas, node):
    live = ssa(schemas, node, None, config(containers=[{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]))
    swapped = ssa(schemas, node, live, config(containers=[{"name": "b", "image": "b"}, {"name": "a", "image": "a"}]),
                  when=T1)
    assert [c["name"] for c in containers(swapped)] == ["b", "a"]


def test_null_in_config_removes_the_field(schemas, node):
    live = ssa(schemas, node, None, config(minReadySeconds=5))
    cfg = config()
    cfg["spec"]["minReadySeconds"] = None
    out = ssa(schemas, node, live, cfg, manager="other", force=True, when=T1)
    assert "minReadySeconds" not in out["spec"]


def test_before_first_apply_owns_preexisting_fields(schemas, node):
    live = config(replicas=4)
    live["metadata"]["uid"] = "u"
    with pytest.raises(errors.StatusError) as exc:
        ssa(schemas, node, live, config(replicas=2), manager="helm")
    assert exc.value.details["causes"][0]["message"] == 'conflict with "before-first-apply" using apps/v1'
    out = ssa(schemas, node, live, config(replicas=4), manager="helm")
    assert {(e["manager"], e["operation"]) for e in out["metadata"]["managedFields"]} == \
        {("helm", "Apply"), ("before-first-apply", "Update")}


@pytest.mark.parametrize("cfg,code,fragment", [
    pytest.param({"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "web"}}, 400,
                 "Specified patch version: apps/v1beta1, expected: apps/v1", id="wrong-version"),
    pytest.param({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "managedFields": []}},
                 400, "metadata.managedFields must be nil", id="managed-fields-in-config"),
    pytest.param(["not", "an", "object"], 400, "error decoding YAML", id="not-an-object"),
    pytest.param({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}, 422,
                 'omits key field "name"', id="list-item-without-key"),
])
def test_invalid_configs(schemas, node, cfg, code, fragment):
    with pytest.raises(errors.StatusError) as exc:
        ssa(schemas, node, None, cfg)
    assert exc.value.code == code
    assert fragment in exc.value.message


def test_ignored_fields_are_not_owned(schemas, node):
    cfg = config()
    cfg["status"] = {"replicas": 9}
    out = ssa(schemas, node, None, cfg, ignored=FieldSet.of(parse_path("status")))
    assert "f:status" not in entry(out, "kubectl")["fieldsV1"]


# ---------------------------------------------------------------- client-side -> server-side apply

def client_side_applied(schemas, node, cfg):
    """What `kubectl apply` (client-side) leaves: the annotation, owned by kubectl-client-side-apply."""
    obj = copy.deepcopy(cfg)
    obj["metadata"]["annotations"] = {LAST_APPLIED: orjson.dumps(cfg).decode() + "\n"}
    obj["metadata"]["uid"] = "u"
    return update(schemas, node, None, obj, "kubectl-client-side-apply", T0)


def test_kubectl_takes_over_fields_still_matching_last_applied(schemas, node):
    live = client_side_applied(schemas, node, config(replicas=3))
    out = ssa(schemas, node, live, config(replicas=5), manager="kubectl", when=T1)
    assert out["spec"]["replicas"] == 5
    assert "f:replicas" in entry(out, "kubectl")["fieldsV1"]["f:spec"]
    csa = entry(out, "kubectl-client-side-apply", "Update")["fieldsV1"]
    assert "f:replicas" not in csa["f:spec"]
    # The annotation now describes the server-side configuration.
    assert orjson.loads(out["metadata"]["annotations"][LAST_APPLIED]) == config(replicas=5)


def test_kubectl_still_conflicts_on_fields_changed_since_last_applied(schemas, node):
    live = client_side_applied(schemas, node, config(replicas=3))
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 7
    update(schemas, node, live, scaled, "kubectl-client-side-apply", T1)
    with pytest.raises(errors.StatusError) as exc:
        ssa(schemas, node, scaled, config(replicas=5), manager="kubectl", when=T2)
    assert exc.value.message == ('Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using '
                                 'apps/v1: .spec.replicas')


def test_other_managers_do_not_get_the_migration(schemas, node):
    live = client_side_applied(schemas, node, config(replicas=3))
    with pytest.raises(errors.StatusError):
        ssa(schemas, node, live, config(replicas=5), manager="helm", when=T1)
    ok = ssa(schemas, node, live, config(replicas=3), manager="helm", when=T1)
    assert ok["metadata"]["annotations"] == live["metadata"]["annotations"]  # untouched for non-kubectl managers


@pytest.mark.parametrize("removed", [pytest.param(4000, id="all-4000"), pytest.param(3999, id="all-but-one")])
def test_pruning_a_large_list_is_linear(schemas, node, removed):
    # Each pruned item used to re-key the whole list: 4000 items took 16 s.
    env = [{"name": f"E{i}", "value": "v"} for i in range(4000)]
    live = ssa(schemas, node, None, config(containers=[{"name": "c", "image": "i", "env": env}]))
    keep = env[removed:]
    start = time.monotonic()
    out = ssa(schemas, node, live, config(containers=[{"name": "c", "image": "i", "env": keep}]), when=T1)
    assert time.monotonic() - start < 3
    assert containers(out)[0]["env"] == keep
