"""Bootstrap data shared by the servers of one datastore (k3s's ``/bootstrap/<hash>``).

Several ``kubeling server`` processes on one etcd are one cluster only if they hold the same
secrets: the cluster CA (certificate and key: every server's serving and client certificates,
and the admin kubeconfig of each, are then trusted everywhere), the service account signing key
(a token one server signs, another verifies), the node token (an agent joins any server) and the
managed encryption configuration (``--secrets-encryption``: a Secret one server encrypts, another
reads). As k3s does, the first server stores these files in the datastore and every later one
reads them into its data directory *before* its PKI is loaded:

- the key is ``/bootstrap/<first 12 hex digits of sha256(passphrase)>``, outside ``/registry/``
  (the API never serves it);
- the value is JSON: ``salt``, ``nonce``, ``ciphertext`` (base64), a key derived from the
  passphrase with PBKDF2-HMAC-SHA256 (``iterations``) and AES-256-GCM, the key name as associated
  data. The plaintext is ``{"files": {path: {"data": base64}}, "config": {...}}``;
- the passphrase is ``--token`` / ``--token-file`` (a full ``K10<CA hash>::server:<secret>``
  token gives its secret, and its CA hash is checked), else ``<data-dir>/server/token`` from an
  earlier start, else a new random one. The server writes ``<data-dir>/server/token``
  (``K10<CA hash>::server:<passphrase>``, the same as ``server/node-token`` when the node token
  was made from it): give it to the next server with ``--token-file``.

Rules:

- the CA, the service account key and the node token: the datastore's copy wins (a server whose
  data dir held another CA gets the cluster's, and its certificates issued by the old CA are
  removed, to be issued again by `PKI.ensure`);
- the encryption configuration: a copy changed on this server since it last synced (kept in
  ``<data-dir>/server/bootstrap-sync.json``) wins, otherwise the datastore's (``kubeling
  secrets-encrypt`` rewrites it on one server; that server's next start uploads it, the others'
  next starts download it; a server that never synced takes the datastore's);
- ``config`` records the settings every server must share (service and cluster CIDRs, the node
  port range, whether Secrets are encrypted): a server started with others is refused, with one
  line naming the flag;
- a datastore holding another passphrase's record refuses the server: ``--token`` is missing or
  wrong. A datastore with a cluster in it but no record (an older release) takes this server's
  files if it has a CA, and refuses a server that has none.

`reconcile` runs the sequence; two servers starting at once on an empty datastore both make
files, one record wins (create is compare-and-swap) and the other takes it and makes its
certificates again. Nothing of this runs on SQLite (one server owns the file).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Callable, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from kubeling.apiserver.certs import _write
from kubeling.apiserver.datadir import DataDirError

log = logging.getLogger(__name__)

PREFIX = "/bootstrap/"
ITERATIONS = 200_000
TOKEN_FILE = "server/token"
SYNC_FILE = "server/bootstrap-sync.json"   # digests of the files as last seen in the datastore
# path in the data dir -> how a difference is settled: "datastore" (the datastore's copy wins) or
# "newer" (a copy changed on this server since it last synced wins; otherwise the datastore's)
FILES = {
    "pki/ca.crt": "datastore",
    "pki/ca.key": "datastore",
    "pki/service-account.key": "datastore",
    "pki/service-account.pub": "datastore",
    "server/node-token": "datastore",
    "server/cred/encryption-config.json": "newer",
}
PRIVATE = ("pki/ca.key", "pki/service-account.key", "server/node-token", "server/cred/encryption-config.json")
# files `PKI.ensure` keeps when the CA changes (every other certificate in pki/ was signed by the old CA)
CA_OWN = ("ca.crt", "ca.key", "service-account.key", "service-account.pub")

T = TypeVar("T")


class BootstrapError(DataDirError):
    """The shared bootstrap data cannot be used (wrong or missing token, settings that differ).
    ``str()`` is one line."""


def key_name(passphrase: str) -> str:
    return PREFIX + hashlib.sha256(passphrase.encode()).hexdigest()[:12]


def parse_passphrase(text: str) -> tuple[str, str]:
    """``(passphrase, CA hash or "")`` of a ``--token`` value: a plain secret, or a full
    ``K10<CA hash>::<user>:<secret>`` token (its secret, and the hash to check the CA against)."""
    text = text.strip()
    if text.startswith("K10") and "::" in text:
        digest, _, creds = text[3:].partition("::")
        _, sep, secret = creds.partition(":")
        if len(digest) == 64 and sep and secret:
            return secret, digest
    return text, ""


def passphrase_from(token: str, token_file: str, data_dir: str | os.PathLike) -> tuple[str, str, bool]:
    """``(passphrase, CA hash or "", given)`` from ``--token``, ``--token-file``, the data dir's
    ``server/token``, or a new random one (``given`` is False for the last two)."""
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise BootstrapError(f"--token-file {token_file}: {e.strerror or e}") from None
        if not token:
            raise BootstrapError(f"--token-file {token_file} is empty")
    if token:
        secret, digest = parse_passphrase(token)
        if not secret:
            raise BootstrapError("--token is empty")
        return secret, digest, True
    saved = Path(data_dir) / TOKEN_FILE
    if saved.exists():
        secret, _ = parse_passphrase(saved.read_text())
        if secret:
            return secret, "", False
    return secrets.token_hex(16), "", False


def write_token_file(data_dir: str | os.PathLike, passphrase: str) -> Path:
    """``<data-dir>/server/token``: ``K10<CA hash>::server:<passphrase>`` (0600), what the next
    server is given (``--token-file``)."""
    data = Path(data_dir)
    digest = hashlib.sha256((data / "pki" / "ca.crt").read_bytes()).hexdigest()
    path = data / TOKEN_FILE
    text = f"K10{digest}::server:{passphrase}\n"
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(path, text.encode(), private=True)
    return path


def _aead_key(passphrase: str, salt: bytes, iterations: int) -> bytes:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
    return kdf.derive(passphrase.encode())


def encrypt(passphrase: str, key: str, plain: bytes) -> bytes:
    salt, nonce = os.urandom(16), os.urandom(12)
    sealed = AESGCM(_aead_key(passphrase, salt, ITERATIONS)).encrypt(nonce, plain, key.encode())
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return json.dumps({"kdf": "pbkdf2-sha256", "iterations": ITERATIONS, "salt": b64(salt), "nonce": b64(nonce),
                       "cipher": "aes-256-gcm", "ciphertext": b64(sealed)}).encode()


def decrypt(passphrase: str, key: str, value: bytes) -> bytes:
    """The plaintext, or BootstrapError when the passphrase is not the one it was sealed with."""
    try:
        doc = json.loads(value)
        salt, nonce, sealed = (base64.b64decode(doc[k]) for k in ("salt", "nonce", "ciphertext"))
        aead = AESGCM(_aead_key(passphrase, salt, int(doc["iterations"])))
    except (ValueError, KeyError, TypeError):
        raise BootstrapError(f"the bootstrap data at {key} in the datastore is damaged") from None
    try:
        return aead.decrypt(nonce, sealed, key.encode())
    except InvalidTag:
        raise BootstrapError(f"the bootstrap data at {key} does not open with this token: start this server "
                             "with the first server's token (--token or --token-file)") from None


def _read_local(data: Path) -> dict[str, dict]:
    out = {}
    for rel in FILES:
        p = data / rel
        if p.is_file():
            out[rel] = {"data": base64.b64encode(p.read_bytes()).decode()}
    return out


def _write_local(data: Path, rel: str, entry: dict) -> None:
    p = data / rel
    try:
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise DataDirError(f"cannot prepare {p.parent}: {e.strerror or e}") from None
    _write(p, base64.b64decode(entry["data"]), private=rel in PRIVATE)


def _drop_issued(pki: Path) -> None:
    """Every certificate and key in ``pki/`` but the CA's and the service account key: they were
    issued by a CA this cluster does not use."""
    for p in [*pki.glob("*.crt"), *pki.glob("*.key")]:
        if p.name not in CA_OWN:
            p.unlink(missing_ok=True)


class BootstrapData:
    """The record of one datastore, for one server's data dir (see the module docstring)."""

    def __init__(self, store, data_dir: str | os.PathLike, passphrase: str, *, given: bool = True,
                 ca_hash: str = "", config: dict | None = None) -> None:
        self.store = store
        self.data = Path(data_dir)
        self.passphrase = passphrase
        self.given = given
        self.ca_hash = ca_hash
        self.config = dict(config or {})
        self.key = key_name(passphrase)
        self._record: dict | None = None
        self._mod_revision = 0

    async def _get(self) -> dict | None:
        _, kv = await self.store.get(self.key)
        if kv is None:
            self._record, self._mod_revision = None, 0
            return None
        self._record = json.loads(decrypt(self.passphrase, self.key, kv.value))
        self._mod_revision = kv.mod_revision
        return self._record

    async def load(self) -> bool:
        """Before the PKI is loaded: write the datastore's files into the data dir. False when
        the datastore has no record for this passphrase (this server makes the files);
        BootstrapError when it holds another one's, or settings that differ."""
        record = await self._get()
        if record is None:
            others = (await self.store.list(PREFIX, limit=1)).kvs
            if others:
                if self.given:
                    raise BootstrapError(
                        "the datastore holds bootstrap data (CA, keys, node token) made with another token: --token "
                        "is wrong; give this server the first server's token (its <data-dir>/server/token)")
                raise BootstrapError(
                    "the datastore is shared with another server: start this one with --token or --token-file "
                    "and the first server's token (its <data-dir>/server/token)")
            if not (self.data / "pki" / "ca.crt").exists() and await self.store.count("/registry/namespaces/"):
                raise BootstrapError(
                    "the datastore holds a cluster but no bootstrap data, and this data dir has no CA: start the "
                    "server that made the cluster (its data dir) first, with --token")
            return False
        self._check_config(record.get("config") or {})
        local = _read_local(self.data)
        synced = self._synced()
        changed = []
        for rel, entry in (record.get("files") or {}).items():
            if rel not in FILES:
                continue
            mine, theirs = local.get(rel), _digest(entry)
            if mine is not None and _digest(mine) == theirs:
                continue
            if FILES[rel] == "newer" and mine is not None and synced.get(rel) == theirs:
                continue  # changed here since this server last synced it, not there: `save` uploads it
            if rel == "pki/ca.crt" and mine is not None:
                log.warning("this data dir held another cluster CA: taking the datastore's, and issuing this "
                            "server's certificates again")
                _drop_issued(self.data / "pki")
            _write_local(self.data, rel, entry)
            changed.append(rel)
        if changed:
            log.info("bootstrap data from the datastore (%s): %s", self.key, ", ".join(changed))
        self._check_ca()
        return True

    def _check_config(self, theirs: dict) -> None:
        for flag, want in self.config.items():
            if flag in theirs and theirs[flag] != want:
                raise BootstrapError(f"--{flag} {_show(want)} differs from the other servers' {_show(theirs[flag])}: "
                                     "every server of one datastore needs the same")

    def _check_ca(self) -> None:
        ca = self.data / "pki" / "ca.crt"
        if self.ca_hash and ca.exists() and hashlib.sha256(ca.read_bytes()).hexdigest() != self.ca_hash:
            raise BootstrapError("the token's CA hash (K10<hash>::...) is not the hash of the cluster CA: the token "
                                 "is another cluster's")

    async def save(self) -> bool:
        """After the PKI, the node token and the encryption configuration are made: store them
        (create, or update what changed here since the last sync). False when another server
        created the record first (`load` again, then make what depends on the CA again)."""
        self._check_ca()
        local = _read_local(self.data)
        record = self._record
        if record is None:
            plain = json.dumps({"files": local, "config": self.config, "created": time.time()}).encode()
            ok, _ = await self.store.create(self.key, encrypt(self.passphrase, self.key, plain))
            if ok:
                log.info("bootstrap data stored in the datastore at %s", self.key)
                await self._get()
                self._write_synced()
            return ok
        files = dict(record.get("files") or {})
        config = {**(record.get("config") or {}), **self.config}
        synced = self._synced()
        upload = [rel for rel, mine in local.items() if rel not in files or (
            FILES[rel] == "newer" and _digest(mine) != _digest(files[rel])
            and synced.get(rel) == _digest(files[rel]))]
        if upload or config != record.get("config"):
            for rel in upload:
                files[rel] = local[rel]
            new = dict(record, files=files, config=config)
            ok, _ = await self.store.update(self.key, encrypt(self.passphrase, self.key, json.dumps(new).encode()),
                                            self._mod_revision)
            if ok:
                log.info("bootstrap data updated in the datastore: %s", ", ".join(upload) or "settings")
            else:
                log.warning("the bootstrap data changed in the datastore meanwhile: this server takes it at its "
                            "next start")
            await self._get()
        self._write_synced()
        return True

    def _sync_path(self) -> Path:
        return self.data / SYNC_FILE

    def _synced(self) -> dict[str, str]:
        """{path: digest} of the files as this server last saw them in the datastore."""
        try:
            doc = json.loads(self._sync_path().read_text())
        except (OSError, ValueError):
            return {}
        return doc.get("files") or {} if doc.get("key") == self.key else {}

    def _write_synced(self) -> None:
        files = {rel: _digest(e) for rel, e in ((self._record or {}).get("files") or {}).items()}
        _write(self._sync_path(), json.dumps({"key": self.key, "files": files}).encode(), private=True)


def _digest(entry: dict) -> str:
    return hashlib.sha256(entry["data"].encode()).hexdigest()


def _show(v) -> str:
    return "-".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v).lower() if isinstance(v, bool) else str(v)


async def reconcile(shared: BootstrapData, make: Callable[[], T]) -> T:
    """`load`, ``make()`` (the PKI, the node token, the encryption configuration: whatever is
    missing is made), `save`; when another server stored its record first, its files are loaded
    and ``make()`` runs again. Returns what ``make()`` returned. Writes ``server/token``."""
    await shared.load()
    made = make()
    if not await shared.save():
        log.info("another server stored the bootstrap data first: taking its CA and keys")
        if not await shared.load():
            raise BootstrapError("the bootstrap data vanished from the datastore while this server started")
        made = make()
    write_token_file(shared.data, shared.passphrase)
    return made
