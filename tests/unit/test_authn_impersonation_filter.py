"""The impersonation filter: header parsing, upstream's ``impersonate`` attributes, the user it
builds, and (in process) that everything downstream sees the impersonated user."""

import asyncio

import pytest
from multidict import CIMultiDict

from kubeling.api.errors import StatusError
from kubeling.apiserver.auth import Decision, UserInfo
from kubeling.apiserver.filters import impersonation
from inprocess import api_server, http

ALICE = UserInfo("alice", groups=("system:authenticated",))


class Recorder:
    """Allows what ``allow`` lists ((resource, subresource, name, namespace, group)), records every check."""

    def __init__(self, *allow, fail=False):
        self.allow = set(allow)
        self.seen = []
        self.fail = fail

    def authorize(self, attrs):
        self.seen.append(attrs)
        if self.fail:
            raise RuntimeError("authorizer down")
        key = (attrs.resource, attrs.subresource, attrs.name, attrs.namespace, attrs.group)
        return Decision(key in self.allow or ("*",) in self.allow, "")


def headers(*pairs):
    return CIMultiDict(pairs)


def test_no_headers_asks_nothing():
    assert impersonation.requests_from_headers(headers(("Accept", "x"))) == []


def test_user_groups_extra_uid_are_parsed_and_extra_key_decoded():
    got = impersonation.requests_from_headers(headers(
        ("Impersonate-User", "bob"), ("Impersonate-Group", "dev"), ("Impersonate-Group", "ops"),
        ("Impersonate-Extra-Scopes%2Fa", "one"), ("Impersonate-Extra-Scopes%2Fa", "two"), ("Impersonate-Uid", "u1")))
    assert got == [{"kind": "User", "name": "bob"}, {"kind": "Group", "name": "dev"}, {"kind": "Group", "name": "ops"},
                   {"kind": "UserExtra", "key": "scopes/a", "name": "one"},
                   {"kind": "UserExtra", "key": "scopes/a", "name": "two"}, {"kind": "UID", "name": "u1"}]


def test_service_account_user_is_a_service_account_request():
    got = impersonation.requests_from_headers(headers(("Impersonate-User", "system:serviceaccount:ns1:builder")))
    assert got == [{"kind": "ServiceAccount", "namespace": "ns1", "name": "builder"}]
    # a malformed one is just a user name
    got = impersonation.requests_from_headers(headers(("Impersonate-User", "system:serviceaccount:ns1")))
    assert got == [{"kind": "User", "name": "system:serviceaccount:ns1"}]


@pytest.mark.parametrize("h", [("Impersonate-Group", "dev"), ("Impersonate-Uid", "1"), ("Impersonate-Extra-a", "b")])
def test_groups_uid_or_extra_without_a_user_is_a_400(h):
    with pytest.raises(StatusError) as e:
        impersonation.requests_from_headers(headers(h))
    assert e.value.code == 400 and "without impersonating a user" in e.value.message


def test_each_part_is_checked_with_upstreams_attributes():
    a = Recorder(("*",))
    asked = impersonation.requests_from_headers(headers(
        ("Impersonate-User", "bob"), ("Impersonate-Group", "dev"), ("Impersonate-Extra-scopes", "view"),
        ("Impersonate-Uid", "u1")))
    user = impersonation.impersonate(a, ALICE, asked)
    got = [(x.verb, x.group, x.resource, x.subresource, x.name, x.namespace, x.resource_request, x.user.name)
           for x in a.seen]
    assert got == [("impersonate", "", "users", "", "bob", "", True, "alice"),
                   ("impersonate", "", "groups", "", "dev", "", True, "alice"),
                   ("impersonate", "authentication.k8s.io", "userextras", "scopes", "view", "", True, "alice"),
                   ("impersonate", "authentication.k8s.io", "uids", "", "u1", "", True, "alice")]
    assert user == UserInfo("bob", "u1", ("dev", "system:authenticated"))
    assert user.extra == {"scopes": ["view"]}


