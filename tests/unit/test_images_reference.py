"""Docker reference parsing and normalisation (images/reference.py)."""

from __future__ import annotations

import pytest

from kubeling.kubelet.images import InvalidImageName, reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, full, familiar, obj", [
    pytest.param("busybox", "docker.io/library/busybox:latest", "busybox", "latest", id="short"),
    pytest.param("busybox:1.36", "docker.io/library/busybox:1.36", "busybox", "1.36", id="tag"),
    pytest.param("user/app", "docker.io/user/app:latest", "user/app", "latest", id="user-repo"),
    pytest.param("docker.io/busybox", "docker.io/library/busybox:latest", "busybox", "latest",
                 id="docker-io-short"),
    pytest.param("index.docker.io/library/nginx", "docker.io/library/nginx:latest", "nginx",
                 "latest", id="legacy-index-domain"),
    pytest.param("k8s.gcr.io/busybox", "k8s.gcr.io/busybox:latest", "k8s.gcr.io/busybox",
                 "latest", id="other-registry"),
    pytest.param("host:5000/a/b:tag", "host:5000/a/b:tag", "host:5000/a/b", "tag",
                 id="registry-port"),
    pytest.param("localhost/foo", "localhost/foo:latest", "localhost/foo", "latest",
                 id="localhost"),
    pytest.param("[::1]:5000/x:y", "[::1]:5000/x:y", "[::1]:5000/x", "y", id="ipv6"),
    pytest.param(f"busybox@{D}", f"docker.io/library/busybox@{D}", "busybox", D, id="digest"),
    pytest.param(f"busybox:1.36@{D}", f"docker.io/library/busybox:1.36@{D}", "busybox", D,
                 id="tag-and-digest"),
    pytest.param("a/b__c/d-e--f.g:v1.0_rc-2", "docker.io/a/b__c/d-e--f.g:v1.0_rc-2",
                 "a/b__c/d-e--f.g", "v1.0_rc-2", id="separators"),
    pytest.param("Registry.Example/x", "Registry.Example/x:latest", "Registry.Example/x",
                 "latest", id="upper-case-domain"),
])
def test_parse_normalises(text, full, familiar, obj):
    ref = reference.parse(text)
    assert ref.string() == full
    assert ref.familiar_name == familiar
    assert ref.object == obj


@pytest.mark.parametrize("text, message", [
    pytest.param("", "invalid reference format", id="empty"),
    pytest.param("Busybox", "must be lowercase", id="upper-case-repo"),
    pytest.param("foo/Bar:1", "must be lowercase", id="upper-case-path"),
    pytest.param("bad:tag:x", "invalid reference format", id="two-tags"),
    pytest.param("busybox:", "invalid reference format", id="empty-tag"),
    pytest.param("-busybox", "invalid reference format", id="leading-dash"),
    pytest.param("busybox@sha256:abc", "invalid reference format", id="short-digest"),
    pytest.param("busybox@sha256:" + "a" * 63 + "g", "invalid reference format", id="not-hex"),
    pytest.param("busybox@md5:" + "a" * 32, "unsupported digest algorithm", id="algorithm"),
    pytest.param("a" * 64, "cannot specify 64-byte hexadecimal strings", id="image-id"),
    pytest.param("x" * 256, "must not be more than 255 characters", id="too-long"),
])
def test_parse_refuses(text, message):
    with pytest.raises(InvalidImageName) as err:
        reference.parse(text)
    assert message in str(err.value)
    assert err.value.reason == "InvalidImageName"


@pytest.mark.parametrize("text, tagged", [
    pytest.param("busybox", "docker.io/library/busybox:latest", id="adds-latest"),
    pytest.param("busybox:1", "docker.io/library/busybox:1", id="keeps-tag"),
    pytest.param(f"busybox@{D}", f"docker.io/library/busybox@{D}", id="digest-no-tag"),
])
def test_default_tag(text, tagged):
    assert reference.parse_normalized_tagged(text).string() == tagged
