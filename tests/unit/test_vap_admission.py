"""ValidatingAdmissionPolicy and MutatingAdmissionPolicy on an in-process API server: policy
matching (resourceRules and resourceNames, excludeResourceRules, namespace and object selectors,
matchPolicy Equivalent through a legacy Deployment version), bindings (matchResources,
validationActions, paramRef by name and selector, parameterNotFoundAction), failurePolicy,
variables, matchConditions, messageExpression, reason/code, auditAnnotations, the authorizer
variable, and the strategies' validation."""

from __future__ import annotations

import asyncio
import json

import pytest

from kubeling.api import errors

from inprocess import api_server, ctx

GROUP = "admissionregistration.k8s.io"


def run(coro):
    return asyncio.run(coro)


def policy(name: str, validations: list, **spec) -> dict:
    s = {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                 "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]}]},
         "validations": validations}
    s.update(spec)
    return {"apiVersion": f"{GROUP}/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name}, "spec": s}


def binding(name: str, policy_name: str, actions=("Deny",), **spec) -> dict:
    s = {"policyName": policy_name, "validationActions": list(actions)}
    s.update(spec)
    return {"apiVersion": f"{GROUP}/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
            "spec": s}


def cm(name: str, data: dict | None = None, labels: dict | None = None, ns: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns,
                                                                   "labels": labels or {}}, "data": data or {}}


async def setup(api, *objs):
    for o in objs:
        group, _, version = o["apiVersion"].rpartition("/")
        resource = {"ValidatingAdmissionPolicy": "validatingadmissionpolicies",
                    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
                    "MutatingAdmissionPolicy": "mutatingadmissionpolicies",
                    "MutatingAdmissionPolicyBinding": "mutatingadmissionpolicybindings",
                    "ConfigMap": "configmaps", "Namespace": "namespaces"}[o["kind"]]
        ns = o["metadata"].get("namespace")
        await api.registry.create(api.lookup(group, version, resource), o, ctx(ns))


async def create_cm(api, obj, **kw):
    return await api.registry.create(api.lookup("", "v1", "configmaps"), obj, ctx(obj["metadata"]["namespace"], **kw))


def test_deny_message_reason_and_code():
    async def main():
        api = await api_server()
        await setup(api, policy("p", [
            {"expression": "!has(object.data.forbidden)", "message": "no forbidden key"},
            {"expression": "object.data.size() < 3", "reason": "Forbidden"},
            {"expression": "!('x' in object.data)", "messageExpression": "'bad x: ' + object.data.x"},
        ]), binding("b", "p"))
        await create_cm(api, cm("ok", {"a": "1"}))
        with pytest.raises(errors.StatusError) as e:
            await create_cm(api, cm("c1", {"forbidden": "1"}))
        assert e.value.code == 422 and e.value.reason == "Invalid"
        assert e.value.message == ('configmaps "c1" is forbidden: ValidatingAdmissionPolicy \'p\' with binding '
                                   "'b' denied request: no forbidden key")
        with pytest.raises(errors.StatusError) as e:
            await create_cm(api, cm("c2", {"a": "1", "b": "2", "c": "3"}))
        assert e.value.code == 403 and e.value.reason == "Forbidden"
        assert e.value.message.endswith("denied request: failed expression: object.data.size() < 3")
        with pytest.raises(errors.StatusError) as e:
            await create_cm(api, cm("c3", {"x": "y"}))
        assert e.value.message.endswith("denied request: bad x: y")
    run(main())


def test_matching_rules_names_excludes_and_selectors():
    async def main():
        api = await api_server()
        await setup(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod", "labels": {"env": "prod"}}})
        deny = [{"expression": "false"}]
        mc = {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                 "resources": ["configmaps"], "resourceNames": ["named"]}]}
        await setup(api, policy("named-only", deny, matchConstraints=mc), binding("b1", "named-only"))
        mc2 = {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE"],
                                  "resources": ["configmaps"]}],
               "excludeResourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["*"],
                                         "resources": ["configmaps"], "resourceNames": ["excluded"]}],
               "objectSelector": {"matchLabels": {"check": "yes"}}}
        await setup(api, policy("labelled", deny, matchConstraints=mc2),
                    binding("b2", "labelled", matchResources={"namespaceSelector": {"matchLabels": {"env": "prod"}}}))
        with pytest.raises(errors.StatusError, match="named-only"):
            await create_cm(api, cm("named"))
        await create_cm(api, cm("other"))
        await create_cm(api, cm("c", labels={"check": "yes"}))            # default ns: binding does not match
        await create_cm(api, cm("d", ns="prod"))                           # no label: policy does not match
        await create_cm(api, cm("excluded", labels={"check": "yes"}, ns="prod"))
        with pytest.raises(errors.StatusError, match="'labelled' with binding 'b2'"):
            await create_cm(api, cm("e", labels={"check": "yes"}, ns="prod"))
    run(main())


