"""make_environment and $(VAR) expansion: upstream's order, sources, service links and errors."""

import asyncio
import base64

import pytest

from kubeling.client.fake import FakeClient
from kubeling.kubelet.envvars import (
    CreateContainerConfigError,
    expand,
    expand_command,
    make_environment,
    service_env,
)
from kubeling.kubelet.objectcache import ObjectCache
from kubeling.kubelet.volumes import VolumeHost


@pytest.mark.parametrize("text,want", [
    pytest.param("$(A)", "a", id="defined"),
    pytest.param("x$(A)y$(B)z", "xaybz", id="two"),
    pytest.param("$(MISSING)", "$(MISSING)", id="undefined-kept"),
    pytest.param("$$(A)", "$(A)", id="escaped"),
    pytest.param("$$$(A)", "$a", id="escaped-then-var"),
    pytest.param("$$", "$", id="dollar-dollar"),
    pytest.param("$A", "$A", id="no-parens"),
    pytest.param("$(A", "$(A", id="unterminated"),
    pytest.param("end$", "end$", id="trailing-dollar"),
    pytest.param("$()", "$()", id="empty-name"),
    pytest.param("$(A)$(A)", "aa", id="repeat"),
])
def test_expand(text, want):
    assert expand(text, {"A": "a", "B": "b"}) == want


def test_expand_command():
    assert expand_command(["sh", "-c", "echo $(GREETING) $$(HOME)"], [("GREETING", "hi")]) == \
        ["sh", "-c", "echo hi $(HOME)"]


SERVICES = [
    {"metadata": {"name": "kubernetes", "namespace": "default"},
     "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}},
    {"metadata": {"name": "redis-master", "namespace": "app"},
     "spec": {"clusterIP": "10.43.0.7", "ports": [{"port": 6379}, {"name": "metrics", "port": 9121,
                                                                   "protocol": "UDP"}]}},
    {"metadata": {"name": "headless", "namespace": "app"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}},
    {"metadata": {"name": "elsewhere", "namespace": "other"}, "spec": {"clusterIP": "10.43.0.9",
                                                                     "ports": [{"port": 1}]}},
]


def test_service_env():
    env = service_env(SERVICES, "app", True)
    assert env == {
        "KUBERNETES_SERVICE_HOST": "10.43.0.1", "KUBERNETES_SERVICE_PORT": "443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "443", "KUBERNETES_PORT": "tcp://10.43.0.1:443",
        "KUBERNETES_PORT_443_TCP": "tcp://10.43.0.1:443", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": "10.43.0.1",
        "REDIS_MASTER_SERVICE_HOST": "10.43.0.7", "REDIS_MASTER_SERVICE_PORT": "6379",
        "REDIS_MASTER_SERVICE_PORT_METRICS": "9121", "REDIS_MASTER_PORT": "tcp://10.43.0.7:6379",
        "REDIS_MASTER_PORT_6379_TCP": "tcp://10.43.0.7:6379", "REDIS_MASTER_PORT_6379_TCP_PROTO": "tcp",
        "REDIS_MASTER_PORT_6379_TCP_PORT": "6379", "REDIS_MASTER_PORT_6379_TCP_ADDR": "10.43.0.7",
        "REDIS_MASTER_PORT_9121_UDP": "udp://10.43.0.7:9121", "REDIS_MASTER_PORT_9121_UDP_PROTO": "udp",
        "REDIS_MASTER_PORT_9121_UDP_PORT": "9121", "REDIS_MASTER_PORT_9121_UDP_ADDR": "10.43.0.7",
    }
    # enableServiceLinks: false keeps only the API server's variables.
    assert sorted(service_env(SERVICES, "app", False)) == sorted(k for k in env if k.startswith("KUBERNETES_"))


def b64(s):
    return base64.b64encode(s.encode()).decode()


OBJECTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "app"},
     "data": {"MODE": "prod", "LEVEL": "3", "bad=key": "x"}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec", "namespace": "app"},
     "data": {"PASSWORD": b64("hunter2"), "TOKEN": b64("t")}},
]


def make_pod(container, **spec):
    return {"metadata": {"name": "web-0", "namespace": "app", "uid": "uid-1", "labels": {"app": "web"},
                         "annotations": {"a": "1"}},
            "spec": {"nodeName": "node-1", "serviceAccountName": "builder", "containers": [container], **spec},
            "status": {"podIP": "10.42.0.5", "podIPs": [{"ip": "10.42.0.5"}, {"ip": "fd00::5"}],
                       "hostIP": "192.168.1.2", "hostIPs": [{"ip": "192.168.1.2"}]}}


def environment(container, services=(), events=None, **spec):
    async def main():
        client = FakeClient(*OBJECTS)
        host = VolumeHost(root=None, configmaps=ObjectCache(client, "configmaps"),
                          secrets=ObjectCache(client, "secrets"),
                          node_allocatable={"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi"})
        try:
            return await make_environment(make_pod(container, **spec), container, host, list(services),
                                          events=events)
        finally:
            await host.configmaps.close()
            await host.secrets.close()
    return asyncio.run(main())


def field(path):
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


def res(resource, divisor=None, container=None):
    ref = {"resource": resource}
    if divisor:
        ref["divisor"] = divisor
    if container:
        ref["containerName"] = container
    return {"valueFrom": {"resourceFieldRef": ref}}