def test_service_account_is_checked_in_its_namespace_and_gets_its_groups():
    a = Recorder(("serviceaccounts", "", "builder", "ns1", ""))
    asked = impersonation.requests_from_headers(headers(("Impersonate-User", "system:serviceaccount:ns1:builder")))
    user = impersonation.impersonate(a, ALICE, asked)
    assert user.name == "system:serviceaccount:ns1:builder"
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:ns1", "system:authenticated")


def test_service_account_with_asked_groups_gets_only_those():
    a = Recorder(("*",))
    asked = impersonation.requests_from_headers(headers(("Impersonate-User", "system:serviceaccount:ns1:b"),
                                                        ("Impersonate-Group", "x")))
    assert impersonation.impersonate(a, ALICE, asked).groups == ("x", "system:authenticated")


def test_anonymous_gets_unauthenticated_and_explicit_auth_groups_are_kept():
    a = Recorder(("*",))
    anon = impersonation.impersonate(a, ALICE, [{"kind": "User", "name": "system:anonymous"}])
    assert anon.groups == ("system:unauthenticated",)
    u = impersonation.impersonate(a, ALICE, [{"kind": "User", "name": "bob"},
                                             {"kind": "Group", "name": "system:unauthenticated"}])
    assert u.groups == ("system:unauthenticated",)


def test_refusal_is_upstreams_403():
    a = Recorder(("users", "", "bob", "", ""))
    with pytest.raises(StatusError) as e:
        impersonation.impersonate(a, ALICE, [{"kind": "User", "name": "bob"}, {"kind": "Group", "name": "admins"}])
    assert e.value.code == 403
    assert e.value.message == ('groups "admins" is forbidden: User "alice" cannot impersonate resource "groups" '
                               'in API group "" at the cluster scope')
    with pytest.raises(StatusError) as e:
        impersonation.impersonate(Recorder(), ALICE, [{"kind": "User", "name": "bob"}])
    assert e.value.message == ('users "bob" is forbidden: User "alice" cannot impersonate resource "users" '
                               'in API group "" at the cluster scope')
    with pytest.raises(StatusError) as e:
        impersonation.impersonate(Recorder(), ALICE, [{"kind": "ServiceAccount", "namespace": "n", "name": "s"}])
    assert e.value.message == ('serviceaccounts "s" is forbidden: User "alice" cannot impersonate resource '
                               '"serviceaccounts" in API group "" in the namespace "n"')


def test_authorizer_failure_refuses():
    with pytest.raises(StatusError) as e:
        impersonation.impersonate(Recorder(fail=True), ALICE, [{"kind": "User", "name": "bob"}])
    assert e.value.code == 403


def test_downstream_sees_the_impersonated_user():
    asyncio.run(_downstream())


async def _downstream():
    api = await api_server()
    async with http(api) as client:
        h = {"Impersonate-User": "bob", "Impersonate-Group": "dev", "Impersonate-Extra-Team": "blue",
             "Impersonate-Uid": "42"}
        r = await client.post("/apis/authentication.k8s.io/v1/selfsubjectreviews", headers=h,
                              json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        assert r.status == 201, await r.text()
        info = (await r.json())["status"]["userInfo"]
        assert info == {"username": "bob", "uid": "42", "groups": ["dev", "system:authenticated"],
                        "extra": {"team": ["blue"]}}
        # bob holds nothing: reading pods as bob is refused with bob's name
        r = await client.get("/api/v1/namespaces/default/pods", headers={"Impersonate-User": "bob"})
        assert r.status == 403
        assert (await r.json())["message"] == ('pods is forbidden: User "bob" cannot list resource "pods" in API '
                                               'group "" in the namespace "default"')
        # and bob may not impersonate in turn (the check is made for the authenticated user only)
        r = await client.get("/api/v1/namespaces/default/pods", headers={"Impersonate-Group": "system:masters"})
        assert r.status == 400
