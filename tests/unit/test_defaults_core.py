"""core/v1 defaults: what a 1.32 apiserver's decoder fills in (server-set metadata,
admission and registry effects are not part of defaulting and are not expected)."""

import copy

import pytest

from kubeling.api.defaults import apply_defaults
from kubeling.api.defaults.podspec import image_tag

DEFAULTED_CONTAINER = {
    "imagePullPolicy": "IfNotPresent",
    "resources": {},
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
}
POD_SPEC_DEFAULTS = {
    "dnsPolicy": "ClusterFirst",
    "restartPolicy": "Always",
    "schedulerName": "default-scheduler",
    "securityContext": {},
    "terminationGracePeriodSeconds": 30,
}


def defaulted(obj):
    obj = copy.deepcopy(obj)
    apply_defaults(obj)
    return obj


def test_minimal_pod_matches_upstream():
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}
    assert defaulted(pod) == {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {
            "containers": [{"name": "c", "image": "nginx:1.25", **DEFAULTED_CONTAINER}],
            "enableServiceLinks": True,
            **POD_SPEC_DEFAULTS,
        },
    }


def test_user_values_are_never_overwritten():
    spec = {
        "dnsPolicy": "Default", "restartPolicy": "Never", "schedulerName": "mine",
        "securityContext": {"runAsUser": 1}, "terminationGracePeriodSeconds": 0,
        "enableServiceLinks": False,
        "containers": [{
            "name": "c", "image": "nginx", "imagePullPolicy": "Never",
            "terminationMessagePath": "/x", "terminationMessagePolicy": "FallbackToLogsOnError",
            "ports": [{"containerPort": 53, "protocol": "UDP"}],
            "livenessProbe": {"exec": {"command": ["true"]}, "timeoutSeconds": 5, "periodSeconds": 2,
                              "successThreshold": 1, "failureThreshold": 9},
        }],
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
    out = defaulted(pod)["spec"]
    for key, value in spec.items():
        if key != "containers":
            assert out[key] == value, key
    container = out["containers"][0]
    for key, value in spec["containers"][0].items():
        assert container[key] == value, key


@pytest.mark.parametrize("image,policy", [
    pytest.param("nginx", "Always", id="no-tag-means-latest"),
    pytest.param("nginx:latest", "Always", id="latest"),
    pytest.param("nginx:1.7.9", "IfNotPresent", id="tag"),
    pytest.param("localhost:5000/app", "Always", id="registry-port-is-not-a-tag"),
    pytest.param("localhost:5000/app:v2", "IfNotPresent", id="registry-and-tag"),
    pytest.param("nginx@sha256:" + "a" * 64, "IfNotPresent", id="digest-only"),
    pytest.param("Nginx", "IfNotPresent", id="invalid-reference"),
    pytest.param("", "IfNotPresent", id="empty"),
])
def test_image_pull_policy(image, policy):
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c", "image": image}]}}
    assert defaulted(pod)["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_image_tag_parsing():
    assert image_tag("registry.k8s.io/pause:3.9") == "3.9"
    assert image_tag("docker.io/library/busybox") == "latest"
    assert image_tag("a" * 64) == ""  # a bare image ID is not a reference


def test_probes_lifecycle_env_and_ports():
    container = {
        "name": "c", "image": "x:1",
        "ports": [{"containerPort": 80}],
        "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "readinessProbe": {"httpGet": {"port": 80}},
        "livenessProbe": {"grpc": {"port": 9000}},
        "startupProbe": {"tcpSocket": {"port": 80}, "timeoutSeconds": 0},
        "lifecycle": {"preStop": {"httpGet": {"port": 8080, "path": "/stop"}}},
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"initContainers": [container], "containers": [container]}}
    out = defaulted(pod)["spec"]
    probe_defaults = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
    for c in (out["initContainers"][0], out["containers"][0]):
        assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
        assert c["env"][0]["valueFrom"]["fieldRef"] == {"apiVersion": "v1", "fieldPath": "spec.nodeName"}
        assert c["readinessProbe"] == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, **probe_defaults}
        assert c["livenessProbe"] == {"grpc": {"port": 9000, "service": ""}, **probe_defaults}
        assert c["startupProbe"] == {"tcpSocket": {"port": 80}, **probe_defaults}  # 0 is Go's "unset"
        assert c["lifecycle"]["preStop"]["httpGet"] == {"port": 8080, "path": "/stop", "scheme": "HTTP"}