@pytest.mark.parametrize("var,want", [
    pytest.param({"value": "plain"}, "plain", id="value"),
    pytest.param({"value": ""}, "", id="empty"),
    pytest.param(field("metadata.name"), "web-0", id="name"),
    pytest.param(field("metadata.namespace"), "app", id="namespace"),
    pytest.param(field("metadata.uid"), "uid-1", id="uid"),
    pytest.param(field("metadata.labels['app']"), "web", id="label"),
    pytest.param(field("metadata.labels"), 'app="web"', id="labels"),
    pytest.param(field("metadata.annotations['a']"), "1", id="annotation"),
    pytest.param(field("spec.nodeName"), "node-1", id="nodeName"),
    pytest.param(field("spec.serviceAccountName"), "builder", id="serviceAccountName"),
    pytest.param(field("status.podIP"), "10.42.0.5", id="podIP"),
    pytest.param(field("status.podIPs"), "10.42.0.5,fd00::5", id="podIPs"),
    pytest.param(field("status.hostIP"), "192.168.1.2", id="hostIP"),
    pytest.param(field("status.hostIPs"), "192.168.1.2", id="hostIPs"),
    pytest.param(res("limits.cpu"), "1", id="cpu-limit-ceil"),
    pytest.param(res("limits.cpu", "1m"), "500", id="cpu-limit-milli"),
    pytest.param(res("requests.cpu", "1m"), "250", id="cpu-request"),
    pytest.param(res("limits.memory", "1Mi"), "64", id="memory-limit"),
    pytest.param(res("requests.memory"), "0", id="memory-request-unset"),
    pytest.param(res("limits.ephemeral-storage", "1Gi"), "100", id="ephemeral-default-allocatable"),
    pytest.param(res("limits.cpu", container="c"), "1", id="named-container"),
    pytest.param({"valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}}, "prod", id="configmap-key"),
    pytest.param({"valueFrom": {"secretKeyRef": {"name": "sec", "key": "PASSWORD"}}}, "hunter2", id="secret-key"),
])
def test_value_sources(var, want):
    c = {"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}},
         "env": [{"name": "V", **var}]}
    assert dict(environment(c))["V"] == want


def test_order_expansion_and_envfrom():
    events = []
    c = {"name": "c",
         "envFrom": [{"configMapRef": {"name": "cfg"}}, {"prefix": "S_", "secretRef": {"name": "sec"}}],
         "env": [{"name": "A", "value": "a"},
                 {"name": "B", "value": "$(A)-$(MODE)-$(LATER)-$(REDIS_MASTER_SERVICE_HOST)-$$(A)"},
                 {"name": "LATER", "value": "l"},
                 {"name": "MODE", "value": "override"},
                 {"name": "REF", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                 {"name": "NOEXPAND", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "LEVEL"}}}]}
    env = environment(c, SERVICES, events)
    d = dict(env)
    assert d["B"] == "a-prod-$(LATER)-10.43.0.7-$(A)"     # only earlier vars, then services
    assert d["MODE"] == "override" and d["S_PASSWORD"] == "hunter2" and d["S_TOKEN"] == "t"
    assert "bad=key" not in d
    names = [n for n, _ in env]
    assert names[:5] == ["MODE", "LEVEL", "S_PASSWORD", "S_TOKEN", "A"]   # envFrom first, then env
    assert names.index("NOEXPAND") < names.index("KUBERNETES_SERVICE_HOST")   # service links last
    assert len(names) == len(set(names))
    assert events == [("Warning", "InvalidEnvironmentVariableNames",
                       ("Keys [bad=key] from the EnvFrom configMap app/cfg were skipped since they are considered "
                        "invalid environment variable names."))]


def test_env_overrides_service_links_and_disabled_links():
    c = {"name": "c", "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "mine"}]}
    d = dict(environment(c, SERVICES))
    assert d["KUBERNETES_SERVICE_HOST"] == "mine" and d["REDIS_MASTER_SERVICE_PORT"] == "6379"
    d = dict(environment({"name": "c"}, SERVICES, enableServiceLinks=False))
    assert "REDIS_MASTER_SERVICE_HOST" not in d and d["KUBERNETES_SERVICE_HOST"] == "10.43.0.1"


@pytest.mark.parametrize("container,message", [
    pytest.param({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]},
                 'configmap "nope" not found', id="configmap-missing"),
    pytest.param({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]},
                 "couldn't find key k in ConfigMap app/cfg", id="configmap-key-missing"),
    pytest.param({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]},
                 'secret "nope" not found', id="secret-missing"),
    pytest.param({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k"}}}]},
                 "couldn't find key k in Secret app/sec", id="secret-key-missing"),
    pytest.param({"envFrom": [{"configMapRef": {"name": "nope"}}]}, 'configmap "nope" not found',
                 id="envfrom-configmap-missing"),
    pytest.param({"envFrom": [{"secretRef": {"name": "nope"}}]}, 'secret "nope" not found',
                 id="envfrom-secret-missing"),
    pytest.param({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]},
                 "unsupported fieldPath: spec.bogus", id="bad-fieldpath"),
])
def test_errors(container, message):
    with pytest.raises(CreateContainerConfigError) as err:
        environment({"name": "c", **container})
    assert err.value.message == message and err.value.reason == "CreateContainerConfigError"


def test_optional_references_skip():
    c = {"name": "c", "envFrom": [{"configMapRef": {"name": "nope", "optional": True}}],
         "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}}},
                 {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k", "optional": True}}},
                 {"name": "Z", "value": "z"}]}
    assert environment(c) == [("Z", "z")]
