"""What to do to a pod now: upstream's ``computePodActions`` and the CRI configs it needs.

Pure functions over the pod and the runtime's view of it, so that every rule is a table test:

- `compute_pod_actions(pod, sandboxes, containers, ...)` -> `PodActions`: whether the sandbox
  must be (re)created, which init container runs next, which containers start, which are killed
  and why. It never performs anything.
- `sandbox_config(pod, ...)` and `container_command`, `security_context`, `port_mappings`: the
  pieces of `SandboxConfig` / `ContainerConfig` that come straight from the pod spec.

Rules, as upstream (``kuberuntime_manager.go``):
- A pod gets a new sandbox when it has none that is ready; its containers are then all killed
  and started again (their attempt numbers go on). A pod with ``restartPolicy: Never`` whose
  containers have run does not get a new sandbox.
- Init containers run one at a time, in order; a failed one is restarted unless the policy is
  Never, in which case the pod fails. A sidecar (an init container with ``restartPolicy:
  Always``) is started in its turn and the next init container waits until it has *started*;
  sidecars keep running and are restarted whenever they exit.
- App containers start once every init container has succeeded. An exited container is
  restarted under ``Always``, or under ``OnFailure`` when its exit code is not 0.
- A running container whose liveness or startup probe failed, or whose image changed in the
  spec, is killed (and then restarted by the rules above).
- Ephemeral containers (``kubectl debug``) start once, after the app containers, in the running
  sandbox, and are never restarted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from kubeling.kubelet.runtime import (ContainerState, ContainerStatus, DNSConfig, PodSandboxStatus,
                                      PortMapping, SandboxConfig, SandboxState, SecurityContext)

POD_UID = "io.kubernetes.pod.uid"
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
CONTAINER_NAME = "io.kubernetes.container.name"
CONTAINER_HASH = "io.kubernetes.container.hash"
IMAGE_ID = "io.kubernetes.container.image-id"
IMAGE_SPEC = "io.kubernetes.container.image"

MAX_HOSTNAME = 63


@dataclass
class PodActions:
    """The outcome of `compute_pod_actions`. ``kill`` maps container ids to the reason."""

    create_sandbox: bool = False
    sandbox_attempt: int = 0
    kill_pod: bool = False                 # stop every container and the old sandbox first
    start: list[dict] = field(default_factory=list)       # container specs, in start order
    restart: set[str] = field(default_factory=set)        # names in `start` that ran before
    kill: dict[str, str] = field(default_factory=dict)    # container id -> message
    init_failed: str = ""                  # name of an init container that failed for good
    waiting_for: str = ""                  # the init container everything waits on


def container_hash(spec: dict) -> str:
    """What decides a restart when the spec changes: only the image can change in place."""
    return hashlib.sha256(spec.get("image", "").encode()).hexdigest()[:16]


def newest_sandbox(sandboxes: list[PodSandboxStatus]) -> PodSandboxStatus | None:
    return max(sandboxes, key=lambda s: (s.attempt, s.created_at), default=None)


def by_name(containers: list[ContainerStatus]) -> dict[str, list[ContainerStatus]]:
    """Containers grouped by name, oldest attempt first."""
    out: dict[str, list[ContainerStatus]] = {}
    for c in sorted(containers, key=lambda c: (c.attempt, c.created_at)):
        out.setdefault(c.name, []).append(c)
    return out


def _wants_restart(policy: str, c: ContainerStatus) -> bool:
    return policy == "Always" or (policy == "OnFailure" and c.exit_code != 0)


def compute_pod_actions(pod: dict, sandboxes: list[PodSandboxStatus], containers: list[ContainerStatus], *,
                        liveness_failed: set[str] = frozenset(), started: dict[str, bool] | None = None,
                        ) -> PodActions:
    """See the module docstring. ``containers`` are all of this pod's, across sandboxes;
    ``liveness_failed`` holds names whose liveness or startup probe says "restart";
    ``started`` the startup-probe state of running containers (absent = started)."""
    spec = pod.get("spec") or {}
    policy = spec.get("restartPolicy", "Always")
    started = started or {}
    actions = PodActions()
    sandbox = newest_sandbox(sandboxes)
    history = by_name(containers)
    if sandbox is None or sandbox.state != SandboxState.READY or (not spec.get("hostNetwork") and not sandbox.ip):
        ran = any(c.state == ContainerState.EXITED for c in containers)
        if sandbox is not None and policy == "Never" and ran:
            return actions                 # finished pods are not brought back
        actions.create_sandbox = True
        actions.sandbox_attempt = sandbox.attempt + 1 if sandbox else 0
        actions.kill_pod = sandbox is not None
        for c in containers:
            if c.state == ContainerState.RUNNING:
                actions.kill[c.id] = "pod sandbox changed, it will be killed and re-created"
        current: dict[str, list[ContainerStatus]] = {}
    else:
        current = by_name([c for c in containers if c.sandbox_id == sandbox.id])

    def newest(name: str) -> ContainerStatus | None:
        got = current.get(name)
        return got[-1] if got else None

    def check_running(c: dict, inst: ContainerStatus) -> bool:
        """Kill a running container that must go; True if it keeps running."""
        if c["name"] in liveness_failed:
            actions.kill[inst.id] = f"Container {c['name']} failed liveness probe, will be restarted"
        elif inst.annotations.get(CONTAINER_HASH, container_hash(c)) != container_hash(c):
            actions.kill[inst.id] = f"Container {c['name']} definition changed, will be restarted"
        else:
            return True
        return False

    # init containers, in order
    for c in spec.get("initContainers") or []:
        inst = newest(c["name"])
        sidecar = c.get("restartPolicy") == "Always"
        ran_before = bool(history.get(c["name"]))
        if inst is None:
            actions.start.append(c)
            if ran_before:
                actions.restart.add(c["name"])
            actions.waiting_for = c["name"]
            return actions
        if inst.state == ContainerState.RUNNING:
            alive = check_running(c, inst)
            if sidecar and alive and started.get(c["name"], True):
                continue                   # a started sidecar lets the next one go
            if not alive and (sidecar or policy != "Never"):
                actions.start.append(c)
                actions.restart.add(c["name"])
            actions.waiting_for = c["name"]
            return actions
        if inst.state in (ContainerState.CREATED, ContainerState.UNKNOWN):
            actions.kill[inst.id] = "container was created but never started"
            actions.start.append(c)
            actions.waiting_for = c["name"]
            return actions
        # exited
        if sidecar:
            actions.start.append(c)
            actions.restart.add(c["name"])
            actions.waiting_for = c["name"]
            return actions
        if inst.exit_code == 0:
            continue
        if policy == "Never":
            actions.init_failed = c["name"]
            return actions
        actions.start.append(c)
        actions.restart.add(c["name"])
        actions.waiting_for = c["name"]
        return actions

    # app containers
    for c in spec.get("containers") or []:
        inst = newest(c["name"])
        if inst is None:
            older = history.get(c["name"])
            if older and older[-1].state == ContainerState.EXITED and not _wants_restart(policy, older[-1]):
                continue
            actions.start.append(c)
            if older:
                actions.restart.add(c["name"])
        elif inst.state == ContainerState.RUNNING:
            if not check_running(c, inst) and policy != "Never":
                actions.start.append(c)
                actions.restart.add(c["name"])
        elif inst.state == ContainerState.EXITED:
            if _wants_restart(policy, inst):
                actions.start.append(c)
                actions.restart.add(c["name"])
        else:
            actions.kill[inst.id] = "container was created but never started"
            actions.start.append(c)
    # ephemeral containers (kubectl debug): started once, never restarted
    for c in spec.get("ephemeralContainers") or []:
        if not history.get(c["name"]) and not actions.create_sandbox:
            actions.start.append(c)
    return actions


# -- configs ---------------------------------------------------------------------------------


def hostname(pod: dict) -> str:
    spec, meta = pod.get("spec") or {}, pod["metadata"]
    name = spec.get("hostname") or meta["name"]
    return name[:MAX_HOSTNAME].rstrip("-.")


def dns_config(pod: dict, *, cluster_dns: list[str], cluster_domain: str, host_resolv: Path) -> DNSConfig:
    """The pod's resolv.conf, as upstream's ``GetPodDNS`` (dnsPolicy and dnsConfig)."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy", "ClusterFirst")
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"
    if policy == "ClusterFirstWithHostNet":
        policy = "ClusterFirst"
    out = DNSConfig()
    if policy == "ClusterFirst" and cluster_dns:
        ns = pod["metadata"].get("namespace", "default")
        out.servers = list(cluster_dns)
        out.searches = [f"{ns}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
        # then the host's search domains, as upstream's generateSearchesForDNSClusterFirst
        out.searches += [s for s in _host_dns(host_resolv).searches if s not in out.searches]
        out.options = ["ndots:5"]
    elif policy in ("Default", "ClusterFirst"):
        out = _host_dns(host_resolv)
    extra = spec.get("dnsConfig") or {}
    out.servers += [s for s in extra.get("nameservers") or [] if s not in out.servers]
    out.searches += [s for s in extra.get("searches") or [] if s not in out.searches]
    for opt in extra.get("options") or []:
        text = opt["name"] + (f":{opt['value']}" if opt.get("value") else "")
        out.options = [o for o in out.options if o.split(":")[0] != opt["name"]] + [text]
    out.servers = out.servers[:3]
    out.searches = out.searches[:32]
    return out


def _host_dns(path: Path) -> DNSConfig:
    out = DNSConfig()
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            out.servers.append(fields[1])
        elif fields[0] == "search":
            out.searches = fields[1:]
        elif fields[0] == "options":
            out.options = fields[1:]
    return out


def port_mappings(pod: dict) -> list[PortMapping]:
    out = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                out.append(PortMapping(container_port=p["containerPort"], host_port=p["hostPort"],
                                       protocol=p.get("protocol", "TCP"), host_ip=p.get("hostIP", "")))
    return out


def sandbox_config(pod: dict, attempt: int, *, cgroup_parent: str, cluster_dns: list[str],
                   cluster_domain: str, host_resolv: Path = Path("/etc/resolv.conf")) -> SandboxConfig:
    spec, meta = pod.get("spec") or {}, pod["metadata"]
    ns = meta.get("namespace", "default")
    aliases = [(a["ip"], list(a.get("hostnames") or [])) for a in spec.get("hostAliases") or []]
    name = hostname(pod)
    if spec.get("subdomain"):
        aliases.insert(0, ("", [f"{name}.{spec['subdomain']}.{ns}.svc.{cluster_domain}", name]))
    sysctls = {s["name"]: s.get("value", "") for s in (spec.get("securityContext") or {}).get("sysctls") or []}
    return SandboxConfig(
        uid=meta["uid"], name=meta["name"], namespace=ns, attempt=attempt, hostname=name,
        host_network=bool(spec.get("hostNetwork")), share_process_namespace=bool(spec.get("shareProcessNamespace")),
        dns=dns_config(pod, cluster_dns=cluster_dns, cluster_domain=cluster_domain, host_resolv=host_resolv),
        host_aliases=aliases, port_mappings=port_mappings(pod), cgroup_parent=cgroup_parent, sysctls=sysctls,
        labels={POD_UID: meta["uid"], POD_NAME: meta["name"], POD_NAMESPACE: ns},
        annotations=dict(meta.get("annotations") or {}))


def container_command(container: dict, image_config: dict) -> list[str]:
    """argv before $(VAR) expansion: Docker's ENTRYPOINT/CMD merged with command/args."""
    command, args = container.get("command"), container.get("args")
    if command:
        return list(command) + list(args or [])
    entry = list(image_config.get("Entrypoint") or [])
    return entry + list(args if args else image_config.get("Cmd") or [])


def merged_env(image_config: dict, env: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The image's Env first, overridden by the container's, keeping the image's order."""
    out: dict[str, str] = {}
    for item in image_config.get("Env") or []:
        k, _, v = item.partition("=")
        out[k] = v
    for k, v in env:
        out[k] = v
    return list(out.items())


def security_context(pod: dict, container: dict) -> SecurityContext:
    """The container's effective securityContext (container fields over the pod's)."""
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    csc = container.get("securityContext") or {}
    caps = csc.get("capabilities") or {}
    privileged = bool(csc.get("privileged"))
    ape = csc.get("allowPrivilegeEscalation")
    proc_mount = csc.get("procMount", "Default")
    return SecurityContext(
        run_as_user=csc.get("runAsUser", psc.get("runAsUser")),
        run_as_group=csc.get("runAsGroup", psc.get("runAsGroup")),
        supplemental_groups=list(psc.get("supplementalGroups") or []),
        readonly_rootfs=bool(csc.get("readOnlyRootFilesystem")),
        privileged=privileged,
        no_new_privs=ape is False and not privileged,
        capabilities_add=list(caps.get("add") or []),
        capabilities_drop=list(caps.get("drop") or []),
        masked_paths=[] if privileged or proc_mount == "Unmasked" else None,
        readonly_paths=[] if privileged or proc_mount == "Unmasked" else None)
