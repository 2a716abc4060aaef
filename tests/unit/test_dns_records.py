"""The cluster zone's records (`kubeling.dns.kubernetes`) and the wire server (`kubeling.dns.server`),
fed with API objects as the informers deliver them and queried over real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord

from kubeling.dns.forward import Forward, parse_upstream, upstreams
from kubeling.dns.kubernetes import Kubernetes, reverse_to_ip
from kubeling.dns.metrics import Metrics
from kubeling.dns.server import DNSServer


def svc(name, ns="default", ip="10.43.0.20", ports=(("http", "TCP", 80),), type_="ClusterIP", ext="", selector=True):
    spec = {"type": type_, "ports": [{"name": n, "protocol": p, "port": num} for n, p, num in ports]}
    if type_ == "ExternalName":
        spec["externalName"] = ext
    else:
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip] if ip != "None" else ["None"]
    if selector:
        spec["selector"] = {"app": name}
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def eps(name, service, endpoints, ns="default", ports=(("http", "TCP", 8080),), family="IPv4"):
    return {"metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
            "addressType": family,
            "endpoints": [{"addresses": [ip], **({"hostname": host} if host else {}),
                           "conditions": {"ready": ready}} for ip, host, ready in endpoints],
            "ports": [{"name": n, "protocol": p, "port": num} for n, p, num in ports]}


def zone(**kw) -> Kubernetes:
    k = Kubernetes("cluster.local", dns_ip="10.43.0.10", **kw)
    for ns in ("default", "other"):
        k._on_namespace({"metadata": {"name": ns}}, False)
    k._on_service(svc("my-service", ip="10.43.0.20", ports=(("http", "TCP", 80), ("", "TCP", 81))), False)
    k._on_service(svc("nginx", ip="None", ports=(("web", "TCP", 80),)), False)
    k._on_slice(eps("nginx-abc", "nginx", [("10.42.1.5", "web-0", True), ("10.42.2.6", "web-1", True),
                                           ("10.42.3.7", "", False)], ports=(("web", "TCP", 8080),)), False)
    k._on_service(svc("empty", ip="None"), False)
    k._on_service(svc("ext", type_="ExternalName", ext="my.database.example."), False)
    k._on_service(svc("alias", type_="ExternalName", ext="my-service.default.svc.cluster.local"), False)
    return k


def ask(k: Kubernetes, name: str, qtype: str):
    return k.lookup(name + ".", name.lower(), getattr(QTYPE, qtype))


def rdata(ans) -> list[str]:
    return sorted(r.text for r in ans.answer)


def test_clusterip_a_and_nodata_for_aaaa():
    k = zone()
    a = ask(k, "my-service.default.svc.cluster.local", "A")
    assert a.rcode == RCODE.NOERROR and rdata(a) == ["10.43.0.20"] and a.answer[0].ttl == 5
    aaaa = ask(k, "my-service.default.svc.cluster.local", "AAAA")
    assert aaaa.rcode == RCODE.NOERROR and aaaa.answer == [] and aaaa.authority[0].rtype == QTYPE.SOA
    assert ask(k, "MY-SERVICE.Default.SVC.cluster.local", "A").answer   # case-insensitive


def test_nxdomain_with_soa():
    k = zone()
    for name in ("nope.default.svc.cluster.local", "my-service.ghost-ns.svc.cluster.local",
                 "x.y.z.cluster.local", "empty.default.svc.cluster.local"):
        a = ask(k, name, "A")
        assert a.rcode == RCODE.NXDOMAIN, name
        soa = a.authority[0]
        assert soa.rtype == QTYPE.SOA and soa.text.startswith("ns.dns.cluster.local. hostmaster.cluster.local. ")
        assert soa.text.endswith(" 7200 1800 86400 5") and soa.ttl == 5
    # empty non-terminals exist: no data, not NXDOMAIN
    for name in ("cluster.local", "svc.cluster.local", "default.svc.cluster.local", "default.pod.cluster.local"):
        a = ask(k, name, "A")
        assert a.rcode == RCODE.NOERROR and not a.answer, name


def test_headless_ready_endpoints_and_hostnames():
    k = zone()
    assert rdata(ask(k, "nginx.default.svc.cluster.local", "A")) == ["10.42.1.5", "10.42.2.6"]
    assert rdata(ask(k, "web-0.nginx.default.svc.cluster.local", "A")) == ["10.42.1.5"]
    assert ask(k, "10-42-2-6.nginx.default.svc.cluster.local", "A").rcode == RCODE.NXDOMAIN  # has a hostname
    assert ask(k, "web-9.nginx.default.svc.cluster.local", "A").rcode == RCODE.NXDOMAIN
    # the not-ready endpoint becomes ready: it answers under its dashed address
    k._on_slice(eps("nginx-abc", "nginx", [("10.42.1.5", "web-0", True), ("10.42.3.7", "", True)],
                    ports=(("web", "TCP", 8080),)), False)
    assert rdata(ask(k, "nginx.default.svc.cluster.local", "A")) == ["10.42.1.5", "10.42.3.7"]
    assert rdata(ask(k, "10-42-3-7.nginx.default.svc.cluster.local", "A")) == ["10.42.3.7"]
    k._on_slice(eps("nginx-abc", "nginx", []), True)
    assert ask(k, "nginx.default.svc.cluster.local", "A").rcode == RCODE.NXDOMAIN


def test_srv_named_ports():
    k = zone()
    a = ask(k, "_http._tcp.my-service.default.svc.cluster.local", "SRV")
    assert [r.text for r in a.answer] == ["0 100 80 my-service.default.svc.cluster.local."]
    assert [r.text for r in a.additional] == ["10.43.0.20"]
    assert ask(k, "_nope._tcp.my-service.default.svc.cluster.local", "SRV").rcode == RCODE.NXDOMAIN
    assert ask(k, "_http._udp.my-service.default.svc.cluster.local", "SRV").rcode == RCODE.NXDOMAIN
    h = ask(k, "_web._tcp.nginx.default.svc.cluster.local", "SRV")
    assert sorted(r.text for r in h.answer) == [
        "0 50 8080 web-0.nginx.default.svc.cluster.local.", "0 50 8080 web-1.nginx.default.svc.cluster.local."]
    assert sorted(r.text for r in h.additional) == ["10.42.1.5", "10.42.2.6"]
    # the bare service name answers every named port
    assert len(ask(k, "my-service.default.svc.cluster.local", "SRV").answer) == 1


def test_ptr_and_reverse_fallthrough():
    k = zone()
    a = ask(k, "20.0.43.10.in-addr.arpa", "PTR")
    assert rdata(a) == ["my-service.default.svc.cluster.local."]
    assert rdata(ask(k, "5.1.42.10.in-addr.arpa", "PTR")) == ["web-0.nginx.default.svc.cluster.local."]
    assert ask(k, "9.9.9.9.in-addr.arpa", "PTR") is None   # not ours: forwarded
    assert reverse_to_ip("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa") == "fd00::1"


def test_externalname_cname_and_pods_and_version():
    k = zone()
    a = ask(k, "ext.default.svc.cluster.local", "A")
    assert rdata(a) == ["my.database.example."] and a.answer[0].rtype == QTYPE.CNAME and a.chase == "my.database.example"
    assert rdata(ask(k, "10-42-0-9.default.pod.cluster.local", "A")) == ["10.42.0.9"]
    assert ask(k, "10-42-0-9.ghost.pod.cluster.local", "A").rcode == RCODE.NXDOMAIN
    assert ask(k, "not-an-ip.default.pod.cluster.local", "A").rcode == RCODE.NXDOMAIN
    assert rdata(ask(k, "dns-version.cluster.local", "TXT")) == ['"1.1.0"']
    assert ask(k, "example.com", "A") is None


def test_verified_pods():
    k = zone(pods="verified")
    assert ask(k, "10-42-0-9.default.pod.cluster.local", "A").rcode == RCODE.NXDOMAIN
    pod = {"metadata": {"name": "p", "namespace": "default"}, "status": {"podIP": "10.42.0.9"}}
    k._on_pod(pod, False)
    assert rdata(ask(k, "10-42-0-9.default.pod.cluster.local", "A")) == ["10.42.0.9"]
    k._on_pod(pod, True)
    assert ask(k, "10-42-0-9.default.pod.cluster.local", "A").rcode == RCODE.NXDOMAIN


def test_bad_objects_are_skipped():
    k = zone()
    gen = k.generation
    k._on_service({"metadata": {"name": "bad", "namespace": "default"}, "spec": {"ports": [{"port": "x"}]}}, False)
    assert k.generation == gen and ("default", "bad") not in k.services


def test_upstreams_never_include_ourselves(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example\nnameserver 10.43.0.10\nnameserver 192.0.2.53 # x\nnameserver 10.44.0.1\n")
    got = upstreams([], str(conf), exclude={("10.43.0.10", 53), ("10.44.0.1", 53)})
    assert got == [("192.0.2.53", 53)]
    assert parse_upstream("[fd00::1]:5353") == ("fd00::1", 5353) and parse_upstream("127.0.0.1:53") == ("127.0.0.1", 53)


# -- the wire server ---------------------------------------------------------------------------


class _Upstream(asyncio.DatagramProtocol):
    """A resolver on loopback that answers every A question with 192.0.2.1 (and TC for 'big.')."""

    def connection_made(self, t):
        self.t = t

    def datagram_received(self, data, addr):
        q = DNSRecord.parse(data)
        r = q.reply()
        if str(q.q.qname) == "big.test.":
            r.header.tc = 1
        else:
            r.add_answer(*RR.fromZone(f"{q.q.qname} 60 A 192.0.2.1"))
        self.t.sendto(r.pack(), addr)


async def _query(port: int, name: str, qtype: str, tcp: bool = False) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    data = q.pack()
    loop = asyncio.get_running_loop()
    if tcp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(struct.pack("!H", len(data)) + data)
        n = struct.unpack("!H", await reader.readexactly(2))[0]
        out = await reader.readexactly(n)
        writer.close()
        reply = DNSRecord.parse(out)
        assert reply.header.id == q.header.id
        return reply
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, data)
        reply = DNSRecord.parse(await asyncio.wait_for(loop.sock_recv(sock, 65535), 5))
        assert reply.header.id == q.header.id
        return reply
    finally:
        sock.close()


def test_server_answers_forwards_caches_and_counts():
    async def main():
        loop = asyncio.get_running_loop()
        up, _ = await loop.create_datagram_endpoint(_Upstream, local_addr=("127.0.0.1", 0))
        up_port = up.get_extra_info("sockname")[1]
        metrics = Metrics("dns://127.0.0.1:0")
        k = zone()
        server = DNSServer(k, Forward([("127.0.0.1", up_port)], timeout=1, metrics=metrics), metrics)
        port = await server.start("127.0.0.1", 0)
        try:
            r = await _query(port, "my-service.default.svc.cluster.local", "A")
            assert r.header.aa and r.header.rcode == RCODE.NOERROR and [str(x.rdata) for x in r.rr] == ["10.43.0.20"]
            r2 = await _query(port, "my-service.default.svc.cluster.local", "A")   # the cache hit
            assert [str(x.rdata) for x in r2.rr] == ["10.43.0.20"]
            assert 'coredns_cache_hits_total{server="dns://127.0.0.1:0",type="success",view="",zone="."} 1.0' in \
                metrics.exposition().decode()
            k._on_service(svc("my-service", ip="10.43.0.99"), False)               # an event clears the cache
            r3 = await _query(port, "my-service.default.svc.cluster.local", "A")
            assert [str(x.rdata) for x in r3.rr] == ["10.43.0.99"]
            nx = await _query(port, "nope.default.svc.cluster.local", "A", tcp=True)
            assert nx.header.rcode == RCODE.NXDOMAIN and nx.auth[0].rtype == QTYPE.SOA
            f = await _query(port, "www.example.test", "A")
            assert f.header.rcode == RCODE.NOERROR and [str(x.rdata) for x in f.rr] == ["192.0.2.1"]
            c = await _query(port, "ext.default.svc.cluster.local", "A")      # CNAME then the target's A
            assert [x.rtype for x in c.rr] == [QTYPE.CNAME, QTYPE.A]
            al = await _query(port, "alias.default.svc.cluster.local", "A")   # a CNAME inside the zone
            assert [str(x.rdata) for x in al.rr] == ["my-service.default.svc.cluster.local.", "10.43.0.99"]
            server.forward.upstreams = [("127.0.0.1", 9)]                     # nobody there
            server.forward.timeout = 0.3
            sf = await _query(port, "down.example.test", "A")
            assert sf.header.rcode == RCODE.SERVFAIL
            text = metrics.exposition().decode()
            assert 'coredns_dns_requests_total{family="1",proto="udp",server="dns://127.0.0.1:0",type="A",view="",zone="."}' in text
            assert 'rcode="NXDOMAIN"' in text and 'plugin="forward"' in text and "coredns_cache_hits_total" in text
            assert 'coredns_forward_responses_total{rcode="NOERROR",to="127.0.0.1:' in text
            # many queries at once share the upstream socket, each getting its own answer
            names = [f"n{i}.example.test" for i in range(50)]
            server.forward.upstreams = [("127.0.0.1", up_port)]
            many = await asyncio.gather(*(_query(port, n, "A") for n in names))
            assert [str(r.q.qname) for r in many] == [n + "." for n in names]
            assert all([str(x.rdata) for x in r.rr] == ["192.0.2.1"] for r in many)
            assert len(server.forward._sockets) == 2   # the live upstream's, and port 9's
        finally:
            await server.close()
            server.forward.close()
            up.close()
    asyncio.run(main())


def test_server_truncates_big_udp_answers_and_tcp_carries_them():
    async def main():
        k = zone()
        many = [(f"10.42.9.{i}", f"pod-{i}", True) for i in range(1, 60)]
        k._on_service(svc("big", ip="None"), False)
        k._on_slice(eps("big-1", "big", many), False)
        server = DNSServer(k, None)
        port = await server.start("127.0.0.1", 0)
        try:
            r = await _query(port, "big.default.svc.cluster.local", "A")
            assert r.header.tc and not r.rr
            t = await _query(port, "big.default.svc.cluster.local", "A", tcp=True)
            assert not t.header.tc and len(t.rr) == 59
            # garbage gets FORMERR (or nothing), never a crash
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff")
            bad = await asyncio.wait_for(loop.sock_recv(sock, 512), 5)
            sock.close()
            assert bad[:2] == b"\x12\x34" and bad[3] & 0x0F == RCODE.FORMERR
            ok = await _query(port, "my-service.default.svc.cluster.local", "A")
            assert ok.rr
        finally:
            await server.close()
    asyncio.run(main())


@pytest.mark.parametrize("name", ["_http._tcp.my-service.default.svc.cluster.local"])
def test_srv_over_the_wire_has_additional_records(name):
    async def main():
        server = DNSServer(zone(), None)
        port = await server.start("127.0.0.1", 0)
        try:
            r = await _query(port, name, "SRV")
            assert r.rr[0].rtype == QTYPE.SRV and r.ar and str(r.ar[0].rdata) == "10.43.0.20"
        finally:
            await server.close()
    asyncio.run(main())


def test_pod_resolv_conf_cluster_first_appends_the_host_search(tmp_path):
    """kubelet's resolv.conf for ClusterFirst pods: the cluster DNS IP, the cluster search list,
    then the host's search domains (upstream's generateSearchesForDNSClusterFirst), ndots:5."""
    from kubeling.kubelet import kuberuntime
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 192.0.2.1\nsearch corp.example cluster.local\n")
    pod = {"metadata": {"name": "p", "namespace": "team"}, "spec": {"containers": []}}
    cfg = kuberuntime.dns_config(pod, cluster_dns=["10.43.0.10"], cluster_domain="cluster.local", host_resolv=host)
    assert cfg.servers == ["10.43.0.10"] and cfg.options == ["ndots:5"]
    assert cfg.searches == ["team.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]


def test_wire_echoes_the_question_and_edns_and_falls_back_for_odd_shapes():
    from dnslib import EDNS0
    from kubeling.dns import wire

    async def main():
        server = DNSServer(zone(), None)
        try:
            q = DNSRecord.question("My-Service.DEFAULT.svc.cluster.local", "A")
            q.add_ar(EDNS0(udp_len=4096))
            r = DNSRecord.parse(await server.handle(bytes(q.pack()), "udp"))
            assert str(r.q.qname) == "My-Service.DEFAULT.svc.cluster.local."
            assert [str(x.rdata) for x in r.rr] == ["10.43.0.20"] and str(r.rr[0].rname) == str(r.q.qname)
            assert [x.rtype for x in r.ar] == [QTYPE.OPT] and r.header.aa and r.header.ra
            # a question name written with a compression pointer: the dnslib path answers it
            raw = bytes(DNSRecord.question("x", "A").pack())[:12]
            raw = raw + b"\x07default\x03svc\x07cluster\x05local\x00"
            assert wire.parse_query(raw + b"\x00\x01\x00\x01") is not None
            odd = bytearray(raw[:12]) + b"\x0amy-service\xc0\x0c" + b"\x00\x01\x00\x01"
            assert wire.parse_query(bytes(odd)) is None
            reply = await server.handle(bytes(odd), "udp")
            assert reply[:2] == odd[:2] and reply[3] & 0x0F in (RCODE.FORMERR, RCODE.NXDOMAIN, RCODE.NOERROR)
            # NOTIMP for another opcode (an UPDATE)
            upd = bytearray(q.pack())
            upd[2] = (upd[2] & 0x87) | (5 << 3)
            assert (await server.handle(bytes(upd), "udp"))[3] & 0x0F == RCODE.NOTIMP
        finally:
            await server.close()
    asyncio.run(main())


def test_ipv6_service_aaaa_and_ip6_arpa_ptr():
    k = zone()
    k._on_service(svc("six", ip="fd00:43:0::20"), False)
    assert rdata(ask(k, "six.default.svc.cluster.local", "AAAA")) == ["fd00:43:0::20"]
    a = ask(k, "six.default.svc.cluster.local", "A")
    assert a.rcode == RCODE.NOERROR and not a.answer
    nibbles = ".".join(reversed("fd000043000000000000000000000020")) + ".ip6.arpa"
    assert rdata(ask(k, nibbles, "PTR")) == ["six.default.svc.cluster.local."]


def test_kube_dns_service_ensure_creates_repairs_and_respects_another_dns():
    from kubeling.client.fake import FakeClient
    from kubeling.dns import service

    async def main():
        client = FakeClient({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
        await service.ensure(client, cluster_ip="10.43.0.10", address="10.44.0.1", dns_port=53, metrics_port=9153)
        svc = await client.get("", "v1", "services", "kube-dns", namespace="kube-system")
        assert svc["spec"]["clusterIP"] == "10.43.0.10" and "selector" not in svc["spec"]
        assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns"
        sl = await client.get("discovery.k8s.io", "v1", "endpointslices", "kube-dns", namespace="kube-system")
        assert sl["endpoints"][0]["addresses"] == ["10.44.0.1"] and sl["addressType"] == "IPv4"
        assert sl["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"
        assert sl["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "kubeling-dns"
        ep = await client.get("", "v1", "endpoints", "kube-dns", namespace="kube-system")
        assert ep["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"] == "true"
        # idempotent; then the server moves: the endpoints follow
        client.clear_actions()
        await service.ensure(client, cluster_ip="10.43.0.10", address="10.44.0.1", dns_port=53, metrics_port=9153)
        assert client.filter_actions("update") == [] and client.filter_actions("create") == []
        await service.ensure(client, cluster_ip="10.43.0.10", address="10.44.0.7", dns_port=5353, metrics_port=0)
        sl = await client.get("discovery.k8s.io", "v1", "endpointslices", "kube-dns", namespace="kube-system")
        assert sl["endpoints"][0]["addresses"] == ["10.44.0.7"] and {p["port"] for p in sl["ports"]} == {5353}
        ep = await client.get("", "v1", "endpoints", "kube-dns", namespace="kube-system")
        assert ep["subsets"][0]["addresses"] == [{"ip": "10.44.0.7"}]
        # a kube-dns Service with a selector is another DNS's: its endpoints are left alone
        other = FakeClient({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}},
                           {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace":
                            "kube-system"}, "spec": {"clusterIP": "10.43.0.10", "selector": {"k8s-app": "kube-dns"}}})
        await service.ensure(other, cluster_ip="10.43.0.10", address="10.44.0.1", dns_port=53, metrics_port=9153)
        assert other.filter_actions("create") == []
    asyncio.run(main())
