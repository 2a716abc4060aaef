"""The overlay's computation from Node objects: peers, routes, neighbours, FDB entries, the
annotations a node publishes and its masquerade rules (`kubeling.kubelet.network.overlay`)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from kubeling.kubelet.network import overlay as o


def node(name, ip="", cidr="", annotations=None):
    n = {"metadata": {"name": name, "annotations": annotations or {}}, "spec": {}, "status": {"addresses": []}}
    if cidr:
        n["spec"]["podCIDR"] = cidr
    if ip:
        n["status"]["addresses"] = [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]
    return n


def vx(name, ip, cidr, mac=None, public_ip=None):
    return node(name, ip, cidr, o.node_annotations("vxlan", public_ip or ip, mac or o.vtep_mac(ip)))


def test_vtep_mac_is_stable_locally_administered_unicast():
    mac = o.vtep_mac("10.44.0.2")
    assert mac == "0e:6b:0a:2c:00:02" == o.vtep_mac("10.44.0.2")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01


def test_annotations_are_flannels():
    ann = o.node_annotations("vxlan", "10.44.0.2", "0e:6b:0a:2c:00:02")
    assert ann == {"flannel.alpha.coreos.com/backend-type": "vxlan",
                   "flannel.alpha.coreos.com/backend-data": '{"VNI":1,"VtepMAC":"0e:6b:0a:2c:00:02"}',
                   "flannel.alpha.coreos.com/public-ip": "10.44.0.2",
                   "flannel.alpha.coreos.com/kube-subnet-manager": "true"}
    assert o.node_annotations("host-gw", "10.44.0.2")["flannel.alpha.coreos.com/backend-data"] == "null"


def test_vxlan_desired_state():
    nodes = [vx("node-1", "10.44.0.2", "10.42.0.0/24"), vx("node-2", "10.44.0.3", "10.42.1.0/24"),
             vx("node-3", "10.44.0.4", "10.42.2.0/24", public_ip="10.44.0.40")]
    peers = o.peers(nodes, "node-1", "vxlan", "10.42.0.0/24")
    assert [p.name for p in peers] == ["node-2", "node-3"]
    want = o.desired_state(peers, "vxlan")
    assert want.routes == {
        "10.42.1.0/24": o.Route(ipaddress.ip_network("10.42.1.0/24"), "10.42.1.0", onlink=True),
        "10.42.2.0/24": o.Route(ipaddress.ip_network("10.42.2.0/24"), "10.42.2.0", onlink=True)}
    assert want.neighbours == {"10.42.1.0": o.vtep_mac("10.44.0.3"), "10.42.2.0": o.vtep_mac("10.44.0.4")}
    # the public-ip annotation wins over the InternalIP
    assert want.fdb == {o.vtep_mac("10.44.0.3"): "10.44.0.3", o.vtep_mac("10.44.0.4"): "10.44.0.40"}


def test_vxlan_skips_peers_until_they_can_be_reached():
    nodes = [vx("me", "10.44.0.2", "10.42.0.0/24"),
             node("no-annotations", "10.44.0.3", "10.42.1.0/24"),
             vx("no-cidr", "10.44.0.4", ""),
             node("host-gw-node", "10.44.0.5", "10.42.3.0/24", o.node_annotations("host-gw", "10.44.0.5")),
             node("bad-data", "10.44.0.6", "10.42.4.0/24", {**o.node_annotations("vxlan", "10.44.0.6", "x"),
                                                             o.BACKEND_DATA: "{not json"}),
             node("no-ip", "", "10.42.5.0/24", {o.BACKEND_TYPE: "vxlan", o.BACKEND_DATA: json.dumps(
                 {"VNI": 1, "VtepMAC": "0e:6b:00:00:00:01"})}),
             vx("ok", "10.44.0.7", "10.42.6.0/24")]
    assert [p.name for p in o.peers(nodes, "me", "vxlan", "10.42.0.0/24")] == ["ok"]


def test_host_gw_needs_no_annotations():
    nodes = [node("a", "10.44.0.2", "10.42.0.0/24"), node("b", "10.44.0.3", "10.42.1.0/24"),
             node("c", "10.44.0.4", "")]
    want = o.desired_state(o.peers(nodes, "a", "host-gw", "10.42.0.0/24"), "host-gw")
    assert want.routes == {"10.42.1.0/24": o.Route(ipaddress.ip_network("10.42.1.0/24"), "10.44.0.3")}
    assert want.neighbours == {} and want.fdb == {}


def test_control_plane_routes_every_node():
    nodes = [node("a", "10.44.0.2", "10.42.0.0/24"), node("b", "10.44.0.3", "10.42.1.0/24")]
    want = o.desired_state(o.peers(nodes, "", "host-gw"), "host-gw")
    assert {d: r.gateway for d, r in want.routes.items()} == {"10.42.0.0/24": "10.44.0.2",
                                                              "10.42.1.0/24": "10.44.0.3"}


def test_a_node_claiming_our_subnet_or_a_duplicate_subnet():
    nodes = [node("a", "10.44.0.2", "10.42.0.0/24"), node("stale", "10.44.0.9", "10.42.0.0/24"),
             node("b", "10.44.0.3", "10.42.1.0/24"), node("c", "10.44.0.4", "10.42.1.0/24")]
    want = o.desired_state(o.peers(nodes, "a", "host-gw", "10.42.0.0/24"), "host-gw")
    assert {d: r.gateway for d, r in want.routes.items()} == {"10.42.1.0/24": "10.44.0.3"}


def test_masq_rules():
    rules = o.masq_rules("10.42.1.0/24", "10.42.0.0/16").splitlines()
    assert rules[:2] == ["*nat", ":FLANNEL-POSTRTG - [0:0]"]
    c = '-m comment --comment "flanneld masq"'
    assert f"-A FLANNEL-POSTRTG -s 10.42.1.0/24 -d 10.42.0.0/16 {c} -j RETURN" in rules
    assert f"-A FLANNEL-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully" in rules
    assert f"-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.1.0/24 {c} -j RETURN" in rules
    # pod-to-pod RETURNs come before any MASQUERADE
    first_masq = next(i for i, r in enumerate(rules) if "MASQUERADE" in r)
    assert all("RETURN" in r for r in rules[2:first_masq])
    assert ":FLANNEL-FWD - [0:0]" in rules


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError):
        o.Overlay(None, "n", backend="udp", node_ip="10.44.0.2", pod_cidr="10.42.0.0/24", cluster_cidr="10.42.0.0/16")
