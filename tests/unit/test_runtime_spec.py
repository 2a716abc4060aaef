"""OCI config generation (`runtime.spec`) and the pod's managed files (`runtime.sandbox`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeling.kubelet.runtime import (
    ContainerConfig,
    DNSConfig,
    Image,
    LinuxResources,
    Mount,
    SandboxConfig,
    SecurityContext,
    sandbox,
    spec,
)


@pytest.mark.parametrize("add, drop, privileged, has, lacks", [
    pytest.param([], [], False, ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                 ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"], id="defaults"),
    pytest.param(["NET_ADMIN"], ["KILL"], False, ["CAP_NET_ADMIN"], ["CAP_KILL"], id="add-drop"),
    pytest.param(["CAP_SYS_TIME"], [], False, ["CAP_SYS_TIME"], [], id="add-with-prefix"),
    pytest.param(["NET_BIND_SERVICE"], ["ALL"], False, ["CAP_NET_BIND_SERVICE"],
                 ["CAP_CHOWN", "CAP_KILL"], id="drop-all-then-add"),
    pytest.param(["ALL"], [], False, ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"], [], id="add-all"),
    pytest.param([], ["ALL"], True, ["CAP_SYS_ADMIN"], [], id="privileged-ignores-drop"),
])
def test_capabilities(add, drop, privileged, has, lacks):
    caps = spec.capabilities(add, drop, privileged)
    assert all(c in caps for c in has) and not any(c in caps for c in lacks)


def test_drop_all_leaves_nothing():
    assert spec.capabilities([], ["ALL"], False) == []


@pytest.fixture
def image_root(tmp_path):
    etc = tmp_path / "rootfs" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                "redis:x:999:1000::/data:/bin/false\n")
    (etc / "group").write_text("root:x:0:\nredis:x:1000:\nextra:x:2000:redis\n")
    return tmp_path / "rootfs"


@pytest.mark.parametrize("image_user, run_as_user, run_as_group, supplemental, expected", [
    pytest.param("", None, None, [], {"uid": 0, "gid": 0}, id="root-default"),
    pytest.param("redis", None, None, [], {"uid": 999, "gid": 1000, "additionalGids": [2000]},
                 id="name-from-passwd-with-groups"),
    pytest.param("1234", None, None, [], {"uid": 1234, "gid": 0}, id="numeric-unknown"),
    pytest.param("redis:root", None, None, [], {"uid": 999, "gid": 0, "additionalGids": [2000]},
                 id="name-and-group-name"),
    pytest.param("redis", 1000, None, [], {"uid": 1000, "gid": 0}, id="runAsUser-wins"),
    pytest.param("", 999, 5, [7], {"uid": 999, "gid": 5, "additionalGids": [7, 2000]},
                 id="runAsUser-known-uid-runAsGroup-supplemental"),
])
def test_resolve_user(image_root, image_user, run_as_user, run_as_group, supplemental, expected):
    assert spec.resolve_user(image_root, image_user, run_as_user, run_as_group, supplemental) == expected


def test_resolve_user_unknown_name(image_root):
    with pytest.raises(ValueError, match="unable to find user nobody"):
        spec.resolve_user(image_root, "nobody", None, None, [])


def _container(tmp_path, sandbox_kw=None, spec_kw=None, **kw):
    cfg = ContainerConfig(name="c", image=Image(id="sha256:x", config={
        "Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["PATH=/bin", "A=image"],
        "WorkingDir": "/srv"}), **kw)
    sb = SandboxConfig(uid="u", name="p", namespace="ns", hostname="p", **(sandbox_kw or {}))
    (tmp_path / "sb").mkdir(exist_ok=True)
    (tmp_path / "sb" / "hostname").write_text("p\n")
    return spec.container_spec(cfg, sb, rootfs=tmp_path, cgroups_path="/kl/pod/c", pause_pid=42,
                               netns_path="/run/netns/kl-x", sandbox_dir=tmp_path / "sb",
                               pod_dir=tmp_path / "pod", memsw=True, **(spec_kw or {}))


SB_NS = {"ipc_path": "/a/sb/ns/ipc", "uts_path": "/a/sb/ns/uts"}


@pytest.mark.parametrize("sandbox_kw, spec_kw, expected", [
    pytest.param({}, SB_NS, {"pid": None, "mount": None, "ipc": "/a/sb/ns/ipc", "uts": "/a/sb/ns/uts",
                             "network": "/run/netns/kl-x"}, id="pause-less-joins-files"),
    pytest.param({"share_process_namespace": True}, SB_NS,
                 {"pid": "/proc/42/ns/pid", "mount": None, "ipc": "/a/sb/ns/ipc",
                  "uts": "/a/sb/ns/uts", "network": "/run/netns/kl-x"}, id="shared-pid-is-the-pause's"),
    pytest.param({"host_network": True}, {"ipc_path": "/a/sb/ns/ipc", "uts_path": ""},
                 {"pid": None, "mount": None, "ipc": "/a/sb/ns/ipc"}, id="host-network-only-ipc"),
    pytest.param({}, {}, {"pid": None, "mount": None, "ipc": "/proc/42/ns/ipc", "uts": "/proc/42/ns/uts",
                          "network": "/run/netns/kl-x"}, id="old-sandbox-through-its-pause"),
])
def test_container_namespaces(tmp_path, sandbox_kw, spec_kw, expected):
    s = _container(tmp_path, sandbox_kw, spec_kw)
    assert {n["type"]: n.get("path") for n in s["linux"]["namespaces"]} == expected


def test_container_spec_defaults(tmp_path):
    s = _container(tmp_path, env=[("A", "pod"), ("B", "b")])
    p = s["process"]
    assert p["args"] == ["/bin/app", "--serve"] and p["cwd"] == "/srv"
    assert "A=pod" in p["env"] and "B=b" in p["env"] and "PATH=/bin" in p["env"] and "HOSTNAME=p" in p["env"]
    ns = {n["type"]: n.get("path") for n in s["linux"]["namespaces"]}
    assert ns == {"pid": None, "mount": None, "ipc": "/proc/42/ns/ipc", "uts": "/proc/42/ns/uts",
                  "network": "/run/netns/kl-x"}
    assert s["linux"]["maskedPaths"] == spec.DEFAULT_MASKED_PATHS
    assert s["linux"]["readonlyPaths"] == spec.DEFAULT_READONLY_PATHS
    dests = {m["destination"]: m for m in s["mounts"]}
    assert dests["/etc/hosts"]["source"] == str(tmp_path / "pod" / "etc-hosts")
    assert "ro" in dests["/sys"]["options"] and s["root"]["readonly"] is False
    assert s["linux"]["cgroupsPath"] == "/kl/pod/c"


def test_container_spec_resources_security_and_mounts(tmp_path):
    s = _container(
        tmp_path, command=["sh"], tty=True,
        resources=LinuxResources(cpu_period=100000, cpu_quota=20000, cpu_shares=204,
                                 memory_limit_bytes=64 << 20, pids_limit=50),
        security=SecurityContext(run_as_user=1000, readonly_rootfs=True, no_new_privs=True),
        mounts=[Mount("/data", "/host/data", readonly=True),
                Mount("/shared", "/host/shared", propagation="rslave")])
    r = s["linux"]["resources"]
    assert r["cpu"] == {"shares": 204, "quota": 20000, "period": 100000}
    assert r["memory"] == {"limit": 64 << 20, "swap": 64 << 20} and r["pids"] == {"limit": 50}
    assert s["process"]["user"]["uid"] == 1000 and s["process"]["noNewPrivileges"] is True
    assert s["process"]["terminal"] is True and "TERM=xterm" in s["process"]["env"]
    assert s["root"]["readonly"] is True
    dests = {m["destination"]: m["options"] for m in s["mounts"]}
    assert dests["/data"] == ["rbind", "rprivate", "ro"]
    assert dests["/shared"] == ["rbind", "rslave", "rw"]
    assert s["linux"]["rootfsPropagation"] == "rslave"


def test_privileged_container_spec(tmp_path):
    s = _container(tmp_path, security=SecurityContext(privileged=True, no_new_privs=True))
    assert "maskedPaths" not in s["linux"] and "readonlyPaths" not in s["linux"]
    assert "CAP_SYS_ADMIN" in s["process"]["capabilities"]["bounding"]
    assert s["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in s["linux"]["devices"])
    assert s["process"]["noNewPrivileges"] is False


@pytest.mark.parametrize("host_network, namespaces, hostname", [
    pytest.param(False, {"pid", "ipc", "mount", "uts", "network"}, "web-0", id="pod-network"),
    pytest.param(True, {"pid", "ipc", "mount"}, None, id="host-network"),
])
def test_pause_spec(host_network, namespaces, hostname):
    cfg = SandboxConfig(uid="u", name="web-0", namespace="ns", hostname="web-0",
                        host_network=host_network, sysctls={"net.ipv4.ip_forward": "1"})
    s = spec.pause_spec(cfg, Path("/pause"), "/kl/pod/sb", "/run/netns/kl-1", "web-0")
    assert {n["type"] for n in s["linux"]["namespaces"]} == namespaces
    assert s.get("hostname") == hostname
    assert s["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"}


@pytest.mark.parametrize("host_network, expected", [
    pytest.param(False, {"pid": None, "mount": None, "ipc": "/sb/ns/ipc", "uts": "/sb/ns/uts",
                         "network": "/run/netns/kl-1"}, id="pod-network"),
    pytest.param(True, {"pid": None, "mount": None, "ipc": "/sb/ns/ipc"}, id="host-network"),
])
def test_pause_spec_joins_the_sandbox_namespaces(host_network, expected):
    """With the namespaces made already, the pause owns only the pid namespace; the hostname and
    sysctls were set when they were made."""
    cfg = SandboxConfig(uid="u", name="web-0", namespace="ns", hostname="web-0", host_network=host_network,
                        share_process_namespace=True, sysctls={"net.ipv4.ip_forward": "1"})
    s = spec.pause_spec(cfg, Path("/pause"), "/kl/pod/sb", "/run/netns/kl-1", "web-0",
                        ipc_path="/sb/ns/ipc", uts_path="" if host_network else "/sb/ns/uts")
    assert {n["type"]: n.get("path") for n in s["linux"]["namespaces"]} == expected
    assert "hostname" not in s and s["linux"]["sysctl"] == {}


def test_managed_hosts_file():
    cfg = SandboxConfig(uid="u", name="p", namespace="ns", hostname="web",
                        host_aliases=[("10.1.2.3", ["foo.remote", "bar.remote"])])
    assert sandbox.hosts_file(cfg, "10.244.0.5") == (
        "# Kubernetes-managed hosts file.\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "fe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\n"
        "fe00::2\tip6-allrouters\n"
        "10.244.0.5\tweb\n"
        "\n"
        "# Entries added by HostAliases.\n"
        "10.1.2.3\tfoo.remote\tbar.remote\n")


def test_host_network_hosts_file(tmp_path):
    (tmp_path / "hosts").write_text("127.0.0.1 localhost node1\n")
    cfg = SandboxConfig(uid="u", name="p", namespace="ns", host_network=True)
    assert sandbox.hosts_file(cfg, "", node_hosts=str(tmp_path / "hosts")) == (
        "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost node1\n")


@pytest.mark.parametrize("dns, expected", [
    pytest.param(DNSConfig(servers=["10.96.0.10"], searches=["ns.svc.cluster.local", "svc.cluster.local"],
                           options=["ndots:5"]),
                 "nameserver 10.96.0.10\nsearch ns.svc.cluster.local svc.cluster.local\noptions ndots:5\n",
                 id="cluster-first"),
    pytest.param(DNSConfig(), "nameserver 192.0.2.53\n", id="empty-uses-node-file"),
])
def test_resolv_conf(tmp_path, dns, expected):
    (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    cfg = SandboxConfig(uid="u", name="p", namespace="ns", dns=dns)
    assert sandbox.resolv_conf(cfg, node_resolv=str(tmp_path / "resolv.conf")) == expected


@pytest.mark.parametrize("own, preferred, expected", [
    pytest.param("0", -997, 0, id="guaranteed-raised-to-own"),
    pytest.param("0", 500, 500, id="burstable-kept"),
    pytest.param("-999", -997, -997, id="below-own-allowed"),
    pytest.param("junk", -997, -997, id="unreadable-own"),
])
def test_restrict_oom_score_adj(tmp_path, own, preferred, expected):
    (tmp_path / "adj").write_text(own + "\n")
    assert spec.restrict_oom_score_adj(preferred, str(tmp_path / "adj")) == expected


@pytest.mark.parametrize("cap_eff, name, held", [
    pytest.param("000001ffffffffff", "CAP_SYS_RESOURCE", True, id="full-set"),
    pytest.param("000001fffeffffff", "SYS_RESOURCE", False, id="sys-resource-dropped"),
    pytest.param("0000000000000001", "CAP_CHOWN", True, id="bit-zero"),
])
def test_has_capability(tmp_path, cap_eff, name, held):
    (tmp_path / "status").write_text(f"Name:\tx\nCapEff:\t{cap_eff}\n")
    assert spec.has_capability(name, str(tmp_path / "status")) is held


def test_restricted_container_spec_never_scores_below_the_runtime(tmp_path):
    own = int(Path("/proc/self/oom_score_adj").read_text())
    cfg = ContainerConfig(name="c", image=Image(id="sha256:x", config={"Cmd": ["sh"]}),
                          resources=LinuxResources(oom_score_adj=-997))
    sandbox_dir = tmp_path / "sb"
    sandbox_dir.mkdir()
    oci = spec.container_spec(cfg, SandboxConfig(uid="u", name="p", namespace="n"),
                              rootfs=tmp_path, cgroups_path="/x", pause_pid=1, netns_path="",
                              sandbox_dir=sandbox_dir, pod_dir=tmp_path, memsw=False,
                              restrict_oom=True)
    assert oci["process"].get("oomScoreAdj", 0) == max(-997, own)
