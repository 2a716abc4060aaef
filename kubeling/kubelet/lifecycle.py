"""postStart and preStop hooks (upstream's ``lifecycle.handlerRunner``).

``await run_handler(runtime, pod, container, container_id, handler, pod_ip, timeout=...)``
runs one ``LifecycleHandler`` and returns None on success or upstream's error message:

    exec      ``exec_sync`` in the container; a non-zero exit fails
              (``Exec lifecycle hook ([sh -c exit 1]) for Container "c" in Pod "p_ns(uid)"
              failed - error: command 'sh -c exit 1' exited with 1: , message: ""``)
    httpGet   a GET as probes send it (user agent ``kube-lifecycle/1.33``); *any* HTTP answer
              is success, only a transport error fails. An https hook whose server answers
              plain HTTP is retried over http without the Authorization header, with a
              ``LifecycleHTTPFallback`` event when ``record_event`` is given.
    sleep     waits ``seconds``; cut short by the timeout it fails
              ("container terminated before sleep hook finished").

``timeout`` is what the caller can still afford (for preStop: the remaining grace period;
None: no limit, as postStart). When it runs out the hook is abandoned and the message's error
is ``context deadline exceeded`` (upstream just stops waiting for preStop; the kubelet then
proceeds to stop the container either way).

What the caller does with the message, as upstream: postStart failure -> event
``FailedPostStartHook`` "PostStartHook failed" (the message stays out of events: it may hold
secrets), kill the container, and report ``PostStartHookError`` with the message as the
waiting reason's message; preStop failure -> event ``FailedPreStopHook`` "PreStopHook failed".
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kubeling.kubelet.prober.http import GetError, do_get, new_request
from kubeling.kubelet.prober.probe import ProbeError
from kubeling.kubelet.runtime import RuntimeError_

# exec_sync needs a finite timeout; a postStart hook has none, so "for ever" is a day.
_NO_TIMEOUT = 24 * 3600.0
_SLACK = 0.5
_HTTP_ANSWERED_HTTPS = "http: server gave HTTP response to HTTPS client"


def format_pod(pod: dict) -> str:
    """Upstream's ``format.Pod``: ``name_namespace(uid)``."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('name', '')}_{meta.get('namespace', '')}({meta.get('uid', '')})"


async def run_handler(runtime, pod: dict, container: dict, container_id: str, handler: dict,
                      pod_ip: str, *, timeout: float | None = None,
                      record_event: Callable[..., Any] | None = None) -> str | None:
    where = f'for Container "{container.get("name", "")}" in Pod "{format_pod(pod)}"'
    if handler.get("exec") is not None:
        command = list(handler["exec"].get("command") or [])
        kind = f"Exec lifecycle hook ([{' '.join(command)}]) {where}"
        work = _run_exec(runtime, container_id, command, timeout)
    elif handler.get("httpGet") is not None:
        kind = f"HTTP lifecycle hook ({handler['httpGet'].get('path', '')}) {where}"
        work = _run_http(pod, container, handler["httpGet"], pod_ip, timeout, record_event)
    elif handler.get("sleep") is not None:
        seconds = int(handler["sleep"].get("seconds") or 0)
        kind = f"Sleep lifecycle hook ({seconds}) {where}"
        work = _run_sleep(seconds, timeout)
    else:
        return f"Cannot run handler: invalid handler: {json.dumps(handler, sort_keys=True)}"
    # The runners honour ``timeout`` themselves, with their own wording; this outer limit only
    # catches one that does not (a runtime ignoring exec_sync's timeout).
    outer = None if timeout is None or handler.get("sleep") is not None else timeout + _SLACK
    try:
        async with asyncio.timeout(outer):
            error = await work
    except TimeoutError:
        error = "context deadline exceeded"
    return None if error is None else f"{kind} failed - error: {error}"


async def _run_exec(runtime, container_id: str, command: list[str],
                    timeout: float | None) -> str | None:
    try:
        code, stdout, stderr = await runtime.exec_sync(container_id, command,
                                                       timeout if timeout is not None else _NO_TIMEOUT)
    except TimeoutError:
        return f'command "{" ".join(command)}" timed out, message: ""'
    except RuntimeError_ as e:
        return f'{e}, message: ""'
    if code == 0:
        return None
    output = (stdout + stderr).decode("utf-8", "replace")
    err = stderr.decode("utf-8", "replace")
    # Go's %q of the output: JSON string quoting is the same for the characters that matter.
    return f"command '{' '.join(command)}' exited with {code}: {err}, " \
           f"message: {json.dumps(output, ensure_ascii=False)}"


async def _run_http(pod: dict, container: dict, http_get: dict, pod_ip: str,
                    timeout: float | None, record_event: Callable[..., Any] | None) -> str | None:
    if not http_get.get("host") and not pod_ip:
        return "failed to find networking container"
    try:
        req = new_request(http_get, container, pod_ip, purpose="lifecycle")
    except ProbeError as e:
        return str(e)
    limit = timeout if timeout is not None else _NO_TIMEOUT
    try:
        await do_get(req, limit, max_body=0)
        return None
    except GetError as e:
        if req.scheme != "https" or not str(e).endswith(_HTTP_ANSWERED_HTTPS):
            return str(e)
        first_error = str(e)
    # Upstream's fallback for hooks written with scheme HTTPS against plain-HTTP servers.
    plain = replace(req, scheme="http",
                    headers=[(n, v) for n, v in req.headers if n != "Authorization"])
    try:
        await do_get(plain, limit, max_body=0)
    except GetError:
        return first_error
    if record_event is not None:
        done = record_event(pod, "Warning", "LifecycleHTTPFallback",
                            f"request to HTTPS lifecycle hook {req.host}:{req.port} got HTTP "
                            "response, retry with HTTP succeeded")
        if inspect.isawaitable(done):
            await done
    return None


async def _run_sleep(seconds: int, timeout: float | None) -> str | None:
    if timeout is not None and timeout < seconds:
        await asyncio.sleep(max(0.0, timeout))
        return "container terminated before sleep hook finished"
    await asyncio.sleep(seconds)
    return None
