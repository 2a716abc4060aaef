"""Jobs and CronJobs with real pods on `node_cluster` (issue 7, acceptance 8 and 9).

Pods are scheduled by the cluster's scheduler and run as runc containers (busybox from the
seeded registry). The CronJob test runs a second, private ``kubeling controller-manager`` with
only the ``cronjob`` controller on a fast clock (the hidden ``--cronjob-clock-speed`` /
``--cronjob-clock-start`` flags): its clock starts at 2028-02-29 00:00 UTC and runs 30 times
too fast, and the CronJobs fire only on 29 February, so the cluster's own CronJob controller
(real time, in another year) never fires them while the fast one makes a Job every few seconds.
"""

from __future__ import annotations

import json
import subprocess
import time

import harness

JOB = """
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  completions: {completions}
  parallelism: {parallelism}
  backoffLimit: {backoff}
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: work
        image: busybox
        command: ["sh", "-c", "{script}"]
"""

CRONJOB = """
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {name}
spec:
  schedule: "{schedule}"
  concurrencyPolicy: {policy}
  successfulJobsHistoryLimit: {keep}
  failedJobsHistoryLimit: 1
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 1
          containers:
          - name: work
            image: busybox
            command: ["sh", "-c", "{script}"]
"""

FAST_START = "2028-02-29T00:00:00Z"
SPEED = 30  # one scheduled minute every 2 s


def jobs_of(cluster, ns: str) -> list[dict]:
    return json.loads(cluster.kubectl("get", "jobs", "-n", ns, "-o", "json").stdout)["items"]


def events(cluster, ns: str, name: str, reason: str) -> list[str]:
    out = cluster.kubectl("get", "events", "-n", ns, "--field-selector",
                          f"involvedObject.name={name},reason={reason}", "-o", "json").stdout
    return [e["message"] for e in json.loads(out)["items"]]