def test_volumes():
    volumes = [
        {"name": "nosource"},
        {"name": "cm", "configMap": {"name": "x"}},
        {"name": "sec", "secret": {"secretName": "s", "defaultMode": 256}},
        {"name": "hp", "hostPath": {"path": "/data"}},
        {"name": "dapi", "downwardAPI": {"items": [{"path": "l", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        {"name": "proj", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token"}},
            {"downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        ]}},
        {"name": "eph", "ephemeral": {"volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1.5Gi"}}}}}},
        {"name": "rbd", "rbd": {"monitors": ["m"], "image": "i"}},
        {"name": "iscsi", "iscsi": {"targetPortal": "t", "iqn": "q", "lun": 0}},
    ]
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [], "volumes": volumes}}
    got = {v["name"]: v for v in defaulted(pod)["spec"]["volumes"]}
    assert got["nosource"] == {"name": "nosource", "emptyDir": {}}
    assert got["cm"]["configMap"] == {"name": "x", "defaultMode": 420}
    assert got["sec"]["secret"]["defaultMode"] == 256
    assert got["hp"]["hostPath"] == {"path": "/data", "type": ""}
    assert got["dapi"]["downwardAPI"]["defaultMode"] == 420
    assert got["dapi"]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"] == "v1"
    assert got["proj"]["projected"]["defaultMode"] == 420
    assert got["proj"]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] == 3600
    assert got["proj"]["projected"]["sources"][1]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"] == "v1"
    claim = got["eph"]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["volumeMode"] == "Filesystem"
    assert claim["resources"]["requests"]["storage"] == "1536Mi"
    assert got["rbd"]["rbd"] == {"monitors": ["m"], "image": "i", "pool": "rbd", "user": "admin",
                                "keyring": "/etc/ceph/keyring"}
    assert got["iscsi"]["iscsi"]["iscsiInterface"] == "default"


def test_pod_requests_default_from_limits_and_quantities_are_canonical():
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{
        "name": "c", "image": "x:1",
        "resources": {"limits": {"cpu": 0.5, "memory": "1Gi"}, "requests": {"memory": "512Mi"}},
    }], "initContainers": [{"name": "i", "image": "x:1", "resources": {"limits": {"cpu": "1n"}}}]}}
    spec = defaulted(pod)["spec"]
    assert spec["containers"][0]["resources"] == {
        "limits": {"cpu": "500m", "memory": "1Gi"},
        "requests": {"cpu": "500m", "memory": "512Mi"},
    }
    # Rounded up to milli precision by SetDefaults_ResourceList.
    assert spec["initContainers"][0]["resources"] == {"limits": {"cpu": "1m"}, "requests": {"cpu": "1m"}}


def test_pod_only_defaults_stay_out_of_templates():
    template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": {
        "spec": {"containers": [{"name": "c", "image": "x:1", "resources": {"limits": {"cpu": "1"}}}]}}}
    spec = defaulted(template)["template"]["spec"]
    assert "enableServiceLinks" not in spec
    assert spec["containers"][0]["resources"] == {"limits": {"cpu": "1"}}
    assert spec == {"containers": [{"name": "c", "image": "x:1", "resources": {"limits": {"cpu": "1"}},
                                    "imagePullPolicy": "IfNotPresent",
                                    "terminationMessagePath": "/dev/termination-log",
                                    "terminationMessagePolicy": "File"}], **POD_SPEC_DEFAULTS}


