"""The control plane's leader election: the controller manager and the scheduler each hold a
Lease in kube-system, and a server killed with SIGKILL leads again at once when it restarts
(its identity is stable per data dir), instead of waiting out the dead holder's lease."""

from __future__ import annotations

import json
import time

import harness


def held(cluster, name: str) -> str | None:
    out = cluster.kubectl("get", "lease", name, "-n", "kube-system", "-o", "json", check=False)
    return json.loads(out.stdout)["spec"].get("holderIdentity") if out.returncode == 0 else None


def test_components_hold_leases_and_lead_again_after_a_crash(make_cluster):
    c = make_cluster()
    cm = harness.eventually(lambda: held(c, "kube-controller-manager"), what="controller manager leads")
    sched = harness.eventually(lambda: held(c, "kube-scheduler"), what="scheduler leads")
    assert cm == sched and "_" in cm   # <hostname>_<data dir hash>, one identity per server
    c.kill9()
    c.start()
    started = time.monotonic()
    # the controllers work again well before the 15 s lease of the killed holder would expire
    c.kubectl("create", "deployment", "after", "--image=busybox", "--replicas=1")
    harness.eventually(lambda: c.kubectl("get", "replicasets", "-l", "app=after", "-o", "name").stdout.strip(),
                       timeout=30, what="a ReplicaSet after the restart")
    assert time.monotonic() - started < 12
    assert held(c, "kube-controller-manager") == cm
