"""The e2e harness: a real ``kubeling server`` subprocess and the real clients that talk to it.

A `Cluster` owns one server process on 127.0.0.1 with a free port and its own data directory.
Its lifecycle::

    Cluster(data_dir) --start()--> running --stop()----> stopped --start()--> running
                                      |     --kill9()--> stopped (SIGKILL, no clean shutdown)
                                      +---- restart() = stop() + start(), same dir and port

Contracts:
- `start()` returns only once ``GET /readyz`` answers 200 with the admin client certificate,
  or raises `ServerNotReady` with the server log's tail in the message.
- The port and data directory survive `restart()` and `kill9()` + `start()`, so the admin
  kubeconfig written on first start stays valid.
- `kubectl()`/`helm()` run the real binaries with default behaviour flags; only
  ``--kubeconfig`` (and kubectl's discovery cache dir, so that clusters never share a cache)
  is added. With ``check=True`` a non-zero exit raises `CommandFailed` carrying the command,
  exit code, stdout and stderr.
- A missing client binary raises `ClientMissing`: tests fail, never skip, without it.
- The harness only ever signals processes it started itself, by their pid.

The datastore: SQLite in the data dir by default. With ``datastore="etcd"`` (or
``KUBELING_TEST_DATASTORE=etcd`` in the environment, which is how ``make test-etcd`` runs the API
suite on etcd) each Cluster starts its own single-member etcd (`tests.support.etcd.EtcdCluster`,
under ``<data dir>/etcd``) before the server and passes it ``--datastore-endpoint``. `stop()`
stops both; `kill9()` and `restart()` touch only the server, so the data outlives them as the
state.db does; a start that fails shows the etcd log's tail as well.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path

import yaml

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:   # tests.support, for the bench/ scripts too
    sys.path.insert(0, _ROOT)
from tests.support.ports import free_port  # noqa: E402 - also `harness.free_port()` for the tests

VENV_BIN = Path(sys.executable).parent
# /usr/bin/kubectl is Google Cloud SDK's dispatcher, which may pick another build depending on
# the server's version; its real 1.32 build sits beside it, so prefer that one.
KUBECTL_CANDIDATES = {
    "1.32": ("/usr/lib/google-cloud-sdk/bin/kubectl.1.32", "/usr/bin/kubectl"),
    "1.33": (str(VENV_BIN / "kubectl"),),
}
HELM_CANDIDATES = (str(VENV_BIN / "helm"),)


class ClientMissing(RuntimeError):
    """A client binary (kubectl of some version, helm) is not installed."""


class ServerNotReady(RuntimeError):
    """The server did not become ready in time, or exited during startup."""


class CommandFailed(AssertionError):
    """A client command exited non-zero while the caller expected success."""

    def __init__(self, proc: subprocess.CompletedProcess):
        self.proc = proc
        super().__init__(
            f"command failed with exit code {proc.returncode}: {' '.join(map(str, proc.args))}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )


def _client_version(path: str, kind: str) -> str | None:
    if kind == "kubectl":
        cmd = [path, "version", "--client", "-o", "json"]
    else:
        cmd = [path, "version", "--template", "{{.Version}}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if kind == "helm":
        return out.strip()
    try:
        return json.loads(out)["clientVersion"]["gitVersion"]
    except (ValueError, KeyError):
        return None


@lru_cache(maxsize=None)
def kubectl_binary(version: str) -> str:
    """Path of a kubectl whose client version is ``v<version>.x``; `ClientMissing` if none."""
    candidates = KUBECTL_CANDIDATES.get(version)
    if candidates is None:
        raise ClientMissing(f"no known location for kubectl {version}")
    seen = []
    for path in candidates:
        if not os.path.exists(path):
            seen.append(f"{path}: missing")
            continue
        got = _client_version(path, "kubectl")
        # A dispatcher reports a version but runs whichever build matches the server.
        if got and got.startswith(f"v{version}.") and "dispatcher" not in got:
            return path
        seen.append(f"{path}: reports {got!r}")
    hint = ("run `make clients`" if version == "1.33"
            else "it comes with the machine image and cannot be downloaded here")
    raise ClientMissing(f"kubectl {version} not found ({'; '.join(seen)}); {hint}")


@lru_cache(maxsize=None)
def helm_binary() -> str:
    for path in HELM_CANDIDATES:
        got = _client_version(path, "helm") if os.path.exists(path) else None
        if got and got.startswith("v4."):
            return path
    raise ClientMissing(f"helm 4 not found at {', '.join(HELM_CANDIDATES)}; run `make clients`")


def _server_command() -> list[str]:
    script = VENV_BIN / "kubeling"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from kubeling.cli.main import main; sys.exit(main())"]


DATASTORES = ("sqlite", "etcd")


def datastore_from_env() -> str:
    """The datastore the e2e servers run on: ``KUBELING_TEST_DATASTORE`` (``sqlite`` if unset)."""
    name = os.environ.get("KUBELING_TEST_DATASTORE", "").strip().lower() or "sqlite"
    if name not in DATASTORES:
        raise ValueError(f"KUBELING_TEST_DATASTORE={name!r}: expected one of {', '.join(DATASTORES)}")
    return name


def _etcd_cluster_class():
    try:
        from tests.support.etcd import EtcdCluster
    except ImportError:   # imported from bench/ without the repository root on sys.path
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from tests.support.etcd import EtcdCluster
    return EtcdCluster


class Cluster:
    """One ``kubeling server`` process and the clients pointed at it (see module docstring)."""

    def __init__(self, data_dir: Path | str, port: int | None = None,
                 extra_args: tuple[str, ...] = (), startup_timeout: float = 90.0,
                 datastore: str | None = None):
        self.datastore = datastore or datastore_from_env()
        if self.datastore not in DATASTORES:
            raise ValueError(f"datastore {self.datastore!r}: expected one of {', '.join(DATASTORES)}")
        self.etcd = None   # the EtcdCluster of this server, made on first start
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.kubeconfig = self.data_dir / "admin.kubeconfig"
        self.log_path = self.data_dir / "server.log"
        self.cache_dir = self.data_dir / "kubectl-cache"
        self.helm_home = self.data_dir / "helm"
        self.proc: subprocess.Popen | None = None
        self._ssl: ssl.SSLContext | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> "Cluster":
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._start_datastore()
        cmd = self._server_argv()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== harness: starting {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready()
        return self

    def _server_argv(self) -> list[str]:
        # No node agent here: it would put a bridge and pods in the host's network namespace.
        # Clusters with nodes run in a namespace of their own (tests/e2e/nodes.py).
        return _server_command() + [
            "server", "--data-dir", str(self.data_dir), "--bind-address", "127.0.0.1",
            "--secure-port", str(self.port), "--disable-agent", *self.datastore_args(),
            *self.extra_args,
        ]

    # -- the datastore ------------------------------------------------------------------------

    def datastore_args(self) -> list[str]:
        """The server flags that select this cluster's datastore (none for SQLite)."""
        return self.etcd.datastore_args() if self.etcd is not None else []

    def _start_datastore(self) -> None:
        """With etcd: start this cluster's own member (again, with its data, after `stop()`)."""
        if self.datastore != "etcd":
            return
        if self.etcd is None:
            self.etcd = _etcd_cluster_class()(self.data_dir / "etcd", members=1)
        if all(m.running for m in self.etcd.members):
            return
        try:
            self.etcd.start(timeout=60)
        except Exception as e:  # EtcdNotReady, or etcd missing: fail the start as the server would
            self.etcd.stop()
            raise ServerNotReady(f"etcd for {self.data_dir} did not start: {e}") from e

    def _stop_datastore(self) -> None:
        if self.etcd is not None:
            self.etcd.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = "kubeconfig not written yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerNotReady(
                    f"server exited with code {self.proc.returncode} during startup\n"
                    + self.log_tail())
            if self.kubeconfig.exists():
                try:
                    status, body = self.request("GET", "/readyz", timeout=5)
                    if status == 200 and self._controllers_ready():
                        return
                    last = f"/readyz returned {status}: {body[:200]!r}" if status != 200 else \
                        "the default ServiceAccount does not exist yet"
                except (OSError, ValueError, KeyError, yaml.YAMLError) as e:
                    self._ssl = None  # the kubeconfig may have been half-written; reload it
                    last = f"{type(e).__name__}: {e}"
            time.sleep(0.1)
        raise ServerNotReady(
            f"server not ready after {self.startup_timeout:.0f}s; last error: {last}\n"
            + self.log_tail())

    def _controllers_ready(self) -> bool:
        """With controllers running, wait for the ``default`` ServiceAccount of ``default``: until
        the serviceaccount controller makes it (after the controller manager wins its Lease), the
        ServiceAccount admission plugin refuses pods, as upstream's does."""
        if any(a.startswith("--controllers") for a in self.extra_args):
            return True
        status, _ = self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default", timeout=5)
        return status == 200

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code.

        The server stops its own children on SIGTERM; any that outlive it are killed with the
        rest of its process group, so no test leaves processes behind. Its etcd, if any, is
        stopped after it."""
        try:
            return self._stop_server(timeout)
        finally:
            self._stop_datastore()

    def _stop_server(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._kill_group()
        code, self.proc = self.proc.returncode, None
        return code

    def kill9(self) -> None:
        """SIGKILL the server and every process it started, at once: a crash of the whole
        server (its in-process controllers included), with no clean shutdown."""
        if self.proc is not None:
            self._kill_group()
            self.proc.wait()
        self.proc = None

    def _kill_group(self) -> None:
        # start_new_session made the server the leader of its own process group (pgid = pid),
        # so the group holds exactly the server and the children it started.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def restart(self) -> "Cluster":
        """The server only: its datastore (etcd) keeps running, as it would under a real one."""
        self._stop_server()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        tail = "\n".join(self.log().splitlines()[-lines:])
        text = f"--- last {lines} lines of {self.log_path} ---\n{tail}"
        if self.etcd is not None:
            text += "\n" + "\n".join(self.etcd.log_tail(m, 20) for m in self.etcd.members)
        return text

    # -- raw HTTPS, for readiness and for tests that need to see the wire ---------------------

    def ssl_context(self) -> ssl.SSLContext:
        """TLS context from the admin kubeconfig: trusts its CA, presents its client cert."""
        if self._ssl is None:
            user, cluster = self._kubeconfig_parts()
            ctx = ssl.create_default_context()
            ctx.load_verify_locations(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
            pem_dir = self.data_dir / "harness-pem"
            pem_dir.mkdir(exist_ok=True)
            cert, key = pem_dir / "client.crt", pem_dir / "client.key"
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            key.chmod(0o600)
            ctx.load_cert_chain(str(cert), str(key))
            self._ssl = ctx
        return self._ssl

    def _kubeconfig_parts(self) -> tuple[dict, dict]:
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg["current-context"])
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        return user, cluster

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
        """One HTTPS request as the admin; returns (status, body) for any status code."""
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    # -- clients -----------------------------------------------------------------------------

    def _env(self, env: dict | None) -> dict:
        full = dict(os.environ)
        full["KUBECONFIG"] = str(self.kubeconfig)
        full["KUBECACHEDIR"] = str(self.cache_dir)
        full["HELM_CACHE_HOME"] = str(self.helm_home / "cache")
        full["HELM_CONFIG_HOME"] = str(self.helm_home / "config")
        full["HELM_DATA_HOME"] = str(self.helm_home / "data")
        full.pop("HTTPS_PROXY", None)
        full.pop("https_proxy", None)
        full.update(env or {})
        return full

    def _run(self, argv: list[str], input: str | None, check: bool, env: dict | None,
             timeout: float, cwd: str | Path | None) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True,
                              env=self._env(env), timeout=timeout, cwd=cwd)
        if check and proc.returncode != 0:
            raise CommandFailed(proc)
        return proc

    def kubectl(self, *args: str, version: str = "1.33", input: str | None = None,
                check: bool = True, env: dict | None = None, timeout: float = 60,
                cwd: str | Path | None = None) -> subprocess.CompletedProcess:
        argv = [kubectl_binary(version), f"--kubeconfig={self.kubeconfig}", *map(str, args)]
        return self._run(argv, input, check, env, timeout, cwd)

    def kubectl_stream(self, *args: str, version: str = "1.33") -> "Stream":
        """Start a long-running kubectl (``get -w``, ``wait``) and read its output as it comes."""
        argv = [kubectl_binary(version), f"--kubeconfig={self.kubeconfig}", *map(str, args)]
        return Stream(argv, self._env(None))

    def helm(self, *args: str, input: str | None = None, check: bool = True,
             env: dict | None = None, timeout: float = 120,
             cwd: str | Path | None = None) -> subprocess.CompletedProcess:
        argv = [helm_binary(), f"--kubeconfig={self.kubeconfig}", *map(str, args)]
        return self._run(argv, input, check, env, timeout, cwd)

    def python_client(self):
        """A `kubernetes.client.ApiClient` configured from the admin kubeconfig."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


