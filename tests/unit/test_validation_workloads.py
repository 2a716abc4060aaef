"""apps/v1 and batch/v1: selectors vs templates, strategies, immutability, Job and CronJob rules."""

import copy

import pytest

from kubeling.api.validation import validate
from kubeling.api.validation.apps import STS_UPDATE_MESSAGE

LABELS = {"app": "web"}


def template(restart="Always", labels=LABELS):
    return {"metadata": {"labels": dict(labels)},
            "spec": {"containers": [{"name": "c", "image": "nginx"}], "restartPolicy": restart,
                     "dnsPolicy": "ClusterFirst"}}


def workload(kind, group="apps", version="v1", **spec):
    s = {"selector": {"matchLabels": dict(LABELS)}, "template": template()}
    if kind == "Deployment":
        s.update(replicas=1, strategy={"type": "RollingUpdate",
                                       "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    s.update(spec)
    return {"apiVersion": f"{group}/{version}", "kind": kind,
            "metadata": {"name": "web", "namespace": "default", "uid": "u"}, "spec": s}


def job(**spec):
    s = {"selector": {"matchLabels": {"job": "j"}}, "template": template("Never", {"job": "j"}),
         "backoffLimit": 6, "completions": 1, "parallelism": 1, "completionMode": "NonIndexed"}
    s.update(spec)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "default"}, "spec": s}


def cronjob(**spec):
    s = {"schedule": "*/5 * * * *", "concurrencyPolicy": "Allow",
         "jobTemplate": {"spec": {"template": template("OnFailure")}}}
    s.update(spec)
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj", "namespace": "default"},
            "spec": s}


def fields(errs):
    return [(e.field, e.kind) for e in errs]


