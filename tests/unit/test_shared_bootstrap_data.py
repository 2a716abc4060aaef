"""Servers sharing a datastore share the cluster CA, the service account key, the node token and
the encryption configuration through ``/bootstrap/<hash>`` (k3s's bootstrap data), sealed with
the token; a wrong or missing token is refused with one line."""

from __future__ import annotations

import asyncio

import pytest

from kubeling.apiserver import bootstrapdata, join
from kubeling.apiserver.certs import PKI
from kubeling.apiserver.server import Options, local_secrets
from kubeling.storage.memory import MemoryStore


def run(coro):
    return asyncio.run(coro)


async def start(store, data, **kw):
    opts = Options(data_dir=str(data), **kw)
    return await local_secrets(opts, data, store, "127.0.0.1")


def test_the_second_server_takes_the_first_servers_ca_keys_and_node_token(tmp_path):
    async def main():
        store = MemoryStore()
        a, b = tmp_path / "a", tmp_path / "b"
        pki_a, token_a, _ = await start(store, a, token="s3cret")
        pki_b, token_b, _ = await start(store, b, token="s3cret")
        for name in ("ca.crt", "ca.key", "service-account.key", "service-account.pub"):
            assert (a / "pki" / name).read_bytes() == (b / "pki" / name).read_bytes()
        # each server has its own serving certificate, signed by the one CA
        assert pki_a.serving_cert.read_bytes() != pki_b.serving_cert.read_bytes()
        assert str(token_a) == str(token_b) and token_a.secret == "s3cret"
        assert (a / "server" / "token").read_text() == (b / "server" / "token").read_text() == f"{token_a}\n"
        kvs = (await store.list("/bootstrap/")).kvs
        assert [kv.key for kv in kvs] == [bootstrapdata.key_name("s3cret")]
        assert b"BEGIN" not in kvs[0].value and b"s3cret" not in kvs[0].value   # sealed
        # a full K10 token works as --token too (its secret; its CA hash is checked)
        c = tmp_path / "c"
        await start(store, c, token=str(token_a))
        assert (c / "pki" / "ca.crt").read_bytes() == (a / "pki" / "ca.crt").read_bytes()
        await store.close()
    run(main())


def test_a_wrong_or_missing_token_is_refused_with_one_line(tmp_path):
    async def main():
        store = MemoryStore()
        await start(store, tmp_path / "a", token="right")
        with pytest.raises(bootstrapdata.BootstrapError, match="--token is wrong") as e:
            await start(store, tmp_path / "b", token="wrong")
        assert "\n" not in str(e.value)
        with pytest.raises(bootstrapdata.BootstrapError, match="shared with another server: start this one with "
                                                               "--token"):
            await start(store, tmp_path / "c")
        bad_hash = "K10" + "0" * 64 + "::server:right"
        with pytest.raises(bootstrapdata.BootstrapError, match="another cluster's"):
            await start(store, tmp_path / "d", token=bad_hash)
        await store.close()
    run(main())


def test_without_token_the_first_server_makes_one_and_restarts_with_it(tmp_path):
    async def main():
        store = MemoryStore()
        a = tmp_path / "a"
        _, token, _ = await start(store, a)
        saved = (a / "server" / "token").read_text().strip()
        assert join.parse_token(saved).secret == token.secret
        ca = (a / "pki" / "ca.crt").read_bytes()
        await start(store, a)           # a restart: the same token, from server/token
        assert (a / "pki" / "ca.crt").read_bytes() == ca
        b = tmp_path / "b"
        tf = tmp_path / "token"
        tf.write_text(saved + "\n")
        await start(store, b, token_file=str(tf))   # the next server with --token-file
        assert (b / "pki" / "ca.crt").read_bytes() == ca
        await store.close()
    run(main())


def test_a_server_whose_data_dir_had_another_ca_takes_the_clusters_and_reissues(tmp_path):
    async def main():
        store = MemoryStore()
        a, b = tmp_path / "a", tmp_path / "b"
        await start(store, a, token="t")
        PKI(b, hosts=["127.0.0.1"]).ensure()   # b ran alone once: its own CA
        await start(store, b, token="t")
        assert (b / "pki" / "ca.crt").read_bytes() == (a / "pki" / "ca.crt").read_bytes()
        from cryptography import x509
        serving = x509.load_pem_x509_certificate((b / "pki" / "apiserver.crt").read_bytes())
        ca = x509.load_pem_x509_certificate((a / "pki" / "ca.crt").read_bytes())
        assert serving.issuer == ca.subject
        serving.verify_directly_issued_by(ca)
        await store.close()
    run(main())


def test_settings_that_differ_are_refused(tmp_path):
    async def main():
        store = MemoryStore()
        await start(store, tmp_path / "a", token="t")
        with pytest.raises(bootstrapdata.BootstrapError, match="--service-cluster-ip-range 10.99.0.0/16 differs"):
            await start(store, tmp_path / "b", token="t", service_cidr="10.99.0.0/16")
        with pytest.raises(bootstrapdata.BootstrapError, match="--secrets-encryption true differs"):
            await start(store, tmp_path / "c", token="t", secrets_encryption=True)
        await store.close()
    run(main())


def test_the_encryption_configuration_is_shared_and_a_rotation_on_one_server_reaches_the_others(tmp_path):
    async def main():
        store = MemoryStore()
        a, b = tmp_path / "a", tmp_path / "b"
        cfg = "server/cred/encryption-config.json"
        _, _, (path_a, config_a) = await start(store, a, token="t", secrets_encryption=True)
        _, _, (path_b, config_b) = await start(store, b, token="t", secrets_encryption=True)
        assert config_a is not None and (a / cfg).read_bytes() == (b / cfg).read_bytes()
        rotated = (a / cfg).read_bytes().replace(b'"keys"', b'"keys" ', 1)   # as secrets-encrypt rewrites it
        (a / cfg).write_bytes(rotated)
        await start(store, a, token="t", secrets_encryption=True)   # a's restart uploads it
        assert (a / cfg).read_bytes() == rotated
        await start(store, b, token="t", secrets_encryption=True)   # b's restart takes it
        assert (b / cfg).read_bytes() == rotated
        await store.close()
    run(main())


def test_two_servers_starting_at_once_end_with_one_ca(tmp_path):
    async def main():
        store = MemoryStore()
        a, b = tmp_path / "a", tmp_path / "b"
        await asyncio.gather(start(store, a, token="t"), start(store, b, token="t"))
        assert (a / "pki" / "ca.crt").read_bytes() == (b / "pki" / "ca.crt").read_bytes()
        assert (a / "server" / "node-token").read_text() == (b / "server" / "node-token").read_text()
        await store.close()
    run(main())


def test_on_sqlite_nothing_is_stored_and_token_only_seeds_a_new_node_token(tmp_path):
    from kubeling.storage.sqlite import SQLiteStore

    async def main():
        store = await SQLiteStore.open(str(tmp_path / "state.db"))
        try:
            _, token, _ = await start(store, tmp_path / "a", token="mine")
            assert token.secret == "mine"
            assert (await store.list("/bootstrap/")).kvs == []
            assert not (tmp_path / "a" / "server" / "token").exists()
        finally:
            await store.close()
    run(main())
