"""kubectl create configmap / secret generic, from directories, files and literals."""

from __future__ import annotations

import base64


def test_create_configmap_from_directory(kubectl, namespace, tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    (src / "app.properties").write_text("color=blue\nsize=3\n")
    (src / "nginx.conf").write_text("server { listen 80; }\n")
    (src / "subdir").mkdir()  # kubectl skips directories inside --from-file=DIR
    (src / "subdir" / "ignored.txt").write_text("no")
    out = kubectl("create", "configmap", "from-dir", "-n", namespace, f"--from-file={src}")
    assert out.stdout.strip() == "configmap/from-dir created"
    cm = kubectl.json("get", "configmap", "from-dir", "-n", namespace)
    assert cm["data"] == {"app.properties": "color=blue\nsize=3\n",
                          "nginx.conf": "server { listen 80; }\n"}


def test_create_configmap_from_file_with_key_and_binary(kubectl, namespace, tmp_path):
    text = tmp_path / "game.txt"
    text.write_text("lives=3\n")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes([0, 159, 146, 150, 255]))  # not UTF-8: goes to binaryData
    kubectl("create", "configmap", "from-file", "-n", namespace,
            f"--from-file={text}", f"--from-file=renamed={text}", f"--from-file={blob}")
    cm = kubectl.json("get", "configmap", "from-file", "-n", namespace)
    assert cm["data"] == {"game.txt": "lives=3\n", "renamed": "lives=3\n"}
    assert base64.b64decode(cm["binaryData"]["blob.bin"]) == blob.read_bytes()


def test_create_configmap_from_literals(kubectl, namespace):
    kubectl("create", "configmap", "literals", "-n", namespace,
            "--from-literal=special.how=very", "--from-literal=empty=",
            "--from-literal=eq=a=b")
    cm = kubectl.json("get", "configmap", "literals", "-n", namespace)
    assert cm["data"] == {"special.how": "very", "empty": "", "eq": "a=b"}


def test_create_configmap_twice_is_already_exists(kubectl, namespace):
    kubectl("create", "configmap", "dup", "-n", namespace, "--from-literal=a=1")
    out = kubectl("create", "configmap", "dup", "-n", namespace, "--from-literal=a=2",
                  check=False)
    assert out.returncode != 0
    assert 'configmaps "dup" already exists' in out.stderr
    assert kubectl.json("get", "configmap", "dup", "-n", namespace)["data"] == {"a": "1"}


def test_create_configmap_invalid_key_is_refused(kubectl, namespace):
    out = kubectl("create", "configmap", "badkey", "-n", namespace,
                  "--from-literal=bad/key=1", check=False)
    assert out.returncode != 0
    assert "bad/key" in out.stderr
    assert kubectl("get", "configmap", "badkey", "-n", namespace, check=False).returncode != 0


def test_create_secret_generic_from_file(kubectl, namespace, tmp_path):
    user = tmp_path / "username"
    user.write_text("admin")
    pw = tmp_path / "password"
    pw.write_bytes(b"S!B\\*d$zDsb=\n")
    out = kubectl("create", "secret", "generic", "creds", "-n", namespace,
                  f"--from-file={user}", f"--from-file=pw={pw}")
    assert out.stdout.strip() == "secret/creds created"
    secret = kubectl.json("get", "secret", "creds", "-n", namespace)
    assert secret["type"] == "Opaque"
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == {
        "username": b"admin", "pw": b"S!B\\*d$zDsb=\n"}
    assert "stringData" not in secret


def test_create_secret_generic_from_directory(kubectl, namespace, tmp_path):
    src = tmp_path / "keys"
    src.mkdir()
    (src / "tls.key").write_text("KEY")
    (src / "ca.crt").write_text("CA")
    kubectl("create", "secret", "generic", "dir-secret", "-n", namespace, f"--from-file={src}")
    secret = kubectl.json("get", "secret", "dir-secret", "-n", namespace)
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == {
        "tls.key": b"KEY", "ca.crt": b"CA"}