class Stream:
    """A client subprocess whose stdout lines are collected by a reader thread.

    `wait_for(pattern)` blocks until a line matches (or raises `AssertionError` with all output
    so far); `close()` kills the process (we started it, so we own its pid) and is idempotent.
    """

    def __init__(self, argv: list[str], env: dict):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, env=env)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._threads = [threading.Thread(target=self._pump, daemon=True),
                         threading.Thread(target=self._drain_stderr, daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _drain_stderr(self) -> None:
        for line in self.proc.stderr:
            self._stderr.append(line)

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        """Return the first not-yet-consumed line matching regex ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                self._queue.put(None)  # keep the end marker for later callers
                break
            self.lines.append(line)
            if regex.search(line):
                return line
        raise AssertionError(
            f"no line matching {pattern!r} within {timeout}s from {' '.join(self.argv)}\n"
            f"exit code: {self.proc.poll()}\n--- stdout ---\n" + "\n".join(self.lines)
            + "\n--- stderr ---\n" + "".join(self._stderr))

    def stderr(self) -> str:
        return "".join(self._stderr)

    def close(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait(timeout=10)
        # The readers end at EOF once the process is gone; only then close the pipes.
        for t in self._threads:
            t.join(timeout=5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            pipe.close()
        return code

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def eventually(fn, timeout: float = 30, interval: float = 0.2, what: str = ""):
    """Call ``fn`` until it returns a truthy value, and return that value.

    For level-triggered outcomes (garbage collection, watches): raises `AssertionError` with the
    last value (or exception) seen when ``timeout`` passes.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except AssertionError as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout}s{': ' + what if what else ''}; "
                                 f"last value: {last!r}")
        time.sleep(interval)


