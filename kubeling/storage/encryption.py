"""Encryption at rest: upstream's ``EncryptionConfiguration`` (``apiserver.config.k8s.io/v1``)
as a value transformer between the API server and its `Store`.

Configuration (YAML or JSON, as upstream's ``--encryption-provider-config``)::

    apiVersion: apiserver.config.k8s.io/v1
    kind: EncryptionConfiguration
    resources:
    - resources: [secrets, configmaps, "*.apps"]     # resource.group; "*.<group>", "*." (core), "*.*"
      providers:                                     # the first writes; every one reads
      - aescbc:    {keys: [{name: key1, secret: <base64 of 16, 24 or 32 bytes>}]}
      - aesgcm:    {keys: [{name: key2, secret: <base64 of 16, 24 or 32 bytes>}]}
      - secretbox: {keys: [{name: key3, secret: <base64 of 32 bytes>}]}
      - identity: {}

A resource takes the first ``resources[]`` entry that names it. Within a provider the first key
writes and every key reads. Stored values carry upstream's prefix, so a state file moves between
kubeling and an etcd written by kube-apiserver with the same keys::

    aescbc     k8s:enc:aescbc:v1:<key name>:    + 16-byte IV + AES-CBC (PKCS#7 padding)
    aesgcm     k8s:enc:aesgcm:v1:<key name>:    + 12-byte nonce + AES-GCM (the store key is the
                                                  additional authenticated data)
    secretbox  k8s:enc:secretbox:v1:<key name>: + 24-byte nonce + XSalsa20-Poly1305 (PyNaCl)
    identity   (no prefix: the JSON as is)

``kms`` providers are refused with a clear error: there is no KMS plugin support.

`TransformingStore` wraps a store: writes under a configured resource are encrypted with the
write provider; every value read (get, list, the results of create/update/delete and watch
events) that carries a ``k8s:enc:`` prefix is decrypted, so the watch cache, the registry and
the backup's readers above it see plaintext, while the state file holds only ciphertext. A value
no configured key can decrypt is passed on unchanged: it does not decode as an object, and the
layers above report it as undecodable (a 500 on GET, left out of lists with a Warning Event)
rather than hiding it. ``reload()`` swaps in a changed configuration (upstream's automatic
reload); `reencrypt` rewrites every stored object of the configured resources that is not
written with the current write key (key rotation).

Failures are `EncryptionConfigError` with one line naming the field, as upstream's validation.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import yaml

from kubeling.storage.interface import Event, KeyValue, ListResult

log = logging.getLogger(__name__)

ENC_PREFIX = b"k8s:enc:"
API_VERSION = "apiserver.config.k8s.io/v1"
KIND = "EncryptionConfiguration"
PROVIDER_TYPES = ("aescbc", "aesgcm", "secretbox", "identity", "kms")
KEY_TYPE_NAMES = {"aescbc": "AES-CBC", "aesgcm": "AES-GCM", "secretbox": "XSalsa20-Poly1305", "identity": "Identity"}


class EncryptionConfigError(ValueError):
    """The configuration is invalid; ``str()`` is one line naming the field."""


class DecryptError(Exception):
    pass


# -- providers -------------------------------------------------------------------------------------

class Identity:
    type = "identity"
    name = ""
    prefix = b""

    def encrypt(self, data: bytes, key: str) -> bytes:
        return data

    def decrypt(self, data: bytes, key: str) -> bytes:
        return data


class AESCBC:
    type = "aescbc"

    def __init__(self, name: str, secret: bytes) -> None:
        self.name, self._key = name, secret
        self.prefix = f"k8s:enc:aescbc:v1:{name}:".encode()

    def encrypt(self, data: bytes, key: str) -> bytes:
        from cryptography.hazmat.primitives import padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        padded = padder.update(data) + padder.finalize()
        enc = Cipher(algorithms.AES(self._key), modes.CBC(iv)).encryptor()
        return self.prefix + iv + enc.update(padded) + enc.finalize()

    def decrypt(self, data: bytes, key: str) -> bytes:
        from cryptography.hazmat.primitives import padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        body = data[len(self.prefix):]
        if len(body) < 32 or len(body) % 16:
            raise DecryptError("the data is not a multiple of the block size")
        dec = Cipher(algorithms.AES(self._key), modes.CBC(body[:16])).decryptor()
        padded = dec.update(body[16:]) + dec.finalize()
        try:
            unpadder = padding.PKCS7(128).unpadder()
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise DecryptError("invalid PKCS7 data (empty or not padded)") from None


class AESGCM:
    type = "aesgcm"

    def __init__(self, name: str, secret: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM as _AESGCM
        self.name, self._aead = name, _AESGCM(secret)
        self.prefix = f"k8s:enc:aesgcm:v1:{name}:".encode()

    def encrypt(self, data: bytes, key: str) -> bytes:
        nonce = os.urandom(12)
        return self.prefix + nonce + self._aead.encrypt(nonce, data, key.encode())

    def decrypt(self, data: bytes, key: str) -> bytes:
        from cryptography.exceptions import InvalidTag
        body = data[len(self.prefix):]
        if len(body) < 12 + 16:
            raise DecryptError("the stored data was shorter than the required size")
        try:
            return self._aead.decrypt(body[:12], body[12:], key.encode())
        except InvalidTag:
            raise DecryptError("cipher: message authentication failed") from None


class Secretbox:
    type = "secretbox"

    def __init__(self, name: str, secret: bytes) -> None:
        try:
            import nacl.secret
        except ImportError:  # pragma: no cover - PyNaCl is a dependency
            raise EncryptionConfigError("the secretbox provider needs PyNaCl (pip install pynacl)") from None
        self.name, self._box = name, nacl.secret.SecretBox(secret)
        self.prefix = f"k8s:enc:secretbox:v1:{name}:".encode()

    def encrypt(self, data: bytes, key: str) -> bytes:
        return self.prefix + bytes(self._box.encrypt(data))  # nonce (24) || sealed, as upstream

    def decrypt(self, data: bytes, key: str) -> bytes:
        import nacl.exceptions
        body = data[len(self.prefix):]
        if len(body) < 24 + 16:
            raise DecryptError("the stored data was shorter than the required size")
        try:
            return self._box.decrypt(body)
        except nacl.exceptions.CryptoError:
            raise DecryptError("output array too small or message authentication failed") from None


# -- one resource's transformer --------------------------------------------------------------------

class Transformer:
    """The providers of one ``resources[]`` entry, flattened to (provider, key) in order: the
    first writes; a value is read by the one whose prefix it carries."""

    def __init__(self, keyed: list) -> None:
        self.keyed = keyed
        self.writer = keyed[0]

    def encrypt(self, data: bytes, key: str) -> bytes:
        return self.writer.encrypt(data, key)

    def decrypt(self, data: bytes, key: str) -> tuple[bytes, bool]:
        """(plaintext, stale): stale when not written by the current write key."""
        if data.startswith(ENC_PREFIX):
            for p in self.keyed:
                if p.prefix and data.startswith(p.prefix):
                    return p.decrypt(data, key), p is not self.writer
            raise DecryptError("no matching prefix found")
        return data, not isinstance(self.writer, Identity)


def _decode_secret(field: str, secret, sizes: tuple[int, ...]) -> bytes:
    if not isinstance(secret, str) or not secret:
        raise EncryptionConfigError(f"{field}: Required value: secret is required")
    try:
        raw = base64.b64decode(secret, validate=True)
    except (ValueError, TypeError):
        raise EncryptionConfigError(f"{field}: Invalid value: \"REDACTED\": secrets must be base64 encoded") from None
    if len(raw) not in sizes:
        want = " or ".join(str(s) for s in sizes)
        raise EncryptionConfigError(f"{field}: Invalid value: \"REDACTED\": secret is not of the expected length, "
                                    f"got {len(raw)}, expected one of {want}")
    return raw


_SIZES = {"aescbc": (16, 24, 32), "aesgcm": (16, 24, 32), "secretbox": (32,)}
_CLASSES = {"aescbc": AESCBC, "aesgcm": AESGCM, "secretbox": Secretbox}


def _providers(entry: dict, i: int) -> list:
    providers = entry.get("providers")
    if not isinstance(providers, list) or not providers:
        raise EncryptionConfigError(f"resources[{i}].providers: Required value: at least one provider is required")
    keyed: list = []
    for j, provider in enumerate(providers):
        field = f"resources[{i}].providers[{j}]"
        if not isinstance(provider, dict):
            raise EncryptionConfigError(f"{field}: Invalid value: a provider must be an object")
        types = [t for t in provider if provider.get(t) is not None]
        if len(types) != 1:
            raise EncryptionConfigError(f"{field}: Invalid value: {json.dumps(types)}: more than one provider "
                                        "specified in a single element, should split into different list elements"
                                        if types else f"{field}: Required value: provider does not contain any of "
                                        "the expected providers: KMS, secretbox, aesgcm, aescbc or identity")
        t = types[0]
        if t not in PROVIDER_TYPES:
            raise EncryptionConfigError(f"{field}: Unsupported value: {t!r}: supported values: aescbc, aesgcm, "
                                        "secretbox, identity")
        if t == "identity":
            keyed.append(Identity())
            continue
        if t == "kms":
            raise EncryptionConfigError(f"{field}.kms: Unsupported value: KMS providers are not supported by kubeling")
        keys = (provider[t] or {}).get("keys") if isinstance(provider[t], dict) else None
        if not isinstance(keys, list) or not keys:
            raise EncryptionConfigError(f"{field}.{t}.keys: Required value: keys are required")
        seen = set()
        for k, key in enumerate(keys):
            kf = f"{field}.{t}.keys[{k}]"
            name = key.get("name") if isinstance(key, dict) else None
            if not isinstance(name, str) or not name:
                raise EncryptionConfigError(f"{kf}.name: Required value: key name is required")
            if name in seen:
                raise EncryptionConfigError(f"{kf}.name: Duplicate value: {name!r}")
            seen.add(name)
            keyed.append(_CLASSES[t](name, _decode_secret(f"{kf}.secret", key.get("secret"), _SIZES[t])))
    return keyed


def _resource_pattern(field: str, r) -> tuple[str, str]:
    """("<group>", "<resource>") of ``resource.group``; "*" in either for wildcards."""
    if not isinstance(r, str) or not r:
        raise EncryptionConfigError(f"{field}: Required value: resource name is required")
    if r != r.lower():
        raise EncryptionConfigError(f"{field}: Invalid value: {r!r}: resource name must be lowercase")
    resource, _, group = r.partition(".")
    if resource == "*" and "." not in r:
        raise EncryptionConfigError(f"{field}: Invalid value: {r!r}: use '*.' to encrypt all the resources "
                                    "from core API group or *.* to encrypt all resources")
    return group, resource


class EncryptionConfig:
    """A parsed configuration: ``transformer_for(key)`` is the `Transformer` of a store key's
    resource, or None when the resource is not configured (stored as is)."""

    def __init__(self, rules: list[tuple[tuple[str, str], Transformer]], path: str = "") -> None:
        self.rules = rules
        self.path = path
        self._by_prefix: dict[str, Transformer | None] = {}
        self.any_key = AnyKey(rules)

    @classmethod
    def parse(cls, doc, path: str = "") -> EncryptionConfig:
        if not isinstance(doc, dict):
            raise EncryptionConfigError("the encryption configuration is not an object")
        if doc.get("kind") != KIND or doc.get("apiVersion") not in (API_VERSION, "apiserver.config.k8s.io/v1beta1"):
            raise EncryptionConfigError(f"kind and apiVersion: want {KIND} {API_VERSION}, got "
                                        f"{doc.get('kind')!r} {doc.get('apiVersion')!r}")
        resources = doc.get("resources")
        if not isinstance(resources, list) or not resources:
            raise EncryptionConfigError("resources: Required value: resources is required")
        rules: list[tuple[tuple[str, str], Transformer]] = []
        seen: set[tuple[str, str]] = set()
        for i, entry in enumerate(resources):
            if not isinstance(entry, dict):
                raise EncryptionConfigError(f"resources[{i}]: Invalid value: must be an object")
            names = entry.get("resources")
            if not isinstance(names, list) or not names:
                raise EncryptionConfigError(f"resources[{i}].resources: Required value: "
                                            "resource is required")
            transformer = Transformer(_providers(entry, i))
            for j, r in enumerate(names):
                pattern = _resource_pattern(f"resources[{i}].resources[{j}]", r)
                if pattern in seen:
                    raise EncryptionConfigError(f"resources[{i}].resources[{j}]: Duplicate value: {r!r}")
                seen.add(pattern)
                rules.append((pattern, transformer))
        return cls(rules, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EncryptionConfig:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise EncryptionConfigError(f"error reading encryption provider configuration file {p}: "
                                        f"{e.strerror or e}") from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise EncryptionConfigError(f"error decoding encryption provider configuration file {p}: {e}") from None
        return cls.parse(doc, str(p))

    def transformer_for(self, key: str) -> Transformer | None:
        parts = key.split("/", 4)
        if len(parts) < 4 or parts[1] != "registry":
            return None
        prefix = "/".join(parts[:4]) + "/"
        if prefix in self._by_prefix:
            return self._by_prefix[prefix]
        group = "" if parts[2] == "core" else parts[2]
        resource = parts[3]
        found = None
        for (g, r), t in self.rules:  # first match wins, as upstream
            if (r == "*" or r == resource) and (g == "*" or g == group):
                found = t
                break
        self._by_prefix[prefix] = found
        return found

    def resource_prefixes(self, keys: Iterable[str]) -> list[str]:
        return sorted({"/".join(k.split("/", 4)[:4]) + "/" for k in keys if self.transformer_for(k) is not None})

    def providers(self) -> list[dict]:
        """The distinct (type, name) of every provider key, the write one marked active."""
        out, seen = [], set()
        for _, t in self.rules:
            for p in t.keyed:
                ident = (p.type, p.name, id(t))
                if ident not in seen:
                    seen.add(ident)
                    out.append({"type": p.type, "name": p.name, "active": p is t.writer})
        return out


# -- the store wrapper -----------------------------------------------------------------------------

class TransformingWatch:
    def __init__(self, inner, owner: TransformingStore) -> None:
        self._inner, self._owner = inner, owner

    def __aiter__(self):
        return self

    async def __anext__(self) -> Event:
        ev = await self._inner.__anext__()
        return self._owner._event(ev)

    def close(self) -> None:
        self._inner.close()

    def pending(self) -> int:
        return self._inner.pending()

    def progress(self) -> int:
        return self._inner.progress()

    def __getattr__(self, name):
        return getattr(self._inner, name)


class TransformingStore:
    """A `Store` whose values are encrypted at rest as ``config`` says (see the module docstring)."""

    def __init__(self, inner, config: EncryptionConfig) -> None:
        self.inner = inner
        self.config = config
        self.decrypt_errors = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def compact_revision(self) -> int:
        return self.inner.compact_revision

    def reload(self, config: EncryptionConfig) -> None:
        self.config = config

    # -- values --------------------------------------------------------------------------------

    def _plain(self, key: str, value: bytes) -> bytes:
        if not value.startswith(ENC_PREFIX):
            return value
        t = self.config.transformer_for(key) or self.config.any_key
        try:
            return t.decrypt(value, key)[0]
        except DecryptError as e:
            self.decrypt_errors += 1
            log.error("cannot decrypt the stored value of %s: %s", key, e)
            return value
        except Exception as e:  # noqa: BLE001 - a bad value never breaks a read of the others
            self.decrypt_errors += 1
            log.error("cannot decrypt the stored value of %s: %s", key, e)
            return value

    def _kv(self, kv: KeyValue | None) -> KeyValue | None:
        if kv is None or not kv.value.startswith(ENC_PREFIX):
            return kv
        return dataclasses.replace(kv, value=self._plain(kv.key, kv.value))

    def _event(self, ev: Event) -> Event:
        kv, prev = self._kv(ev.kv), self._kv(ev.prev_kv)
        if kv is ev.kv and prev is ev.prev_kv:
            return ev
        return Event(ev.type, kv, prev)

    def _sealed(self, key: str, value: bytes) -> bytes:
        t = self.config.transformer_for(key)
        return t.encrypt(value, key) if t is not None else value

    # -- the Store API -------------------------------------------------------------------------

    async def get(self, key: str):
        rev, kv = await self.inner.get(key)
        return rev, self._kv(kv)

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0) -> ListResult:
        res = await self.inner.list(prefix, revision=revision, start_after=start_after, limit=limit)
        if not any(kv.value.startswith(ENC_PREFIX) for kv in res.kvs):
            return res
        return ListResult(res.revision, [self._kv(kv) for kv in res.kvs], res.more, res.count)

    async def create(self, key: str, value: bytes):
        ok, kv = await self.inner.create(key, self._sealed(key, value))
        if ok and kv is not None:
            return ok, dataclasses.replace(kv, value=value)
        return ok, self._kv(kv)

    async def update(self, key: str, value: bytes, expected_mod_revision: int):
        ok, kv = await self.inner.update(key, self._sealed(key, value), expected_mod_revision)
        if ok and kv is not None:
            return ok, dataclasses.replace(kv, value=value)
        return ok, self._kv(kv)

    async def delete(self, key: str, expected_mod_revision: int = 0):
        ok, kv = await self.inner.delete(key, expected_mod_revision)
        return ok, self._kv(kv)

    def watch(self, prefix: str, start_revision: int) -> TransformingWatch:
        return TransformingWatch(self.inner.watch(prefix, start_revision), self)

    async def count(self, prefix: str) -> int:
        return await self.inner.count(prefix)

    async def current_revision(self) -> int:
        return await self.inner.current_revision()

    async def compact(self, revision: int) -> int:
        return await self.inner.compact(revision)

    async def check(self) -> None:
        check = getattr(self.inner, "check", None)
        if check is not None:
            await check()

    async def close(self) -> None:
        await self.inner.close()

    # -- rotation ------------------------------------------------------------------------------

    async def stale_count(self, prefix: str = "/registry/") -> dict[str, int]:
        """Per resource prefix, how many stored values are not written with the write key."""
        counts: dict[str, int] = {}
        for kv in (await self.inner.list(prefix)).kvs:
            t = self.config.transformer_for(kv.key)
            if t is None:
                continue
            rp = "/".join(kv.key.split("/", 4)[:4]) + "/"
            try:
                _, stale = t.decrypt(kv.value, kv.key)
            except DecryptError:
                stale = True
            counts[rp] = counts.get(rp, 0) + (1 if stale else 0)
        return counts

    async def reencrypt(self, prefix: str = "/registry/") -> tuple[int, int]:
        """Rewrite every stored object under ``prefix`` of a configured resource that is not
        written with the current write key (upstream's ``kubectl replace`` of every object after
        a rotation). A value changed meanwhile was written with the current key: it is left.
        Returns (rewritten, failed to decrypt)."""
        rewritten = failed = 0
        start_after = ""
        while True:
            page = await self.inner.list(prefix, start_after=start_after, limit=500)
            for kv in page.kvs:
                t = self.config.transformer_for(kv.key)
                if t is None:
                    continue
                try:
                    plain, stale = t.decrypt(kv.value, kv.key)
                except DecryptError as e:
                    failed += 1
                    log.error("reencrypt: cannot decrypt %s: %s", kv.key, e)
                    continue
                if not stale:
                    continue
                ok, _ = await self.inner.update(kv.key, t.encrypt(plain, kv.key), kv.mod_revision)
                rewritten += 1 if ok else 0
            if not page.more or not page.kvs:
                return rewritten, failed
            start_after = page.kvs[-1].key


class AnyKey:
    """Decrypts a prefixed value of a resource that the configuration no longer names, with any
    of its keys (removing a resource from the configuration does not lose its data)."""

    def __init__(self, rules) -> None:
        self.keyed = [p for _, t in rules for p in t.keyed if p.prefix]

    def decrypt(self, data: bytes, key: str) -> tuple[bytes, bool]:
        for p in self.keyed:
            if data.startswith(p.prefix):
                return p.decrypt(data, key), True
        raise DecryptError("no matching prefix found")


# -- k3s's managed configuration -------------------------------------------------------------------

def k3s_config_path(data_dir: str | os.PathLike) -> Path:
    """``<data-dir>/server/cred/encryption-config.json``, where k3s keeps its configuration."""
    return Path(data_dir) / "server" / "cred" / "encryption-config.json"


def new_aescbc_key(name: str) -> dict:
    return {"name": name, "secret": base64.b64encode(os.urandom(32)).decode()}


def default_document(key_name: str = "aescbckey") -> dict:
    """k3s's first configuration: Secrets with a new AES-CBC key, identity to read old data."""
    return {"kind": KIND, "apiVersion": API_VERSION,
            "resources": [{"resources": ["secrets"],
                           "providers": [{"aescbc": {"keys": [new_aescbc_key(key_name)]}}, {"identity": {}}]}]}


def write_document(path: str | os.PathLike, doc: dict) -> None:
    """Write a configuration 0600 (its directory 0700), atomically."""
    p = Path(path)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(p.parent, 0o700)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, p)


def ensure_k3s_config(data_dir: str | os.PathLike) -> Path:
    """The managed configuration, made at the first start with ``--secrets-encryption``."""
    p = k3s_config_path(data_dir)
    if not p.exists():
        write_document(p, default_document())
    else:
        os.chmod(p, 0o600)
    return p
