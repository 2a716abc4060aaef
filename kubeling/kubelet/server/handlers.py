"""The agent's plain HTTP routes: container logs, stats, metrics, pods, healthz.

Logs are read by `kubeling.kubelet.logs` (the runtime writes them there). Errors are plain
text, as upstream's kubelet writes them; the API server turns a non-200 answer
to ``pods/log`` into a ``Status`` with the same text. Which container a log request reads is
upstream's ``validateContainerLogStatus``, from the pod status the agent reported: the current
instance (running, or terminated with no successor yet), or with ``previous`` the last
terminated one; a container still waiting has no logs (400 ``... is waiting to start: <reason>``).
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from aiohttp import web

from kubeling.kubelet import logs
from kubeling.kubelet.runtime import ContainerState

HOST = web.AppKey("agent_host", object)


class LogQueryError(ValueError):
    """A ``containerLogs`` query parameter that does not parse (400, this message)."""


TRUE = ("1", "t", "T", "true", "TRUE", "True")


def log_options(query, now_ns: int) -> tuple[logs.LogOptions, bool]:
    """``PodLogOptions`` from the query (what the API server forwards): (options, previous)."""
    def integer(name: str) -> int | None:
        raw = query.get(name)
        if raw in (None, ""):
            return None
        try:
            return int(raw)
        except ValueError:
            raise LogQueryError(f'invalid {name} {raw!r}: strconv.ParseInt: parsing "{raw}": invalid syntax') from None

    opts = logs.LogOptions(timestamps=query.get("timestamps") in TRUE, follow=query.get("follow") in TRUE,
                           tail=integer("tailLines"), limit_bytes=integer("limitBytes"))
    if opts.tail is not None and opts.tail < 0:
        opts.tail = None                       # --tail=-1: everything
    if opts.limit_bytes is not None and opts.limit_bytes < 1:
        raise LogQueryError("limitBytes must be greater than 0")
    since_seconds, since_time = integer("sinceSeconds"), query.get("sinceTime")
    if since_seconds is not None and since_time:
        raise LogQueryError("at most one of `sinceTime` or `sinceSeconds` may be specified")
    if since_seconds is not None:
        if since_seconds < 1:
            raise LogQueryError("sinceSeconds must be greater than 0")
        opts.since_ns = now_ns - since_seconds * 1_000_000_000
    elif since_time:
        try:
            opts.since_ns = logs.parse_timestamp(since_time)
        except ValueError:
            raise LogQueryError(f"invalid sinceTime {since_time!r}: not an RFC3339 UTC time") from None
    stream = query.get("stream", "")
    opts.stream = {"Stdout": "stdout", "Stderr": "stderr"}.get(stream, "")
    return opts, query.get("previous") in TRUE


def host_of(request: web.Request):
    return request.app[HOST]


def text_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message if message.endswith("\n") else message + "\n")


def pod_containers(pod: dict) -> list[str]:
    spec = pod.get("spec") or {}
    return [c.get("name") for key in ("initContainers", "containers", "ephemeralContainers")
            for c in spec.get(key) or []]


def container_status(pod: dict, name: str) -> dict | None:
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or []:
            if cs.get("name") == name:
                return cs
    return None


def strip_scheme(container_id: str) -> str:
    """``runc://<id>`` -> ``<id>`` (status ids carry the runtime's name, as upstream's)."""
    return container_id.split("://", 1)[-1]


def log_container(pod: dict, name: str, previous: bool) -> tuple[str, int]:
    """(container id, attempt) whose log to read; ValueError with upstream's message if none."""
    pod_name = (pod.get("metadata") or {}).get("name", "")
    cs = container_status(pod, name)
    if cs is None:
        raise ValueError(f'container "{name}" in pod "{pod_name}" is not available')
    state, last = cs.get("state") or {}, cs.get("lastState") or {}
    last_term = last.get("terminated") or {}
    restarts = int(cs.get("restartCount") or 0)
    if previous:
        if not last_term.get("containerID"):
            raise ValueError(f'previous terminated container "{name}" in pod "{pod_name}" not found')
        return last_term["containerID"], max(restarts - 1, 0)
    if "running" in state:
        return cs.get("containerID", ""), restarts
    if "terminated" in state:
        cid = (state["terminated"] or {}).get("containerID") or ""
        if cid:
            return cid, restarts
        if last_term.get("containerID"):
            return last_term["containerID"], max(restarts - 1, 0)
        raise ValueError(f'container "{name}" in pod "{pod_name}" is terminated')
    if last_term:
        if not last_term.get("containerID"):
            raise ValueError(f'container "{name}" in pod "{pod_name}" is terminated')
        return last_term["containerID"], max(restarts - 1, 0)
    if "waiting" in state:
        reason = (state["waiting"] or {}).get("reason", "")
        why = {"ErrImagePull": "image can't be pulled",
               "ImagePullBackOff": "trying and failing to pull image"}.get(reason, reason)
        raise ValueError(f'container "{name}" in pod "{pod_name}" is waiting to start: {why}')
    raise ValueError(f'container "{name}" in pod "{pod_name}" is waiting to start - no logs yet')


async def _log_path(host, pod: dict, name: str, cid: str, attempt: int) -> Path:
    """The runtime's log path of ``cid`` when it still knows the container, else the file the
    layout gives for ``attempt``."""
    if cid:
        try:
            st = await host.runtime.container_status(cid)
            if st.log_path:
                return Path(st.log_path)
        except Exception:  # noqa: BLE001 - a removed container: fall back to the layout
            pass
    return Path(host.log_dir(pod)) / name / f"{attempt}.log"


async def container_logs(request: web.Request) -> web.StreamResponse:
    host = host_of(request)
    ns, pod_name, name = (request.match_info[k] for k in ("namespace", "pod", "container"))
    pod = host.find_pod(ns, pod_name)
    if pod is None:
        return text_error(404, f'pod "{pod_name}" does not exist')
    if name not in pod_containers(pod):
        return text_error(404, f'container "{name}" not found in pod "{pod_name}"')
    try:
        opts, previous = log_options(request.query, time.time_ns())
        cid, attempt = log_container(pod, name, previous)
    except ValueError as e:
        return text_error(400, str(e))
    if not cid:
        cid = host.container_id(pod, name) or ""
    cid = strip_scheme(cid)
    path = await _log_path(host, pod, name, cid, attempt)

    async def running() -> bool:
        if previous or not cid:
            return False
        try:
            return (await host.runtime.container_status(cid)).state == ContainerState.RUNNING
        except Exception:  # noqa: BLE001 - gone: not running
            return False

    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        if path.exists():
            async for chunk in logs.read_logs(str(path), opts, running):
                await resp.write(chunk)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass   # the client went away (``kubectl logs -f`` interrupted)
    return resp


def _json(doc) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


async def stats_summary(request: web.Request) -> web.Response:
    return _json(await host_of(request).stats_summary())


async def metrics_resource(request: web.Request) -> web.Response:
    body = await host_of(request).metrics_resource()
    return web.Response(text=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def pods(request: web.Request) -> web.Response:
    return _json({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": host_of(request).running_pods()})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    app.router.add_get("/stats/summary", stats_summary)
    app.router.add_get("/stats/summary/", stats_summary)
    app.router.add_get("/metrics/resource", metrics_resource)
    app.router.add_get("/pods", pods)
    app.router.add_get("/pods/", pods)
    app.router.add_get("/healthz", healthz)
