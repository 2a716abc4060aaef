"""WebSocket channel framing and subprotocol negotiation; exec/attach options and statuses."""

import json

import pytest
from multidict import MultiDict

from kubeling.kubelet.streaming import remotecommand, wsstream


@pytest.mark.parametrize("channel,data,b64,wire", [
    pytest.param(0, b"foo\n", False, b"\x00foo\n", id="binary-stdin"),
    pytest.param(1, b"", False, b"\x01", id="binary-empty"),
    pytest.param(255, b"\x00", False, b"\xff\x00", id="v5-close-stdin"),
    pytest.param(0, b"foo\n", True, "0Zm9vCg==", id="base64-stdin"),
    pytest.param(1, b"\n", True, "1Cg==", id="base64-stdout"),
])
def test_channel_framing_round_trips(channel, data, b64, wire):
    assert wsstream.encode(channel, data, b64=b64) == wire
    assert wsstream.decode(wire, b64=b64) == (channel, data)


@pytest.mark.parametrize("message,b64", [
    pytest.param(b"", False, id="empty"),
    pytest.param("", True, id="empty-text"),
    pytest.param("1!!!", True, id="bad-base64"),
])
def test_undecodable_messages_are_skipped(message, b64):
    assert wsstream.decode(message, b64=b64) is None


@pytest.mark.parametrize("offered,supported,chosen", [
    pytest.param(["v5.channel.k8s.io", "v4.channel.k8s.io"], wsstream.REMOTECOMMAND, "v5.channel.k8s.io",
                 id="kubectl-and-python-client"),
    pytest.param(["v4.channel.k8s.io", "v5.channel.k8s.io"], wsstream.REMOTECOMMAND, "v4.channel.k8s.io",
                 id="client-order-wins"),
    pytest.param(["v5.channel.k8s.io", "v4.channel.k8s.io"], wsstream.PORTFORWARD, "v4.channel.k8s.io",
                 id="portforward-has-no-v5"),
    pytest.param([], wsstream.REMOTECOMMAND, "", id="none-offered-is-v1"),
    pytest.param(["v9.channel.k8s.io"], wsstream.REMOTECOMMAND, None, id="no-match"),
])
def test_negotiation_picks_the_clients_first_supported(offered, supported, chosen):
    assert wsstream.negotiate(offered, supported) == chosen


@pytest.mark.parametrize("protocol,version", [
    ("v5.channel.k8s.io", 5), ("v4.base64.channel.k8s.io", 4), ("v3.channel.k8s.io", 3),
    ("channel.k8s.io", 1), ("base64.channel.k8s.io", 1), ("", 1)])
def test_protocol_versions(protocol, version):
    assert wsstream.version_of(protocol) == version


@pytest.mark.parametrize("query,expected,problem", [
    pytest.param([("command", "sh"), ("command", "-c"), ("command", "ls"), ("stdout", "1"), ("stderr", "True")],
                 remotecommand.Options(False, True, True, False, ["sh", "-c", "ls"]), None, id="agent-query"),
    pytest.param([("command", "sh"), ("input", "1"), ("output", "1"), ("error", "1"), ("tty", "true")],
                 remotecommand.Options(True, True, False, True, ["sh"]), None, id="tty-drops-stderr"),
    pytest.param([("command", "sh"), ("stdout", "False")], remotecommand.Options(command=["sh"]),
                 "you must specify at least 1 of stdin, stdout, stderr", id="no-streams"),
])
def test_exec_options_from_the_query(query, expected, problem):
    opts = remotecommand.Options.from_query(MultiDict(query))
    assert opts == expected and opts.check() == problem


def test_exit_status_carries_the_code_where_clients_read_it():
    st = remotecommand.exit_status(3, ["sh", "-c", "exit 3"])
    assert json.loads(json.dumps(st)) == {
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": "command terminated with non-zero exit code: command 'sh -c exit 3' exited with 3",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}
    assert remotecommand.success_status() == {"metadata": {}, "status": "Success"}
