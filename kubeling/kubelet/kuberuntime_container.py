"""Starting and killing one container: upstream's ``kuberuntime_container.go``.

`start_container` is the sequence every container goes through, each step able to fail with
the reason upstream puts in the container's ``waiting`` state::

    image (ErrImagePull, ImagePullBackOff, ErrImageNeverPull, InvalidImageName)
      -> env + mounts (CreateContainerConfigError)
      -> runtime.create_container (CreateContainerError)
      -> runtime.start_container (RunContainerError)
      -> postStart hook (FailedPostStartHook: the container is killed)

A failure raises `StartError(reason, message)`; the events (Pulling, Pulled, Created, Started,
Failed) are recorded on the way, with upstream's messages. `kill_container` runs the preStop
hook within the grace period, then asks the runtime to stop the container (SIGTERM, SIGKILL
after what is left of the grace period).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kubeling.kubelet import cm, envvars, kuberuntime, lifecycle
from kubeling.kubelet.images import ImageError
from kubeling.kubelet.runtime import ContainerConfig, RuntimeError_, SandboxConfig
from kubeling.kubelet.volumes import mounts as volume_mounts

log = logging.getLogger(__name__)

DEFAULT_GRACE = 30
MIN_KILL_GRACE = 2          # upstream's minimumGracePeriodInSeconds


class StartError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class StartContext:
    """What starting a container needs from the kubelet besides the pod and container."""

    runtime: Any
    images: Any                     # images.puller.ImageManager
    volume_host: Any                # volumes.VolumeHost (object caches, allocatable)
    root: Path
    record: Callable[[dict, str, str, str], None]
    services: Callable[[], list[dict]]
    memory_capacity: int
    pull_secrets: Callable[[dict], Any]     # async: pod -> list of Secret objects


def log_path(root: Path, pod: dict, name: str, attempt: int) -> Path:
    meta = pod["metadata"]
    return (root / "logs" / "pods" / f"{meta.get('namespace', 'default')}_{meta['name']}_{meta['uid']}"
            / name / f"{attempt}.log")


async def start_container(ctx: StartContext, pod: dict, container: dict, sandbox_id: str,
                          sandbox: SandboxConfig, attempt: int, volume_paths: dict[str, str],
                          pod_ips: list[str], host_ip: str) -> tuple[str, str]:
    """Pull, create, start and run postStart; returns (container id, imageID)."""
    name = container["name"]

    def record(type_: str, reason: str, message: str) -> None:
        ctx.record(pod, type_, reason, message)

    try:
        image = await ctx.images.ensure_image(pod, container, await ctx.pull_secrets(pod), record)
    except ImageError as e:
        # upstream's startContainer: "Error: ErrImagePull" (ImagePullBackOff, ErrImageNeverPull...)
        # after the image manager's own event, so describe shows both the cause and the state
        record("Warning", "Failed", f"Error: {e.reason}")
        raise StartError(e.reason, str(e)) from None
    events: list[tuple[str, str, str]] = []
    try:
        env = await envvars.make_environment(pod, container, ctx.volume_host, ctx.services(),
                                             pod_ips=pod_ips, host_ips=[host_ip] if host_ip else [],
                                             events=events)
        mounts = await volume_mounts.container_mounts(pod, container, volume_paths,
                                                      ctx.root / "pods" / pod["metadata"]["uid"],
                                                      env=env, attempt=attempt)
    except envvars.CreateContainerConfigError as e:
        record("Warning", "Failed", f"Error: {e}")
        raise StartError("CreateContainerConfigError", str(e)) from None
    for type_, reason, message in events:
        record(type_, reason, message)
    env = kuberuntime.merged_env(image.config, env)
    argv = envvars.expand_command(kuberuntime.container_command(container, image.config), env)
    if not argv:
        msg = "failed to create containerd container: no command specified"
        record("Warning", "Failed", f"Error: {msg}")
        raise StartError("CreateContainerError", msg)
    digest = (image.repo_digests or [image.id])[0]
    config = ContainerConfig(
        name=name, image=image, image_ref=container.get("image", ""), attempt=attempt, command=argv, env=env,
        working_dir=container.get("workingDir") or image.config.get("WorkingDir") or "",
        mounts=mounts, stdin=bool(container.get("stdin")), stdin_once=bool(container.get("stdinOnce")),
        tty=bool(container.get("tty")), log_path=str(log_path(ctx.root, pod, name, attempt)),
        resources=cm.container_resources(pod, container, ctx.memory_capacity),
        security=kuberuntime.security_context(pod, container),
        labels={**sandbox.labels, kuberuntime.CONTAINER_NAME: name},
        annotations={kuberuntime.CONTAINER_HASH: kuberuntime.container_hash(container),
                     kuberuntime.IMAGE_ID: digest, kuberuntime.IMAGE_SPEC: container.get("image", ""),
                     "io.kubernetes.container.restartCount": str(attempt)})
    try:
        cid = await ctx.runtime.create_container(sandbox_id, config, sandbox)
    except RuntimeError_ as e:
        record("Warning", "Failed", f"Error: {e}")
        raise StartError("CreateContainerError", str(e)) from None
    record("Normal", "Created", f"Created container: {name}")
    try:
        await ctx.runtime.start_container(cid)
    except RuntimeError_ as e:
        record("Warning", "Failed", f"Error: failed to start container \"{name}\": {e}")
        raise StartError("RunContainerError", f"failed to start container \"{name}\": {e}") from None
    record("Normal", "Started", f"Started container {name}")
    hook = (container.get("lifecycle") or {}).get("postStart")
    if hook:
        error = await lifecycle.run_handler(ctx.runtime, pod, container, cid, hook, pod_ips[0] if pod_ips else "")
        if error:
            record("Warning", "FailedPostStartHook", "PostStartHook failed")
            await kill_container(ctx, pod, container, cid, grace=0, message="FailedPostStartHook")
            raise StartError("PostStartHookError", error)
    return cid, digest


def grace_period(pod: dict, removed: bool = False) -> float:
    """Seconds a terminating pod's containers get: the deletion's grace, else the spec's."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    grace = meta.get("deletionGracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE)
    if removed:
        grace = min(grace, MIN_KILL_GRACE)
    return max(float(grace), 0.0)


async def kill_container(ctx: StartContext, pod: dict, container: dict | None, container_id: str, *,
                         grace: float, message: str = "", pod_ip: str = "") -> None:
    """preStop (if any) within ``grace``, then SIGTERM and SIGKILL after what is left of it."""
    name = container["name"] if container else "?"
    if message and container is not None:
        ctx.record(pod, "Normal", "Killing", message if message.startswith("Container") else
                   f"Stopping container {name}")
    deadline = time.monotonic() + grace
    hook = ((container or {}).get("lifecycle") or {}).get("preStop")
    if hook and grace > 0:
        error = await lifecycle.run_handler(ctx.runtime, pod, container, container_id, hook, pod_ip,
                                            timeout=grace)
        if error:
            log.info("preStop hook of %s/%s: %s", pod["metadata"]["name"], name, error)
            ctx.record(pod, "Warning", "FailedPreStopHook", "PreStopHook failed")
    left = max(deadline - time.monotonic(), 0.0)
    if grace > 0:
        left = max(left, MIN_KILL_GRACE)
    try:
        await ctx.runtime.stop_container(container_id, left)
    except RuntimeError_ as e:
        log.warning("stopping container %s of %s: %s", container_id[:12], pod["metadata"]["name"], e)