def test_match_policy_equivalent_sees_the_matched_version():
    async def main():
        api = await api_server()
        mc = {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE"],
                                 "resources": ["deployments"]}]}
        await setup(api, policy("replicas", [{"expression": "object.apiVersion == 'apps/v1' && "
                                                            "request.kind.version == 'v1' && "
                                                            "request.requestKind.version == 'v1beta1' && "
                                                            "object.spec.replicas <= 5"}], matchConstraints=mc),
                    binding("b", "replicas"))
        dep = {"apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "default"},
               "spec": {"replicas": 6, "selector": {"matchLabels": {"a": "b"}},
                        "template": {"metadata": {"labels": {"a": "b"}},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
        served = api.lookup("extensions", "v1beta1", "deployments")
        with pytest.raises(errors.StatusError, match="denied request"):
            await api.registry.create(served, dep, ctx("default"))
        dep["spec"]["replicas"] = 2
        await api.registry.create(served, dep, ctx("default"))
        # Exact: the legacy version is not matched
        mc["matchPolicy"] = "Exact"
        await setup(api, policy("exact", [{"expression": "false"}], matchConstraints=mc), binding("b2", "exact"))
        dep["metadata"]["name"] = "d2"
        dep["spec"]["replicas"] = 9
        with pytest.raises(errors.StatusError, match="'replicas' with binding 'b'"):
            await api.registry.create(served, dep, ctx("default"))
        dep["spec"]["replicas"] = 1
        await api.registry.create(served, dep, ctx("default"))  # 'exact' would deny anything it matched
    run(main())


def test_params_warn_audit_and_not_found_actions():
    async def main():
        api = await api_server()
        pk = {"apiVersion": "v1", "kind": "ConfigMap"}
        await setup(api, cm("limits", {"max": "1"}, labels={"role": "limits"}, ns="kube-system"))
        p = policy("max", [{"expression": "size(object.data) <= int(params.data.max)",
                            "messageExpression": "'at most ' + params.data.max"}], paramKind=pk,
                   matchConditions=[{"name": "skip-limits", "expression": "!has(object.metadata.labels.role)"}],
                   auditAnnotations=[{"key": "size", "valueExpression": "string(size(object.data))"}])
        await setup(api, p, binding("warn", "max", ["Warn", "Audit"],
                                    paramRef={"name": "limits", "namespace": "kube-system"}))
        c = ctx("default")
        c.audit_annotations = {}
        await api.registry.create(api.lookup("", "v1", "configmaps"), cm("two", {"a": "1", "b": "2"}), c)
        assert c.warnings == ["Validation failed for ValidatingAdmissionPolicy 'max' with binding 'warn': at most 1"]
        fail = json.loads(c.audit_annotations["validation.policy.admission.k8s.io/validation_failure"])
        assert fail == [{"message": "at most 1", "policy": "max", "binding": "warn", "expressionIndex": 0,
                         "validationActions": ["Warn", "Audit"]}]
        assert c.audit_annotations["max/size"] == "2"
        # selector params, in the request's namespace: none there -> Deny action refuses
        await setup(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "empty"}})
        await setup(api, cm("limits2", {"max": "5"}, labels={"role": "limits"}))
        await setup(api, binding("sel", "max", ["Deny"], paramRef={"selector": {"matchLabels": {"role": "limits"}},
                                                                   "parameterNotFoundAction": "Deny"}))
        with pytest.raises(errors.StatusError) as e:
            await create_cm(api, cm("one", {"a": "1"}, ns="empty"))
        assert "with binding 'sel' denied request: failed to configure binding: no params found for policy " \
               "binding with `Deny` parameterNotFoundAction" in e.value.message
        await create_cm(api, cm("three", {"a": "1", "b": "2", "c": "3"}))  # default's params allow 5
    run(main())


def test_failure_policy_variables_and_authorizer():
    async def main():
        api = await api_server()
        await setup(api, policy("errs", [{"expression": "object.data.missing == 'x'"}]), binding("b", "errs"))
        with pytest.raises(errors.StatusError) as e:
            await create_cm(api, cm("a"))
        assert "denied request: expression 'object.data.missing == 'x'' resulted in error: no such key: missing" \
            in e.value.message
        await setup(api, policy("ignored", [{"expression": "object.data.missing == 'x'"}], failurePolicy="Ignore"),
                    binding("b2", "ignored"))
        await api.registry.delete(api.lookup(GROUP, "v1", "validatingadmissionpolicybindings"), None, "b", {}, ctx())
        await create_cm(api, cm("b"))
        await setup(api, policy("vars", [{"expression": "variables.isAdmin || variables.count < 2"}], variables=[
            {"name": "count", "expression": "size(object.data)"},
            {"name": "isAdmin", "expression": "authorizer.group('').resource('nodes').check('delete').allowed()"}]),
            binding("b3", "vars"))
        await create_cm(api, cm("c", {"a": "1", "b": "2"}))  # the admin may delete nodes
        with pytest.raises(errors.StatusError, match="'vars' with binding 'b3'"):
            await create_cm(api, cm("d", {"a": "1", "b": "2"}), user="nobody", groups=("system:authenticated",))
    run(main())


def test_strategy_validation():
    async def main():
        api = await api_server()
        served = api.lookup(GROUP, "v1", "validatingadmissionpolicies")
        bad = policy("bad", [{"expression": "object.spec <", "message": "a\nb", "reason": "Nope"},
                             {"expression": ""}],
                     failurePolicy="Sometimes", variables=[{"name": "1x", "expression": "1"}])
        with pytest.raises(errors.StatusError) as e:
            await api.registry.create(served, bad, ctx())
        causes = {(c["field"], c["reason"]) for c in e.value.details["causes"]}
        assert ("spec.validations[0].expression", "FieldValueInvalid") in causes
        assert ("spec.validations[0].message", "FieldValueInvalid") in causes
        assert ("spec.validations[0].reason", "FieldValueNotSupported") in causes
        assert ("spec.validations[1].expression", "FieldValueRequired") in causes
        assert ("spec.failurePolicy", "FieldValueNotSupported") in causes
        assert ("spec.variables[0].name", "FieldValueInvalid") in causes
        msg = next(c["message"] for c in e.value.details["causes"] if c["field"] == "spec.validations[0].expression")
        assert msg.startswith('Invalid value: "object.spec <": compilation failed: ERROR: <input>:1:')
        created = await api.registry.create(served, policy("good", [{"expression": "true"}]), ctx())
        assert created["spec"]["failurePolicy"] == "Fail"
        assert created["spec"]["matchConstraints"]["matchPolicy"] == "Equivalent"
        assert created["spec"]["matchConstraints"]["namespaceSelector"] == {}
        assert created["spec"]["matchConstraints"]["resourceRules"][0]["scope"] == "*"
        bserved = api.lookup(GROUP, "v1", "validatingadmissionpolicybindings")
        with pytest.raises(errors.StatusError) as e:
            await api.registry.create(bserved, binding("bb", "", ["Deny", "Warn", "Nope"],
                                                       paramRef={"name": "x", "selector": {}}), ctx())
        fields = {c["field"] for c in e.value.details["causes"]}
        assert {"spec.policyName", "spec.validationActions", "spec.validationActions[2]", "spec.paramRef.name",
                "spec.paramRef.selector"} <= fields
        b = await api.registry.create(bserved, binding("ok", "good", paramRef={"name": "x"}), ctx())
        assert b["spec"]["paramRef"]["parameterNotFoundAction"] == "Deny"
    run(main())


def test_mutating_policy_apply_configuration_and_json_patch():
    async def main():
        api = await api_server()
        mp = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "MutatingAdmissionPolicy", "metadata": {"name": "m"},
              "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                               "operations": ["CREATE"], "resources": ["configmaps"]}]},
                       "matchConditions": [{"name": "unmarked", "expression": "!has(object.metadata.labels.skip)"}],
                       "variables": [{"name": "owner", "expression": "request.userInfo.username"}],
                       "mutations": [
                           {"patchType": "ApplyConfiguration", "applyConfiguration": {
                               "expression": 'Object{data: {"added": "yes"}, metadata: Object.metadata{'
                                             'labels: {"owner": variables.owner.replace(":", "-")}}}'}},
                           {"patchType": "JSONPatch", "jsonPatch": {
                               "expression": '[JSONPatch{op: "replace", path: "/data/a", value: "patched"}]'}}]}}
        mb = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "MutatingAdmissionPolicyBinding", "metadata": {"name": "m"},
              "spec": {"policyName": "m"}}
        await setup(api, mp, mb)
        out = await create_cm(api, cm("x", {"a": "1"}, labels={"keep": "1"}))
        assert out["data"] == {"a": "patched", "added": "yes"}
        assert out["metadata"]["labels"] == {"keep": "1", "owner": "system-admin"}
        out = await create_cm(api, cm("y", {"a": "1"}, labels={"skip": "1"}))
        assert out["data"] == {"a": "1"}
        # a patch that cannot apply: failurePolicy Fail refuses
        with pytest.raises(errors.StatusError) as e:
            await create_cm(api, cm("z", {"b": "1"}))
        assert "policy 'm' with binding 'm' denied request" in e.value.message
        bad = json.loads(json.dumps(mp))
        bad["metadata"]["name"] = "bad"
        bad["spec"]["mutations"][0]["applyConfiguration"]["expression"] = "Object{data: "
        with pytest.raises(errors.StatusError) as e:
            await setup(api, bad)
        assert e.value.details["causes"][0]["field"] == "spec.mutations[0].applyConfiguration.expression"
    run(main())


