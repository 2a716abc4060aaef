"""`namespaces.sysctl_path`: which pod sysctls the pause-less sandbox writes, and where.

A sysctl outside the pod's namespaces would be the node's: it must be refused, never written.
(Making namespaces needs root: tests/integration/test_runc_namespaces.py.)
"""

from __future__ import annotations

import pytest

from kubeling.kubelet.runtime import namespaces


@pytest.mark.parametrize("key, host_network, expected", [
    pytest.param("net.ipv4.ip_forward", False, "/proc/sys/net/ipv4/ip_forward", id="net-dotted"),
    pytest.param("net/ipv4/ip_forward", False, "/proc/sys/net/ipv4/ip_forward", id="net-slashed"),
    pytest.param("net.ipv4.conf.eth0/100.rp_filter", False, "/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
                 id="dotted-with-vlan-interface"),
    pytest.param("net/ipv4/conf/eth0.100/rp_filter", False, "/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
                 id="slashed-with-vlan-interface"),
    pytest.param("kernel.shm_rmid_forced", True, "/proc/sys/kernel/shm_rmid_forced", id="ipc-on-host-network"),
    pytest.param("fs.mqueue.msg_max", False, "/proc/sys/fs/mqueue/msg_max", id="mqueue"),
    pytest.param("kernel.domainname", False, "/proc/sys/kernel/domainname", id="uts"),
])
def test_sysctl_path(key, host_network, expected):
    assert namespaces.sysctl_path(key, host_network) == expected


@pytest.mark.parametrize("key, host_network, message", [
    pytest.param("kernel.panic", False, "not in a separate kernel namespace", id="node-wide"),
    pytest.param("vm.swappiness", False, "not in a separate kernel namespace", id="vm"),
    pytest.param("net.ipv4.ip_forward", True, "host's network", id="net-on-host-network"),
    pytest.param("kernel.hostname", True, "host's network or UTS", id="uts-on-host-network"),
    pytest.param("net.ipv4..ip_forward", False, "not a sysctl name", id="empty-component"),
    pytest.param("net/../../kernel/panic", False, "not a sysctl name", id="traversal"),
])
def test_sysctl_refused(key, host_network, message):
    with pytest.raises(ValueError, match=message):
        namespaces.sysctl_path(key, host_network)
