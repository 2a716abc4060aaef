"""A real local registry for tests: Debian's ``docker-registry`` (distribution 2.8) on loopback.

    with Registry.start(tmp_path, auth="open" | "htpasswd" | "token", netns=None) as reg:
        reg.seed(images_dir)          # scripts/seed-registry.py against it
        reg.url, reg.host, reg.username, reg.password

- ``open``: no authentication.
- ``htpasswd``: Basic auth from a bcrypt htpasswd file generated here (``$2b$``, through the
  system's crypt(3), or the ``bcrypt`` package when the ``crypt`` module is gone).
- ``token``: the registry trusts a token service (`token_server` below, run as a child process):
  clients get a 401 ``Bearer realm=..,service=..,scope=..`` challenge and fetch a JWT signed by a
  freshly generated key, whose self-signed certificate is the registry's ``rootcertbundle``;
  the JWT header carries it as ``x5c``. The right Basic credentials get the actions asked for;
  anonymous callers get a token with no access (the registry then refuses with
  ``insufficient_scope``), like a private repository on Docker Hub.

``netns``: the name of an existing network namespace (``/run/netns/<name>``) to run the registry,
the token service and the seed script in, through ``ip netns exec``; its loopback must be up.
Only the processes started here are stopped, by PID, in ``stop()``; the temp dir is the caller's.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.support.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY_BIN = "/usr/bin/docker-registry"
SERVICE = "kubeling-test-registry"
ISSUER = "kubeling-test-token-issuer"


def bcrypt_hash(password: str) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
        if hashed and hashed.startswith("$2"):
            return hashed
    except ImportError:
        pass
    import bcrypt  # the test extra on Pythons without the crypt module
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()


def _netns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def build_images(out: Path) -> Path:
    """Run scripts/build-images.py into ``out`` (once per directory)."""
    if not (out / "busybox" / "index.json").exists():
        subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "build-images.py"),
                        "--out", str(out)], check=True, capture_output=True)
    return out


@dataclass
class Registry:
    root: Path
    auth: str
    port: int
    netns: str | None = None
    username: str = "kl-user"
    password: str = field(default_factory=lambda: secrets.token_hex(8))
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @classmethod
    @contextlib.contextmanager
    def start(cls, root: Path, auth: str = "open", netns: str | None = None):
        reg = cls(Path(root), auth, free_port(), netns)
        try:
            reg._start()
            yield reg
        finally:
            reg.stop()

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen:
        with open(self.root / log, "ab") as out:
            proc = subprocess.Popen(_netns_prefix(self.netns) + argv, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        self.procs.append(proc)
        return proc

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = [
            "version: 0.1",
            "log: {level: warn, accesslog: {disabled: true}}",
            (f"storage: {{filesystem: {{rootdirectory: {self.root / 'storage'}}}, "
             "delete: {enabled: true}}"),
            f"http: {{addr: '{self.host}', secret: '{secrets.token_hex(16)}'}}",
        ]
        if self.auth == "htpasswd":
            (self.root / "htpasswd").write_text(
                f"{self.username}:{bcrypt_hash(self.password)}\n")
            config.append(f"auth: {{htpasswd: {{realm: kubeling-test, "
                          f"path: {self.root / 'htpasswd'}}}}}")
        elif self.auth == "token":
            token_port = free_port()
            key, cert = _signing_key(self.root)
            users = self.root / "token-users.json"
            users.write_text(json.dumps({self.username: self.password}))
            self._spawn([sys.executable, "-m", "tests.support.registry", "token-server",
                         str(token_port), str(key), str(cert), str(users)], "token-server.log")
            config.append(f"auth: {{token: {{realm: 'http://127.0.0.1:{token_port}/token', "
                          f"service: {SERVICE}, issuer: {ISSUER}, rootcertbundle: {cert}}}}}")
            self._wait_http(f"http://127.0.0.1:{token_port}/healthz", "token server")
        elif self.auth != "open":
            raise ValueError(f"unknown registry auth {self.auth!r}")
        (self.root / "config.yml").write_text("\n".join(config) + "\n")
        self._spawn([REGISTRY_BIN, "serve", str(self.root / "config.yml")], "registry.log")
        self._wait_http(f"{self.url}/v2/", "docker-registry")

    def _wait_http(self, url: str, what: str, timeout: float = 20.0) -> None:
        """Wait until ``url`` answers at all (any HTTP status), from inside the netns if any."""
        probe = ("import sys,urllib.request,urllib.error\n"
                 "try: urllib.request.urlopen(sys.argv[1], timeout=2)\n"
                 "except urllib.error.HTTPError: pass\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    log = "\n".join(p.read_text()[-2000:] for p in self.root.glob("*.log"))
                    raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log}")
            r = subprocess.run(_netns_prefix(self.netns) + [sys.executable, "-c", probe, url],
                               capture_output=True, check=False)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{what} did not answer {url} within {timeout}s")

    def seed(self, images_dir: Path) -> str:
        """Push the built images (scripts/seed-registry.py); its output."""
        argv = [sys.executable, str(REPO_ROOT / "scripts" / "seed-registry.py"),
                "--registry", self.url, "--from", str(images_dir)]
        if self.auth != "open":
            argv += ["--username", self.username, "--password", self.password]
        r = subprocess.run(_netns_prefix(self.netns) + argv, capture_output=True, text=True,
                           timeout=120, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"seed-registry failed: {r.stdout}\n{r.stderr}")
        return r.stdout

    def blob_file(self, repo: str, digest: str) -> Path:
        """Where the registry's filesystem driver keeps a blob (for corruption tests)."""
        hexpart = digest.partition(":")[2]
        return (self.root / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256"
                / hexpart[:2] / hexpart / "data")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()


# ---- the token service ----------------------------------------------------------------------

def _signing_key(root: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeling test token signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, False, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = root / "token-signer.key", root / "token-signer.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(key, cert_der: bytes, subject: str, service: str,
               access: list[dict]) -> str:
    """A registry token: RS256 JWT whose header carries the signing certificate (x5c)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    now = int(time.time())
    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(cert_der).decode()]}
    claims = {"iss": ISSUER, "sub": subject, "aud": service, "exp": now + 300,
              "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
    signing_input = (_b64url(json.dumps(header).encode()) + "."
                     + _b64url(json.dumps(claims).encode()))
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64url(signature)


def token_server(port: int, key_path: str, cert_path: str, users_path: str) -> None:
    """Serve ``/token`` on 127.0.0.1:``port`` until SIGTERM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
    cert_der = x509.load_pem_x509_certificate(Path(cert_path).read_bytes()).public_bytes(
        serialization.Encoding.DER)
    users = json.loads(Path(users_path).read_text())

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet: the test log is the registry's
            pass

        def _send(self, status: int, doc: dict) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            parts = urlsplit(self.path)
            if parts.path == "/healthz":
                return self._send(200, {})
            if parts.path != "/token":
                return self._send(404, {})
            query = parse_qs(parts.query)
            subject = ""
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if users.get(user) != password or not user:
                    return self._send(401, {"details": "incorrect username or password"})
                subject = user
            access = []
            for scope in query.get("scope", []):
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                if subject and kind == "repository":
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
            token = make_token(key, cert_der, subject, query.get("service", [SERVICE])[0],
                               access)
            self._send(200, {"token": token, "access_token": token, "expires_in": 300,
                             "issued_at": datetime.datetime.now(datetime.UTC)
                             .isoformat()})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "token-server":
        token_server(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        sys.exit("usage: python -m tests.support.registry token-server PORT KEY CERT USERS")