def test_update_and_delete_see_old_object():
    async def main():
        api = await api_server()
        mc = {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE", "DELETE"],
                                 "resources": ["configmaps"]}]}
        await setup(api, policy("keep", [
            {"expression": "request.operation != 'DELETE' || (object == null && oldObject.data.?locked.orValue('') != 'true')",
             "message": "locked"},
            {"expression": "request.operation != 'UPDATE' || object.data.v >= oldObject.data.v",
             "message": "v only grows"}], matchConstraints=mc), binding("b", "keep"))
        served = api.lookup("", "v1", "configmaps")
        await create_cm(api, cm("a", {"v": "1", "locked": "true"}))
        cur = await api.registry.get(served, "default", "a")
        with pytest.raises(errors.StatusError, match="v only grows"):
            await api.registry.update(served, "default", "a", {**cur, "data": {"v": "0", "locked": "true"}},
                                      ctx("default"))
        await api.registry.update(served, "default", "a", {**cur, "data": {"v": "2", "locked": "true"}},
                                  ctx("default"))
        with pytest.raises(errors.StatusError, match="locked"):
            await api.registry.delete(served, "default", "a", {}, ctx("default"))
        await create_cm(api, cm("b", {"v": "1"}))
        await api.registry.delete(served, "default", "b", {}, ctx("default"))
    run(main())


