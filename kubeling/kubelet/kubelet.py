"""The sync loop: the pods bound to this node, made to match their specs.

::

    pod informer (spec.nodeName=<node>) ──▶ PodWorkers ──▶ sync_pod / sync_terminating_pod /
    PLEG relist (1 s) ───────────────────▶   (one task      sync_terminated_pod / sync_removed_pod
    probe results ───────────────────────▶    per UID)

- `sync_pod` (upstream's ``SyncPod``): active deadline, volumes, `compute_pod_actions`, the
  sandbox, kills, starts (with CrashLoopBackOff), then the status. It returns when the pod
  next wants a look (a back-off ending), else None.
- `sync_terminating_pod`: preStop hooks and stops within the grace period, the sandbox stopped,
  a terminal status written.
- `sync_terminated_pod`: volumes unmounted, the sandbox removed (its IP released); a pod being
  deleted is then removed from the API (DELETE with grace 0 and its UID as precondition), as
  upstream's status manager does once nothing runs.
- `sync_removed_pod`: gone from the API: containers, logs and pod directories removed.

The PLEG ("pod lifecycle event generator") relists the runtime every second and wakes the
workers of pods whose containers changed state, e.g. a process that exited. It also finds
orphans (sandboxes of pods the API no longer has) and removes them.

Faults never escape a pod: a failure in one step is recorded as an Event and in the container's
``waiting`` reason, and the worker tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from kubeling.kubelet import cm, kuberuntime, status as status_mod
from kubeling.kubelet.backoff import Backoff
from kubeling.kubelet.kuberuntime_container import (StartContext, StartError, grace_period, kill_container,
                                                    start_container)
from kubeling.kubelet.podworkers import PodWorkers
from kubeling.kubelet.runtime import ContainerState, ContainerStatus, PodSandboxStatus, RuntimeError_, SandboxState
from kubeling.kubelet.status import PodView, Waiting
from kubeling.kubelet.volumes import VolumeError
from kubeling.kubelet.volumes.mounts import termination_log_path

log = logging.getLogger(__name__)

RELIST_PERIOD = 1.0
MAX_TERMINATION_MESSAGE = 4096


class Kubelet:
    def __init__(self, *, client: Any, node_name: str, root: Path, runtime: Any, images: Any, volumes: Any,
                 volume_host: Any, probes: Any, recorder: Any, status: Any, host_ip: str,
                 cluster_dns: list[str], cluster_domain: str = "cluster.local", memory_capacity: int = 0,
                 services: Any = None, secrets: Any = None, cgroup_root: str = "kubepods") -> None:
        self.client, self.node_name, self.root = client, node_name, Path(root)
        self.runtime, self.images, self.volumes, self.probes = runtime, images, volumes, probes
        self.recorder, self.status, self.host_ip = recorder, status, host_ip
        self.cluster_dns, self.cluster_domain = cluster_dns, cluster_domain
        self.services_informer, self.secrets = services, secrets
        self.cgroup_root = cgroup_root
        # called with a pod's UID once it is gone: object caches, token manager
        self.forget_hooks: list = []
        self.backoff = Backoff()
        self._waiting: dict[str, dict[str, Waiting]] = {}
        self._image_ids: dict[str, str] = {}
        self._relisted: dict[str, tuple] = {}
        # (pod uid, container name) -> the newest container's id, and pod uid -> ready sandbox id:
        # what the agent's server streams from; refreshed whenever a pod's status is computed
        self.current_containers: dict[tuple[str, str], str] = {}
        self.current_sandboxes: dict[str, str] = {}
        self.workers = PodWorkers(self.sync_pod, self.sync_terminating_pod, self.sync_terminated_pod,
                                  self.sync_removed_pod, grace_period=grace_period)
        self.ctx = StartContext(runtime=runtime, images=images, volume_host=volume_host, root=self.root,
                                record=self.record, services=self._services, memory_capacity=memory_capacity,
                                pull_secrets=self._pull_secrets)

    # -- plumbing ------------------------------------------------------------------------------

    def record(self, pod: dict, type_: str, reason: str, message: str) -> None:
        self.recorder.event(pod, type_, reason, message)

    def _services(self) -> list[dict]:
        return self.services_informer.list() if self.services_informer is not None else []

    async def _pull_secrets(self, pod: dict) -> list[dict]:
        ns = pod["metadata"].get("namespace", "default")
        out = []
        for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
            got = await self.secrets.get(ns, ref.get("name", "")) if self.secrets is not None else None
            if got is not None:
                out.append(got)
        return out

    def pod_ip(self, pod: dict) -> str:
        if (pod.get("spec") or {}).get("hostNetwork"):
            return self.host_ip
        last = self.status.last(pod["metadata"]["uid"]) or pod.get("status") or {}
        return last.get("podIP", "")

    async def _runtime_view(self, uid: str) -> tuple[list[PodSandboxStatus], list[ContainerStatus]]:
        sandboxes = await self.runtime.list_pod_sandboxes(uid)
        containers: list[ContainerStatus] = []
        for s in sandboxes:
            containers += await self.runtime.list_containers(s.id)
        return sandboxes, containers

    # -- informer side ---------------------------------------------------------------------------

    def on_pod(self, pod: dict, *_: Any) -> None:
        if (pod.get("spec") or {}).get("nodeName") == self.node_name:
            self.workers.update(pod)

    def on_pod_update(self, old: dict, new: dict) -> None:
        """Upstream's ``checkAndUpdatePod``: the kubelet owns a pod's status, so a change of the
        status alone (our own writes, mostly) is no reason to sync; spec, labels, annotations
        and deletion are."""
        if _sync_relevant(old) == _sync_relevant(new):
            self.workers.refresh(new)
        else:
            self.on_pod(new)

    def on_pod_delete(self, pod: dict) -> None:
        self.workers.update(pod, removed=True)

    # -- SyncPod -----------------------------------------------------------------------------------

    async def sync_pod(self, pod: dict) -> float | None:
        uid = pod["metadata"]["uid"]
        spec = pod.get("spec") or {}
        waiting = self._waiting.setdefault(uid, {})
        deadline = spec.get("activeDeadlineSeconds")
        # the informer's copy may predate our first status write: fall back to what we wrote
        started = _epoch((pod.get("status") or {}).get("startTime") or
                         (self.status.last(uid) or {}).get("startTime"))
        if deadline is not None and started and time.time() - started >= deadline:
            self.record(pod, "Normal", "DeadlineExceeded",
                        "Pod was active on the node longer than the specified deadline")
            await self._kill_pod(pod, grace_period(pod))
            await self._write_status(pod, terminal=("Failed", "DeadlineExceeded",
                                                    "Pod was active on the node longer than the specified deadline"))
            self.workers.update({**pod, "status": {
                **(pod.get("status") or {}), "phase": "Failed", "reason": "DeadlineExceeded",
                "message": "Pod was active on the node longer than the specified deadline"}})
            return None
        self.probes.add_pod(pod)
        try:
            volume_paths = await self.volumes.mount_pod(pod)
        except VolumeError as e:
            self.record(pod, "Warning", e.reason, e.message)
            await self._write_status(pod)
            return 2.0
        sandboxes, containers = await self._runtime_view(uid)
        # The prober keeps one status per container name: give it each name's newest attempt only,
        # or an exited predecessor listed after its successor would read as "not running" (never
        # started, never ready) for as long as the runtime lists them in that order.
        for history in kuberuntime.by_name(containers).values():
            self.probes.update_container(uid, history[-1])
        liveness_failed = {c.name for c in containers if c.state == ContainerState.RUNNING and
                           (_failed(self.probes.liveness.get(c.id)) or _failed(self.probes.startup.get(c.id)))}
        actions = kuberuntime.compute_pod_actions(
            pod, sandboxes, containers, liveness_failed=liveness_failed,
            started={c.name: self.probes.started(uid, c.name) for c in containers
                     if c.state == ContainerState.RUNNING})
        specs = {c["name"]: c for c in _all_containers(pod)}
        by_id = {c.id: c for c in containers}
        changed = bool(actions.kill)
        for cid, message in actions.kill.items():
            c = by_id.get(cid)
            await kill_container(self.ctx, pod, specs.get(c.name) if c else None, cid,
                                 grace=float(spec.get("terminationGracePeriodSeconds", 30)),
                                 message=message, pod_ip=self.pod_ip(pod))
        sandbox = kuberuntime.newest_sandbox(sandboxes)
        config = kuberuntime.sandbox_config(
            pod, actions.sandbox_attempt if actions.create_sandbox else (sandbox.attempt if sandbox else 0),
            cgroup_parent=cm.cgroup_parent(pod, self.cgroup_root), cluster_dns=self.cluster_dns,
            cluster_domain=self.cluster_domain)
        if actions.create_sandbox:
            sandbox = await self._new_sandbox(pod, sandbox, config, actions.kill_pod)
            if sandbox is None:
                await self._write_status(pod)
                return 5.0
            sandboxes, containers = await self._runtime_view(uid)
        history = kuberuntime.by_name(containers)
        next_try: float | None = None
        pod_ips = [self.host_ip] if spec.get("hostNetwork") else [sandbox.ip] if sandbox and sandbox.ip else []
        for c in actions.start:
            name = c["name"]
            old = history.get(name, [])
            if name in actions.restart:
                last = old[-1] if old else None
                left = self.backoff.remaining((uid, name)) if last is not None else 0.0
                if left > 0:
                    waiting[name] = Waiting("CrashLoopBackOff", f"back-off {self.backoff.current((uid, name)):.0f}s "
                                            f"restarting failed container={name} pod={_pod_key(pod)}")
                    self.record(pod, "Warning", "BackOff",
                                f"Back-off restarting failed container {name} in pod {_pod_key(pod)}")
                    next_try = left if next_try is None else min(next_try, left)
                    continue
            attempt = (old[-1].attempt + 1) if old else 0
            changed = True
            try:
                cid, image_id = await start_container(self.ctx, pod, c, sandbox.id, config, attempt, volume_paths,
                                                      pod_ips, self.host_ip)
            except StartError as e:
                waiting[name] = Waiting(e.reason, e.message)
                delay = 2.0 if e.reason not in ("ErrImagePull", "ImagePullBackOff") else \
                    max(self.images.retry_in(pod, c), 1.0)
                if e.reason in ("CreateContainerError", "RunContainerError", "PostStartHookError"):
                    delay = self.backoff.next((uid, name))
                next_try = delay if next_try is None else min(next_try, delay)
                continue
            waiting.pop(name, None)
            self._image_ids[cid] = image_id
            if name in actions.restart:
                ran = (old[-1].finished_at - old[-1].started_at) if old and old[-1].started_at else 0.0
                self.backoff.next((uid, name), ran)
        # nothing was killed, created or started: the runtime still looks as listed above
        written = await self._write_status(pod, view=None if changed else (sandboxes, containers))
        if deadline is not None:
            # nothing else wakes a running pod: look again when its active deadline passes
            # (upstream's activeDeadlineHandler, checked by the sync loop every second)
            left = _epoch(written.get("startTime")) + deadline - time.time()
            next_try = max(left, 0.1) if next_try is None else min(next_try, max(left, 0.1))
        return next_try

    async def _new_sandbox(self, pod: dict, old: PodSandboxStatus | None, config, kill_pod: bool
                           ) -> PodSandboxStatus | None:
        if old is not None:
            if kill_pod:
                self.record(pod, "Normal", "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.")
            try:
                await self.runtime.stop_pod_sandbox(old.id)
            except RuntimeError_ as e:
                log.warning("stopping old sandbox of %s: %s", _pod_key(pod), e)
        try:
            sid = await self.runtime.run_pod_sandbox(config)
            return await self.runtime.pod_sandbox_status(sid)
        except RuntimeError_ as e:
            self.record(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}")
            return None

    # -- status ----------------------------------------------------------------------------------

    async def _write_status(self, pod: dict, terminal: tuple[str, str, str] | None = None,
                            view: tuple[list, list] | None = None) -> dict:
        uid = pod["metadata"]["uid"]
        sandboxes, containers = view if view is not None else await self._runtime_view(uid)
        newest = kuberuntime.newest_sandbox(sandboxes)
        if newest is not None and newest.state == SandboxState.READY:
            self.current_sandboxes[uid] = newest.id
        for name, history in kuberuntime.by_name(containers).items():
            self.current_containers[(uid, name)] = history[-1].id
        # what we last computed is the status to build on (the informer's copy may lag behind it)
        last = self.status.last(uid)
        view = PodView(pod={**pod, "status": last} if last else pod, sandbox=newest,
                       containers=kuberuntime.by_name(containers), waiting=dict(self._waiting.get(uid, {})),
                       host_ip=self.host_ip, qos_class=cm.pod_qos(pod), terminal=terminal,
                       scheme=f"{getattr(self.runtime, 'name', 'runc')}://")
        for c in containers:
            if c.state == ContainerState.RUNNING:
                view.ready[c.name] = self.probes.ready(uid, c.name)
                view.started[c.name] = self.probes.started(uid, c.name)
            view.image_ids[c.id] = self._image_ids.get(c.id) or c.annotations.get(kuberuntime.IMAGE_ID, c.image)
            if c.state == ContainerState.EXITED:
                view.termination_messages[c.id] = self._termination_message(pod, c)
        new = status_mod.generate(view, time.time())
        self.status.set_status(pod, new)
        return new

    def _termination_message(self, pod: dict, c: ContainerStatus) -> str:
        path = termination_log_path(self.root / "pods" / pod["metadata"]["uid"], c.name, c.attempt)
        try:
            with open(path, "rb") as f:
                text = f.read(MAX_TERMINATION_MESSAGE).decode(errors="replace")
        except OSError:
            text = ""
        spec = next((x for x in _all_containers(pod) if x["name"] == c.name), {})
        if not text and c.exit_code != 0 and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            text = _log_tail(c.log_path, 80, MAX_TERMINATION_MESSAGE)
        return text

    # -- termination -----------------------------------------------------------------------------

    async def _kill_pod(self, pod: dict, grace: float) -> None:
        uid = pod["metadata"]["uid"]
        sandboxes, containers = await self._runtime_view(uid)
        specs = {c["name"]: c for c in _all_containers(pod)}
        running = [c for c in containers if c.state in (ContainerState.RUNNING, ContainerState.CREATED)]
        await asyncio.gather(*(kill_container(self.ctx, pod, specs.get(c.name), c.id, grace=grace,
                                              message=f"Stopping container {c.name}", pod_ip=self.pod_ip(pod))
                               for c in running))
        self.probes.remove_pod(uid)
        for s in sandboxes:
            if s.state == SandboxState.READY:
                try:
                    await self.runtime.stop_pod_sandbox(s.id)
                except RuntimeError_ as e:
                    log.warning("stopping sandbox of %s: %s", _pod_key(pod), e)

    async def sync_terminating_pod(self, pod: dict, removed: bool) -> None:
        await self._kill_pod(pod, grace_period(pod, removed))
        if removed:
            return
        _, containers = await self._runtime_view(pod["metadata"]["uid"])
        current = (pod.get("status") or {}).get("phase")
        if current in ("Succeeded", "Failed"):
            terminal = (current, (pod.get("status") or {}).get("reason", ""),
                        (pod.get("status") or {}).get("message", ""))
        else:
            newest = [h[-1] for h in kuberuntime.by_name(containers).values()]
            ok = bool(newest) and all(c.exit_code == 0 for c in newest if c.state == ContainerState.EXITED)
            terminal = ("Succeeded" if ok else "Failed", "", "")
        self._waiting.pop(pod["metadata"]["uid"], None)
        await self._write_status(pod, terminal=terminal)

    async def sync_terminated_pod(self, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        await self.volumes.unmount_pod(uid)
        sandboxes, _ = await self._runtime_view(uid)
        for s in sandboxes:
            await self.runtime.stop_pod_sandbox(s.id)
        if pod["metadata"].get("deletionTimestamp"):
            await self.status.flush()
            try:
                await self.client.delete("", "v1", "pods", pod["metadata"]["name"],
                                         namespace=pod["metadata"].get("namespace"), grace_period_seconds=0,
                                         preconditions={"uid": uid})
            except Exception as e:  # noqa: BLE001 - gone already, or retried by the worker
                if getattr(e, "code", None) not in (404, 409):
                    raise

    async def sync_removed_pod(self, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        sandboxes, containers = await self._runtime_view(uid)
        for c in containers:
            await self.runtime.remove_container(c.id)
            self._image_ids.pop(c.id, None)
        for s in sandboxes:
            await self.runtime.remove_pod_sandbox(s.id)
        await self.volumes.unmount_pod(uid)
        self.probes.remove_pod(uid)
        self.status.forget(uid)
        self.backoff.forget_prefix(uid)
        self.current_sandboxes.pop(uid, None)
        for key in [k for k in self.current_containers if k[0] == uid]:
            del self.current_containers[key]
        self._waiting.pop(uid, None)
        for hook in self.forget_hooks:
            try:
                hook(uid)
            except Exception:  # noqa: BLE001 - a cache's bookkeeping must not block removal
                log.exception("forgetting pod %s", uid)
        meta = pod["metadata"]
        logs = self.root / "logs" / "pods" / f"{meta.get('namespace', 'default')}_{meta.get('name', '')}_{uid}"
        await asyncio.to_thread(_rmtree, logs)
        await asyncio.to_thread(_rmtree, self.root / "pods" / uid)

    # -- loops -------------------------------------------------------------------------------------

    async def relist(self, stop: asyncio.Event, period: float = RELIST_PERIOD) -> None:
        """The PLEG (see the module docstring)."""
        while not stop.is_set():
            try:
                await self._relist_once()
            except Exception:  # noqa: BLE001 - the next relist tries again
                log.exception("relist")
            try:
                await asyncio.wait_for(stop.wait(), period)
            except asyncio.TimeoutError:
                pass

    async def _relist_once(self) -> None:
        seen: dict[str, tuple] = {}
        pods = self.workers.known()
        for s in await self.runtime.list_pod_sandboxes():
            states = tuple((c.id, c.state) for c in await self.runtime.list_containers(s.id))
            seen[s.uid] = seen.get(s.uid, ()) + ((s.id, s.state),) + states
        for uid, state in seen.items():
            if uid in pods and self._relisted.get(uid) != state:
                self.workers.update(pods[uid])
        self._relisted = seen

    async def remove_orphans(self, live_uids: set[str]) -> None:
        """Pods the runtime holds but the API does not (deleted while the agent was down)."""
        for s in await self.runtime.list_pod_sandboxes():
            if s.uid not in live_uids and s.uid not in self.workers.known():
                log.info("removing orphaned pod %s/%s (%s)", s.namespace, s.name, s.uid)
                self.workers.update({"metadata": {"uid": s.uid, "name": s.name, "namespace": s.namespace},
                                     "spec": {}}, removed=True)

    async def probe_updates(self, stop: asyncio.Event) -> None:
        """Wake a pod's worker when one of its probe results changes."""
        while not stop.is_set():
            update = await self.probes.next_update()
            pod = self.workers.known().get(update.pod_uid)
            if pod is not None:
                self.workers.update(pod)


def _sync_relevant(pod: dict) -> tuple:
    meta = pod.get("metadata") or {}
    terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")   # time to terminate
    return (pod.get("spec"), meta.get("labels"), meta.get("annotations"), meta.get("deletionTimestamp"),
            meta.get("deletionGracePeriodSeconds"), terminal)


def _failed(result: Any) -> bool:
    return result is not None and getattr(result, "value", result) == "failure"


def _epoch(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    import datetime
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def _pod_key(pod: dict) -> str:
    meta = pod["metadata"]
    return f"{meta['name']}_{meta.get('namespace', 'default')}({meta['uid']})"


def _all_containers(pod: dict) -> list[dict]:
    spec = pod.get("spec") or {}
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or []) + \
        list(spec.get("ephemeralContainers") or [])


def _log_tail(path: str, lines: int, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()[-limit * 4:]
    except OSError:
        return ""
    out = []
    for line in data.splitlines()[-lines:]:
        parts = line.split(b" ", 3)
        out.append(parts[3].decode(errors="replace") if len(parts) == 4 else line.decode(errors="replace"))
    return "\n".join(out)[-limit:]


def _rmtree(path: Path) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)
