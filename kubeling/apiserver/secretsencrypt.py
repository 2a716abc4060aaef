"""The server side of ``kubeling secrets-encrypt`` (k3s's ``/v1-k3s/encrypt/*``), over the
`kubeling.storage.encryption.TransformingStore` the server writes through.

Endpoints (non-resource paths, authorized as such: only ``system:masters``/cluster-admin reach them)::

    GET  /v1-k3s/encrypt/status   {"enabled", "stage", "config", "providers": [...],
                                        "stale": {resource prefix: count}}
    POST /v1-k3s/encrypt/config   {"stage": <command>} -> the status after it

Commands, as k3s's (the configuration file is rewritten 0600 and reloaded at once, as upstream's
automatic reload does, so no restart is needed between stages; the stage is kept in
``encryption-state.json`` next to the file):

- ``prepare``     a new AES-CBC key (``aescbckey-<time>``) is added after the active one: it reads;
- ``rotate``      the newest key becomes the write key; the old one still reads;
- ``reencrypt``   every stored object of the configured resources is rewritten with the write key,
                  then the keys that no longer write are dropped (``reencrypt_finished``);
- ``rotate-keys`` prepare, rotate and reencrypt in one step;
- ``enable`` / ``disable``  AES-CBC (or identity) becomes the write provider, and objects are
                  rewritten (``reencrypt_finished``);
- ``reload``      read the file again (after editing it by hand).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from pathlib import Path

import orjson
from aiohttp import web

from kubeling.api import errors
from kubeling.storage.encryption import (KEY_TYPE_NAMES, EncryptionConfig, EncryptionConfigError, TransformingStore,
                                         new_aescbc_key, write_document)

log = logging.getLogger(__name__)

PATH = "/v1-k3s/encrypt/"
COMMANDS = ("prepare", "rotate", "reencrypt", "rotate-keys", "enable", "disable", "reload")


class SecretsEncrypt:
    def __init__(self, store: TransformingStore, config_path: str) -> None:
        self.store = store
        self.path = Path(config_path)
        self.state_path = self.path.with_name("encryption-state.json")
        self._lock = asyncio.Lock()

    # -- state ---------------------------------------------------------------------------------

    def stage(self) -> str:
        try:
            return json.loads(self.state_path.read_text()).get("stage") or "start"
        except (OSError, ValueError):
            return "start"

    def _set_stage(self, stage: str) -> None:
        write_document(self.state_path, {"stage": stage})

    def _document(self) -> dict:
        import yaml
        return yaml.safe_load(self.path.read_text())

    def _aescbc(self, doc: dict) -> tuple[list, dict]:
        """The providers of the first resources entry and its aescbc provider (made if absent)."""
        providers = doc["resources"][0]["providers"]
        for p in providers:
            if isinstance(p, dict) and "aescbc" in p:
                return providers, p
        p = {"aescbc": {"keys": [new_aescbc_key("aescbckey")]}}
        providers.append(p)
        return providers, p

    def _save(self, doc: dict) -> None:
        EncryptionConfig.parse(doc, str(self.path))  # never write a configuration the server cannot load
        write_document(self.path, doc)
        self.reload()

    def reload(self) -> None:
        self.store.reload(EncryptionConfig.load(self.path))

    async def status(self) -> dict:
        cfg = self.store.config
        providers = cfg.providers()
        active = next((p for p in providers if p["active"]), None)
        return {"enabled": bool(active and active["type"] != "identity"), "stage": self.stage(),
                "config": str(self.path), "providers": providers,
                "stale": await self.store.stale_count(),
                "decryptErrors": self.store.decrypt_errors}

    # -- commands ------------------------------------------------------------------------------

    async def run(self, command: str) -> dict:
        if command not in COMMANDS:
            raise errors.bad_request(f"unknown secrets-encrypt command {command!r} (one of {', '.join(COMMANDS)})")
        async with self._lock:
            try:
                await self._run(command)
            except EncryptionConfigError as e:
                raise errors.bad_request(str(e)) from None
            except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
                raise errors.bad_request(f"{self.path}: {e}") from None
        return await self.status()

    async def _run(self, command: str) -> None:
        if command == "reload":
            self.reload()
            return
        doc = self._document()
        providers, aescbc = self._aescbc(doc)
        keys = aescbc["aescbc"]["keys"]
        if command in ("prepare", "rotate-keys"):
            keys.insert(1, new_aescbc_key("aescbckey-" + datetime.datetime.now(datetime.timezone.utc)
                                          .strftime("%Y-%m-%dT%H:%M:%SZ")))
            if command == "prepare":
                self._save(doc)
                self._set_stage("prepare")
                return
        if command in ("rotate", "rotate-keys"):
            if len(keys) < 2:
                raise errors.bad_request("there is no prepared key to rotate to: run prepare first")
            keys.insert(0, keys.pop(1))
            self._save(doc)
            if command == "rotate":
                self._set_stage("rotate")
                return
        if command in ("enable", "disable"):
            if not any(isinstance(p, dict) and "identity" in p for p in providers):
                providers.append({"identity": {}})
            providers.sort(key=lambda p: ("identity" in p) == (command == "enable"))
            self._save(doc)
        self._set_stage("reencrypt_active")
        rewritten, failed = await self.store.reencrypt()
        log.info("secrets-encrypt %s: %d objects rewritten, %d could not be decrypted", command, rewritten, failed)
        if failed:
            self._set_stage("reencrypt_request")
            raise errors.internal(f"{failed} stored objects could not be decrypted; old keys were kept")
        if command != "disable":
            del keys[1:]  # every object is written with the active key: the old ones are no longer needed
            self._save(doc)
        self._set_stage("reencrypt_finished")

    # -- HTTP ----------------------------------------------------------------------------------

    async def handle(self, request: web.Request, path: str) -> web.Response:
        if path == PATH + "status" and request.method in ("GET", "HEAD"):
            return _json(await self.status())
        if path == PATH + "config" and request.method in ("POST", "PUT"):
            try:
                body = orjson.loads(await request.read() or b"{}")
            except orjson.JSONDecodeError as e:
                raise errors.bad_request(f"the body is not JSON: {e}") from None
            command = body.get("stage") if isinstance(body, dict) else None
            return _json(await self.run(command or ""))
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")


def _json(doc: dict) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


def key_type_name(ptype: str) -> str:
    return KEY_TYPE_NAMES.get(ptype, ptype)