def settled(get, timeout: float = 30, what: str = "the controllers done writing it") -> dict:
    """The object ``get()`` returns once its controller has observed its generation and it stopped
    changing (the same resourceVersion one second apart): for tests that then assert a refused
    write left the resourceVersion alone, or that write with it (a Scale), while a controller still
    writes the status."""
    last: list[str] = []

    def quiet():
        obj = get()
        meta, status = obj["metadata"], obj.get("status") or {}
        current = status.get("observedGeneration") == meta.get("generation")
        same = current and last[-1:] == [meta["resourceVersion"]]
        last.append(meta["resourceVersion"])
        return obj if same else None
    return eventually(quiet, timeout=timeout, interval=1, what=what)


def new_cluster(base_dir: Path | str | None = None, **kwargs) -> Cluster:
    """A started `Cluster` in a fresh temp dir under ``base_dir`` (for tests that need their own)."""
    data_dir = tempfile.mkdtemp(prefix="kubeling-e2e-", dir=base_dir)
    c = Cluster(data_dir, **kwargs)
    try:
        return c.start()
    except ServerNotReady:
        c.stop()   # the server, if it still runs, and its etcd
        raise


def started_cluster(data_dir: Path | str, **kwargs) -> Cluster:
    """A started `Cluster` for a module fixture: a server that does not get ready is stopped and
    fails the test with its log (``pytest.fail``)."""
    import pytest  # noqa: PLC0415 - harness is also imported outside pytest (bench)
    c = Cluster(data_dir, **kwargs)
    try:
        c.start()
    except ServerNotReady as e:
        c.stop()
        pytest.fail(str(e), pytrace=False)
    return c


