"""The agent server's pure parts: which container's log a request reads (upstream's
validateContainerLogStatus), the log query, the authorizer's view of paths, and SPDY protocol
negotiation."""

import pytest
from multidict import CIMultiDict, MultiDict

from kubeling.kubelet.server import auth, handlers, streams


def pod(*statuses):
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
            "status": {"containerStatuses": list(statuses)}}


RUNNING = {"running": {"startedAt": "2025-01-01T00:00:00Z"}}
LAST = {"terminated": {"exitCode": 1, "containerID": "runc://old"}}


@pytest.mark.parametrize("status,previous,expected", [
    pytest.param({"name": "c", "state": RUNNING, "containerID": "runc://new", "restartCount": 2}, False,
                 ("runc://new", 2), id="running"),
    pytest.param({"name": "c", "state": RUNNING, "containerID": "runc://new", "lastState": LAST,
                  "restartCount": 2}, True, ("runc://old", 1), id="previous"),
    pytest.param({"name": "c", "state": {"terminated": {"containerID": "runc://done"}}, "restartCount": 0}, False,
                 ("runc://done", 0), id="terminated"),
    pytest.param({"name": "c", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": LAST,
                  "restartCount": 3}, False, ("runc://old", 2), id="crashloop-shows-last-run"),
    pytest.param({"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}}, False,
                 'container "c" in pod "p" is waiting to start: ContainerCreating', id="waiting"),
    pytest.param({"name": "c", "state": {"waiting": {"reason": "ImagePullBackOff"}}}, False,
                 'container "c" in pod "p" is waiting to start: trying and failing to pull image', id="backoff"),
    pytest.param({"name": "c", "state": {"waiting": {"reason": "ErrImagePull"}}}, False,
                 'container "c" in pod "p" is waiting to start: image can\'t be pulled', id="pull-error"),
    pytest.param({"name": "c", "state": RUNNING, "containerID": "runc://new"}, True,
                 'previous terminated container "c" in pod "p" not found', id="no-previous"),
    pytest.param({"name": "other"}, False, 'container "c" in pod "p" is not available', id="no-status"),
    pytest.param({"name": "c", "state": {}}, False, 'container "c" in pod "p" is waiting to start - no logs yet',
                 id="unknown-state"),
])
def test_log_container_follows_upstream(status, previous, expected):
    if isinstance(expected, str):
        with pytest.raises(ValueError) as e:
            handlers.log_container(pod(status), "c", previous)
        assert str(e.value) == expected
    else:
        assert handlers.log_container(pod(status), "c", previous) == expected


NOW = 1_700_000_000 * 10**9


@pytest.mark.parametrize("query,check", [
    pytest.param({"tailLines": "3", "timestamps": "true", "follow": "true"},
                 lambda o, prev: (o.tail, o.timestamps, o.follow, prev) == (3, True, True, False), id="flags"),
    pytest.param({"tailLines": "-1"}, lambda o, prev: o.tail is None, id="tail-minus-one-is-all"),
    pytest.param({"sinceSeconds": "10"}, lambda o, prev: o.since_ns == NOW - 10 * 10**9, id="since-seconds"),
    pytest.param({"sinceTime": "2023-11-14T22:13:20Z"}, lambda o, prev: o.since_ns == NOW, id="since-time"),
    pytest.param({"previous": "1", "limitBytes": "5"}, lambda o, prev: prev and o.limit_bytes == 5, id="previous"),
    pytest.param({"stream": "Stderr"}, lambda o, prev: o.stream == "stderr", id="stream"),
])
def test_log_options_from_the_query(query, check):
    opts, previous = handlers.log_options(MultiDict(query), NOW)
    assert check(opts, previous)


@pytest.mark.parametrize("query,message", [
    pytest.param({"tailLines": "x"}, 'invalid tailLines \'x\': strconv.ParseInt: parsing "x": invalid syntax',
                 id="not-a-number"),
    pytest.param({"sinceSeconds": "1", "sinceTime": "2023-11-14T22:13:20Z"},
                 "at most one of `sinceTime` or `sinceSeconds` may be specified", id="both-since"),
    pytest.param({"limitBytes": "0"}, "limitBytes must be greater than 0", id="zero-limit"),
])
def test_bad_log_queries(query, message):
    with pytest.raises(handlers.LogQueryError) as e:
        handlers.log_options(MultiDict(query), NOW)
    assert str(e.value) == message


@pytest.mark.parametrize("user,ok", [
    pytest.param(auth.User("kube-apiserver-kubelet-client", ()), True, id="apiserver"),
    pytest.param(auth.User("kubernetes-admin", ("system:masters",)), True, id="masters"),
    pytest.param(auth.User("system:node:n1", ("system:nodes",)), False, id="a-node"),
])
def test_who_may_use_the_agent(user, ok):
    assert auth.allowed(user) is ok


class FakeRequest:
    def __init__(self, headers, method="POST", path="/exec/ns/p/c"):
        self.headers, self.method, self.path = CIMultiDict(headers), method, path


@pytest.mark.parametrize("headers,chosen", [
    pytest.param([("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
                  ("X-Stream-Protocol-Version", "v3.channel.k8s.io")], "v4.channel.k8s.io", id="kubectl"),
    pytest.param([("X-Stream-Protocol-Version", "v5.channel.k8s.io"),
                  ("X-Stream-Protocol-Version", "v2.channel.k8s.io")], "v2.channel.k8s.io", id="first-supported"),
    pytest.param([], "", id="legacy-no-header"),
    pytest.param([("X-Stream-Protocol-Version", "v9.channel.k8s.io")], None, id="no-match"),
])
def test_spdy_protocol_negotiation(headers, chosen):
    from kubeling.kubelet.streaming.remotecommand import SPDY_PROTOCOLS
    assert streams.spdy_protocol(FakeRequest(headers), SPDY_PROTOCOLS) == chosen


@pytest.mark.parametrize("method,path,expected", [
    ("GET", "/stats/summary", ("get", "stats")), ("GET", "/metrics/resource", ("get", "metrics")),
    ("POST", "/exec/ns/p/c", ("create", "proxy")), ("GET", "/containerLogs/ns/p/c", ("get", "proxy")),
])
def test_authorization_attributes(method, path, expected):
    assert auth.attributes(FakeRequest({}, method, path)) == expected
