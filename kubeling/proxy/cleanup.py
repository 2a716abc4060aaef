"""``kube-proxy --cleanup``: remove what every proxy mode made in the current network namespace
(``kubeling node cleanup``). Blocking and idempotent. Filled in by the kube-proxy work of issue 8."""

from __future__ import annotations


def cleanup_all() -> None:
    return None
