import asyncio

import pytest
from scheduler_plugins_testing import (
    make_node,
    make_pod,
    node_info,
    reasons,
    run_filter,
)

from kubeling.scheduler.framework.interface import Code, CycleState
from kubeling.scheduler.plugins.volumebinding import VolumeBinding


class _Cache:
    """An informer stand-in: ``get(key)`` over objects keyed ``namespace/name`` or ``name``."""

    def __init__(self, objs):
        self.objs = {}
        for o in objs:
            m = o["metadata"]
            self.objs[f"{m['namespace']}/{m['name']}" if m.get("namespace") else m["name"]] = o

    def get(self, key):
        return self.objs.get(key)


class _Factory:
    def __init__(self, pvcs=(), pvs=(), classes=()):
        self.by_resource = {"persistentvolumeclaims": _Cache(pvcs), "persistentvolumes": _Cache(pvs),
                            "storageclasses": _Cache(classes)}

    def informer_for(self, group, version, resource, **kw):
        return self.by_resource[resource]


class _Handle:
    def __init__(self, factory):
        self.informer_factory = factory


def pvc(name, *, volume="", bound=True, cls=None, deleting=False, phase=None, owner_uid=None):
    meta = {"name": name, "namespace": "default", "annotations": {}}
    if bound and volume:
        meta["annotations"]["pv.kubernetes.io/bind-completed"] = "yes"
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    if owner_uid:
        meta["ownerReferences"] = [{"kind": "Pod", "name": "p", "uid": owner_uid, "controller": True}]
    spec = {"volumeName": volume} if volume else {}
    if cls is not None:
        spec["storageClassName"] = cls
    out = {"metadata": meta, "spec": spec, "status": {}}
    if phase:
        out["status"]["phase"] = phase
    return out


def pv(name, node=None):
    spec = {}
    if node:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
    return {"metadata": {"name": name}, "spec": spec}


WFFC = {"metadata": {"name": "local"}, "volumeBindingMode": "WaitForFirstConsumer"}
IMMEDIATE = {"metadata": {"name": "fast"}, "volumeBindingMode": "Immediate"}


def claim_pod(*claims, ephemeral=()):
    vols = [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)]
    vols += [{"name": e, "ephemeral": {"volumeClaimTemplate": {"spec": {}}}} for e in ephemeral]
    return make_pod(volumes=vols)


def plugin(**kw):
    return VolumeBinding(handle=_Handle(_Factory(**kw)))


def node(name="n1"):
    return node_info(make_node(name, labels={"kubernetes.io/hostname": name}))


@pytest.mark.parametrize("pod,factory,want_code,want", [
    pytest.param(make_pod(), {}, Code.SKIP, [], id="no-claims-skip"),
    pytest.param(make_pod(volumes=[{"name": "x", "emptyDir": {}}]), {}, Code.SKIP, [], id="other-volumes-skip"),
    pytest.param(claim_pod("data"), {}, Code.UNSCHEDULABLE_AND_UNRESOLVABLE,
                 ['persistentvolumeclaim "data" not found'], id="missing-claim"),
    pytest.param(claim_pod(ephemeral=["scratch"]), {}, Code.UNSCHEDULABLE_AND_UNRESOLVABLE,
                 ['waiting for ephemeral volume controller to create the persistentvolumeclaim "p-scratch"'],
                 id="missing-ephemeral-claim"),
    pytest.param(claim_pod(ephemeral=["scratch"]), {"pvcs": [pvc("p-scratch", volume="pv1", owner_uid="x")],
                                                    "pvs": [pv("pv1")]},
                 Code.UNSCHEDULABLE_AND_UNRESOLVABLE,
                 ["PVC default/p-scratch was not created for pod default/p (pod is not owner)"],
                 id="ephemeral-claim-of-another-pod"),
    pytest.param(claim_pod("data"), {"pvcs": [pvc("data", volume="pv1", deleting=True)]},
                 Code.UNSCHEDULABLE_AND_UNRESOLVABLE, ['persistentvolumeclaim "data" is being deleted'],
                 id="claim-being-deleted"),
    pytest.param(claim_pod("data"), {"pvcs": [pvc("data", volume="pv1", phase="Lost")]},
                 Code.UNSCHEDULABLE_AND_UNRESOLVABLE,
                 ['persistentvolumeclaim "data" bound to non-existent persistentvolume "pv1"'], id="claim-lost"),
    pytest.param(claim_pod("data"), {"pvcs": [pvc("data", bound=False)]}, Code.UNSCHEDULABLE_AND_UNRESOLVABLE,
                 ["pod has unbound immediate PersistentVolumeClaims"], id="unbound-no-class"),
    pytest.param(claim_pod("data"), {"pvcs": [pvc("data", bound=False, cls="fast")], "classes": [IMMEDIATE]},
                 Code.UNSCHEDULABLE_AND_UNRESOLVABLE, ["pod has unbound immediate PersistentVolumeClaims"],
                 id="unbound-immediate-class"),
    pytest.param(claim_pod("data"), {"pvcs": [pvc("data", volume="pv1", bound=False, cls="local")],
                                     "classes": [WFFC]},
                 Code.UNSCHEDULABLE_AND_UNRESOLVABLE, ["pod has unbound immediate PersistentVolumeClaims"],
                 id="prebound-not-yet-confirmed"),
    pytest.param(claim_pod("data"), {"pvcs": [pvc("data", bound=False, cls="local")], "classes": [WFFC]},
                 Code.SKIP, [], id="wait-for-first-consumer-left-to-prebind"),
    pytest.param(claim_pod("data"), {"pvcs": [pvc("data", volume="pv1")], "pvs": [pv("pv1")]}, Code.SKIP, [],
                 id="bound-pv-without-node-affinity"),
    pytest.param(claim_pod("data"), {"pvcs": [pvc("data", volume="pv1", bound=False, phase="Bound")],
                                     "pvs": [pv("pv1")]}, Code.SKIP, [], id="bound-by-phase"),
])
def test_pre_filter(pod, factory, want_code, want):
    _, st = plugin(**factory).pre_filter(CycleState(), pod, [])
    if want_code == Code.SKIP:
        assert st is not None and st.is_skip()
    else:
        assert st.code == want_code and st.reasons == want


@pytest.mark.parametrize("target,pvs,want", [
    pytest.param("n1", [pv("pv1", "n1")], [], id="pv-on-this-node"),
    pytest.param("n2", [pv("pv1", "n1")], ["node(s) didn't match PersistentVolume's node affinity"],
                 id="pv-on-another-node"),
    pytest.param("n1", [], ["node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"],
                 id="pv-missing"),
])
def test_filter_bound_volumes(target, pvs, want):
    pl = plugin(pvcs=[pvc("data", volume="pv1")], pvs=pvs)
    st = run_filter(pl, claim_pod("data"), node(target))
    assert reasons(st) == want
    if want:
        assert st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_without_lister_a_claim_is_an_error():
    _, st = VolumeBinding().pre_filter(CycleState(), claim_pod("data"), [])
    assert st.code == Code.ERROR


def test_pre_bind_is_a_no_op_for_now():
    assert asyncio.run(plugin().pre_bind(CycleState(), claim_pod("data"), "n1")) is None
