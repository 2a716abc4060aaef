"""The ipvs mode: desired state from a snapshot, the diff against the kernel's state (with
upstream's graceful termination), the nftables side checked by a real ``nft -c`` in a
throw-away netns, and the refusal to start on a kernel without ip_vs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kubeling.proxy import ipvs
from kubeling.proxy.ipvs import IP_VS_SVC_F_PERSISTENT, IPVSState, RealServer, VirtualServer, desired_state, diff
from kubeling.proxy.types import Endpoint, NodeContext, ProxyModeUnavailable, ServicePort, ServicePortName

REPO = Path(__file__).resolve().parents[2]
NODE = NodeContext("n1", ("10.44.0.2",), cluster_cidr="10.42.0.0/16")
WEB = ServicePortName("default", "web", "http")
DNS = ServicePortName("kube-system", "kube-dns", "dns", "UDP")
LOCAL = Endpoint("10.42.0.10", 8080, node_name="n1", is_local=True)
REMOTE = Endpoint("10.42.1.10", 8080, node_name="n2")
NOT_READY = Endpoint("10.42.0.11", 8080, ready=False, node_name="n1", is_local=True)


def vs_of(state: IPVSState, addr: str, port: int, proto: str = "TCP") -> VirtualServer:
    return state.virtual_servers[(addr, proto, port)]


def rs_of(state: IPVSState, addr: str, port: int, proto: str = "TCP") -> set[str]:
    return {str(r) for r in state.real_servers[(addr, proto, port)].values()}


def test_cluster_ip_virtual_server_and_real_servers():
    st = desired_state({WEB: ServicePort("10.43.0.20", 80)}, {WEB: [LOCAL, REMOTE, NOT_READY]}, NODE)
    vs = vs_of(st, "10.43.0.20", 80)
    assert (vs.scheduler, vs.flags, vs.timeout) == ("rr", 0, 0)
    assert rs_of(st, "10.43.0.20", 80) == {"10.42.0.10:8080", "10.42.1.10:8080"}   # not-ready left out
    assert st.addresses == {"10.43.0.20"}
    assert st.sets["KUBE-CLUSTER-IP"] == {("10.43.0.20", "tcp", 80)}
    assert st.sets["KUBE-LOOP-BACK"] == {("10.42.0.10", "tcp", 8080, "10.42.0.10")}   # local endpoints only
    assert st.sets["KUBE-IPVS-IPS"] == {("10.43.0.20",)}


def test_session_affinity_is_persistence():
    svc = ServicePort("10.43.0.20", 80, session_affinity="ClientIP", sticky_max_age_seconds=600)
    st = desired_state({WEB: svc}, {WEB: [LOCAL]}, NODE, scheduler="lc")
    vs = vs_of(st, "10.43.0.20", 80)
    assert (vs.scheduler, vs.flags, vs.timeout) == ("lc", IP_VS_SVC_F_PERSISTENT, 600)


def test_nodeport_lb_external_ips_and_local_policy():
    svc = ServicePort("10.43.0.20", 80, node_port=30080, external_ips=("192.0.2.7",), load_balancer_ips=("10.45.0.5",),
                      load_balancer_source_ranges=("10.44.0.0/24",), external_policy_local=True,
                      health_check_node_port=31500)
    st = desired_state({WEB: svc}, {WEB: [LOCAL, REMOTE]}, NODE)
    assert set(st.virtual_servers) == {("10.43.0.20", "TCP", 80), ("192.0.2.7", "TCP", 80),
                                       ("10.45.0.5", "TCP", 80), ("10.44.0.2", "TCP", 30080)}
    assert rs_of(st, "10.43.0.20", 80) == {"10.42.0.10:8080", "10.42.1.10:8080"}   # internal: Cluster
    for addr, port in (("192.0.2.7", 80), ("10.45.0.5", 80), ("10.44.0.2", 30080)):
        assert rs_of(st, addr, port) == {"10.42.0.10:8080"}                          # external: Local
    assert st.addresses == {"10.43.0.20", "192.0.2.7", "10.45.0.5"}                  # not the node IP
    assert st.sets["KUBE-EXTERNAL-IP-LOCAL"] == {("192.0.2.7", "tcp", 80)} and not st.sets["KUBE-EXTERNAL-IP"]
    assert st.sets["KUBE-LOAD-BALANCER"] == st.sets["KUBE-LOAD-BALANCER-LOCAL"] == {("10.45.0.5", "tcp", 80)}
    assert st.sets["KUBE-LOAD-BALANCER-FW"] == {("10.45.0.5", "tcp", 80)}
    assert st.sets["KUBE-LOAD-BALANCER-SOURCE-CIDR"] == {("10.45.0.5", "tcp", 80, "10.44.0.0/24")}
    assert st.sets["KUBE-NODE-PORT-TCP"] == st.sets["KUBE-NODE-PORT-LOCAL-TCP"] == {(30080,)}
    assert st.sets["KUBE-HEALTH-CHECK-NODE-PORT"] == {(31500,)}


def test_internal_policy_local_udp_and_skipped_services():
    headless = ServicePortName("default", "headless")
    svc = ServicePort("10.43.0.10", 53, protocol="UDP", node_port=30053, internal_policy_local=True)
    st = desired_state({DNS: svc, headless: ServicePort("", 80)},
                       {DNS: [Endpoint("10.42.0.10", 53, is_local=True), Endpoint("10.42.1.10", 53)]}, NODE)
    assert rs_of(st, "10.43.0.10", 53, "UDP") == {"10.42.0.10:53"}
    assert rs_of(st, "10.44.0.2", 30053, "UDP") == {"10.42.0.10:53", "10.42.1.10:53"}
    assert st.sets["KUBE-NODE-PORT-UDP"] == {(30053,)} and not st.sets["KUBE-NODE-PORT-TCP"]
    assert len(st.virtual_servers) == 2


def test_no_endpoints_keeps_the_virtual_server_without_real_servers():
    st = desired_state({WEB: ServicePort("10.43.0.20", 80)}, {}, NODE)
    assert st.real_servers[("10.43.0.20", "TCP", 80)] == {}


def test_nodeport_addresses_pick_node_ips():
    node = NodeContext("n1", ("10.44.0.2", "192.168.5.2"), nodeport_addresses=("192.168.0.0/16",))
    st = desired_state({WEB: ServicePort("10.43.0.20", 80, node_port=30080)}, {WEB: [REMOTE]}, node)
    assert ("192.168.5.2", "TCP", 30080) in st.virtual_servers
    assert ("10.44.0.2", "TCP", 30080) not in st.virtual_servers


# -- diff ------------------------------------------------------------------------------------


def state(vss: dict[VirtualServer, list[RealServer]], addresses=()) -> IPVSState:
    st = IPVSState(addresses=set(addresses))
    for vs, real in vss.items():
        st.add(vs, real)
    return st


VS = VirtualServer("10.43.0.20", "TCP", 80)
A, B, C = RealServer("10.42.0.10", 8080), RealServer("10.42.0.11", 8080), RealServer("10.42.0.12", 8080)


def test_diff_from_nothing_adds_everything():
    plan = diff(IPVSState(), state({VS: [A, B]}, ["10.43.0.20"]))
    assert plan.add_addresses == ["10.43.0.20"]
    assert plan.add_virtual_servers == [VS]
    assert plan.add_real_servers == [(VS, A), (VS, B)]
    assert not (plan.del_virtual_servers or plan.del_real_servers or plan.update_virtual_servers)


def test_diff_same_state_is_empty():
    cur = state({VS: [A, B]}, ["10.43.0.20"])
    assert diff(cur, state({VS: [A, B]}, ["10.43.0.20"])).empty


def test_diff_graceful_termination():
    busy = RealServer(B.address, B.port, weight=1, active_conns=2)
    idle = RealServer(C.address, C.port, weight=1)
    cur = state({VS: [A, busy, idle]}, ["10.43.0.20"])
    plan = diff(cur, state({VS: [A]}, ["10.43.0.20"]))
    assert plan.quiesce_real_servers == [(VS, RealServer(B.address, B.port, weight=0))]
    assert plan.del_real_servers == [(VS, idle)]
    # next sync: still busy at weight 0 -> nothing; once its connections end -> deleted
    draining = RealServer(B.address, B.port, weight=0, inactive_conns=1)
    assert diff(state({VS: [A, draining]}, ["10.43.0.20"]), state({VS: [A]}, ["10.43.0.20"])).empty
    done = RealServer(B.address, B.port, weight=0)
    assert diff(state({VS: [A, done]}, ["10.43.0.20"]), state({VS: [A]}, ["10.43.0.20"])).del_real_servers == \
        [(VS, done)]
    # the endpoint comes back while draining: weight 1 again, no re-add
    plan = diff(state({VS: [A, draining]}, ["10.43.0.20"]), state({VS: [A, B]}, ["10.43.0.20"]))
    assert plan.update_real_servers == [(VS, B)] and not plan.add_real_servers


def test_diff_udp_real_servers_go_at_once():
    udp = VirtualServer("10.43.0.10", "UDP", 53)
    busy = RealServer("10.42.0.10", 53, active_conns=5)
    plan = diff(state({udp: [busy]}), state({udp: []}))
    assert plan.del_real_servers == [(udp, busy)] and not plan.quiesce_real_servers


def test_diff_changed_and_removed_virtual_servers_and_addresses():
    sticky = VirtualServer("10.43.0.20", "TCP", 80, flags=IP_VS_SVC_F_PERSISTENT, timeout=10800)
    gone = VirtualServer("10.43.0.30", "TCP", 443)
    cur = state({VS: [A], gone: [B]}, ["10.43.0.20", "10.43.0.30"])
    plan = diff(cur, state({sticky: [A]}, ["10.43.0.20"]))
    assert plan.update_virtual_servers == [sticky]
    assert plan.del_virtual_servers == [gone]
    assert plan.del_addresses == ["10.43.0.30"] and not plan.add_addresses
    assert not plan.del_real_servers          # deleting the virtual server takes its real servers


def test_sync_sequence_through_diff_converges():
    """Apply plans to a model kernel: after each sync, reading back gives the desired state."""
    model = IPVSState()

    def apply(plan):
        model.addresses |= set(plan.add_addresses)
        model.addresses -= set(plan.del_addresses)
        for vs in plan.add_virtual_servers + plan.update_virtual_servers:
            model.virtual_servers[vs.key] = vs
            model.real_servers.setdefault(vs.key, {})
        for vs, rs in plan.add_real_servers + plan.update_real_servers + plan.quiesce_real_servers:
            model.real_servers[vs.key][rs.key] = rs
        for vs, rs in plan.del_real_servers:
            del model.real_servers[vs.key][rs.key]
        for vs in plan.del_virtual_servers:
            del model.virtual_servers[vs.key]
            del model.real_servers[vs.key]

    snapshots = [
        ({WEB: ServicePort("10.43.0.20", 80, node_port=30080)}, {WEB: [LOCAL, REMOTE]}),
        ({WEB: ServicePort("10.43.0.20", 80, node_port=30080, session_affinity="ClientIP")}, {WEB: [REMOTE]}),
        ({DNS: ServicePort("10.43.0.10", 53, protocol="UDP")}, {DNS: [Endpoint("10.42.0.10", 53)]}),
        ({}, {}),
    ]
    for services, endpoints in snapshots:
        want = desired_state(services, endpoints, NODE)
        apply(diff(model, want))
        assert model.addresses == want.addresses
        assert model.virtual_servers == want.virtual_servers
        assert model.real_servers == want.real_servers
        assert diff(model, want).empty
    assert not model.virtual_servers and not model.addresses


# -- nftables ---------------------------------------------------------------------------------


def test_nft_ruleset_structure_and_kernel_check():
    svc = ServicePort("10.43.0.20", 80, node_port=30080, external_ips=("192.0.2.7",), load_balancer_ips=("10.45.0.5",),
                      load_balancer_source_ranges=("10.44.0.0/24",), session_affinity="ClientIP",
                      health_check_node_port=31500)
    sctp = ServicePortName("default", "s", "", "SCTP")
    st = desired_state({WEB: svc, DNS: ServicePort("10.43.0.10", 53, protocol="UDP", node_port=30053),
                        sctp: ServicePort("10.43.0.40", 9, protocol="SCTP", node_port=30009)},
                       {WEB: [LOCAL, REMOTE], DNS: [Endpoint("10.42.0.10", 53, is_local=True)]}, NODE)
    text = ipvs.nft_ruleset(st, NODE)
    assert text.startswith("add table ip kube-proxy-ipvs\ndelete table ip kube-proxy-ipvs\n")
    for name in ipvs.SETS:
        assert f"set {name} {{" in text
    assert "elements = { 10.43.0.10 . udp . 53, 10.43.0.20 . tcp . 80, 10.43.0.40 . sctp . 9 }" in text
    assert "elements = { 10.42.0.10 . tcp . 8080 . 10.42.0.10, 10.42.0.10 . udp . 53 . 10.42.0.10 }" in text
    assert "ip saddr != 10.42.0.0/16 ip daddr . meta l4proto . th dport @KUBE-CLUSTER-IP jump KUBE-MARK-MASQ" in text
    assert "meta mark set meta mark | 0x4000" in text
    assert "masquerade fully-random" in text
    all_masq = ipvs.nft_ruleset(st, NodeContext("n1", ("10.44.0.2",), masquerade_all=True))
    assert "\t\tip daddr . meta l4proto . th dport @KUBE-CLUSTER-IP jump KUBE-MARK-MASQ" in all_masq
    # the kernel accepts it (checked, not committed, in a fresh netns of its own)
    for t in (text, ipvs.nft_ruleset(IPVSState(), NODE)):
        r = subprocess.run(["unshare", "-n", "nft", "-c", "-f", "-"], input=t, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


# -- start ------------------------------------------------------------------------------------


def test_start_refuses_without_ip_vs():
    assert not os.path.exists("/proc/net/ip_vs"), "this machine has IPVS: the refusal cannot be tested here"
    with pytest.raises(ProxyModeUnavailable) as e:
        asyncio.run(ipvs.Proxier(NODE).start())
    assert str(e.value) == ("the kernel has no IPVS (ip_vs): load it with modprobe ip_vs, "
                            "or use --proxy-mode=nftables")


def test_unknown_scheduler():
    with pytest.raises(ValueError, match="unknown IPVS scheduler"):
        ipvs.Proxier(NODE, scheduler="fastest")


HOST_SIDE = textwrap.dedent("""
    import asyncio, json, subprocess
    from kubeling.proxy import ipvs
    from kubeling.proxy.types import Endpoint, NodeContext, ServicePort, ServicePortName
    node = NodeContext("n1", ("10.44.0.2",))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    # this kernel has no dummy driver either: a (down) bridge named kube-ipvs0 stands in for it;
    # the mode finds its device by name, and addresses on a down device are still local
    subprocess.run(["ip", "link", "add", "kube-ipvs0", "type", "bridge"], check=True)
    p = ipvs.Proxier(node)
    p._kernel = ipvs._Kernel()          # start() refuses here; the rest runs without IPVS
    web = ServicePortName("default", "web")
    asyncio.run(p.sync({web: ServicePort("10.43.0.20", 80, external_ips=("192.0.2.7",))},
                       {web: [Endpoint("10.42.0.10", 8080)]}))
    out = {"after_sync": asyncio.run(p.count_leaks()),
           "addrs": subprocess.run(["ip", "-br", "addr", "show", "kube-ipvs0"], capture_output=True, text=True).stdout,
           "route": subprocess.run(["ip", "route", "get", "10.43.0.20"], capture_output=True, text=True).stdout}
    asyncio.run(p.sync({}, {}))
    out["after_empty_sync"] = asyncio.run(p.count_leaks())
    asyncio.run(p.cleanup())
    out["after_cleanup"] = asyncio.run(p.count_leaks())
    out["link"] = subprocess.run(["ip", "link", "show", "kube-ipvs0"], capture_output=True, text=True).returncode
    out["table"] = subprocess.run(["nft", "list", "table", "ip", "kube-proxy-ipvs"], capture_output=True).returncode
    print(json.dumps(out))
