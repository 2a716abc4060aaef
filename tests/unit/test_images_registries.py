"""registries.yaml resolution (images/registries.py) and the pull-secret keyring
(images/credentials.py)."""

from __future__ import annotations

import base64

import orjson
import pytest

from kubeling.kubelet.images import reference
from kubeling.kubelet.images.credentials import Keyring
from kubeling.kubelet.images.registries import AuthConfig, Registries

YAML = """
mirrors:
  docker.io:
    endpoint:
      - "http://127.0.0.1:5000"
      - "mirror.example.com"
    rewrite:
      "^library/(.*)": "mirrored/$1"
  k8s.gcr.io:
    endpoint: ["http://127.0.0.1:5000/prefix"]
  "*":
    endpoint: ["http://127.0.0.1:6000"]
configs:
  "127.0.0.1:5000":
    auth: {username: alice, password: secret}
  "mirror.example.com":
    auth: {auth: Ym9iOnB3}
    tls: {insecure_skip_verify: true, ca_file: /ca.pem}
"""


def _endpoints(doc: str, image: str, **kw):
    import yaml
    regs = Registries.from_dict(yaml.safe_load(doc), **kw)
    return regs.endpoints(reference.parse(image))


def test_mirrors_first_then_the_default_endpoint():
    eps = _endpoints(YAML, "busybox")
    assert [e.base for e in eps] == ["http://127.0.0.1:5000/v2", "https://mirror.example.com/v2",
                                     "https://registry-1.docker.io/v2"]
    assert [e.mirror for e in eps] == [True, True, False]
    assert eps[0].auth == AuthConfig("alice", "secret")
    assert eps[1].auth == AuthConfig("bob", "pw")
    assert eps[1].tls.insecure_skip_verify and eps[1].tls.ca_file == "/ca.pem"
    assert eps[2].auth is None


def test_rewrite_applies_to_mirrors_only():
    eps = _endpoints(YAML, "busybox")
    assert eps[0].repository("library/busybox") == "mirrored/busybox"
    assert eps[2].repository("library/busybox") == "library/busybox"
    assert eps[0].repository("user/app") == "user/app"


@pytest.mark.parametrize("image, bases", [
    pytest.param("k8s.gcr.io/busybox", ["http://127.0.0.1:5000/prefix/v2",
                                        "https://k8s.gcr.io/v2"], id="path-prefix"),
    pytest.param("quay.io/x/y", ["http://127.0.0.1:6000/v2", "https://quay.io/v2"],
                 id="wildcard-mirror"),
    pytest.param("127.0.0.1:7000/x", ["http://127.0.0.1:6000/v2", "http://127.0.0.1:7000/v2"],
                 id="loopback-default-is-plain-http"),
])
def test_endpoint_urls(image, bases):
    assert [e.base for e in _endpoints(YAML, image)] == bases


def test_disable_default_endpoint():
    eps = _endpoints(YAML, "busybox", disable_default_endpoint=True)
    assert all(e.mirror for e in eps) and len(eps) == 2


@pytest.mark.parametrize("doc, image, bases", [
    pytest.param("mirrors: {docker.io: {endpoint: ['http://127.0.0.1:5000']}}", "127.0.0.1:7000/app:1",
                 ["http://127.0.0.1:7000/v2"], id="unconfigured-registry-pulled-directly"),
    pytest.param("mirrors: {docker.io: {endpoint: ['http://127.0.0.1:5000']}}", "busybox",
                 ["http://127.0.0.1:5000/v2"], id="configured-registry-mirrors-only"),
    pytest.param("mirrors: {'*': {endpoint: ['http://127.0.0.1:6000']}}", "quay.io/x/y:1",
                 ["http://127.0.0.1:6000/v2"], id="wildcard-counts-as-configured"),
    pytest.param("{}", "registry.example.com/x:1", ["https://registry.example.com/v2"], id="empty-config"),
])
def test_disable_default_endpoint_applies_to_configured_registries_only(doc, image, bases):
    assert [e.base for e in _endpoints(doc, image, disable_default_endpoint=True)] == bases


