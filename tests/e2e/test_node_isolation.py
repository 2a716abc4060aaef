"""What a container is kept from, seen from inside it with ``kubectl exec`` (issue 6, acceptance 11).

- Its own pid namespace: ``ps`` lists its own processes only (not the other containers' of the
  pod, not the host's); with ``shareProcessNamespace`` the pod's containers see each other.
- Its own mount namespace: ``/proc/mounts`` holds the container's mounts only, none of the host's.
- ``securityContext``: ``runAsUser``/``runAsGroup`` (``id``), ``readOnlyRootFilesystem`` (a write
  to / fails, a volume stays writable), capabilities add/drop (``CapEff`` in /proc/1/status,
  against containerd's default set), masked /proc paths.
"""

from __future__ import annotations

import nodes

# containerd's (and Docker's) default capability set as a CapEff mask: CHOWN, DAC_OVERRIDE,
# FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD,
# AUDIT_WRITE, SETFCAP
DEFAULT_CAPS = 0xA80425FB
NET_ADMIN, NET_BIND_SERVICE = 1 << 12, 1 << 10

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: iso
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 0
  volumes:
  - name: scratch
    emptyDir: {}
  containers:
  - name: plain
    image: busybox
    command: ["sleep", "3600"]
  - name: locked
    image: busybox
    command: ["sleep", "3601"]
    securityContext:
      runAsUser: 1000
      runAsGroup: 3000
      readOnlyRootFilesystem: true
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  - name: dropped
    image: busybox
    command: ["sleep", "3602"]
    securityContext:
      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
  - name: netadmin
    image: busybox
    command: ["sleep", "3603"]
    securityContext:
      capabilities: {add: [NET_ADMIN]}
"""

SHARED = """
apiVersion: v1
kind: Pod
metadata:
  name: shared
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 0
  shareProcessNamespace: true
  containers:
  - name: one
    image: busybox
    command: ["sleep", "3700"]
  - name: two
    image: busybox
    command: ["sleep", "3701"]