""")


def test_host_side_in_a_private_netns():
    """kube-ipvs0, its addresses and the nft table, programmed for real in a throw-away netns
    (``unshare -n``); IPVS itself is absent here, so no virtual server is read or written."""
    import json
    r = subprocess.run(["unshare", "-n", sys.executable, "-c", HOST_SIDE], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["after_sync"]["addresses"] == 2 and out["after_sync"]["set_elements"] > 0, out
    assert "10.43.0.20/32" in out["addrs"] and "192.0.2.7/32" in out["addrs"]
    assert out["route"].startswith("local 10.43.0.20")
    assert out["after_empty_sync"] == {"virtual_servers": 0, "real_servers": 0, "addresses": 0, "set_elements": 0}
    assert set(out["after_cleanup"].values()) == {0}
    assert out["link"] != 0 and out["table"] != 0


# -- netlink messages ---------------------------------------------------------------------------


def _roundtrip(cmd: int, attrs: list) -> object:
    """Encode a generic-netlink IPVS message as the kernel's dump answers carry it, decode it back."""
    from pyroute2.netlink.generic import ipvs as genl
    msg = genl.ipvsmsg()
    msg["cmd"], msg["version"], msg["attrs"] = cmd, genl.GENL_VERSION, attrs
    msg.encode()
    back = genl.ipvsmsg(msg.data)
    back.decode()
    return back


