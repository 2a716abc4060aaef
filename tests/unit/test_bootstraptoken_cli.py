"""``kubeling token``: kubeadm's list columns and k3s's join token output (the commands run
against a real server in tests/e2e/test_join_bootstrap.py)."""

import datetime as dt

from kubeling.cli import token as token_cli
from kubeling.clusterbootstrap import token as bt

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def test_list_rows():
    a = bt.secret_for("aaaaaa.0123456789abcdef", ttl=23 * 3600 + 59 * 60, description="for node-4", now=NOW)
    b = bt.secret_for("bbbbbb.0123456789abcdef", ttl=0, usages=("authentication",), groups=[])
    other = {**bt.secret_for("cccccc.0123456789abcdef"), "type": "Opaque"}
    assert token_cli.rows([b, other, a], NOW) == [
        ["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS"],
        ["aaaaaa.0123456789abcdef", "23h", "2026-01-01T23:59:00Z", "authentication,signing", "for node-4",
         "system:bootstrappers:kubeling:default-node-token"],
        ["bbbbbb.0123456789abcdef", "<forever>", "<never>", "authentication", "<none>", "<none>"],
    ]


def test_short_duration():
    assert [token_cli.short_duration(s) for s in (5, 119, 600, 7199, 86400, 3 * 86400, 400 * 86400, -1)] == \
        ["5s", "119s", "10m", "119m", "24h", "3d", "1y", "<invalid>"]
