"""Real etcd members (Debian's ``etcd-server``) for tests: one or several, on loopback, each with
its own data directory, optionally with TLS and client-certificate authentication.

    with EtcdCluster(tmp_path, members=3) as etcd:
        etcd.endpoints        # ["http://127.0.0.1:P1", ...]
        etcd.endpoint         # "http://127.0.0.1:P1,http://127.0.0.1:P2,..." (--datastore-endpoint)
        etcd.kill9(1)         # SIGKILL member 1; etcd.start_member(1) brings it back
        etcd.stop(); etcd.wipe(); etcd.start()   # an empty cluster again
        etcd.restore_args(1)  # `kubeling etcd-snapshot restore SNAPSHOT` flags for member 1

With ``tls=True`` members serve https, require client certificates, and ``ca_file``,
``cert_file`` and ``key_file`` name what a client passes (``--datastore-cafile`` ...).
Processes are started in a session of their own and ended by PID.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.support.ports import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


class EtcdNotReady(RuntimeError):
    pass


class _Member:
    def __init__(self, base: Path, index: int, host: str) -> None:
        self.name = f"etcd-{index}"
        self.dir = base / self.name
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "etcd.log"
        self.host = host
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen | None = None

    def client_url(self, scheme: str) -> str:
        return f"{scheme}://{self.host}:{self.client_port}"

    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    def __init__(self, base_dir: Path | str, members: int = 1, *, host: str = "127.0.0.1", tls: bool = False,
                 quota_backend_bytes: int = 0, extra_args: tuple[str, ...] = ()) -> None:
        if not os.path.exists(ETCD):
            raise RuntimeError("etcd is not installed: run scripts/install-deps.sh (Debian etcd-server)")
        self.base = Path(base_dir)
        self.base.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.quota_backend_bytes = quota_backend_bytes
        self.extra_args = tuple(extra_args)
        self.members = [_Member(self.base, i, host) for i in range(members)]
        self.ca_file = self.cert_file = self.key_file = ""
        self._server_cert = self._server_key = ""
        self._fresh = True
        self.token = f"kubeling-test-{id(self)}"
        if tls:
            self._make_certs(host)

    # -- addresses ---------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url(self.scheme) for m in self.members]

    @property
    def endpoint(self) -> str:
        return ",".join(self.endpoints)

    def datastore_args(self) -> list[str]:
        """The `kubeling server` flags that select this cluster."""
        args = ["--datastore-endpoint", self.endpoint]
        if self.tls:
            args += ["--datastore-cafile", self.ca_file, "--datastore-certfile", self.cert_file,
                     "--datastore-keyfile", self.key_file]
        return args

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> "EtcdCluster":
        for i in range(len(self.members)):
            self._spawn(i)
        self.wait_healthy(timeout=timeout)
        self._fresh = False
        return self

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{o.name}={o.peer_url()}" for o in self.members)

    def restore_args(self, i: int) -> list[str]:
        """The `kubeling etcd-snapshot restore SNAPSHOT` flags that make member ``i``'s data
        directory (wiped first) from a snapshot; then `start()` runs the restored cluster."""
        m = self.members[i]
        return ["--etcd-data-dir", str(m.data_dir), "--name", m.name, "--initial-cluster", self.initial_cluster,
                "--initial-advertise-peer-urls", m.peer_url(), "--initial-cluster-token", self.token]

    def _argv(self, m: _Member) -> list[str]:
        initial = self.initial_cluster
        argv = [ETCD, "--name", m.name, "--data-dir", str(m.data_dir),
                "--listen-client-urls", m.client_url(self.scheme),
                "--advertise-client-urls", m.client_url(self.scheme),
                "--listen-peer-urls", m.peer_url(), "--initial-advertise-peer-urls", m.peer_url(),
                "--initial-cluster", initial, "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new",
                "--heartbeat-interval", "100", "--election-timeout", "1000",
                "--logger", "zap", "--log-outputs", "stderr"]
        if self.tls:
            argv += ["--cert-file", self._server_cert, "--key-file", self._server_key,
                     "--trusted-ca-file", self.ca_file, "--client-cert-auth"]
        if self.quota_backend_bytes:
            argv += ["--quota-backend-bytes", str(self.quota_backend_bytes)]
        return argv + list(self.extra_args)

    def _spawn(self, i: int) -> None:
        m = self.members[i]
        if m.running:
            return
        m.dir.mkdir(parents=True, exist_ok=True)
        with open(m.log_path, "ab") as log:
            m.proc = subprocess.Popen(self._argv(m), stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)

    def start_member(self, i: int, timeout: float = 30.0) -> None:
        """Start member ``i`` again (its data dir is kept, so it rejoins the cluster)."""
        self._spawn(i)
        self._wait(lambda: self.member_healthy(i), timeout, f"{self.members[i].name} healthy again")

    def kill9(self, i: int) -> None:
        m = self.members[i]
        if m.running:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(10)

    def stop_member(self, i: int, timeout: float = 10.0) -> None:
        m = self.members[i]
        if not m.running:
            return
        m.proc.terminate()
        try:
            m.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait(10)

    def stop(self) -> None:
        for i in range(len(self.members)):
            self.stop_member(i)

    def wipe(self) -> None:
        """Delete every member's data (the cluster must be stopped): the next start is a new cluster."""
        assert not any(m.running for m in self.members), "stop the cluster before wiping it"
        for m in self.members:
            shutil.rmtree(m.data_dir, ignore_errors=True)

    def __enter__(self) -> "EtcdCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- health ------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def member_healthy(self, i: int) -> bool:
        m = self.members[i]
        if not m.running:
            return False
        try:
            with urllib.request.urlopen(m.client_url(self.scheme) + "/health", timeout=2,
                                        context=self._ssl_context()) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 30.0) -> None:
        self._wait(lambda: all(self.member_healthy(i) for i, m in enumerate(self.members) if m.running),
                   timeout, "every running etcd member healthy")

    def _wait(self, ok, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.members:
                if m.proc is not None and m.proc.poll() is not None and m.proc.returncode not in (0, -9, -15):
                    raise EtcdNotReady(f"{m.name} exited with {m.proc.returncode}:\n{self.log_tail(m)}")
            if ok():
                return
            time.sleep(0.1)
        raise EtcdNotReady(f"timed out waiting for {what}:\n" + "\n".join(self.log_tail(m) for m in self.members))

    @staticmethod
    def log_tail(m: _Member, lines: int = 20) -> str:
        try:
            return f"--- {m.name}\n" + "\n".join(m.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"--- {m.name}: no log"

    # -- TLS ---------------------------------------------------------------------------------

    def _make_certs(self, host: str) -> None:
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        pki = self.base / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)

        def write(name: str, key, cert) -> tuple[str, str]:
            k, c = pki / f"{name}.key", pki / f"{name}.crt"
            k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
            c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            return str(c), str(k)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd-test-ca")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        self.ca_file, _ = write("ca", ca_key, ca)

        def leaf(cn: str, usage) -> tuple[str, str]:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                    .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(minutes=5))
                    .not_valid_after(now + datetime.timedelta(days=1))
                    .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)),
                                                                x509.DNSName("localhost")]), critical=False)
                    .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
                    .sign(ca_key, hashes.SHA256()))
            return write(cn, key, cert)

        self._server_cert, self._server_key = leaf(
            "etcd-server", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
        self.cert_file, self.key_file = leaf("etcd-client", [ExtendedKeyUsageOID.CLIENT_AUTH])