def user_kubeconfig(cluster: Cluster, name: str, *, token: str | None = None, cert_pem: bytes | None = None,
                    key_pem: bytes | None = None) -> Path:
    """A kubeconfig whose only credential is a bearer ``token`` or a client certificate and key
    (PEM), in ``<data dir>/users/<name>.kubeconfig``."""
    user = {"token": token} if token else {"client-certificate-data": base64.b64encode(cert_pem).decode(),
                                           "client-key-data": base64.b64encode(key_pem).decode()}
    path = Path(cluster.data_dir) / "users" / f"{name}.kubeconfig"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "c", "cluster": {"server": cluster.url,
                                               "certificate-authority": str(Path(cluster.data_dir) / "pki" / "ca.crt")}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u"}}]}))
    return path


def kubectl_with(kubeconfig: Path | str, *args: str, version: str = "1.32",
                 input: str | None = None) -> subprocess.CompletedProcess:
    """Real kubectl with only ``kubeconfig`` (no admin fallback); the result is not checked."""
    return subprocess.run([kubectl_binary(version), f"--kubeconfig={kubeconfig}", *args], input=input,
                          capture_output=True, text=True, timeout=60)


def remove_cluster_dir(cluster: Cluster) -> None:
    shutil.rmtree(cluster.data_dir, ignore_errors=True)


class Kubectl:
    """A kubectl of one version bound to a cluster: ``kubectl("get", "pods", "-n", ns)``.

    Calls run `Cluster.kubectl` with this version; `json()` adds ``-o json`` and parses;
    `stream()` starts a long-running command (``get -w``) as a `Stream`.
    """

    def __init__(self, cluster: Cluster, version: str):
        self.cluster = cluster
        self.version = version

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.cluster.kubectl(*args, version=self.version, **kwargs)

    def json(self, *args: str, **kwargs) -> dict:
        return json.loads(self(*args, "-o", "json", **kwargs).stdout)

    def stream(self, *args: str) -> Stream:
        return self.cluster.kubectl_stream(*args, version=self.version)

    def __repr__(self) -> str:
        return f"Kubectl({self.version})"
