"""`Prober`: run one probe of a container once, as upstream's ``prober.probe`` does.

It picks the runner from the probe's handler (exec, httpGet, tcpSocket, grpc), retries a run
that *errored* (could not be attempted) up to 3 times, records the user-visible events, and
reduces the outcome to a `results.Result`:

    runner outcome        result     event (type Warning)
    success               SUCCESS    -
    warning (3xx)         SUCCESS    ProbeWarning  "<Type> probe warning: <output>"
    failure               FAILURE    Unhealthy     "<Type> probe failed: <output>"
    unknown               FAILURE    -
    error (ProbeError)    None       Unhealthy     "<Type> probe errored and resulted in
                                                    <result> state: <error>"

``None`` tells the worker to throw the run away (upstream does the same with an error).
``record_event(pod, type, reason, message)`` may be a plain function or a coroutine function.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from kubeling.kubelet.prober import results
from kubeling.kubelet.prober.exec import expand_static, probe_exec
from kubeling.kubelet.prober.grpc import probe_grpc
from kubeling.kubelet.prober.http import new_request, probe_http
from kubeling.kubelet.prober.probe import Outcome, ProbeError, Result, resolve_port
from kubeling.kubelet.prober.tcp import probe_tcp

log = logging.getLogger(__name__)

LIVENESS, READINESS, STARTUP = "liveness", "readiness", "startup"
SPEC_FIELD = {LIVENESS: "livenessProbe", READINESS: "readinessProbe", STARTUP: "startupProbe"}
_MAX_RETRIES = 3


def kill_message(probe_type: str, container_name: str) -> str:
    """The Killing event's message when a liveness or startup failure restarts a container."""
    return f"Container {container_name} failed {probe_type} probe, will be restarted"


class Prober:
    def __init__(self, runtime, record_event: Callable[..., Any]) -> None:
        self.runtime = runtime
        self.record_event = record_event

    async def probe(self, probe_type: str, pod: dict, container: dict, container_id: str,
                    pod_ip: str) -> results.Result | None:
        spec = container.get(SPEC_FIELD[probe_type])
        if not spec:
            return results.Result.SUCCESS
        title = probe_type.capitalize()
        outcome, error = Outcome(Result.UNKNOWN), None
        for _ in range(_MAX_RETRIES):
            try:
                outcome, error = await self.run(spec, pod, container, container_id, pod_ip), None
                break
            except ProbeError as e:
                outcome, error = Outcome(Result.UNKNOWN), e
        if error is not None:
            await self._event(pod, "Unhealthy", f"{title} probe errored and resulted in "
                                                f"{outcome.result.value} state: {error}")
            return None
        if outcome.result is Result.SUCCESS:
            return results.Result.SUCCESS
        if outcome.result is Result.WARNING:
            await self._event(pod, "ProbeWarning", f"{title} probe warning: {outcome.output}")
            return results.Result.SUCCESS
        if outcome.result is Result.FAILURE:
            await self._event(pod, "Unhealthy", f"{title} probe failed: {outcome.output}")
        return results.Result.FAILURE

    async def run(self, spec: dict, pod: dict, container: dict, container_id: str,
                  pod_ip: str) -> Outcome:
        """One attempt with the probe's handler; raises `ProbeError` if it cannot be made."""
        timeout = float(spec.get("timeoutSeconds") or 1)
        if spec.get("exec") is not None:
            command = expand_static(spec["exec"].get("command") or [], container.get("env"))
            return await probe_exec(self.runtime, container_id, command, timeout)
        if spec.get("httpGet") is not None:
            return await probe_http(new_request(spec["httpGet"], container, pod_ip), timeout)
        if spec.get("tcpSocket") is not None:
            tcp = spec["tcpSocket"]
            port = resolve_port(tcp.get("port"), container)
            return await probe_tcp(tcp.get("host") or pod_ip, port, timeout)
        if spec.get("grpc") is not None:
            grpc = spec["grpc"]
            port = resolve_port(grpc.get("port"), container)
            return await probe_grpc(pod_ip, port, grpc.get("service") or "", timeout)
        meta = pod.get("metadata", {})
        raise ProbeError(f"missing probe handler for {meta.get('name')}_{meta.get('namespace')}"
                         f"({meta.get('uid')}):{container.get('name')}")

    async def _event(self, pod: dict, reason: str, message: str) -> None:
        try:
            done = self.record_event(pod, "Warning", reason, message)
            if inspect.isawaitable(done):
                await done
        except Exception:
            log.exception("recording event %s failed", reason)