def test_job_with_completions_and_parallelism(node_cluster, node_namespace, tmp_path):
    ns = node_namespace
    watch_out = tmp_path / "watch.txt"
    with open(watch_out, "w") as out:
        watch = subprocess.Popen(
            [harness.kubectl_binary("1.33"), f"--kubeconfig={node_cluster.kubeconfig}", "get", "pods", "-n", ns,
             "-l", "batch.kubernetes.io/job-name=five", "--watch", "--no-headers", "-o",
             "custom-columns=NAME:.metadata.name,PHASE:.status.phase,DELETING:.metadata.deletionTimestamp"],
            stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        node_cluster.kubectl("create", "-n", ns, "-f", "-", input=JOB.format(
            name="five", completions=5, parallelism=2, backoff=6, script="sleep 1"))
        node_cluster.kubectl("wait", "-n", ns, "--for=condition=complete", "job/five", "--timeout=180s")
        time.sleep(0.5)  # let the watch print the last events it has already received
    finally:
        watch.kill()
        watch.wait(timeout=10)
    active: dict[str, bool] = {}
    most = 0
    for line in watch_out.read_text().splitlines():
        name, phase, deleting = line.split()
        active[name] = phase not in ("Succeeded", "Failed") and deleting == "<none>"
        most = max(most, sum(active.values()))
    assert len(active) == 5, watch_out.read_text()
    assert most == 2, watch_out.read_text()
    job = json.loads(node_cluster.kubectl("get", "job", "five", "-n", ns, "-o", "json").stdout)
    assert job["status"]["succeeded"] == 5
    assert [(c["type"], c["reason"]) for c in job["status"]["conditions"]] == [
        ("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached")]
    row = node_cluster.kubectl("get", "job", "five", "-n", ns, "--no-headers").stdout.split()
    assert row[1:3] == ["Complete", "5/5"], row
    pods = json.loads(node_cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    assert all("batch.kubernetes.io/job-tracking" not in (p["metadata"].get("finalizers") or []) for p in pods)
    assert events(node_cluster, ns, "five", "Completed") == ["Job completed"]


def test_failing_job_hits_its_backoff_limit(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=JOB.format(
        name="fails", completions=1, parallelism=1, backoff=1, script="exit 1"))
    node_cluster.kubectl("wait", "-n", ns, "--for=condition=failed", "job/fails", "--timeout=120s")
    job = json.loads(node_cluster.kubectl("get", "job", "fails", "-n", ns, "-o", "json").stdout)
    failed = [c for c in job["status"]["conditions"] if c["type"] == "Failed"]
    assert failed[0]["reason"] == "BackoffLimitExceeded"
    assert job["status"]["failed"] == 2
    row = node_cluster.kubectl("get", "job", "fails", "-n", ns, "--no-headers").stdout.split()
    assert row[1:3] == ["Failed", "0/1"], row
    assert events(node_cluster, ns, "fails", "BackoffLimitExceeded") == [
        "Job has reached the specified backoff limit"]


def test_cronjob_on_a_fast_clock(node_cluster, node_namespace, tmp_path):
    ns = node_namespace
    with open(tmp_path / "controller-manager.log", "w") as log:
        manager = subprocess.Popen(
            [*harness._server_command(), "controller-manager", "--kubeconfig", str(node_cluster.kubeconfig),
             "--controllers=cronjob", f"--cronjob-clock-speed={SPEED}", f"--cronjob-clock-start={FAST_START}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        for name, policy, keep, script in (("forbid", "Forbid", 3, "sleep 3600"),
                                           ("replace", "Replace", 3, "sleep 3600"),
                                           ("history", "Allow", 2, "true")):
            node_cluster.kubectl("create", "-n", ns, "-f", "-", input=CRONJOB.format(
                name=name, schedule="*/2 * 29 2 *", policy=policy, keep=keep, script=script))

        def owned(cj: str) -> list[dict]:
            return [j for j in jobs_of(node_cluster, ns)
                    if any(r["name"] == cj for r in j["metadata"].get("ownerReferences") or [])]

        # Allow + history limit: Jobs keep coming, finish, and only the newest two complete ones stay
        harness.eventually(lambda: len(events(node_cluster, ns, "history", "SuccessfulDelete")) >= 2, timeout=120,
                           what="history-limit deletions")
        def complete() -> list[str]:
            return [j["metadata"]["name"] for j in owned("history")
                    if any(c["type"] == "Complete" and c["status"] == "True"
                           for c in (j.get("status") or {}).get("conditions") or [])]
        # a Job may have just completed and not yet been cleaned up: the limit holds once it is
        harness.eventually(lambda: len(complete()) <= 2, timeout=30, what="at most 2 complete Jobs kept")
        cj = json.loads(node_cluster.kubectl("get", "cronjob", "history", "-n", ns, "-o", "json").stdout)
        assert cj["status"]["lastSuccessfulTime"]  # a Job's completionTime: the Job controller's (real) clock
        for j in owned("history"):
            stamp = j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            minutes = int(j["metadata"]["name"].rsplit("-", 1)[1])
            assert stamp.startswith("2028-02-29T") and minutes % 2 == 0

        # Forbid: the first Job never ends, so no second one is made
        harness.eventually(lambda: events(node_cluster, ns, "forbid", "JobAlreadyActive"), timeout=60,
                           what="JobAlreadyActive")
        assert len(owned("forbid")) == 1, [j["metadata"]["name"] for j in owned("forbid")]

        # Replace: each schedule time deletes the running Job and starts a new one
        harness.eventually(lambda: len(events(node_cluster, ns, "replace", "SuccessfulDelete")) >= 2, timeout=60,
                           what="replaced jobs")
        cj = json.loads(node_cluster.kubectl("get", "cronjob", "replace", "-n", ns, "-o", "json").stdout)
        assert len(cj["status"]["active"]) == 1, cj["status"]
        assert cj["status"]["lastScheduleTime"].startswith("2028-02-29T")
        table = node_cluster.kubectl("get", "cronjobs", "-n", ns).stdout
        assert "*/2 * 29 2 *" in table
    finally:
        for name in ("forbid", "replace", "history"):
            node_cluster.kubectl("patch", "cronjob", name, "-n", ns, "-p", '{"spec":{"suspend":true}}', check=False)
        manager.terminate()
        try:
            manager.wait(timeout=15)
        except subprocess.TimeoutExpired:
            manager.kill()
            manager.wait(timeout=10)


def test_finished_job_goes_after_its_ttl(node_cluster, node_namespace):
    ns = node_namespace
    manifest = JOB.format(name="brief", completions=1, parallelism=1, backoff=0, script="true").replace(
        "  backoffLimit: 0\n", "  backoffLimit: 0\n  ttlSecondsAfterFinished: 2\n")
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=manifest)
    node_cluster.kubectl("wait", "-n", ns, "--for=condition=complete", "job/brief", "--timeout=120s")
    harness.eventually(lambda: node_cluster.kubectl("get", "job", "brief", "-n", ns, check=False).returncode != 0,
                       timeout=60, what="the Job deleted by its TTL")
    harness.eventually(lambda: not json.loads(node_cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)
                       ["items"], timeout=60, what="its pods deleted (foreground)")
