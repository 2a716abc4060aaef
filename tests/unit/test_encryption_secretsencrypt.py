"""The server side of `kubeling secrets-encrypt` (kubeling.apiserver.secretsencrypt) over a real store."""

import asyncio

import pytest

from kubeling.api.errors import StatusError
from kubeling.apiserver.secretsencrypt import SecretsEncrypt
from kubeling.cli.secrets_encrypt import format_status
from kubeling.storage.encryption import EncryptionConfig, TransformingStore, ensure_k3s_config
from kubeling.storage.memory import MemoryStore

KEYS = [f"/registry/core/secrets/ns/s{i}" for i in range(5)]


def test_disable_enable_rotate(tmp_path):
    async def main():
        path = ensure_k3s_config(tmp_path)
        inner = await MemoryStore.open()
        store = TransformingStore(inner, EncryptionConfig.load(path))
        se = SecretsEncrypt(store, str(path))
        for k in KEYS:
            await store.create(k, b'{"data":"' + k.encode() + b'"}')
        await store.create("/registry/core/configmaps/ns/c", b'{"x":1}')

        async def raw(k):
            return (await inner.get(k))[1].value

        st = await se.status()
        assert st["enabled"] and st["stage"] == "start" and sum(st["stale"].values()) == 0
        text = format_status(st)
        assert "Encryption Status: Enabled" in text and " *      AES-CBC   aescbckey" in text

        st = await se.run("disable")
        assert not st["enabled"] and st["stage"] == "reencrypt_finished"
        assert all([(await raw(k)).startswith(b'{"data"') for k in KEYS])

        st = await se.run("enable")
        assert st["enabled"]
        assert all([(await raw(k)).startswith(b"k8s:enc:aescbc:v1:aescbckey:") for k in KEYS])

        st = await se.run("rotate-keys")
        names = [p["name"] for p in st["providers"] if p["type"] == "aescbc"]
        assert len(names) == 1 and names[0].startswith("aescbckey-")
        for k in KEYS:
            assert (await raw(k)).startswith(f"k8s:enc:aescbc:v1:{names[0]}:".encode())
            assert (await store.get(k))[1].value == b'{"data":"' + k.encode() + b'"}'
        assert await raw("/registry/core/configmaps/ns/c") == b'{"x":1}'
        # a new server over the same state and configuration reads everything
        again = TransformingStore(inner, EncryptionConfig.load(path))
        assert [(await again.get(k))[1].value for k in KEYS] == [b'{"data":"' + k.encode() + b'"}' for k in KEYS]

        with pytest.raises(StatusError) as e:
            await se.run("rotate")  # nothing prepared
        assert e.value.code == 400
        with pytest.raises(StatusError):
            await se.run("nonsense")
        await store.close()
    asyncio.run(main())