@pytest.mark.parametrize("obj,expected", [
    pytest.param(workload("Deployment"), [], id="deployment-valid"),
    pytest.param(workload("Deployment", selector=None), [("spec.selector", "Required")], id="selector-required"),
    pytest.param(workload("Deployment", selector={}), [("spec.selector", "Invalid")], id="selector-empty"),
    pytest.param(workload("Deployment", template=template(labels={"app": "other"})),
                 [("spec.template.metadata.labels", "Invalid")], id="selector-mismatch"),
    pytest.param(workload("Deployment", replicas=-1), [("spec.replicas", "Invalid")], id="replicas"),
    pytest.param(workload("Deployment", template=template("Never")),
                 [("spec.template.spec.restartPolicy", "NotSupported")], id="restart-always-only"),
    pytest.param(workload("Deployment", strategy={"type": "Recreate", "rollingUpdate": {}}),
                 [("spec.strategy.rollingUpdate", "Forbidden")], id="recreate-no-rolling"),
    pytest.param(workload("Deployment", strategy={"type": "RollingUpdate",
                                                  "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}}),
                 [("spec.strategy.rollingUpdate.maxUnavailable", "Invalid")], id="both-zero"),
    pytest.param(workload("Deployment", strategy={"type": "RollingUpdate",
                                                  "rollingUpdate": {"maxUnavailable": "150%", "maxSurge": 1}}),
                 [("spec.strategy.rollingUpdate.maxUnavailable", "Invalid")], id="over-100-percent"),
    pytest.param(workload("Deployment", strategy={"type": "Blue"}), [("spec.strategy.type", "NotSupported")],
                 id="strategy-type"),
    pytest.param(workload("Deployment", progressDeadlineSeconds=5, minReadySeconds=10),
                 [("spec.progressDeadlineSeconds", "Invalid")], id="progress-deadline"),
    pytest.param(workload("ReplicaSet", replicas=2), [], id="replicaset-valid"),
    pytest.param(workload("DaemonSet", updateStrategy={"type": "RollingUpdate",
                                                       "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}),
                 [("spec.updateStrategy.rollingUpdate.maxUnavailable", "Invalid")], id="daemonset-both-zero"),
    pytest.param(workload("StatefulSet", serviceName="web", podManagementPolicy="Random"),
                 [("spec.podManagementPolicy", "NotSupported")], id="sts-pod-management"),
    pytest.param(workload("StatefulSet", updateStrategy={"type": "OnDelete", "rollingUpdate": {"partition": 1}}),
                 [("spec.updateStrategy.rollingUpdate", "Invalid")], id="sts-ondelete-rolling"),
    pytest.param(workload("StatefulSet", volumeClaimTemplates=[{"metadata": {"name": "data"},
                                                                "spec": {"accessModes": []}}]),
                 [("spec.volumeClaimTemplates[0].spec.accessModes", "Required"),
                  ("spec.volumeClaimTemplates[0].spec.resources[storage]", "Required")], id="sts-claims"),
])
def test_apps(obj, expected):
    assert fields(validate(obj)) == expected


def test_selector_mismatch_message():
    errs = validate(workload("Deployment", template=template(labels={"app": "other"})))
    assert str(errs[0]) == 'spec.template.metadata.labels: Invalid value: {"app":"other"}: ' \
                           '`selector` does not match template `labels`'


def test_statefulset_name_is_dns_label():
    obj = workload("StatefulSet")
    obj["metadata"]["name"] = "web.db"
    assert fields(validate(obj)) == [("metadata.name", "Invalid")]


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "DaemonSet"])
def test_selector_immutable_in_apps_v1(kind):
    old = workload(kind)
    new = copy.deepcopy(old)
    new["spec"]["selector"]["matchLabels"]["tier"] = "x"
    new["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    assert [(e.field, e.detail) for e in validate(new, old)] == [("spec.selector", "field is immutable")]


def test_legacy_deployment_selector_may_change():
    old = workload("Deployment", group="extensions", version="v1beta1")
    new = copy.deepcopy(old)
    new["spec"]["selector"]["matchLabels"]["tier"] = "x"
    new["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    assert validate(new, old) == []


@pytest.mark.parametrize("change,ok", [
    pytest.param(lambda s: s.update(replicas=5), True, id="replicas"),
    pytest.param(lambda s: s["template"]["spec"]["containers"][0].update(image="nginx:2"), True, id="template"),
    pytest.param(lambda s: s.update(minReadySeconds=3), True, id="minReadySeconds"),
    pytest.param(lambda s: s.update(serviceName="other"), False, id="serviceName"),
    pytest.param(lambda s: s.update(podManagementPolicy="Parallel"), False, id="podManagementPolicy"),
])
def test_statefulset_update(change, ok):
    old = workload("StatefulSet", serviceName="web", podManagementPolicy="OrderedReady")
    new = copy.deepcopy(old)
    change(new["spec"])
    errs = validate(new, old)
    assert errs == [] if ok else [(e.field, e.detail) for e in errs] == [("spec", STS_UPDATE_MESSAGE)]


@pytest.mark.parametrize("obj,expected", [
    pytest.param(job(), [], id="valid"),
    pytest.param(job(template=template("Always", {"job": "j"})),
                 [("spec.template.spec.restartPolicy", "NotSupported")], id="restart-always"),
    pytest.param(job(parallelism=-1), [("spec.parallelism", "Invalid")], id="parallelism"),
    pytest.param(job(backoffLimit=-1), [("spec.backoffLimit", "Invalid")], id="backoff"),
    pytest.param(job(completionMode="Indexed", completions=None), [("spec.completions", "Required")],
                 id="indexed-needs-completions"),
    pytest.param(job(selector={"matchLabels": {"job": "other"}}), [("spec.template.metadata.labels", "Invalid")],
                 id="selector-mismatch"),
    pytest.param(job(selector=None, manualSelector=True), [("spec.selector", "Required")], id="manual-selector"),
    pytest.param(job(selector=None), [], id="generated-selector"),
])
def test_job(obj, expected):
    assert fields(validate(obj)) == expected


def test_job_restart_policy_message():
    errs = validate(job(template=template("Always", {"job": "j"})))
    assert errs[0].message == 'Unsupported value: "Always": supported values: "OnFailure", "Never"'


@pytest.mark.parametrize("change,expected", [
    pytest.param(lambda s: s["template"]["spec"]["containers"][0].update(image="x"), [("spec.template", "Invalid")],
                 id="template"),
    pytest.param(lambda s: s.update(selector={"matchLabels": {"job": "j", "x": "y"}}),
                 [("spec.template.metadata.labels", "Invalid"), ("spec.selector", "Invalid")], id="selector"),
    pytest.param(lambda s: s.update(completions=3), [("spec.completions", "Invalid")], id="completions"),
    pytest.param(lambda s: s.update(parallelism=3, backoffLimit=2), [], id="parallelism-mutable"),
])
def test_job_update(change, expected):
    old = job()
    new = copy.deepcopy(old)
    change(new["spec"])
    assert fields(validate(new, old)) == expected


def test_suspended_job_may_change_scheduling_directives():
    old = job(suspend=True)
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["nodeSelector"] = {"zone": "a"}
    assert validate(new, old) == []


@pytest.mark.parametrize("obj,expected", [
    pytest.param(cronjob(), [], id="valid"),
    pytest.param(cronjob(schedule="@hourly"), [], id="descriptor"),
    pytest.param(cronjob(schedule=""), [("spec.schedule", "Required")], id="schedule-required"),
    pytest.param(cronjob(schedule="not a cron"), [("spec.schedule", "Invalid")], id="schedule-fields"),
    pytest.param(cronjob(schedule="61 * * * *"), [("spec.schedule", "Invalid")], id="schedule-range"),
    pytest.param(cronjob(schedule="CRON_TZ=UTC 0 * * * *"), [("spec.schedule", "Invalid")], id="schedule-tz"),
    pytest.param(cronjob(timeZone="Mars/Olympus"), [("spec.timeZone", "Invalid")], id="time-zone"),
    pytest.param(cronjob(timeZone="Europe/Berlin"), [], id="time-zone-ok"),
    pytest.param(cronjob(concurrencyPolicy="Sometimes"), [("spec.concurrencyPolicy", "NotSupported")],
                 id="concurrency"),
    pytest.param(cronjob(jobTemplate={"spec": {"template": template("Always")}}),
                 [("spec.jobTemplate.spec.template.spec.restartPolicy", "NotSupported")], id="job-template"),
])
def test_cronjob(obj, expected):
    assert fields(validate(obj)) == expected


def test_cronjob_name_limit():
    obj = cronjob()
    obj["metadata"]["name"] = "c" * 53
    assert [(e.field, e.detail) for e in validate(obj)] == [("metadata.name", "must be no more than 52 characters")]


def test_schedule_field_count_message():
    errs = validate(cronjob(schedule="foo"))
    assert errs[0].detail == "expected exactly 5 fields, found 1: [foo]"
