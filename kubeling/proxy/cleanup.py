"""``kube-proxy --cleanup``: remove what every proxy mode made in the current network namespace
(``kubeling node cleanup``, ``kubeling proxy --cleanup``). Blocking and idempotent.

Each mode module may define a blocking module function ``cleanup()`` that removes everything
the mode made (iptables: `kubeling.proxy.iptables.cleanup`); modes that are absent or have
none are skipped. One mode failing does not stop the others (nor the rest of ``kubeling node
cleanup``): its error is logged and returned under its name.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

MODES = ("iptables", "nftables", "ipvs", "userspace")


def cleanup_all() -> dict[str, object]:
    """Run every mode's ``cleanup()``; returns {mode: what it returned}."""
    done: dict[str, object] = {}
    for mode in MODES:
        try:
            module = importlib.import_module(f"kubeling.proxy.{mode}")
        except ImportError:
            continue
        fn = getattr(module, "cleanup", None)
        if not callable(fn):
            continue
        try:
            done[mode] = fn()
        except Exception as e:  # noqa: BLE001 - the other modes still get cleaned
            log.error("kube-proxy %s clean-up failed: %s", mode, e)
            done[mode] = e
    return done
