"""Table columns and rows for the non-pod built-ins, CRD printer columns, and whole Tables."""

from datetime import datetime, timedelta, timezone

import pytest

from kubeling.api import kinds, printers

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
RES = {(r.group, r.version, r.kind): r for r in kinds.BUILTIN}


def ago(seconds: int) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name="x", age=300, **extra):
    return {"name": name, "namespace": "default", "creationTimestamp": ago(age), **extra}


def res(kind, group="", version="v1"):
    return RES[(group, version, kind)]


def names(r):
    return [(c["name"], c["priority"]) for c in printers.columns(r)]


POD_TEMPLATE = {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"},
                                        {"name": "log", "image": "busybox"}]}}

ROWS = [
    pytest.param(res("Deployment", "apps"), {
        "metadata": meta("web"),
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": POD_TEMPLATE},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}},
        ["web", "2/3", 3, 2, "5m", "nginx,log", "nginx:1.25,busybox", "app=web"], id="deployment"),
    pytest.param(res("Deployment", "extensions", "v1beta1"), {
        "metadata": meta("old"), "spec": {"replicas": 1, "template": POD_TEMPLATE}, "status": {}},
        ["old", "0/1", 0, 0, "5m", "nginx,log", "nginx:1.25,busybox", ""], id="legacy-deployment"),
    pytest.param(res("ReplicaSet", "apps"), {
        "metadata": meta("web-abc"),
        "spec": {"replicas": 3, "template": POD_TEMPLATE, "selector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]}},
        "status": {"replicas": 3, "readyReplicas": 1}},
        ["web-abc", 3, 3, 1, "5m", "nginx,log", "nginx:1.25,busybox", "app=web,tier in (be,fe)"], id="replicaset"),
    pytest.param(res("DaemonSet", "apps"), {
        "metadata": meta("ds"),
        "spec": {"template": {"spec": {**POD_TEMPLATE["spec"], "nodeSelector": {"os": "linux"}}},
                 "selector": {"matchLabels": {"a": "b"}}},
        "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                   "updatedNumberScheduled": 2, "numberAvailable": 1}},
        ["ds", 2, 2, 1, 2, 1, "os=linux", "5m", "nginx,log", "nginx:1.25,busybox", "a=b"], id="daemonset"),
    pytest.param(res("StatefulSet", "apps"), {
        "metadata": meta("db"), "spec": {"replicas": 3, "template": POD_TEMPLATE}, "status": {"readyReplicas": 3}},
        ["db", "3/3", "5m", "nginx,log", "nginx:1.25,busybox"], id="statefulset"),
    pytest.param(res("ControllerRevision", "apps"), {
        "metadata": meta("db-7f", ownerReferences=[{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                                                    "controller": True}]), "revision": 2},
        ["db-7f", "statefulset.apps/db", 2, "5m"], id="controllerrevision"),
    pytest.param(res("Job", "batch"), {
        "metadata": meta("pi", 7200),
        "spec": {"completions": 1, "template": POD_TEMPLATE,
                 "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}}},
        "status": {"succeeded": 1, "startTime": ago(7200), "completionTime": ago(7200 - 62),
                   "conditions": [{"type": "Complete", "status": "True"}]}},
        ["pi", "Complete", "1/1", "62s", "120m", "nginx,log", "nginx:1.25,busybox",
         "batch.kubernetes.io/controller-uid=u"], id="job-complete"),
    pytest.param(res("Job", "batch"), {
        "metadata": meta("work", 600), "spec": {"parallelism": 3, "template": POD_TEMPLATE},
        "status": {"succeeded": 1, "startTime": ago(190)}},
        ["work", "Running", "1/1 of 3", "3m10s", "10m", "nginx,log", "nginx:1.25,busybox", "<none>"],
        id="job-running-parallel"),
    pytest.param(res("Job", "batch"), {
        "metadata": meta("s"), "spec": {"completions": 2, "template": POD_TEMPLATE},
        "status": {"conditions": [{"type": "Suspended", "status": "True"}]}},
        ["s", "Suspended", "0/2", "", "5m", "nginx,log", "nginx:1.25,busybox", "<none>"], id="job-suspended"),
    pytest.param(res("CronJob", "batch"), {
        "metadata": meta("cj", 86400 * 3),
        "spec": {"schedule": "*/5 * * * *", "suspend": False,
                 "jobTemplate": {"spec": {"template": POD_TEMPLATE}}},
        "status": {"active": [{"name": "cj-1"}], "lastScheduleTime": ago(90)}},
        ["cj", "*/5 * * * *", "<none>", "False", 1, "90s", "3d", "nginx,log", "nginx:1.25,busybox", "<none>"],
        id="cronjob"),
    pytest.param(res("Namespace"), {"metadata": meta("kube-system", 86400 * 45), "status": {"phase": "Active"}},
                 ["kube-system", "Active", "45d"], id="namespace"),
    pytest.param(res("Node"), {
        "metadata": meta("n1", 3600 * 5, labels={"node-role.kubernetes.io/control-plane": "",
                                                  "kubernetes.io/role": "worker"}),
        "spec": {"unschedulable": True},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": "172.18.0.2"},
                                 {"type": "Hostname", "address": "n1"}],
                   "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian", "kernelVersion": "6.1",
                                "containerRuntimeVersion": "kubeling://0.1"}}},
        ["n1", "Ready,SchedulingDisabled", "control-plane,worker", "5h", "v1.33.0", "172.18.0.2", "<none>", "Debian",
         "6.1", "kubeling://0.1"], id="node"),
    pytest.param(res("Node"), {"metadata": meta("n2"), "status": {"conditions": [{"type": "Ready",
                                                                                 "status": "Unknown"}]}},
                 ["n2", "NotReady", "<none>", "5m", "", "<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"],
                 id="node-not-ready"),
    pytest.param(res("Endpoints"), {"metadata": meta("svc"), "subsets": [
        {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]},
        ["svc", "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...", "5m"], id="endpoints-more"),
    pytest.param(res("Endpoints"), {"metadata": meta("v6"), "subsets": [
        {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 53}]}]},
        ["v6", "[fd00::1]:53", "5m"], id="endpoints-ipv6"),
    pytest.param(res("ConfigMap"), {"metadata": meta("cm"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}},
                 ["cm", 3, "5m"], id="configmap"),
    pytest.param(res("Secret"), {"metadata": meta("s"), "type": "Opaque", "data": {"a": "MQ=="}},
                 ["s", "Opaque", 1, "5m"], id="secret"),
    pytest.param(res("ServiceAccount"), {"metadata": meta("default")}, ["default", 0, "5m"], id="serviceaccount"),
    pytest.param(res("PersistentVolume"), {
        "metadata": meta("pv1", annotations={"volume.beta.kubernetes.io/storage-class": "legacy"}),
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "default", "name": "data"},
                 "storageClassName": "standard", "volumeMode": "Filesystem"},
        "status": {"phase": "Bound"}},
        ["pv1", "1Gi", "RWO,RWX", "Retain", "Bound", "default/data", "legacy", "<unset>", "", "5m", "Filesystem"],
        id="pv"),
    pytest.param(res("PersistentVolumeClaim"), {
        "metadata": meta("data"), "spec": {"volumeName": "pv1", "storageClassName": "standard"},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}},
        ["data", "Bound", "pv1", "1Gi", "RWO", "standard", "<unset>", "5m", "<unset>"], id="pvc-bound"),
    pytest.param(res("PersistentVolumeClaim"), {
        "metadata": meta("wait", deletionTimestamp=ago(1)), "spec": {}, "status": {"phase": "Pending"}},
        ["wait", "Terminating", "", "", "", "", "<unset>", "5m", "<unset>"], id="pvc-terminating"),
    pytest.param(res("ResourceQuota"), {"metadata": meta("q"), "status": {
        "hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"},
        "used": {"pods": "3", "limits.cpu": "500m"}}},
        ["q", "5m", "pods: 3/10, requests.cpu: 0/1", "limits.cpu: 500m/2"], id="resourcequota"),
    pytest.param(res("ReplicationController"), {
        "metadata": meta("rc"), "spec": {"replicas": 2, "selector": {"app": "rc"}, "template": POD_TEMPLATE},
        "status": {"replicas": 2, "readyReplicas": 2}},
        ["rc", 2, 2, 2, "5m", "nginx,log", "nginx:1.25,busybox", "app=rc"], id="replicationcontroller"),
    pytest.param(res("PodTemplate"), {"metadata": meta("pt"), "template": {
        "metadata": {"labels": {"b": "2", "a": "1"}}, **POD_TEMPLATE}},
        ["pt", "nginx,log", "nginx:1.25,busybox", "a=1,b=2"], id="podtemplate"),
    pytest.param(res("HorizontalPodAutoscaler", "autoscaling", "v2"), {
        "metadata": meta("web"),
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 80}}},
                     {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"averageValue": "10"}}},
                     {"type": "Resource", "resource": {"name": "memory", "target": {"averageValue": "1Gi"}}}]},
        "status": {"currentReplicas": 2, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 42}}}]}},
        ["web", "Deployment/web", "cpu: 42%/80%, <unknown>/10 + 1 more...", "1", 5, 2, "5m"], id="hpa-v2"),
    pytest.param(res("HorizontalPodAutoscaler", "autoscaling", "v1"), {
        "metadata": meta("web"),
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
                 "targetCPUUtilizationPercentage": 50}, "status": {"currentReplicas": 1}},
        ["web", "Deployment/web", "cpu: <unknown>/50%", "<unset>", 3, 1, "5m"], id="hpa-v1"),
    pytest.param(res("Ingress", "networking.k8s.io"), {
        "metadata": meta("ing"),
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "a.example"}, {"host": "b.example"}],
                 "tls": [{"hosts": ["a.example"]}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.1.1.1"}, {"hostname": "lb.example"}]}}},
        ["ing", "nginx", "a.example,b.example", "10.1.1.1,lb.example", "80, 443", "5m"], id="ingress"),
    pytest.param(res("IngressClass", "networking.k8s.io"), {
        "metadata": meta("nginx"), "spec": {"controller": "k8s.io/ingress-nginx", "parameters": {
            "apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"}}},
        ["nginx", "k8s.io/ingress-nginx", "IngressParameters.k8s.example.com/p", "5m"], id="ingressclass"),
    pytest.param(res("NetworkPolicy", "networking.k8s.io"), {"metadata": meta("deny"), "spec": {"podSelector": {}}},
                 ["deny", "<none>", "5m"], id="networkpolicy"),
    pytest.param(res("StorageClass", "storage.k8s.io"), {
        "metadata": meta("standard", annotations={"storageclass.kubernetes.io/is-default-class": "true"}),
        "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"},
        ["standard (default)", "rancher.io/local-path", "Delete", "WaitForFirstConsumer", False, "5m"],
        id="storageclass-default"),
    pytest.param(res("PodDisruptionBudget", "policy"), {
        "metadata": meta("pdb"), "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}},
        ["pdb", "50%", "N/A", 1, "5m"], id="pdb"),
    pytest.param(res("RoleBinding", "rbac.authorization.k8s.io"), {
        "metadata": meta("rb"), "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                     {"kind": "ServiceAccount", "name": "bot", "namespace": "ci"}, {"kind": "User", "name": "bob"}]},
        ["rb", "ClusterRole/view", "5m", "alice, bob", "devs", "ci:bot"], id="rolebinding"),
    pytest.param(res("Lease", "coordination.k8s.io"), {"metadata": meta("kube-scheduler"),
                                                       "spec": {"holderIdentity": "sched-1_abc"}},
                 ["kube-scheduler", "sched-1_abc", "5m"], id="lease"),
    pytest.param(res("EndpointSlice", "discovery.k8s.io"), {
        "metadata": meta("svc-x"), "addressType": "IPv4", "ports": [{"port": 80}, {"name": "dns"}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]},
        ["svc-x", "IPv4", "80,dns", "10.0.0.1,10.0.0.2", "5m"], id="endpointslice"),
    pytest.param(res("PriorityClass", "scheduling.k8s.io"), {
        "metadata": meta("high"), "value": 1000, "globalDefault": False, "preemptionPolicy": "Never"},
        ["high", 1000, False, "5m", "Never"], id="priorityclass"),
    pytest.param(res("Role", "rbac.authorization.k8s.io"),
                 {"metadata": meta("r", creationTimestamp="2024-01-02T05:04:05+02:00")},
                 ["r", "2024-01-02T03:04:05Z"], id="role-default-table-in-utc"),
    pytest.param(res("CustomResourceDefinition", "apiextensions.k8s.io"),
                 {"metadata": meta("crontabs.stable.example.com")},
                 ["crontabs.stable.example.com", ago(300)], id="crd-default-table"),
]


@pytest.mark.parametrize("r, obj, expected", ROWS)
def test_row(r, obj, expected):
    assert printers.cells(r, obj, NOW) == expected
    assert len(printers.columns(r)) == len(expected)


@pytest.mark.parametrize("spec, status, expected", [
    pytest.param({"type": "ClusterIP", "clusterIPs": ["10.96.0.10"], "ports": [
        {"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}], "selector": {"k8s-app": "kube-dns"}}, {},
        ["10.96.0.10", "<none>", "53/UDP,53/TCP"], id="clusterip"),
    pytest.param({"type": "NodePort", "clusterIPs": ["10.96.1.1"], "ports": [
        {"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}]}, {},
        ["10.96.1.1", "<none>", "80/TCP,443:30443/TCP"], id="nodeport"),
    pytest.param({"type": "LoadBalancer", "clusterIPs": ["10.96.1.2"], "ports": [
        {"port": 80, "nodePort": 31000, "protocol": "TCP"}]}, {},
        ["10.96.1.2", "<pending>", "80:31000/TCP"], id="loadbalancer-pending"),
    pytest.param({"type": "LoadBalancer", "clusterIPs": ["10.96.1.2"], "externalIPs": ["1.2.3.4"], "ports": []},
                 {"loadBalancer": {"ingress": [{"ip": "172.18.0.100"}]}},
                 ["10.96.1.2", "172.18.0.100,1.2.3.4", "<none>"], id="loadbalancer-assigned"),
    pytest.param({"type": "ExternalName", "externalName": "example.com"}, {},
                 ["<none>", "example.com", "<none>"], id="externalname"),
    pytest.param({"type": "ClusterIP", "clusterIP": "None", "externalIPs": ["5.6.7.8"]}, {},
                 ["None", "5.6.7.8", "<none>"], id="headless-with-external-ip"),
])
def test_service_row(spec, status, expected):
    obj = {"metadata": meta("svc"), "spec": spec, "status": status}
    cells = printers.cells(res("Service"), obj, NOW)
    assert cells[0:2] == ["svc", spec["type"]]
    assert cells[2:5] == expected
    assert cells[5] == "5m"
    assert cells[6] == ("k8s-app=kube-dns" if spec.get("selector") else "<none>")


EVENT_CORE = {
    "metadata": meta("web.17a"), "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{c}"},
    "reason": "BackOff", "type": "Warning", "message": "Back-off restarting\n", "count": 4,
    "firstTimestamp": ago(3600), "lastTimestamp": ago(30), "source": {"component": "kubelet", "host": "n1"}}
EVENT_NEW = {
    "metadata": meta("web.18b"), "regarding": {"kind": "Deployment", "name": "web"}, "reason": "ScalingReplicaSet",
    "type": "Normal", "note": "Scaled up", "eventTime": "2024-05-01T11:58:00.000000Z",
    "reportingController": "deployment-controller", "reportingInstance": "cm-1"}


@pytest.mark.parametrize("r, obj, expected", [
    pytest.param(res("Event"), EVENT_CORE,
                 ["30s", "Warning", "BackOff", "pod/web-1", "spec.containers{c}", "kubelet, n1", "Back-off restarting",
                  "60m", 4, "web.17a"], id="core-event"),
    pytest.param(res("Event", "events.k8s.io"), EVENT_NEW,
                 ["2m", "Normal", "ScalingReplicaSet", "deployment/web", "", "deployment-controller, cm-1",
                  "Scaled up", "2m", 1, "web.18b"], id="events-k8s-io-singleton"),
    pytest.param(res("Event", "events.k8s.io"), {**EVENT_NEW, "series": {"count": 7,
                                                                         "lastObservedTime": ago(10)}},
                 ["10s", "Normal", "ScalingReplicaSet", "deployment/web", "", "deployment-controller, cm-1",
                  "Scaled up", "2m", 7, "web.18b"], id="events-k8s-io-series"),
])
def test_event_rows(r, obj, expected):
    assert printers.cells(r, obj, NOW) == expected


def test_events_k8s_io_printer_accepts_core_shape():
    core_cells = printers.cells(res("Event"), EVENT_CORE, NOW)
    assert printers.cells(res("Event", "events.k8s.io"), EVENT_CORE, NOW) == core_cells


def test_event_columns_match_upstream():
    assert names(res("Event")) == [
        ("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0), ("Subobject", 1), ("Source", 1),
        ("Message", 0), ("First Seen", 1), ("Count", 1), ("Name", 1)]
    assert printers.columns(res("Event")) == printers.columns(res("Event", "events.k8s.io"))


@pytest.mark.parametrize("kind, group, expected", [
    pytest.param("Deployment", "apps", [("Name", 0), ("Ready", 0), ("Up-to-date", 0), ("Available", 0), ("Age", 0),
                                        ("Containers", 1), ("Images", 1), ("Selector", 1)], id="deployment"),
    pytest.param("Service", "", [("Name", 0), ("Type", 0), ("Cluster-IP", 0), ("External-IP", 0), ("Port(s)", 0),
                                 ("Age", 0), ("Selector", 1)], id="service"),
    pytest.param("Node", "", [("Name", 0), ("Status", 0), ("Roles", 0), ("Age", 0), ("Version", 0),
                              ("Internal-IP", 1), ("External-IP", 1), ("OS-Image", 1), ("Kernel-Version", 1),
                              ("Container-Runtime", 1)], id="node"),
    pytest.param("Job", "batch", [("Name", 0), ("Status", 0), ("Completions", 0), ("Duration", 0), ("Age", 0),
                                  ("Containers", 1), ("Images", 1), ("Selector", 1)], id="job"),
    pytest.param("LimitRange", "", [("Name", 0), ("Created At", 0)], id="limitrange-default"),
])
def test_columns(kind, group, expected):
    r = next(x for x in kinds.BUILTIN if x.kind == kind and x.group == group)
    assert names(r) == expected


def test_every_builtin_has_matching_columns_and_cells():
    for r in kinds.BUILTIN:
        cols = printers.columns(r)
        assert cols[0]["name"] in ("Name", "Last Seen")
        assert all(set(c) == {"name", "type", "format", "description", "priority"} for c in cols)
        assert all(c["description"] for c in cols), r
        assert len(printers.cells(r, {"metadata": {"name": "x"}}, NOW)) == len(cols), r


# --- custom resources -----------------------------------------------------------------------------

APC = [
    {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "Ratio", "type": "number", "jsonPath": ".status.ratio", "priority": 1},
    {"name": "Ready", "type": "boolean", "jsonPath": ".status.ready", "description": "Is it ready"},
    {"name": "Image", "type": "string", "jsonPath": ".spec.image", "format": "byte"},
    {"name": "Labels", "type": "string", "jsonPath": ".metadata.labels"},
    {"name": "Cond", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Started", "type": "date", "jsonPath": ".status.startedAt"},
]
CR = {"apiVersion": "stable.example.com/v1", "kind": "CronTab",
      "metadata": {"name": "my-cron", "creationTimestamp": ago(100), "labels": {"a": "1"}},
      "spec": {"cronSpec": "* * * * */5", "replicas": 2.0, "image": "img"},
      "status": {"ratio": 1, "ready": "yes", "startedAt": ago(3 * 3600),
                 "conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}}


def test_crd_columns():
    cols = printers.crd_columns(APC)
    assert [(c["name"], c["type"], c["format"], c["priority"]) for c in cols] == [
        ("Name", "string", "name", 0), ("Spec", "string", "", 0), ("Replicas", "integer", "", 0),
        ("Ratio", "number", "", 1), ("Ready", "boolean", "", 0), ("Image", "string", "byte", 0),
        ("Labels", "string", "", 0), ("Cond", "string", "", 0), ("Started", "date", "", 0)]
    assert cols[1]["description"] == "Custom resource definition column (in JSONPath format): .spec.cronSpec"
    assert cols[4]["description"] == "Is it ready"


def test_crd_cells_typed():
    assert printers.crd_cells(APC, CR, NOW) == [
        "my-cron", "* * * * */5", 2, 1.0, None, "img", '{"a":"1"}', "True", "3h"]


def test_crd_cells_missing_values_are_null():
    assert printers.crd_cells(APC, {"metadata": {"name": "bare"}}, NOW) == ["bare"] + [None] * len(APC)


@pytest.mark.parametrize("value, expected", [
    pytest.param("not-a-time", "<invalid>", id="invalid"),
    pytest.param("", "<unknown>", id="empty"),
    pytest.param(42, None, id="wrong-type"),
])
def test_crd_date_cells(value, expected):
    apc = [{"name": "When", "type": "date", "jsonPath": ".spec.when"}]
    assert printers.crd_cells(apc, {"metadata": {"name": "x"}, "spec": {"when": value}}, NOW) == ["x", expected]


def test_crd_without_columns_gets_age():
    cols = printers.crd_columns([])
    assert [(c["name"], c["type"]) for c in cols] == [("Name", "string"), ("Age", "date")]
    assert printers.crd_cells(None, CR, NOW) == ["my-cron", "100s"]


def test_custom_resource_through_resource_extra():
    r = kinds.Resource("stable.example.com", "v1", "crontabs", "CronTab", crd=True,
                       extra={"additionalPrinterColumns": APC[:2]})
    assert [c["name"] for c in printers.columns(r)] == ["Name", "Spec", "Replicas"]
    assert printers.cells(r, CR, NOW) == ["my-cron", "* * * * */5", 2]


# --- whole tables ---------------------------------------------------------------------------------

def test_table_with_partial_object_metadata():
    r = res("ConfigMap")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cm"), "data": {"k": "v"}}
    t = printers.table(r, [cm], now=NOW, resource_version="42")
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert t["metadata"] == {"resourceVersion": "42"}
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert t["rows"] == [{"cells": ["cm", 1, "5m"], "object": {
        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": cm["metadata"]}}]


@pytest.mark.parametrize("include, expected_keys", [
    pytest.param("Object", {"cells", "object", "conditions"}, id="object"),
    pytest.param("None", {"cells", "conditions"}, id="none"),
])
def test_table_include_object(include, expected_keys):
    p = {"apiVersion": "v1", "kind": "Pod", "metadata": meta("done"), "spec": {"containers": [{"name": "c"}]},
         "status": {"phase": "Succeeded"}}
    t = printers.table(res("Pod"), [p], include_object=include, now=NOW, continue_token="abc",
                       remaining_item_count=3, no_headers=True)
    assert t["columnDefinitions"] is None
    assert t["metadata"] == {"continue": "abc", "remainingItemCount": 3}
    assert set(t["rows"][0]) == expected_keys
    if include == "Object":
        assert t["rows"][0]["object"] is p


def test_empty_table_has_rows_list():
    assert printers.table(res("Secret"), [], now=NOW)["rows"] == []
