"""hostPort rules as the portmap plugin writes them, and parsing ``iptables -S`` back into ours.

The rules are exercised for real (DNAT from the node, from another pod, hairpin) in
tests/integration/test_pod_network.py; these pin down their exact shape."""

import pytest

from kubeling.kubelet.network.hostport import CHAIN, MASQ_CHAIN, dnat_rule, masq_rule, owned
from kubeling.kubelet.runtime import PortMapping

SID = "ab" * 32


@pytest.mark.parametrize("pm, expected", [
    pytest.param(PortMapping(8080, 30080), ["-p", "tcp", "-m", "tcp", "--dport", "30080", "-m", "comment",
                                            "--comment", SID, "-j", "DNAT", "--to-destination", "10.42.0.5:8080"],
                 id="tcp-any-address"),
    pytest.param(PortMapping(53, 5353, "UDP", "192.0.2.1"),
                 ["-p", "udp", "-d", "192.0.2.1/32", "-m", "udp", "--dport", "5353", "-m", "comment",
                  "--comment", SID, "-j", "DNAT", "--to-destination", "10.42.0.5:53"], id="udp-one-host-ip"),
    pytest.param(PortMapping(80, 8000, "TCP", "0.0.0.0"),
                 ["-p", "tcp", "-m", "tcp", "--dport", "8000", "-m", "comment", "--comment", SID,
                  "-j", "DNAT", "--to-destination", "10.42.0.5:80"], id="all-zero-host-ip-is-any"),
])
def test_dnat_rule(pm, expected):
    assert dnat_rule(SID, "10.42.0.5", pm) == expected


def test_masq_rule_matches_only_dnated_traffic_from_the_pod_network():
    rule = masq_rule(SID, "10.42.0.5", "10.42.0.0/24", PortMapping(8080, 30080))
    assert rule == ["-s", "10.42.0.0/24", "-d", "10.42.0.5/32", "-p", "tcp", "-m", "tcp", "--dport", "8080",
                    "-m", "conntrack", "--ctstate", "DNAT", "-m", "comment", "--comment", SID, "-j", "MASQUERADE"]


LISTING = [
    f"-N {CHAIN}",
    f'-A {CHAIN} -p tcp -m tcp --dport 30080 -m comment --comment {SID} -j DNAT --to-destination 10.42.0.5:8080',
    f'-A {CHAIN} -p tcp -m tcp --dport 30081 -m comment --comment {"cd" * 32} -j DNAT --to-destination 10.42.0.6:80',
    f'-A {CHAIN} -p tcp -m tcp --dport 9 -j DNAT --to-destination 10.42.0.9:9',  # not ours: no comment
    f'-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "kubeling hostports" -j {CHAIN}',
]


@pytest.mark.parametrize("sandbox, expected_ports", [
    pytest.param(SID, ["30080"], id="one-sandbox"),
    pytest.param(None, ["30080", "30081"], id="every-sandbox-not-the-jumps"),
    pytest.param("ef" * 32, [], id="none"),
])
def test_owned_rules_parse_back_for_deletion(sandbox, expected_ports):
    rules = owned(LISTING, sandbox)
    assert [r[r.index("--dport") + 1] for r in rules] == expected_ports
    assert all(r[0] == CHAIN for r in rules)  # ready for `iptables -D <chain> <spec>`


def test_owned_reads_the_masquerade_chain_too():
    line = "-A " + MASQ_CHAIN + " " + " ".join(masq_rule(SID, "10.42.0.5", "10.42.0.0/24", PortMapping(1, 2)))
    assert owned([line], SID) == [[MASQ_CHAIN, *masq_rule(SID, "10.42.0.5", "10.42.0.0/24", PortMapping(1, 2))]]
