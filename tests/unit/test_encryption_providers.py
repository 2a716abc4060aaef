"""Encryption at rest (kubeling.storage.encryption): providers, configuration, the store wrapper."""

import asyncio
import base64
import os

import pytest

from kubeling.storage.encryption import (EncryptionConfig, EncryptionConfigError, TransformingStore,
                                         default_document, ensure_k3s_config)
from kubeling.storage.memory import MemoryStore

KEY = "/registry/core/secrets/default/s1"
PLAIN = b'{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}'


def b64(n: int) -> str:
    return base64.b64encode(os.urandom(n)).decode()


def config(*providers, resources=("secrets",)):
    return EncryptionConfig.parse({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                                   "resources": [{"resources": list(resources), "providers": list(providers)}]})


@pytest.mark.parametrize("ptype,size", [("aescbc", 32), ("aescbc", 16), ("aesgcm", 32), ("secretbox", 32)])
def test_round_trip_with_upstream_prefix(ptype, size):
    cfg = config({ptype: {"keys": [{"name": "k1", "secret": b64(size)}]}}, {"identity": {}})
    t = cfg.transformer_for(KEY)
    sealed = t.encrypt(PLAIN, KEY)
    assert sealed.startswith(f"k8s:enc:{ptype}:v1:k1:".encode())
    assert b"aHVudGVyMg" not in sealed
    assert t.decrypt(sealed, KEY) == (PLAIN, False)
    assert t.decrypt(PLAIN, KEY) == (PLAIN, True)  # identity reads old data, which is stale
    assert cfg.transformer_for("/registry/core/configmaps/default/c") is None


def test_aesgcm_binds_the_key():
    cfg = config({"aesgcm": {"keys": [{"name": "k", "secret": b64(32)}]}})
    t = cfg.transformer_for(KEY)
    sealed = t.encrypt(PLAIN, KEY)
    with pytest.raises(Exception):
        t.decrypt(sealed, "/registry/core/secrets/default/other")


def test_resource_patterns():
    cfg = config({"identity": {}}, resources=("deployments.apps", "*.batch", "*."))
    assert cfg.transformer_for("/registry/apps/deployments/d/x") is not None
    assert cfg.transformer_for("/registry/apps/statefulsets/d/x") is None
    assert cfg.transformer_for("/registry/batch/jobs/d/x") is not None
    assert cfg.transformer_for("/registry/core/configmaps/d/x") is not None
    assert config({"identity": {}}, resources=("*.*",)).transformer_for("/registry/x.io/foos/a") is not None


@pytest.mark.parametrize("doc,message", [
    ({"kind": "Nope"}, "kind and apiVersion"),
    ({"resources": [{"resources": ["secrets"], "providers": []}]}, "resources[0].providers: Required value"),
    ({"resources": [{"resources": ["secrets"], "providers": [{"aescbc": {"keys": [{"name": "k", "secret": "AAAA"}]}}]}]},
     "resources[0].providers[0].aescbc.keys[0].secret: Invalid value"),
    ({"resources": [{"resources": ["secrets"], "providers": [{"kms": {"name": "x"}}]}]}, "kms"),
    ({"resources": [{"resources": ["secrets"], "providers": [{"identity": {}, "aescbc": {}}]}]},
     "more than one provider"),
    ({"resources": [{"resources": ["Secrets"], "providers": [{"identity": {}}]}]}, "must be lowercase"),
])
def test_validation(doc, message):
    doc.setdefault("kind", "EncryptionConfiguration")
    doc.setdefault("apiVersion", "apiserver.config.k8s.io/v1")
    with pytest.raises(EncryptionConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        EncryptionConfig.parse(doc)


def test_store_holds_ciphertext_and_serves_plaintext_then_rotates():
    async def main():
        inner = await MemoryStore.open()
        old = {"name": "old", "secret": b64(32)}
        store = TransformingStore(inner, config({"aescbc": {"keys": [old]}}, {"identity": {}}))
        w = store.watch("/registry/", 0)
        ok, kv = await store.create(KEY, PLAIN)
        assert ok and kv.value == PLAIN
        await store.create("/registry/core/configmaps/default/c", b'{"x":1}')
        _, raw = await inner.get(KEY)
        assert raw.value.startswith(b"k8s:enc:aescbc:v1:old:") and b"aHVudGVyMg" not in raw.value
        assert (await store.get(KEY))[1].value == PLAIN
        assert [k.value for k in (await store.list("/registry/")).kvs] == [b'{"x":1}', PLAIN]
        ev = await w.__anext__()
        assert ev.kv.value == PLAIN
        # rotation: a new key first, the old one still reads; reencrypt rewrites with the new key
        new = {"name": "new", "secret": b64(32)}
        store.reload(config({"aescbc": {"keys": [new, old]}}, {"identity": {}}))
        assert (await store.get(KEY))[1].value == PLAIN
        assert await store.stale_count() == {"/registry/core/secrets/": 1}
        assert await store.reencrypt() == (1, 0)
        assert (await inner.get(KEY))[1].value.startswith(b"k8s:enc:aescbc:v1:new:")
        store.reload(config({"aescbc": {"keys": [new]}}, {"identity": {}}))
        assert (await store.get(KEY))[1].value == PLAIN
        # a key that is gone: the value passes through undecrypted (the layers above refuse it)
        store.reload(config({"aescbc": {"keys": [{"name": "other", "secret": b64(32)}]}}))
        assert (await store.get(KEY))[1].value.startswith(b"k8s:enc:")
        w.close()
        await store.close()
    asyncio.run(main())


def test_k3s_managed_config(tmp_path):
    p = ensure_k3s_config(tmp_path)
    assert p == tmp_path / "server" / "cred" / "encryption-config.json"
    assert p.stat().st_mode & 0o777 == 0o600 and p.parent.stat().st_mode & 0o777 == 0o700
    cfg = EncryptionConfig.load(p)
    assert [(x["type"], x["name"], x["active"]) for x in cfg.providers()] == \
        [("aescbc", "aescbckey", True), ("identity", "", False)]
    assert default_document()["resources"][0]["resources"] == ["secrets"]