def test_default_endpoint_listed_as_mirror_is_not_repeated():
    doc = "mirrors: {docker.io: {endpoint: ['https://registry-1.docker.io']}}"
    eps = _endpoints(doc, "busybox")
    assert [e.base for e in eps] == ["https://registry-1.docker.io/v2"]
    assert not eps[0].mirror


def test_missing_file_is_empty(tmp_path):
    regs = Registries.load(tmp_path / "nope.yaml")
    assert [e.base for e in regs.endpoints(reference.parse("busybox"))] == [
        "https://registry-1.docker.io/v2"]


@pytest.mark.parametrize("doc, message", [
    pytest.param("mirrors: [1]", "must be mappings", id="mirrors-list"),
    pytest.param("mirrors: {docker.io: {endpoint: 'x'}}", "must be a list", id="endpoint-str"),
    pytest.param("mirrors: {docker.io: {endpoint: ['ftp://x']}}", "invalid registry endpoint",
                 id="scheme"),
    pytest.param("mirrors: {docker.io: {endpoint: [], rewrite: {'(': x}}}", "rewrite",
                 id="bad-regexp"),
])
def test_malformed_files_are_refused(tmp_path, doc, message):
    path = tmp_path / "registries.yaml"
    path.write_text(doc)
    with pytest.raises(ValueError) as err:
        Registries.load(path)
    assert message in str(err.value) and str(path) in str(err.value)


def _secret(kind: str, auths: dict) -> dict:
    if kind == "kubernetes.io/dockerconfigjson":
        data = {".dockerconfigjson": base64.b64encode(orjson.dumps({"auths": auths})).decode()}
    else:
        data = {".dockercfg": base64.b64encode(orjson.dumps(auths)).decode()}
    return {"type": kind, "data": data}


def _users(creds):
    return [c.username for c in creds]


@pytest.mark.parametrize("keys, image, want", [
    pytest.param(["https://index.docker.io/v1/"], "docker.io/library/busybox", ["k0"],
                 id="docker-hub-legacy-key"),
    pytest.param(["docker.io"], "docker.io/user/app", ["k0"], id="docker-hub-short-key"),
    pytest.param(["registry.example.com"], "registry.example.com/a/b", ["k0"], id="host"),
    pytest.param(["registry.example.com"], "other.example.com/a/b", [], id="other-host"),
    pytest.param(["*.example.com"], "registry.example.com/a", ["k0"], id="glob-label"),
    pytest.param(["*.example.com"], "a.b.example.com/a", [], id="glob-one-label-only"),
    pytest.param(["127.0.0.1:5000"], "127.0.0.1:5000/x", ["k0"], id="port"),
    pytest.param(["127.0.0.1:5000"], "127.0.0.1:5001/x", [], id="other-port"),
    pytest.param(["127.0.0.1"], "127.0.0.1:5000/x", [], id="port-must-match"),
    pytest.param(["reg.io/team"], "reg.io/team/app", ["k0"], id="path-prefix"),
    pytest.param(["reg.io/team"], "reg.io/other/app", [], id="path-mismatch"),
    pytest.param(["reg.io", "reg.io/team"], "reg.io/team/app", ["k1", "k0"],
                 id="most-specific-first"),
    pytest.param(["http://reg.io/v2/"], "reg.io/a", ["k0"], id="scheme-and-v2"),
])
def test_keyring_matching(keys, image, want):
    auths = {k: {"username": f"k{i}", "password": "p"} for i, k in enumerate(keys)}
    ring = Keyring.from_secrets([_secret("kubernetes.io/dockerconfigjson", auths)])
    assert _users(ring.lookup(image)) == want


def test_keyring_reads_both_secret_types_and_auth_field():
    ring = Keyring.from_secrets([
        _secret("kubernetes.io/dockercfg",
                {"reg.io": {"auth": base64.b64encode(b"old:pw").decode()}}),
        _secret("kubernetes.io/dockerconfigjson", {"reg.io": {"username": "new", "password": "x"}}),
        {"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "!!"}},
        {"type": "Opaque", "data": {"x": "eA=="}},
    ])
    creds = ring.lookup("reg.io/a")
    assert sorted(_users(creds)) == ["new", "old"]
    assert AuthConfig("old", "pw") in creds
