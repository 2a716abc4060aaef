"""apps/v1 and batch/v1 defaults, as a 1.32 apiserver's decoder applies them."""

import copy

import pytest

from kubeling.api.defaults import apply_defaults

CONTAINER = {"name": "c", "image": "nginx:1.25"}
DEFAULTED_TEMPLATE_SPEC = {
    "containers": [{
        "name": "c", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent", "resources": {},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
    }],
    "dnsPolicy": "ClusterFirst",
    "restartPolicy": "Always",
    "schedulerName": "default-scheduler",
    "securityContext": {},
    "terminationGracePeriodSeconds": 30,
}
LABELS = {"app": "a"}


def template(restart_policy=None):
    spec = {"containers": [dict(CONTAINER)]}
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    return {"metadata": {"labels": dict(LABELS)}, "spec": spec}


def defaulted(obj):
    obj = copy.deepcopy(obj)
    apply_defaults(obj)
    return obj


def test_deployment_matches_upstream():
    d = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
         "spec": {"selector": {"matchLabels": LABELS}, "template": template()}}
    assert defaulted(d)["spec"] == {
        "replicas": 1,
        "revisionHistoryLimit": 10,
        "progressDeadlineSeconds": 600,
        "selector": {"matchLabels": LABELS},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
        "template": {"metadata": {"labels": LABELS}, "spec": DEFAULTED_TEMPLATE_SPEC},
    }


@pytest.mark.parametrize("strategy,expected", [
    pytest.param({"type": "Recreate"}, {"type": "Recreate"}, id="recreate-gets-no-rolling-update"),
    pytest.param({"rollingUpdate": {"maxSurge": 0}},
                 {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "25%"}},
                 id="partial-rolling-update"),
])
def test_deployment_strategy(strategy, expected):
    d = {"apiVersion": "apps/v1", "kind": "Deployment",
         "spec": {"strategy": strategy, "replicas": 0, "template": template()}}
    out = defaulted(d)["spec"]
    assert out["strategy"] == expected
    assert out["replicas"] == 0  # an explicit zero is a value, not "unset"


def test_replica_set():
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "spec": {"template": template()}}
    assert defaulted(rs)["spec"] == {"replicas": 1,
                                     "template": {"metadata": {"labels": LABELS}, "spec": DEFAULTED_TEMPLATE_SPEC}}


def test_daemon_set():
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "spec": {"template": template()}}
    spec = defaulted(ds)["spec"]
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["template"]["spec"] == DEFAULTED_TEMPLATE_SPEC
    on_delete = {"apiVersion": "apps/v1", "kind": "DaemonSet", "spec": {"updateStrategy": {"type": "OnDelete"}}}
    assert defaulted(on_delete)["spec"]["updateStrategy"] == {"type": "OnDelete"}


def test_stateful_set_matches_upstream():
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
           "spec": {"serviceName": "web", "selector": {"matchLabels": LABELS}, "template": template(),
                    "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {
                        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}
    assert defaulted(sts)["spec"] == {
        "serviceName": "web",
        "selector": {"matchLabels": LABELS},
        "replicas": 1,
        "revisionHistoryLimit": 10,
        "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        "template": {"metadata": {"labels": LABELS}, "spec": DEFAULTED_TEMPLATE_SPEC},
        "volumeClaimTemplates": [{
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "www"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "volumeMode": "Filesystem"},
            "status": {"phase": "Pending"},
        }],
    }


@pytest.mark.parametrize("strategy,expected", [
    pytest.param({"type": "RollingUpdate"}, {"type": "RollingUpdate"}, id="explicit-type-gets-no-partition"),
    pytest.param({"type": "RollingUpdate", "rollingUpdate": {}},
                 {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}, id="partition-when-block-given"),
    pytest.param({"type": "OnDelete"}, {"type": "OnDelete"}, id="on-delete"),
])
def test_stateful_set_update_strategy(strategy, expected):
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"updateStrategy": strategy}}
    assert defaulted(sts)["spec"]["updateStrategy"] == expected


