"""`kubeling etcd-snapshot`: names, listing, pruning, checksums and the refusals of save and
restore (the round trips through real etcd are in tests/e2e/test_etcd_snapshot.py)."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest

from kubeling.cli import etcd_snapshot as es
from kubeling.cli.main import main


def _fake_snapshot(path, payload: bytes = b"bolt db pages" * 100) -> None:
    path.write_bytes(payload + hashlib.sha256(payload).digest())


# -- names --------------------------------------------------------------------------------------


def test_name_is_k3s_style():
    assert es.snapshot_name("on-demand", "node-a", now=1796244756.7) == "on-demand-node-a-1796244756"
    assert es.parse_snapshot_name("on-demand-node-a-1796244756") == ("on-demand-node-a", 1796244756)
    assert es.parse_snapshot_name("etcd-snapshot-n1-1700000000.zip") == ("etcd-snapshot-n1", 1700000000)


@pytest.mark.parametrize("name", ["", "a/b", "../x", "-x", "a b", ".hidden"])
def test_bad_names_are_refused(name):
    with pytest.raises(es.SnapshotError, match="--name"):
        es.snapshot_name(name, "node")


@pytest.mark.parametrize("filename", ["notes.txt", "on-demand-node", ".on-demand-n-1796244756.part",
                                      "on-demand-n-12", "state.db"])
def test_other_files_are_not_snapshots(filename):
    assert es.parse_snapshot_name(filename) is None


def test_list_sorts_by_time_and_ignores_other_files(tmp_path):
    for name in ("on-demand-b-1700000300", "on-demand-a-1700000100", "weekly-a-1700000200"):
        _fake_snapshot(tmp_path / name)
    (tmp_path / ".on-demand-a-1700000400.part").write_bytes(b"partial")
    (tmp_path / "README").write_text("x")
    (tmp_path / "on-demand-dir-1700000500").mkdir()
    snaps = es.list_snapshots(tmp_path)
    assert [s.name for s in snaps] == ["on-demand-a-1700000100", "weekly-a-1700000200", "on-demand-b-1700000300"]
    assert snaps[0].size == (tmp_path / "on-demand-a-1700000100").stat().st_size
    assert snaps[0].created.timestamp() == 1700000100
    assert es.list_snapshots(tmp_path / "missing") == []


def test_list_command_prints_k3s_columns(tmp_path, capsys):
    _fake_snapshot(tmp_path / "on-demand-n1-1700000000")
    assert main(["etcd-snapshot", "ls", "--dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Name", "Location", "Size", "Created"]
    name, location, size, created = lines[1].split()
    assert name == "on-demand-n1-1700000000"
    assert location == f"file://{(tmp_path / name).resolve()}"
    assert int(size) == (tmp_path / name).stat().st_size
    assert created == "2023-11-14T22:13:20Z"


def test_default_dir_is_under_the_data_dir(tmp_path, capsys):
    d = tmp_path / "server" / "db" / "snapshots"
    d.mkdir(parents=True)
    _fake_snapshot(d / "on-demand-n1-1700000000")
    assert main(["etcd-snapshot", "list", "--data-dir", str(tmp_path)]) == 0
    assert "on-demand-n1-1700000000" in capsys.readouterr().out


def test_delete_removes_named_snapshots_only(tmp_path, capsys):
    for name in ("on-demand-n1-1700000000", "on-demand-n1-1700000100"):
        _fake_snapshot(tmp_path / name)
    (tmp_path / "keep.txt").write_text("x")
    assert main(["etcd-snapshot", "delete", "--dir", str(tmp_path), "on-demand-n1-1700000000"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["keep.txt", "on-demand-n1-1700000100"]
    # not a snapshot, not there, or a path: refused, nothing removed
    for bad in ("keep.txt", "on-demand-n1-1700000000", "../x-1700000000", str(tmp_path / "on-demand-n1-1700000100")):
        assert main(["etcd-snapshot", "delete", "--dir", str(tmp_path), bad]) == 1
        assert "no snapshot" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["keep.txt", "on-demand-n1-1700000100"]


def test_prune_keeps_the_newest_of_one_prefix(tmp_path, capsys):
    for t in range(1700000000, 1700000600, 100):
        _fake_snapshot(tmp_path / f"on-demand-n1-{t}")
    _fake_snapshot(tmp_path / "on-demand-n2-1700000000")
    assert main(["etcd-snapshot", "prune", "--dir", str(tmp_path), "--node-name", "n1",
                 "--snapshot-retention", "2"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["on-demand-n1-1700000400", "on-demand-n1-1700000500",
                                            "on-demand-n2-1700000000"]
    assert main(["etcd-snapshot", "prune", "--dir", str(tmp_path), "--snapshot-retention", "0"]) == 1
    assert "at least 1" in capsys.readouterr().err


# -- the checksum -------------------------------------------------------------------------------


def test_checksum(tmp_path):
    good = tmp_path / "good"
    _fake_snapshot(good)
    es.verify_checksum(good)
    cut = tmp_path / "cut"
    cut.write_bytes(good.read_bytes()[:-1])
    with pytest.raises(es.SnapshotError, match="checksum mismatch"):
        es.verify_checksum(cut)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"x" * 32)
    with pytest.raises(es.SnapshotError, match="not an etcd snapshot"):
        es.verify_checksum(tiny)


# -- save's refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["", "127.0.0.1:2379", "ftp://h:1", "http://h:x"])
def test_save_needs_etcd_urls(tmp_path, capsys, endpoint):
    assert main(["etcd-snapshot", "save", "--dir", str(tmp_path), "--datastore-endpoint", endpoint]) == 1
    assert "--datastore-endpoint" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_save_from_no_etcd_fails_and_leaves_nothing(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = tmp_path / "snaps"
    assert main(["etcd-snapshot", "save", "--dir", str(d), "--node-name", "n1",
                 "--datastore-endpoint", f"http://127.0.0.1:{port},http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kubeling etcd-snapshot save: no snapshot taken: ") and err.count(f"http://127.0.0.1:{port}: ") == 2
    assert os.listdir(d) == []


def test_save_from_an_endpoint_that_never_answers_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(es, "CHUNK_TIMEOUT", 1.0)
    with socket.socket() as s:  # listens, never speaks HTTP/2
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        with pytest.raises(es.SnapshotError, match="sent nothing for 1s"):
            es.save(es.Datastore([f"http://127.0.0.1:{s.getsockname()[1]}"]), tmp_path, "on-demand-n-1700000000")
    assert os.listdir(tmp_path) == []


def test_save_tls_needs_cert_and_key_together(tmp_path, capsys):
    assert main(["etcd-snapshot", "save", "--dir", str(tmp_path), "--datastore-endpoint", "https://127.0.0.1:1",
                 "--datastore-certfile", str(tmp_path / "c.crt")]) == 1
    assert "go together" in capsys.readouterr().err


# -- restore's refusals -------------------------------------------------------------------------

CLUSTER = "etcd-0=http://127.0.0.1:2380,etcd-1=http://127.0.0.1:2381"


def _restore(snapshot, data_dir, *extra, name="etcd-0", peer="http://127.0.0.1:2380"):
    return main(["etcd-snapshot", "restore", str(snapshot), "--etcd-data-dir", str(data_dir), "--name", name,
                 "--initial-cluster", CLUSTER, "--initial-advertise-peer-urls", peer, *extra])


def test_restore_refuses_a_non_empty_data_dir(tmp_path, capsys):
    snap = tmp_path / "on-demand-n1-1700000000"
    _fake_snapshot(snap)
    data = tmp_path / "data"
    (data / "member").mkdir(parents=True)
    (data / "member" / "old").write_text("old member data")
    assert _restore(snap, data) == 1
    assert "is not empty" in capsys.readouterr().err
    assert (data / "member" / "old").read_text() == "old member data"


@pytest.mark.parametrize("kw,message", [
    ({"name": "etcd-9"}, "is not in --initial-cluster"),
    ({"peer": "http://127.0.0.1:2381"}, "does not match etcd-0's entry"),
])
def test_restore_refuses_a_member_not_in_the_cluster(tmp_path, capsys, kw, message):
    snap = tmp_path / "on-demand-n1-1700000000"
    _fake_snapshot(snap)
    assert _restore(snap, tmp_path / "data", **kw) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_restore_refuses_a_damaged_or_missing_snapshot(tmp_path, capsys):
    snap = tmp_path / "on-demand-n1-1700000000"
    _fake_snapshot(snap)
    snap.write_bytes(snap.read_bytes()[:-10])
    assert _restore(snap, tmp_path / "data") == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert _restore(tmp_path / "nothing", tmp_path / "data") == 1
    assert "no such snapshot file" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_restore_of_a_file_etcd_cannot_read_leaves_the_data_dir_as_it_was(tmp_path, capsys):
    snap = tmp_path / "on-demand-n1-1700000000"
    _fake_snapshot(snap)  # a good checksum, but no bolt database inside
    data = tmp_path / "data"
    data.mkdir()
    assert _restore(snap, data) == 1
    assert "etcdctl snapshot restore failed" in capsys.readouterr().err
    assert data.is_dir() and os.listdir(data) == []


# -- kubeling backup on etcd --------------------------------------------------------------------


@pytest.mark.parametrize("command,hint", [("backup", "etcd-snapshot save"), ("restore", "etcd-snapshot restore")])
def test_backup_points_etcd_users_at_etcd_snapshot(tmp_path, capsys, command, hint):
    assert main([command, str(tmp_path / "b.db"), "--data-dir", str(tmp_path),
                 "--datastore-endpoint", "http://127.0.0.1:2379"]) == 1
    assert hint in capsys.readouterr().err
    assert not (tmp_path / "b.db").exists()


def test_doctor_on_etcd_points_at_etcdctl(tmp_path, capsys):
    assert main(["doctor", "--data-dir", str(tmp_path), "--datastore-endpoint", "http://127.0.0.1:2379"]) == 1
    assert "etcdctl endpoint health --cluster" in capsys.readouterr().err
    (tmp_path / "state.db.migrated-20261203T000000Z").write_bytes(b"")
    assert main(["doctor", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "moved into etcd" in err and "state.db.migrated-20261203T000000Z" in err
    assert not (tmp_path / "state.db").exists()


def test_save_makes_a_private_directory_and_leaves_an_existing_one_alone(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: save fails fast, after making the dir
        s.bind(("127.0.0.1", 0))
        store = es.Datastore([f"http://127.0.0.1:{s.getsockname()[1]}"])
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    for d in (shared, tmp_path / "new" / "snapshots"):
        with pytest.raises(es.SnapshotError, match="no snapshot taken"):
            es.save(store, d, "on-demand-n-1700000000")
        assert os.listdir(d) == []
    assert oct(shared.stat().st_mode & 0o777) == "0o755"
    assert oct((tmp_path / "new" / "snapshots").stat().st_mode & 0o777) == "0o700"


# -- scheduled snapshots (kubeling server --etcd-snapshot-*) ------------------------------------


@pytest.mark.parametrize("flags,message", [
    (["--etcd-snapshot-schedule-cron", "every noon"], "--etcd-snapshot-schedule-cron: 'every noon'"),
    (["--etcd-snapshot-schedule-cron", "@every 0.5s"], "at least 1s"),
    (["--etcd-snapshot-retention", "0"], "--etcd-snapshot-retention must be at least 1"),
])
def test_server_refuses_a_bad_snapshot_schedule_in_one_line(tmp_path, flags, message):
    with pytest.raises(SystemExit) as e:
        main(["server", "--data-dir", str(tmp_path / "d"), *flags])
    assert str(e.value).startswith("kubeling server: ") and message in str(e.value)
    assert not (tmp_path / "d").exists()


def test_snapshot_schedule_next_times():
    import datetime as dt

    from kubeling.api.cron import parse_schedule
    from kubeling.apiserver.etcdsnapshots import DEFAULT_SCHEDULE

    t = dt.datetime(2026, 12, 3, 11, 59, 30, tzinfo=dt.timezone.utc)
    assert parse_schedule(DEFAULT_SCHEDULE, "UTC").next(t) == dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)
    assert parse_schedule("@every 90s").next(t) == t + dt.timedelta(seconds=90)