def test_unknown_param_kind_is_a_policy_configuration_error():
    async def main():
        api = await api_server()
        await setup(api, policy("pk", [{"expression": "true"}], paramKind={"apiVersion": "example.com/v1",
                                                                          "kind": "Nope"}),
                    binding("b", "pk", paramRef={"name": "x"}))
        with pytest.raises(errors.StatusError) as e:
            await create_cm(api, cm("a"))
        assert e.value.message == ('configmaps "a" is forbidden: ValidatingAdmissionPolicy \'pk\' denied request: '
                                   "failed to configure policy: failed to find resource referenced by paramKind: "
                                   "'example.com/v1, Kind=Nope'")
    run(main())


def test_mutating_policy_reinvocation_if_needed():
    async def main():
        api = await api_server()

        def mp(name, expr, reinvocation):
            return {"apiVersion": f"{GROUP}/v1alpha1", "kind": "MutatingAdmissionPolicy", "metadata": {"name": name},
                    "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                                     "operations": ["CREATE"],
                                                                     "resources": ["configmaps"]}]},
                             "reinvocationPolicy": reinvocation,
                             "mutations": [{"patchType": "ApplyConfiguration",
                                            "applyConfiguration": {"expression": expr}}]}}

        def mb(name):
            return {"apiVersion": f"{GROUP}/v1alpha1", "kind": "MutatingAdmissionPolicyBinding",
                    "metadata": {"name": name}, "spec": {"policyName": name}}
        copy = 'Object{metadata: Object.metadata{labels: {"copy": object.metadata.?labels.?x.orValue("none")}}}'
        await setup(api, mp("a-copy", copy, "IfNeeded"), mb("a-copy"),
                    mp("b-set", 'Object{metadata: Object.metadata{labels: {"x": "1"}}}', "Never"), mb("b-set"))
        out = await create_cm(api, cm("r"))
        assert out["metadata"]["labels"] == {"copy": "1", "x": "1"}
        # a Never policy that ran before the change is not run again
        await setup(api, mp("0-copy", copy.replace('"copy"', '"copy0"'), "Never"), mb("0-copy"))
        out = await create_cm(api, cm("s"))
        assert out["metadata"]["labels"] == {"copy0": "none", "copy": "1", "x": "1"}
    run(main())