def test_host_network_defaults_host_ports():
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"hostNetwork": True, "containers": [
        {"name": "c", "image": "x:1", "ports": [{"containerPort": 8080}, {"containerPort": 9090, "hostPort": 9090}]}]}}
    ports = defaulted(pod)["spec"]["containers"][0]["ports"]
    assert [p["hostPort"] for p in ports] == [8080, 9090]


@pytest.mark.parametrize("given,expected", [
    pytest.param({"serviceAccountName": "a"}, {"serviceAccountName": "a", "serviceAccount": "a"}, id="mirror"),
    pytest.param({"serviceAccount": "old"}, {"serviceAccountName": "old", "serviceAccount": "old"}, id="alias"),
    pytest.param({"serviceAccount": "old", "serviceAccountName": "new"},
                 {"serviceAccountName": "new", "serviceAccount": "new"}, id="new-name-wins"),
])
def test_service_account_alias(given, expected):
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [], **given}}
    spec = defaulted(pod)["spec"]
    assert {k: spec[k] for k in expected} == expected


def test_pod_status_ip_aliases():
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": []},
           "status": {"podIP": "10.0.0.5", "hostIPs": [{"ip": "192.168.1.2"}]}}
    status = defaulted(pod)["status"]
    assert status["podIPs"] == [{"ip": "10.0.0.5"}]
    assert status["hostIP"] == "192.168.1.2"


SERVICES = [
    pytest.param(
        {"ports": [{"port": 80}]},
        {"type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
         "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]},
        id="cluster-ip"),
    pytest.param(
        {"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}]},
        {"type": "NodePort", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
         "externalTrafficPolicy": "Cluster", "ports": [{"port": 80, "protocol": "TCP", "targetPort": "http"}]},
        id="node-port"),
    pytest.param(
        {"type": "LoadBalancer", "ports": [{"port": 53, "protocol": "UDP", "targetPort": 0}]},
        {"type": "LoadBalancer", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
         "externalTrafficPolicy": "Cluster", "allocateLoadBalancerNodePorts": True,
         "ports": [{"port": 53, "protocol": "UDP", "targetPort": 53}]},
        id="load-balancer"),
    pytest.param(
        {"type": "ExternalName", "externalName": "example.com"},
        {"type": "ExternalName", "externalName": "example.com", "sessionAffinity": "None"},
        id="external-name-no-traffic-policies"),
    pytest.param(
        {"ports": [{"port": 80}], "externalIPs": ["1.2.3.4"], "sessionAffinity": "ClientIP"},
        {"type": "ClusterIP", "sessionAffinity": "ClientIP", "internalTrafficPolicy": "Cluster",
         "externalTrafficPolicy": "Cluster", "externalIPs": ["1.2.3.4"],
         "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
         "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]},
        id="external-ips-and-client-ip-affinity"),
    pytest.param(
        {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}},
        {"type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster"},
        id="affinity-config-dropped-without-affinity"),
]


@pytest.mark.parametrize("spec,expected", SERVICES)
def test_service(spec, expected):
    svc = defaulted({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec})
    assert svc["spec"] == expected
    assert svc["status"] == {"loadBalancer": {}}


def test_load_balancer_ingress_ip_mode():
    svc = {"apiVersion": "v1", "kind": "Service", "spec": {"type": "LoadBalancer"},
           "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb"}]}}}
    assert defaulted(svc)["status"]["loadBalancer"]["ingress"] == [{"ip": "1.2.3.4", "ipMode": "VIP"},
                                                                    {"hostname": "lb"}]