def test_service_request_encodes_and_parses_back():
    from pyroute2.netlink.generic import ipvs as genl
    for vs in (VirtualServer("10.43.0.20", "TCP", 80, "rr", IP_VS_SVC_F_PERSISTENT, 600),
               VirtualServer("10.43.0.10", "UDP", 53, "lc"),
               VirtualServer("10.44.0.2", "SCTP", 30009)):
        msg = _roundtrip(genl.IPVS_CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", ipvs.service_request(vs).dump_nla())])
        assert ipvs.parse_service(msg) == vs
        svc = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
        assert svc.get_attr("IPVS_SVC_ATTR_AF") == 2 and svc.get_attr("IPVS_SVC_ATTR_NETMASK") == "255.255.255.255"
    key = ipvs.service_request(VS, full=False).dump_key()
    assert {name for name, _ in key["attrs"]} == {"IPVS_SVC_ATTR_ADDR", "IPVS_SVC_ATTR_AF", "IPVS_SVC_ATTR_PORT",
                                                  "IPVS_SVC_ATTR_PROTOCOL"}


def test_dest_request_is_masquerade_and_parses_back():
    from pyroute2.netlink.generic import ipvs as genl
    rs = RealServer("10.42.0.10", 8080, weight=0)
    msg = _roundtrip(genl.IPVS_CMD_NEW_DEST, [
        ("IPVS_CMD_ATTR_SERVICE", ipvs.service_request(VS, full=False).dump_key()),
        ("IPVS_CMD_ATTR_DEST", ipvs.dest_request(rs).dump_nla())])
    dest = msg.get_attr("IPVS_CMD_ATTR_DEST")
    assert dest.get_attr("IPVS_DEST_ATTR_FWD_METHOD") == ipvs.IP_VS_CONN_F_MASQ == 0
    assert ipvs.parse_dest(msg) == rs


def test_parse_service_skips_fwmark_services():
    from pyroute2.netlink.generic import ipvs as genl
    msg = _roundtrip(genl.IPVS_CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", {"attrs": [
        ("IPVS_SVC_ATTR_AF", 2), ("IPVS_SVC_ATTR_FWMARK", 7), ("IPVS_SVC_ATTR_SCHED_NAME", "rr")]})])
    assert ipvs.parse_service(msg) is None


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_kubeling_proxy_exits_with_the_reason(tmp_path):
    """``kubeling proxy --proxy-mode=ipvs`` stops at start-up with the message (in a netns of its
    own; the node IP is given, so no API server is needed before the mode starts)."""
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    r = subprocess.run(["unshare", "-n", str(Path(sys.executable).parent / "kubeling"), "proxy", "--kubeconfig",
                        str(tmp_path / "kubeconfig"), "--hostname-override", "n1", "--bind-address", "10.44.0.2",
                        "--proxy-mode", "ipvs", "--healthz-bind-address", "127.0.0.1:0",
                        "--metrics-bind-address", "127.0.0.1:0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "the kernel has no IPVS (ip_vs): load it with modprobe ip_vs, or use --proxy-mode=nftables" in r.stderr


def test_bad_addresses_are_left_out_not_fatal():
    bad = ServicePortName("default", "bad")
    svc = ServicePort("10.43.0.9", 80, external_ips=("nope", "192.0.2.9"), load_balancer_ips=("10.45.0.5",),
                      load_balancer_source_ranges=("10.0.0.0/33", "10.44.0.0/24"))
    st = desired_state({bad: svc, WEB: ServicePort("10.43.0.999", 80)},
                       {bad: [Endpoint("10.42.0.300", 80), LOCAL]}, NODE)
    assert set(st.virtual_servers) == {("10.43.0.9", "TCP", 80), ("192.0.2.9", "TCP", 80), ("10.45.0.5", "TCP", 80)}
    assert rs_of(st, "10.43.0.9", 80) == {"10.42.0.10:8080"}
    assert st.sets["KUBE-LOAD-BALANCER-SOURCE-CIDR"] == {("10.45.0.5", "tcp", 80, "10.44.0.0/24")}