"""

# Where a container may have mounts: its rootfs, the API filesystems runc sets up, the pod's
# managed files, the service-account volume, its own volumes, and the masked/read-only /proc paths.
CONTAINER_MOUNTPOINTS = ("/", "/proc", "/dev", "/sys", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname",
                         "/var/run/secrets/kubernetes.io/serviceaccount", "/scratch")


def wait_pod(cluster: nodes.NodeCluster, ns: str, name: str, predicate, timeout: float = 60, what: str = "") -> dict:
    """`NodeCluster.wait_pod`, with what the user would look at next when it times out."""
    try:
        return cluster.wait_pod(ns, name, predicate, timeout=timeout, what=what)
    except AssertionError as e:
        describe = cluster.kubectl("describe", "pod", name, "-n", ns, check=False).stdout
        raise AssertionError(f"{e}\n--- kubectl describe ---\n{describe}\n--- server log ---\n"
                             f"{cluster.log_tail(40)}") from None


def all_running(pod: dict) -> bool:
    statuses = pod["status"].get("containerStatuses") or []
    return bool(statuses) and all("running" in s.get("state", {}) for s in statuses)


def run_iso(cluster: nodes.NodeCluster, ns: str) -> None:
    cluster.kubectl("create", "-n", ns, "-f", "-", input=POD)
    wait_pod(cluster, ns, "iso", all_running)


def exec_in(cluster: nodes.NodeCluster, ns: str, pod: str, container: str, *argv: str, check: bool = True):
    return cluster.kubectl("exec", "-n", ns, pod, "-c", container, "--", *argv, check=check)


def processes(cluster: nodes.NodeCluster, ns: str, pod: str, container: str) -> list[tuple[int, str]]:
    out = exec_in(cluster, ns, pod, container, "ps", "-o", "pid,args").stdout.splitlines()[1:]
    return [(int(pid), args.strip()) for pid, _, args in (line.strip().partition(" ") for line in out)]


def cap_eff(cluster: nodes.NodeCluster, ns: str, container: str) -> int:
    status = exec_in(cluster, ns, "iso", container, "cat", "/proc/1/status").stdout
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)


def host_mountpoints() -> set[str]:
    with open("/proc/self/mounts") as f:
        return {line.split()[1] for line in f}


def test_a_container_sees_only_its_own_processes_and_mounts(node_cluster, node_namespace):
    ns = node_namespace
    run_iso(node_cluster, ns)
    procs = processes(node_cluster, ns, "iso", "plain")
    assert (1, "sleep 3600") in procs
    # itself and the ps that lists it: not the pod's other containers, not the host
    assert [args for _, args in procs if not args.startswith("ps ")] == ["sleep 3600"], procs

    mounts = exec_in(node_cluster, ns, "iso", "plain", "cat", "/proc/mounts").stdout.splitlines()
    points = [line.split()[1] for line in mounts]
    assert "/" in points and "/proc" in points
    strays = [p for p in points if not any(p == m or p.startswith(m.rstrip("/") + "/") for m in CONTAINER_MOUNTPOINTS)]
    assert not strays, f"mounts a container should not have: {strays}"
    # none of the host's own mount points (its data dirs, /run/netns, the test's tmp dirs) leak in
    host_only = host_mountpoints() - set(CONTAINER_MOUNTPOINTS) - {"/dev/pts", "/dev/shm", "/dev/mqueue", "/sys/fs/cgroup"}
    assert not [p for p in points if p in host_only and p.startswith(("/tmp", "/run", "/work", "/var/lib", "/home"))]
    assert not [line for line in mounts if line.split()[1].startswith("/tmp")]
    # the host's files are not there either
    assert exec_in(node_cluster, ns, "iso", "plain", "ls", "/run/netns", check=False).returncode != 0


def test_share_process_namespace_shows_the_pods_other_containers(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=SHARED)
    wait_pod(node_cluster, ns, "shared", all_running)
    args = {a for _, a in processes(node_cluster, ns, "shared", "one")}
    assert {"sleep 3700", "sleep 3701"} <= args, args
    assert not [a for a in args if "kubeling" in a or "python" in a], args


def test_run_as_user_and_a_read_only_root_filesystem_are_enforced(node_cluster, node_namespace):
    ns = node_namespace
    run_iso(node_cluster, ns)
    assert exec_in(node_cluster, ns, "iso", "locked", "id", "-u").stdout.strip() == "1000"
    assert exec_in(node_cluster, ns, "iso", "locked", "id", "-g").stdout.strip() == "3000"
    # the container's own process, not only exec'd ones, runs as that user
    status = exec_in(node_cluster, ns, "iso", "locked", "cat", "/proc/1/status").stdout
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["1000"] * 4

    denied = exec_in(node_cluster, ns, "iso", "locked", "touch", "/evidence", check=False)
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr
    # even root cannot write to a read-only rootfs; volumes stay writable
    assert exec_in(node_cluster, ns, "iso", "locked", "sh", "-c", "echo ok > /scratch/f && cat /scratch/f"
                   ).stdout.strip() == "ok"
    assert exec_in(node_cluster, ns, "iso", "plain", "sh", "-c", "touch /writable && echo yes").stdout.strip() == "yes"
    assert exec_in(node_cluster, ns, "iso", "plain", "id", "-u").stdout.strip() == "0"


def test_capabilities_drop_and_add_show_in_capeff(node_cluster, node_namespace):
    ns = node_namespace
    run_iso(node_cluster, ns)
    assert cap_eff(node_cluster, ns, "plain") == DEFAULT_CAPS
    assert cap_eff(node_cluster, ns, "dropped") == NET_BIND_SERVICE
    assert cap_eff(node_cluster, ns, "netadmin") == DEFAULT_CAPS | NET_ADMIN
    # a non-root user keeps no effective capabilities
    assert cap_eff(node_cluster, ns, "locked") == 0
    # what the capability allows: NET_ADMIN may change the pod's links, the default set may not
    assert exec_in(node_cluster, ns, "iso", "netadmin", "ip", "link", "set", "lo", "mtu", "65536",
                   check=False).returncode == 0
    refused = exec_in(node_cluster, ns, "iso", "plain", "ip", "link", "set", "lo", "mtu", "65536", check=False)
    assert refused.returncode != 0 and "ermitted" in refused.stderr, refused.stderr
    # a masked /proc path reads as empty
    assert exec_in(node_cluster, ns, "iso", "plain", "cat", "/proc/kcore", check=False).stdout == ""
