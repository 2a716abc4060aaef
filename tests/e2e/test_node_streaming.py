"""kubectl's streaming commands against real runc pods (issue 6, acceptance 5).

``logs`` (-f, --previous after a container restart, --tail), ``exec`` (exit code, stdin),
``attach``, ``port-forward`` to a busybox httpd fetched with curl on the host, and ``cp`` both
ways, with kubectl 1.32 and 1.33 through the API server's proxy to the agent. kubectl's default
transports are WebSockets (v5 channels; SPDY tunnelled in WebSocket for port-forward); one test
forces the plain SPDY/3.1 upgrade kubectl falls back to.
"""

from __future__ import annotations

import re
import subprocess

import harness
import nodes  # noqa: F401  (puts the repository on sys.path for the images fixture)

# Each run of the container numbers itself through a counter in an emptyDir (which outlives the
# container), prints five lines, then serves two triggers: /tmp/more prints a line (for -f) and
# /tmp/stop ends the run with exit code 1 (for --previous; /tmp is the container's own, so the
# next run starts without it). sh as PID 1 ignores SIGTERM, so a trigger is how it ends.
LOGGER = """
apiVersion: v1
kind: Pod
metadata:
  name: logger
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  volumes:
  - name: state
    emptyDir: {}
  containers:
  - name: main
    image: busybox
    volumeMounts: [{name: state, mountPath: /state}]
    command:
    - sh
    - -c
    - |
      n=$(( $(cat /state/n 2>/dev/null || echo 0) + 1 )); echo $n > /state/n
      for i in 1 2 3 4 5; do echo run$n-line$i; done
      while true; do
        if [ -f /tmp/more ]; then rm /tmp/more; echo run$n-more; fi
        if [ -f /tmp/stop ]; then exit 1; fi
        sleep 0.2
      done
"""

SHELL = """
apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.5; done"]
"""

# attach -i: the container's stdin is open once (stdinOnce), so the loop ends when kubectl's
# stdin closes and the pod, with restartPolicy Never, succeeds.
READER = """
apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  nodeName: kl-node
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    stdin: true
    stdinOnce: true
    command: ["sh", "-c", "echo ready; while read line; do echo got $line; done; echo bye"]
"""

TICKER = """
apiVersion: v1
kind: Pod
metadata:
  name: ticker
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.3; done"]
"""

HTTPD = """
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-{tag} > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{containerPort: 8080}]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
"""


def running(pod: dict) -> bool:
    statuses = pod["status"].get("containerStatuses") or []
    return pod["status"].get("phase") == "Running" and bool(statuses) and all(
        s.get("ready") and "running" in s.get("state", {}) for s in statuses)


def create(node_cluster, ns: str, manifest: str, name: str, version: str) -> dict:
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=manifest, version=version)
    return node_cluster.wait_pod(ns, name, running, what=f"{name} running and ready")


def test_logs_follow_previous_and_tail(node_cluster, node_namespace, kubectl_version):
    ns, v = node_namespace, kubectl_version
    k = lambda *a, **kw: node_cluster.kubectl("-n", ns, *a, version=v, **kw)
    create(node_cluster, ns, LOGGER, "logger", v)
    harness.eventually(lambda: "run1-line5" in k("logs", "logger").stdout, what="the first run's lines")

    assert k("logs", "logger", "--tail=2").stdout == "run1-line4\nrun1-line5\n"
    # no previous instance yet: upstream's message, as a 400 kubectl prints
    none = k("logs", "logger", "--previous", check=False)
    assert none.returncode != 0
    assert 'previous terminated container "main" in pod "logger" not found' in none.stderr

    with node_cluster.kubectl_stream("logs", "-f", "logger", "-n", ns, version=v) as follow:
        follow.wait_for("^run1-line5$")
        k("exec", "logger", "--", "touch", "/tmp/more")
        follow.wait_for("^run1-more$", timeout=20)
        # the container ends: so does `logs -f`, with the lines all there
        k("exec", "logger", "--", "touch", "/tmp/stop")
        assert follow.proc.wait(timeout=30) == 0
        assert follow.lines[:5] == [f"run1-line{i}" for i in range(1, 6)]

    pod = node_cluster.wait_pod(ns, "logger", lambda p: running(p) and p["status"]["containerStatuses"][0]
                                ["restartCount"] == 1, timeout=60, what="the container restarted once")
    assert pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1
    harness.eventually(lambda: "run2-line5" in k("logs", "logger").stdout, what="the second run's lines")

    current = k("logs", "logger").stdout
    assert current == "".join(f"run2-line{i}\n" for i in range(1, 6))
    previous = k("logs", "logger", "--previous").stdout
    assert previous == "".join(f"run1-line{i}\n" for i in range(1, 6)) + "run1-more\n"
    assert k("logs", "logger", "-p", "--tail=1").stdout == "run1-more\n"
    assert k("logs", "logger", "--tail=1", "-c", "main").stdout == "run2-line5\n"
    stamped = k("logs", "logger", "--tail=1", "--timestamps").stdout
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z run2-line5\n", stamped), stamped


