"""Encryption at rest (issue 9, acceptance 11), with real kubectl and `kubeling secrets-encrypt`.

- A server started with ``--secrets-encryption`` (k3s's flag) makes
  ``<data-dir>/server/cred/encryption-config.json`` (0600) and writes Secrets as
  ``k8s:enc:aescbc:v1:aescbckey:...``: their plaintext (and its base64) is absent from every
  state file (state.db, its WAL), while a ConfigMap's marker is there (the search works).
- ``secrets-encrypt status`` prints k3s's report; ``prepare``/``rotate``/``reencrypt`` and
  ``rotate-keys`` move every Secret to a new key, and after a restart every Secret reads back.
- Private files (keys, kubeconfigs, state, tokens, the configuration) are 0600 in a 0700 data dir.
- A bad ``--encryption-provider-config`` stops the server with one line naming the field.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess

import harness
import pytest

MARKER = "hunter2-plaintext-marker"
SECRETS = [("enc-a", f"s{i}") for i in range(4)] + [("enc-b", f"t{i}") for i in range(3)]


@pytest.fixture(scope="module")
def enc_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("encryption")
    c = harness.started_cluster(d / "cluster", extra_args=("--secrets-encryption", "--disable-scheduler"))
    c.tmp = d
    for ns in ("enc-a", "enc-b"):
        c.kubectl("create", "namespace", ns)
    for ns, name in SECRETS:
        c.kubectl("create", "secret", "generic", name, "-n", ns, f"--from-literal=password={MARKER}-{name}")
    c.kubectl("create", "configmap", "plain", "-n", "enc-a", "--from-literal=note=configmap-marker-in-clear")
    yield c
    c.stop()


def kubeling(c, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*harness._server_command(), *args, "--data-dir", str(c.data_dir)],
                          capture_output=True, text=True, timeout=60)


def state_bytes(c) -> bytes:
    return b"".join(p.read_bytes() for p in c.data_dir.glob("state.db*"))


def stored(c, ns: str, name: str) -> bytes:
    db = sqlite3.connect(f"file:{c.data_dir / 'state.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1",
                         (f"/registry/core/secrets/{ns}/{name}",)).fetchone()
    finally:
        db.close()
    return bytes(row[0])


def read_back(c, ns: str, name: str) -> str:
    out = c.kubectl("get", "secret", name, "-n", ns, "-o", "jsonpath={.data.password}").stdout
    return base64.b64decode(out).decode()


def test_secret_plaintext_is_absent_from_the_state_file(enc_cluster):
    c = enc_cluster
    cfg = c.data_dir / "server" / "cred" / "encryption-config.json"
    assert cfg.stat().st_mode & 0o777 == 0o600
    assert json.loads(cfg.read_text())["kind"] == "EncryptionConfiguration"
    data = state_bytes(c)
    assert b"configmap-marker-in-clear" in data  # not encrypted: the search sees stored text
    assert MARKER.encode() not in data
    assert base64.b64encode(f"{MARKER}-s0".encode()) not in data
    assert stored(c, "enc-a", "s0").startswith(b"k8s:enc:aescbc:v1:aescbckey:")
    for ns, name in SECRETS:
        assert read_back(c, ns, name) == f"{MARKER}-{name}"


def test_private_files_are_owner_only(enc_cluster):
    """Keys, kubeconfigs, the state file, tokens and the encryption configuration are 0600 in a
    0700 data directory."""
    d = enc_cluster.data_dir
    assert d.stat().st_mode & 0o777 == 0o700
    private = [d / "state.db", d / "state.db-wal", d / "admin.kubeconfig", d / "server" / "node-token",
               d / "server" / "cred" / "encryption-config.json", *sorted((d / "pki").glob("*.key"))]
    assert len(private) > 6
    for p in private:
        assert p.stat().st_mode & 0o777 == 0o600, p


def test_status_as_k3s(enc_cluster):
    out = kubeling(enc_cluster, "secrets-encrypt", "status")
    assert out.returncode == 0, out.stderr
    assert "Encryption Status: Enabled" in out.stdout
    assert "Current Rotation Stage: start" in out.stdout
    assert " *      AES-CBC   aescbckey" in out.stdout


def test_staged_rotation_then_rotate_keys_then_restart(enc_cluster):
    c = enc_cluster
    assert kubeling(c, "secrets-encrypt", "prepare").returncode == 0
    st = json.loads(kubeling(c, "secrets-encrypt", "status", "-o", "json").stdout)
    assert st["stage"] == "prepare"
    names = [p["name"] for p in st["providers"] if p["type"] == "aescbc"]
    assert len(names) == 2 and names[0] == "aescbckey"
    new = names[1]
    out = kubeling(c, "secrets-encrypt", "rotate")
    assert out.returncode == 0, out.stderr
    # the new key writes, the old one still reads every Secret
    c.kubectl("create", "secret", "generic", "after-rotate", "-n", "enc-a", f"--from-literal=password={MARKER}-x")
    assert stored(c, "enc-a", "after-rotate").startswith(f"k8s:enc:aescbc:v1:{new}:".encode())
    assert stored(c, "enc-a", "s0").startswith(b"k8s:enc:aescbc:v1:aescbckey:")
    assert read_back(c, "enc-a", "s0") == f"{MARKER}-s0"
    out = kubeling(c, "secrets-encrypt", "reencrypt")
    assert out.returncode == 0, out.stderr
    st = json.loads(kubeling(c, "secrets-encrypt", "status", "-o", "json").stdout)
    assert st["stage"] == "reencrypt_finished"
    assert [p["name"] for p in st["providers"] if p["type"] == "aescbc"] == [new]
    for ns, name in SECRETS:
        assert stored(c, ns, name).startswith(f"k8s:enc:aescbc:v1:{new}:".encode()), name
    # k3s's one-step rotation
    out = kubeling(c, "secrets-encrypt", "rotate-keys")
    assert out.returncode == 0, out.stderr
    st = json.loads(kubeling(c, "secrets-encrypt", "status", "-o", "json").stdout)
    newest = [p["name"] for p in st["providers"] if p["type"] == "aescbc"]
    assert len(newest) == 1 and newest != [new] and sum(st["stale"].values()) == 0
    c.restart()
    for ns, name in SECRETS + [("enc-a", "after-rotate")]:
        assert stored(c, ns, name).startswith(f"k8s:enc:aescbc:v1:{newest[0]}:".encode()), name
        want = f"{MARKER}-x" if name == "after-rotate" else f"{MARKER}-{name}"
        assert read_back(c, ns, name) == want
    assert MARKER.encode() not in state_bytes(c)


def test_bad_encryption_config_is_one_line(tmp_path):
    bad = tmp_path / "enc.yaml"
    bad.write_text("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
                   "- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: k\n"
                   "        secret: c2hvcnQ=\n")
    out = subprocess.run([*harness._server_command(), "server", "--data-dir", str(tmp_path / "d"),
                          "--disable-agent", "--secure-port", str(harness.free_port()),
                          "--encryption-provider-config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "resources[0].providers[0].aesgcm.keys[0].secret: Invalid value" in out.stderr
