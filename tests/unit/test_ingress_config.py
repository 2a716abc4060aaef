"""The Ingress model and nginx.conf rendering (kubeling.ingress.controller/template), and that
Debian's real nginx accepts what is rendered (``nginx -t``)."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kubeling.ingress import ssl
from kubeling.ingress.controller import build_configuration, is_ours, our_classes
from kubeling.ingress.template import render, server_name
from kubeling.ingress.types import RenderOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.ingress_tls import make_cert  # noqa: E402


def ingress(name, rules=None, *, ns="default", default=None, tls=None, created="2026-01-01T00:00:00Z", cls=None):
    spec = {"rules": rules or []}
    if default:
        spec["defaultBackend"] = default
    if tls:
        spec["tls"] = tls
    if cls:
        spec["ingressClassName"] = cls
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created, "generation": 1}, "spec": spec}


def backend(svc, port=80):
    return {"service": {"name": svc, "port": {"number": port} if isinstance(port, int) else {"name": port}}}


def rule(host, *paths):
    return {"host": host, "http": {"paths": [{"path": p, "pathType": t, "backend": b} for p, t, b in paths]}} \
        if host else {"http": {"paths": [{"path": p, "pathType": t, "backend": b} for p, t, b in paths]}}


def service(name, ports, ns="default", type_="ClusterIP"):
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"type": type_, "ports": ports}}


def slice_(svc, ips, port=8080, port_name="", ns="default", ready=True):
    return {"metadata": {"name": f"{svc}-abc", "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips]}


def world(*svcs):
    services, slices = {}, {}
    for name, ips in svcs:
        services[f"default/{name}"] = service(name, [{"port": 80, "targetPort": 8080, "protocol": "TCP"}])
        slices[f"default/{name}"] = [slice_(name, ips)]
    return services, slices


def build(ings, services, slices, secrets=None, tmp="/tmp/certs"):
    return build_configuration(ings, services, slices, secrets or {}, tmp)


def text_of(cfg, tmp_path, **kw):
    return render(cfg, RenderOptions(prefix=str(tmp_path), **kw))


def server_block(text: str, name: str) -> str:
    start = text.index(f"server_name {name};")
    return text[start:text.index("\n    }\n", text.index("location", start))]


def locations(block: str) -> list[tuple[str, str]]:
    """(location spec, what it does) in file order."""
    out = []
    for m in re.finditer(r"location (.*?) \{\n(.*?)\n        \}", block, re.S):
        body = m.group(2)
        what = re.search(r"proxy_pass https?://(\S+);|return (?!308)(\d+);", body)
        out.append((m.group(1), what.group(1) or what.group(2)))
    return out


def test_paths_longest_first_exact_before_prefix_and_prefix_is_element_wise(tmp_path):
    services, slices = world(("a", ["10.42.0.5"]), ("b", ["10.42.1.5"]), ("c", ["10.42.2.5"]))
    ing = ingress("web", [rule("foo.example.com", ("/", "Prefix", backend("a")),
                               ("/api/", "Prefix", backend("b")),          # trailing slash ignored
                               ("/api/v1/health", "Exact", backend("c")),
                               ("/api", "Exact", backend("c")),            # Exact beats Prefix /api
                               ("/static", "ImplementationSpecific", backend("a")))])
    cfg, problems = build([ing], services, slices)
    assert problems == []
    locs = locations(server_block(text_of(cfg, tmp_path), "foo.example.com"))
    assert locs == [('= "/api/v1/health"', "default-c-80"),
                    ('= "/static"', "default-a-80"),
                    ('"/static/"', "default-a-80"),
                    ('= "/api"', "default-c-80"),
                    ('"/api/"', "default-b-80"),
                    ('"/"', "default-a-80")]


def test_older_ingress_wins_a_contested_path(tmp_path):
    services, slices = world(("a", ["10.42.0.5"]), ("b", ["10.42.1.5"]))
    new = ingress("new", [rule("h.example", ("/x", "Prefix", backend("b")))], created="2026-02-01T00:00:00Z")
    old = ingress("old", [rule("h.example", ("/x", "Prefix", backend("a")))], created="2026-01-01T00:00:00Z")
    cfg, _ = build([new, old], services, slices)
    locs = dict(locations(server_block(text_of(cfg, tmp_path), "h.example")))
    assert locs['= "/x"'] == locs['"/x/"'] == "default-a-80"
    assert locs['"/"'] == "404"


def test_wildcard_host_is_one_label_and_exact_hosts_are_plain(tmp_path):
    assert server_name("*.foo.example.com") == r"~^[^.]+\.foo\.example\.com$"
    pattern = re.compile(server_name("*.foo.example.com")[1:])
    assert pattern.match("bar.foo.example.com")
    assert not pattern.match("baz.bar.foo.example.com") and not pattern.match("foo.example.com")
    services, slices = world(("a", ["10.42.0.5"]))
    cfg, _ = build([ingress("w", [rule("*.foo.example.com", ("/", "Prefix", backend("a"))),
                                  rule("exact.example.com", ("/", "Prefix", backend("a")))])], services, slices)
    text = text_of(cfg, tmp_path)
    assert "server_name exact.example.com;" in text
    assert r"server_name ~^[^.]+\.foo\.example\.com$;" in text


def test_default_backend_and_404_catch_all(tmp_path):
    services, slices = world(("a", ["10.42.0.5"]), ("d", ["10.42.3.5"]))
    cfg, _ = build([ingress("x", [rule("h.example", ("/app", "Prefix", backend("a")))])], services, slices)
    text = text_of(cfg, tmp_path)
    assert locations(server_block(text, "_")) == [('"/"', "404")]
    assert locations(server_block(text, "h.example"))[-1] == ('"/"', "404")
    assert "listen 0.0.0.0:80 default_server;" in text

    cfg, _ = build([ingress("x", [rule("h.example", ("/app", "Prefix", backend("a")))], default=backend("d")),
                    ingress("y", default=backend("a"), created="2026-03-01T00:00:00Z")], services, slices)
    text = text_of(cfg, tmp_path)
    assert locations(server_block(text, "_")) == [('"/"', "default-d-80")]            # the oldest one's
    assert locations(server_block(text, "h.example"))[-1] == ('"/"', "default-d-80")  # its own hosts too


def test_upstreams_are_ready_endpoints_by_port_number_or_name_and_503_without(tmp_path):
    services = {"default/web": service("web", [{"name": "http", "port": 80, "protocol": "TCP"},
                                               {"name": "admin", "port": 81, "protocol": "TCP"}]),
                "default/empty": service("empty", [{"port": 80, "protocol": "TCP"}])}
    slices = {"default/web": [slice_("web", ["10.42.0.5", "10.42.0.6"], 8080, "http"),
                              slice_("web", ["10.42.0.7"], 8080, "http", ready=False),
                              slice_("web", ["10.42.0.5"], 9090, "admin")],
              "default/empty": [slice_("empty", ["10.42.0.9"], ready=False)]}
    ing = ingress("x", [rule("h.example", ("/by-name", "Prefix", backend("web", "http")),
                             ("/admin", "Prefix", backend("web", 81)),
                             ("/empty", "Prefix", backend("empty")),
                             ("/missing", "Prefix", backend("nope")))])
    cfg, problems = build([ing], services, slices)
    text = text_of(cfg, tmp_path)
    assert re.search(r"upstream default-web-http \{\n\s+server 10.42.0.5:8080 max_fails=0;\n"
                     r"\s+server 10.42.0.6:8080 max_fails=0;\n", text)
    assert "10.42.0.7" not in text
    assert re.search(r"upstream default-web-81 \{\n\s+server 10.42.0.5:9090 max_fails=0;", text)
    locs = dict(locations(server_block(text, "h.example")))
    assert locs['"/empty/"'] == locs['"/missing/"'] == "503"
    assert "upstream default-empty-80" not in text
    assert sorted(p.message.split(" ")[1] for p in problems) == ["default/empty:80", "default/nope:80"]


def tls_secret(name, crt, key, ns="default", type_="kubernetes.io/tls"):
    return {"metadata": {"name": name, "namespace": ns}, "type": type_,
            "data": {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()}}


def test_tls_hosts_get_their_certificate_and_a_308_redirect(tmp_path):
    services, slices = world(("a", ["10.42.0.5"]))
    crt, key = make_cert("secure.example")
    _, other_key = make_cert("x")
    secrets = {"default/good": tls_secret("good", crt, key), "default/bad": tls_secret("bad", crt, other_key)}
    ing = ingress("x", [rule("secure.example", ("/", "Prefix", backend("a"))),
                        rule("plain.example", ("/", "Prefix", backend("a"))),
                        rule("broken.example", ("/", "Prefix", backend("a")))],
                  tls=[{"hosts": ["secure.example"], "secretName": "good"},
                       {"hosts": ["broken.example"], "secretName": "bad"}])
    cfg, problems = build([ing], services, slices, secrets, tmp_path)
    assert [p.reason for p in problems] == ["InvalidCertificate"]
    assert "does not match" in problems[0].message
    text = text_of(cfg, tmp_path, https_port=8443)
    secure = server_block(text, "secure.example")
    pem = cfg.servers[[s.hostname for s in cfg.servers].index("secure.example")].ssl
    assert f'ssl_certificate "{pem.pem_path}";' in secure and pem.hosts == ["secure.example"]
    assert "return 308 https://$host:8443$request_uri;" in secure
    assert "add_header Strict-Transport-Security $hsts_header always;" in secure
    assert "listen 0.0.0.0:8443 ssl;" in secure
    for plain in ("plain.example", "broken.example"):
        assert "ssl_certificate" not in server_block(text, plain) and "308" not in server_block(text, plain)
    with pytest.raises(ssl.InvalidCertificate, match="type"):
        ssl.pem_from_secret(tls_secret("o", crt, key, type_="Opaque"))


def test_class_selection():
    classes = [{"metadata": {"name": "nginx", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
                "spec": {"controller": "kubeling.io/ingress-nginx"}},
               {"metadata": {"name": "other"}, "spec": {"controller": "example.com/other"}}]
    names, default = our_classes(classes)
    assert names == {"nginx"} and default
    assert is_ours(ingress("a", cls="nginx"), names, default)
    assert not is_ours(ingress("a", cls="other"), names, default)
    assert is_ours(ingress("a"), names, default)
    assert not is_ours(ingress("a"), names, False)
    legacy = ingress("a")
    legacy["metadata"]["annotations"] = {"kubernetes.io/ingress.class": "other"}
    assert not is_ours(legacy, names, default)


def test_render_is_deterministic_and_real_nginx_accepts_it(tmp_path):
    services, slices = world(("a", ["10.42.0.5", "10.42.0.6"]), ("b", ["10.42.1.5"]))
    crt, key = make_cert("secure.example")
    secrets = {"default/good": tls_secret("good", crt, key)}
    ings = [ingress("x", [rule("secure.example", ("/", "Prefix", backend("a"))),
                          rule("*.wild.example", ("/b", "Exact", backend("b"))),
                          rule(None, ("/any", "Prefix", backend("b")))],
                    default=backend("a"), tls=[{"hosts": ["secure.example"], "secretName": "good"}]),
            ingress("y", [rule("secure.example", ("/q", "Prefix", backend("missing")))]),
            ingress("z", [rule("secure.example", ("/z", "Prefix", backend("b")))]),
            ingress("r", [rule("rx.example", ("/api(/|$)(.*)", "ImplementationSpecific", backend("b")))])]
    ings[3]["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/rewrite-target": "/$2"}
    p = "nginx.ingress.kubernetes.io/"
    ings[2]["metadata"]["annotations"] = {p + "proxy-body-size": "8m", p + "proxy-connect-timeout": "2",
                                          p + "backend-protocol": "HTTPS", p + "force-ssl-redirect": "true"}
    cfg, _ = build(ings, services, slices, secrets, tmp_path / "certs")
    (tmp_path / "certs").mkdir()
    for s in cfg.servers:
        if s.ssl:
            ssl.write_pem(Path(s.ssl.pem_path), s.ssl.pem)
    default_cert = ssl.default_certificate(tmp_path / "certs")
    opts = RenderOptions(prefix=str(tmp_path), http_port=18080, https_port=18443, default_cert=str(default_cert))
    text = render(cfg, opts)
    assert text == render(build(list(reversed(ings)), services, slices, secrets, tmp_path / "certs")[0], opts)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    for d in ("tmp", "logs"):
        (tmp_path / d).mkdir()
    done = subprocess.run(["/usr/sbin/nginx", "-t", "-q", "-p", f"{tmp_path}/", "-c", str(conf), "-e", "stderr"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert oct((tmp_path / "certs" / default_cert.name).stat().st_mode & 0o777) == "0o600"


def test_wildcard_tls_covers_one_label_hosts_and_a_default_backend_only_ingress(tmp_path):
    services, slices = world(("a", ["10.42.0.5"]), ("d", ["10.42.3.5"]))
    crt, key = make_cert("*.wild.example")
    secrets = {"default/wild": tls_secret("wild", crt, key)}
    ings = [ingress("w", [rule("a.wild.example", ("/", "Prefix", backend("a"))),
                          rule("a.b.wild.example", ("/", "Prefix", backend("a")))],
                    tls=[{"hosts": ["*.wild.example"], "secretName": "wild"}]),
            ingress("only-default", default=backend("d"), created="2025-01-01T00:00:00Z")]
    cfg, problems = build(ings, services, slices, secrets, tmp_path)
    assert problems == []
    by_host = {s.hostname: s for s in cfg.servers}
    assert by_host["a.wild.example"].ssl is not None
    assert all(loc.ssl_redirect for loc in by_host["a.wild.example"].locations)
    assert by_host["a.b.wild.example"].ssl is None                  # two labels: not covered
    text = text_of(cfg, tmp_path)
    assert locations(server_block(text, "_")) == [('"/"', "default-d-80")]


def test_paths_nginx_could_misread_are_refused_with_a_problem(tmp_path):
    services, slices = world(("a", ["10.42.0.5"]))
    cfg, problems = build([ingress("x", [rule("h.example", ('/a"; return 200 "x', "ImplementationSpecific",
                                                            backend("a")),
                                                  ("/ok", "Prefix", backend("a")))])], services, slices)
    assert [p.reason for p in problems] == ["InvalidPath"]
    assert [spec for spec, _ in locations(server_block(text_of(cfg, tmp_path), "h.example"))] == \
        ['= "/ok"', '"/ok/"', '"/"']


def test_a_tls_entry_without_hosts_serves_the_rule_hosts_its_certificate_names(tmp_path):
    services, slices = world(("a", ["10.42.0.5"]))
    crt, key = make_cert("named.example")
    ing = ingress("x", [rule("named.example", ("/", "Prefix", backend("a"))),
                        rule("other.example", ("/", "Prefix", backend("a")))],
                  tls=[{"secretName": "s"}])
    cfg, problems = build([ing], services, slices, {"default/s": tls_secret("s", crt, key)}, tmp_path)
    by_host = {s.hostname: s for s in cfg.servers}
    assert problems == [] and by_host["named.example"].ssl is not None and by_host["other.example"].ssl is None


def test_one_malformed_ingress_is_left_out_and_the_others_served(tmp_path):
    services, slices = world(("a", ["10.42.0.5"]))
    bad = ingress("bad", [{"host": "bad.example", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                                                                        "backend": {"service": "not-a-dict"}}]}}])
    good = ingress("good", [rule("good.example", ("/", "Prefix", backend("a")))])
    cfg, problems = build([bad, good], services, slices)
    assert [(p.ingress["metadata"]["name"], p.reason) for p in problems] == [("bad", "InvalidIngress")]
    assert locations(server_block(text_of(cfg, tmp_path), "good.example"))[0] == ('"/"', "default-a-80")


def test_ingress_nginx_annotations_become_location_directives(tmp_path):
    services, slices = world(("a", ["10.42.0.5"]))
    crt, key = make_cert("secure.example")
    secrets = {"default/s": tls_secret("s", crt, key)}
    p = "nginx.ingress.kubernetes.io/"
    tuned = ingress("tuned", [rule("secure.example", ("/upload", "Prefix", backend("a")))],
                    tls=[{"hosts": ["secure.example"], "secretName": "s"}])
    tuned["metadata"]["annotations"] = {p + "ssl-redirect": "false", p + "proxy-body-size": "64m",
                                        p + "proxy-read-timeout": "600", p + "backend-protocol": "HTTPS",
                                        p + "proxy-send-timeout": "soon"}
    forced = ingress("forced", [rule("plain.example", ("/", "Prefix", backend("a")))])
    forced["metadata"]["annotations"] = {p + "force-ssl-redirect": "true"}
    plain = ingress("plain", [rule("secure.example", ("/", "Prefix", backend("a")))])
    cfg, problems = build([tuned, forced, plain], services, slices, secrets, tmp_path)
    assert [(x.ingress["metadata"]["name"], x.reason) for x in problems] == [("tuned", "InvalidAnnotation")]
    assert "proxy-send-timeout" in problems[0].message
    text = text_of(cfg, tmp_path)
    secure = server_block(text, "secure.example")
    upload = secure[secure.index('location "/upload/"'):]
    upload = upload[:upload.index("\n        }")]
    assert "308" not in upload                                   # ssl-redirect: "false"
    for directive in ("client_max_body_size 64m;", "proxy_request_buffering off;", "proxy_read_timeout 600s;",
                      "proxy_pass https://default-a-80;", "proxy_ssl_verify off;"):
        assert directive in upload, (directive, upload)
    assert "proxy_send_timeout" not in upload
    root = secure[secure.index('location "/"'):]
    assert "return 308" in root[:root.index("\n        }")]        # the other Ingress keeps the default
    assert "return 308 https://$host$request_uri;" in server_block(text, "plain.example")   # forced


def test_use_regex_and_rewrite_target_make_the_whole_host_regex(tmp_path):
    services, slices = world(("a", ["10.42.0.5"]), ("b", ["10.42.1.5"]))
    rx = ingress("rx", [rule("h.example", ("/api(/|$)(.*)", "ImplementationSpecific", backend("b")))])
    rx["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/rewrite-target": "/$2"}
    plain = ingress("plain", [rule("h.example", ("/static", "Prefix", backend("a")), ("/x", "Exact", backend("a"))),
                              rule("other.example", ("/static", "Prefix", backend("a")))])
    cfg, problems = build([rx, plain], services, slices)
    assert problems == []
    text = text_of(cfg, tmp_path)
    block = server_block(text, "h.example")
    assert locations(block) == [('~* "^/api(/|$)(.*)"', "default-b-80"), ('~* "^/static"', "default-a-80"),
                                ('= "/x"', "default-a-80"), ('~* "^/"', "404")]
    assert 'rewrite "(?i)/api(/|$)(.*)" "/$2" break;' in block
    assert block.count("rewrite") == 1                                   # only the annotated Ingress rewrites
    assert [spec for spec, _ in locations(server_block(text, "other.example"))][:2] == ['= "/static"', '"/static/"']
