"""File permissions of the data directory (kubeling.apiserver.datadir.secure), narrowed on every start."""

import os
import stat

from kubeling.apiserver import datadir


def mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_prepare_narrows_private_files_and_dirs(tmp_path):
    d = tmp_path / "data"
    for sub in ("pki", "server/cred", "agent/pki", "agent/pods"):
        (d / sub).mkdir(parents=True, mode=0o755)
    os.chmod(d, 0o755)
    files = {"state.db": 0o644, "state.db-wal": 0o644, "state.db-shm": 0o666, "admin.kubeconfig": 0o644,
             "pki/ca.key": 0o644, "pki/ca.crt": 0o644, "server/node-token": 0o644,
             "server/cred/encryption-config.json": 0o640, "agent/kubelet.kubeconfig": 0o644,
             "agent/pki/node.key": 0o644, "agent/pods/data": 0o644}
    for name, m in files.items():
        (d / name).write_text("x")
        os.chmod(d / name, m)
    outside = tmp_path / "outside"
    outside.write_text("not ours")
    os.chmod(outside, 0o644)
    (d / "linked.kubeconfig").symlink_to(outside)
    datadir.prepare(d)
    assert mode(d) == 0o700
    for sub in ("pki", "server", "server/cred", "agent/pki"):
        assert mode(d / sub) == 0o700, sub
    for name in ("state.db", "state.db-wal", "state.db-shm", "admin.kubeconfig", "pki/ca.key", "server/node-token",
                 "server/cred/encryption-config.json", "agent/kubelet.kubeconfig", "agent/pki/node.key"):
        assert mode(d / name) == 0o600, name
    assert mode(d / "pki/ca.crt") == 0o644  # certificates are public
    assert mode(d / "agent/pods/data") == 0o644  # pods' data is not the server's to narrow
    assert mode(outside) == 0o644  # a symlink is never followed


def test_already_narrow_is_left_alone(tmp_path):
    d = tmp_path / "data"
    d.mkdir(mode=0o700)
    (d / "state.db").write_text("")
    os.chmod(d / "state.db", 0o400)
    datadir.secure(d)
    assert mode(d / "state.db") == 0o400