def test_exec_exit_code_and_stdin(node_cluster, node_namespace, kubectl_version):
    ns, v = node_namespace, kubectl_version
    k = lambda *a, **kw: node_cluster.kubectl("-n", ns, *a, version=v, **kw)
    create(node_cluster, ns, SHELL, "shell", v)

    done = k("exec", "shell", "--", "sh", "-c", "exit 3", check=False)
    assert done.returncode == 3
    assert "command terminated with exit code 3" in done.stderr

    both = k("exec", "shell", "--", "sh", "-c", "echo out; echo err >&2", check=False)
    assert (both.returncode, both.stdout, both.stderr) == (0, "out\n", "err\n")

    counted = k("exec", "-i", "shell", "--", "sh", "-c", "wc -c", input="hello from stdin")
    assert counted.stdout.strip() == "16"
    # stdin reaches a process in the container's own namespaces: it writes a file a later exec reads
    k("exec", "-i", "shell", "--", "sh", "-c", "cat > /tmp/given", input="line one\nline two\n")
    assert k("exec", "shell", "--", "cat", "/tmp/given").stdout == "line one\nline two\n"

    missing = k("exec", "shell", "--", "no-such-binary", check=False)
    assert missing.returncode != 0
    assert "no-such-binary" in missing.stderr


def test_attach_with_and_without_stdin(node_cluster, node_namespace, kubectl_version):
    ns, v = node_namespace, kubectl_version
    k = lambda *a, **kw: node_cluster.kubectl("-n", ns, *a, version=v, **kw)

    create(node_cluster, ns, TICKER, "ticker", v)
    with node_cluster.kubectl_stream("attach", "ticker", "-n", ns, version=v) as attached:
        first = int(attached.wait_for(r"^tick-\d+$").split("-")[1])
        # attach streams what the process writes from now on: the following ticks, in order
        attached.wait_for(f"^tick-{first + 2}$", timeout=20)

    create(node_cluster, ns, READER, "reader", v)
    out = k("attach", "-i", "reader", "-c", "main", input="alpha\nbeta\n", timeout=60)
    assert "got alpha\ngot beta\n" in out.stdout, out
    pod = node_cluster.wait_pod(ns, "reader", lambda p: p["status"].get("phase") == "Succeeded",
                                what="the reader ended when its stdin closed")
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert k("logs", "reader").stdout == "ready\ngot alpha\ngot beta\nbye\n"


def port_forward_fetch(node_cluster, ns: str, version: str, env: dict | None = None) -> list[str]:
    """``kubectl port-forward pod/web :8080`` and three curls through it from the host."""
    argv = [harness.kubectl_binary(version), f"--kubeconfig={node_cluster.kubeconfig}",
            "port-forward", "-n", ns, "pod/web", ":8080"]
    with harness.Stream(argv, node_cluster._env(env)) as pf:
        line = pf.wait_for(r"^Forwarding from 127\.0\.0\.1:\d+ -> 8080$")
        local = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        got = []
        for _ in range(3):   # several connections over one port-forward session
            curl = subprocess.run(["curl", "-sS", "--max-time", "20", f"http://127.0.0.1:{local}/"],
                                  capture_output=True, text=True, timeout=30, check=False)
            assert curl.returncode == 0, curl.stderr + pf.stderr()
            got.append(curl.stdout)
        return got


def test_port_forward_to_busybox_httpd(node_cluster, node_namespace, kubectl_version):
    ns, v = node_namespace, kubectl_version
    create(node_cluster, ns, HTTPD.replace("{tag}", v), "web", v)
    assert port_forward_fetch(node_cluster, ns, v) == [f"hello-from-{v}\n"] * 3


def test_spdy_fallback_exec_and_port_forward(node_cluster, node_namespace):
    """kubectl's plain SPDY/3.1 upgrade (what it falls back to without WebSockets)."""
    ns = node_namespace
    spdy = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false", "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}
    create(node_cluster, ns, HTTPD.replace("{tag}", "spdy"), "web", "1.33")
    done = node_cluster.kubectl("exec", "-n", ns, "web", "--", "sh", "-c", "echo hi; exit 3",
                                env=spdy, check=False)
    assert (done.returncode, done.stdout) == (3, "hi\n")
    assert port_forward_fetch(node_cluster, ns, "1.33", env=spdy) == ["hello-from-spdy\n"] * 3


def test_cp_both_ways(node_cluster, node_namespace, kubectl_version, tmp_path):
    ns, v = node_namespace, kubectl_version
    k = lambda *a, **kw: node_cluster.kubectl(*a, **kw, version=v)
    create(node_cluster, ns, SHELL, "shell", v)

    src = tmp_path / "up"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n" * 2000)
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 64)
    k("cp", str(src / "a.txt"), f"{ns}/shell:/tmp/a.txt")
    k("cp", str(src), f"{ns}/shell:/tmp/up")
    listing = k("exec", "-n", ns, "shell", "--", "sh", "-c", "wc -c /tmp/a.txt /tmp/up/a.txt /tmp/up/sub/b.bin").stdout
    assert [line.split()[0] for line in listing.splitlines()[:3]] == ["12000", "12000", "16384"]

    # and back: a file made in the container, and the directory that went up
    k("exec", "-n", ns, "shell", "--", "sh", "-c", "seq 1 500 > /tmp/made.txt")
    k("cp", f"{ns}/shell:/tmp/made.txt", str(tmp_path / "made.txt"))
    assert (tmp_path / "made.txt").read_text() == "".join(f"{i}\n" for i in range(1, 501))
    k("cp", f"{ns}/shell:/tmp/up", str(tmp_path / "down"))
    assert (tmp_path / "down" / "a.txt").read_text() == (src / "a.txt").read_text()
    assert (tmp_path / "down" / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
