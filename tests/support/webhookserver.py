"""An admission webhook server for the webhook tests (unit and e2e): aiohttp over HTTPS, in a thread of
its own, with a CA and a serving certificate (SAN 127.0.0.1 and localhost) made with
`cryptography`.

``WebhookServer(handlers)`` maps a path to ``handler(request_dict) -> response fields`` (``allowed``,
``status``, ``patch`` as a list of operations, ``warnings``); an ``async`` handler may sleep.
``server.reviews[path]`` keeps every AdmissionReview request received (``server.api_versions``
the reviews' apiVersions). ``ca_bundle`` is the CA
in base64 PEM, as ``clientConfig.caBundle`` wants it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import inspect
import ipaddress
import json
import ssl
import tempfile
import threading
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_certs(directory: Path, names: tuple[str, ...] = ("localhost",),
               ips: tuple[str, ...] = ("127.0.0.1",)) -> tuple[bytes, Path, Path]:
    """(CA PEM, serving cert path, key path)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook-test-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca.public_bytes(serialization.Encoding.PEM), cert_path, key_path


class WebhookServer:
    def __init__(self, handlers: dict, names: tuple[str, ...] = ("localhost",),
                 ips: tuple[str, ...] = ("127.0.0.1",), host: str = "127.0.0.1") -> None:
        self.handlers = handlers
        self.reviews: dict[str, list[dict]] = {p: [] for p in handlers}
        self.api_versions: list[tuple[str, str]] = []   # (path, the review's apiVersion)
        self._dir = tempfile.TemporaryDirectory(prefix="webhook-")
        ca, self.cert, self.key = make_certs(Path(self._dir.name), names, ips)
        self.ca_bundle = base64.b64encode(ca).decode()
        self.host = host
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        review = await request.json()
        req = review["request"]
        self.reviews.setdefault(request.path, []).append(req)
        self.api_versions.append((request.path, review.get("apiVersion")))
        handler = self.handlers[request.path]
        out = handler(req)
        if inspect.isawaitable(out):
            out = await out
        response = {"uid": req["uid"], "allowed": True, **(out or {})}
        if "patch" in response:
            response["patch"] = base64.b64encode(json.dumps(response["patch"]).encode()).decode()
            response["patchType"] = "JSONPatch"
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                  "response": response})

    def start(self) -> "WebhookServer":
        ready = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            for path in self.handlers:
                app.router.add_post(path, self._handle)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self.cert), str(self.key))
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, 0, ssl_context=ctx)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, name="webhook-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("webhook server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def down() -> None:
            await self._runner.cleanup()
            asyncio.get_running_loop().stop()
        asyncio.run_coroutine_threadsafe(down(), self._loop)
        self._thread.join(10)
        self._dir.cleanup()