@pytest.mark.parametrize("obj,expected", [
    pytest.param({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}},
                 {"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": "dev", "labels": {"kubernetes.io/metadata.name": "dev"}},
                  "status": {"phase": "Active"}}, id="namespace"),
    pytest.param({"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": "dev", "labels": {"kubernetes.io/metadata.name": "spoof", "a": "b"}}},
                 {"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": "dev", "labels": {"kubernetes.io/metadata.name": "dev", "a": "b"}},
                  "status": {"phase": "Active"}}, id="namespace-label-tracks-name"),
    pytest.param({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
                 {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque"}, id="secret"),
    pytest.param({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls"},
                 {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls"}, id="secret-typed"),
    pytest.param({"apiVersion": "v1", "kind": "Endpoints", "subsets": [{"ports": [{"port": 80}]}]},
                 {"apiVersion": "v1", "kind": "Endpoints", "subsets": [{"ports": [{"port": 80, "protocol": "TCP"}]}]},
                 id="endpoints"),
    pytest.param({"apiVersion": "v1", "kind": "PersistentVolume", "spec": {
                      "capacity": {"storage": "10Gi"}, "hostPath": {"path": "/d"}}},
                 {"apiVersion": "v1", "kind": "PersistentVolume", "spec": {
                      "capacity": {"storage": "10Gi"}, "hostPath": {"path": "/d", "type": ""},
                      "persistentVolumeReclaimPolicy": "Retain", "volumeMode": "Filesystem"},
                  "status": {"phase": "Pending"}}, id="persistent-volume"),
    pytest.param({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "spec": {
                      "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1000Mi"}}}},
                 {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "spec": {
                      "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1000Mi"}},
                      "volumeMode": "Filesystem"},
                  "status": {"phase": "Pending"}}, id="persistent-volume-claim"),
    pytest.param({"apiVersion": "v1", "kind": "ResourceQuota", "spec": {"hard": {"cpu": "0.5", "pods": "10"}}},
                 {"apiVersion": "v1", "kind": "ResourceQuota", "spec": {"hard": {"cpu": "500m", "pods": "10"}}},
                 id="resource-quota"),
    pytest.param({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}},
                 {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}, id="configmap-untouched"),
])
def test_simple_kinds(obj, expected):
    assert defaulted(obj) == expected


def test_replication_controller():
    rc = {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"},
          "spec": {"template": {"metadata": {"labels": {"app": "a"}},
                                "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}
    out = defaulted(rc)
    assert out["metadata"]["labels"] == {"app": "a"}
    assert out["spec"]["selector"] == {"app": "a"}
    assert out["spec"]["replicas"] == 1
    assert out["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
    assert "enableServiceLinks" not in out["spec"]["template"]["spec"]


@pytest.mark.parametrize("item,expected", [
    pytest.param({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}},
                 {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"},
                  "default": {"cpu": "2"}, "defaultRequest": {"cpu": "2", "memory": "64Mi"}},
                 id="default-from-max-request-from-default-then-min"),
    pytest.param({"type": "Container", "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "1"}},
                 {"type": "Container", "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "1"}},
                 id="explicit-values-kept"),
    pytest.param({"type": "Container"}, {"type": "Container"}, id="empty-maps-not-written"),
    pytest.param({"type": "Pod", "max": {"cpu": "4"}}, {"type": "Pod", "max": {"cpu": "4"}}, id="pod-items-untouched"),
])
def test_limit_range(item, expected):
    lr = {"apiVersion": "v1", "kind": "LimitRange", "spec": {"limits": [item]}}
    assert defaulted(lr)["spec"]["limits"] == [expected]


def test_node_allocatable_from_capacity():
    node = {"apiVersion": "v1", "kind": "Node", "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi"}}}
    out = defaulted(node)
    assert out["status"]["allocatable"] == {"cpu": "4", "memory": "8Gi"}
    assert out["spec"]["podCIDRs"] == ["10.244.0.0/24"]


def test_idempotent_and_tolerates_garbage():
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c", "image": "x"}],
                                                        "volumes": "not-a-list"}}
    once = defaulted(pod)
    assert defaulted(once) == once
    weird = {"apiVersion": "v1", "kind": "Pod", "spec": "nonsense"}
    assert defaulted(weird) == weird
    bad_quantity = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [
        {"name": "c", "image": "x:1", "resources": {"limits": {"cpu": "lots"}}}]}}
    assert defaulted(bad_quantity)["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "lots"}