def test_job_matches_upstream():
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
           "spec": {"template": template("Never")}}
    out = defaulted(job)
    assert out["metadata"] == {"name": "pi", "labels": LABELS}  # labels copied from the template
    assert out["spec"] == {
        "completions": 1, "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed",
        "suspend": False, "podReplacementPolicy": "TerminatingOrFailed", "manualSelector": False,
        "template": {"metadata": {"labels": LABELS},
                     "spec": {**DEFAULTED_TEMPLATE_SPEC, "restartPolicy": "Never"}},
    }


@pytest.mark.parametrize("given,expected", [
    pytest.param({"parallelism": 3}, {"parallelism": 3}, id="parallel-work-queue-leaves-completions-unset"),
    pytest.param({"completions": 5}, {"completions": 5, "parallelism": 1}, id="fixed-completions"),
    pytest.param({"backoffLimitPerIndex": 1, "completionMode": "Indexed", "completions": 3},
                 {"backoffLimit": 2**31 - 1, "completionMode": "Indexed"}, id="per-index-backoff"),
    pytest.param({"podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}},
                 {"podReplacementPolicy": "Failed",
                  "podFailurePolicy": {"rules": [{"action": "Ignore",
                                                  "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}},
                 id="pod-failure-policy"),
])
def test_job_variants(given, expected):
    job = {"apiVersion": "batch/v1", "kind": "Job", "spec": {**given, "template": template("Never")}}
    spec = defaulted(job)["spec"]
    assert {k: spec.get(k) for k in expected} == expected
    if "completions" not in given and "parallelism" in given:
        assert "completions" not in spec


def test_cron_job_job_template_is_not_job_defaulted():
    cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
          "spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {"template": template("OnFailure")}}}}
    assert defaulted(cj)["spec"] == {
        "schedule": "*/1 * * * *",
        "concurrencyPolicy": "Allow",
        "suspend": False,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 1,
        "jobTemplate": {"spec": {"template": {"metadata": {"labels": LABELS},
                                              "spec": {**DEFAULTED_TEMPLATE_SPEC, "restartPolicy": "OnFailure"}}}},
    }


@pytest.mark.parametrize("kind,api_version,path", [
    pytest.param("Deployment", "apps/v1", ("spec", "template", "spec"), id="deployment"),
    pytest.param("ReplicaSet", "apps/v1", ("spec", "template", "spec"), id="replicaset"),
    pytest.param("DaemonSet", "apps/v1", ("spec", "template", "spec"), id="daemonset"),
    pytest.param("StatefulSet", "apps/v1", ("spec", "template", "spec"), id="statefulset"),
    pytest.param("Job", "batch/v1", ("spec", "template", "spec"), id="job"),
    pytest.param("CronJob", "batch/v1", ("spec", "jobTemplate", "spec", "template", "spec"), id="cronjob"),
    pytest.param("PodTemplate", "v1", ("template", "spec"), id="podtemplate"),
])
def test_every_template_is_defaulted_even_when_absent(kind, api_version, path):
    """Templates are value-typed in Go: even a missing one decodes to a defaulted empty spec."""
    out = defaulted({"apiVersion": api_version, "kind": kind})
    for key in path:
        out = out[key]
    assert out["dnsPolicy"] == "ClusterFirst"
    assert out["schedulerName"] == "default-scheduler"


def test_lists_default_each_item():
    lst = {"apiVersion": "apps/v1", "kind": "DeploymentList", "items": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": template()}},
        {"spec": {"replicas": 3, "template": template()}},
    ]}
    items = defaulted(lst)["items"]
    assert [i["spec"]["replicas"] for i in items] == [1, 3]
    assert all(i["spec"]["revisionHistoryLimit"] == 10 for i in items)
