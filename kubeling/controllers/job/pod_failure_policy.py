"""``spec.podFailurePolicy``: upstream's ``pkg/controller/job/pod_failure_policy.go``.

Rules are tried in order on a failed pod; the first that matches decides:

- ``FailJob``: the whole Job fails (reason ``PodFailurePolicy``) with a message naming the
  container and exit code, or the pod condition, and the rule's index;
- ``Ignore``: the failure is not counted against ``backoffLimit`` (e.g. ``DisruptionTarget``:
  the pod was evicted or preempted, not broken);
- ``Count``: counted as usual; ``FailIndex``: counted, and (with backoffLimitPerIndex) fails the
  index.

``onExitCodes`` looks at terminated containers (init and regular, exit code 0 never matches),
optionally only ``containerName``; ``onPodConditions`` at the pod's conditions by type and
status. No rule matching means: count it.
"""

from __future__ import annotations

FAIL_JOB, IGNORE, COUNT, FAIL_INDEX = "FailJob", "Ignore", "Count", "FailIndex"


def _exit_code_match(rule: dict, pod: dict) -> dict | None:
    req = rule.get("onExitCodes") or {}
    values = set(req.get("values") or ())
    op = req.get("operator")
    status = pod.get("status") or {}
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if req.get("containerName") and cs.get("name") != req["containerName"]:
            continue
        term = (cs.get("state") or {}).get("terminated")
        if not term:
            continue
        code = term.get("exitCode", 0)
        if code == 0:
            continue
        if (op == "In" and code in values) or (op == "NotIn" and code not in values):
            return cs
    return None


def _condition_match(rule: dict, pod: dict) -> dict | None:
    for cond in (pod.get("status") or {}).get("conditions") or ():
        for req in rule.get("onPodConditions") or ():
            if cond.get("type") == req.get("type") and cond.get("status") == req.get("status", "True"):
                return cond
    return None


def match(policy: dict | None, pod: dict) -> tuple[str | None, bool, str | None]:
    """(the FailJob message or None, whether the failure counts, the matched action or None)."""
    if not policy:
        return None, True, None
    meta = pod.get("metadata") or {}
    who = f"{meta.get('namespace')}/{meta.get('name')}"
    for i, rule in enumerate(policy.get("rules") or ()):
        action = rule.get("action")
        if rule.get("onExitCodes"):
            cs = _exit_code_match(rule, pod)
            if cs is None:
                continue
            code = cs["state"]["terminated"].get("exitCode")
            message = (f"Container {cs.get('name')} for pod {who} failed with exit code {code} "
                       f"matching {action} rule at index {i}")
        elif rule.get("onPodConditions"):
            cond = _condition_match(rule, pod)
            if cond is None:
                continue
            message = f"Pod {who} has condition {cond.get('type')} matching {action} rule at index {i}"
        else:
            continue
        if action == IGNORE:
            return None, False, IGNORE
        if action == FAIL_JOB:
            return message, True, FAIL_JOB
        return None, True, action
    return None, True, None
