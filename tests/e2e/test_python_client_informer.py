"""Acceptance 3: the official Python client's `kubernetes.informer.SharedInformer`, and the error
text of `kubernetes.utils.create_from_yaml`, against kubeling.

What the informer sends: ``GET .../configmaps?labelSelector=...`` (a list at the latest
revision R), then ``GET ...?labelSelector=...&resourceVersion=R&watch=true`` on a new connection;
no bookmarks, and ``timeoutSeconds`` only when a resync period is set. A create made right after
`start()` therefore lands either in the list or, as revision R+1, in the watch, and the server
must write it as soon as it has it. A create that commits while the server sets the watch up
(after it subscribed to new events, before it read the log from R+1) reaches the watch twice, from
the log and live, and creates of objects the selector does not match reach it too: the server
must not hold the matching event back waiting for the others, which it drops.

The client has a race of its own: `SharedInformer.stop()` joins the informer's thread, and when
it lands while that thread is opening its watch (the `Watch` exists, its response does not yet),
`Watch.stop()` has no socket to shut down, so the thread waits on a watch that may carry no event
for minutes. `_stop` wakes such a thread with a change to an object it watches, and only then.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client, utils, watch
from kubernetes.informer import SharedInformer

RUNS = 50
SEEN_WITHIN = 10.0  # seconds; a create normally reaches the cache in milliseconds
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def api(cluster):
    c = cluster.python_client()
    yield c
    c.close()


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


def labelled(name: str, label: str) -> dict:
    return {"metadata": {"name": name, "labels": {"run": label}}, "data": {"k": "v"}}


def cached(inf: SharedInformer, name: str) -> bool:
    return any(o.metadata.name == name for o in inf.cache.list())


def wait_cached(inf: SharedInformer, name: str, timeout: float = SEEN_WITHIN) -> bool:
    deadline = time.monotonic() + timeout
    while not cached(inf, name):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _stop(inf: SharedInformer, core, namespace: str, wake_name: str) -> bool:
    """Stop ``inf``; returns whether it needed waking (see the module docstring)."""
    t = threading.Thread(target=inf.stop, daemon=True)
    t.start()
    t.join(2)
    if not t.is_alive():
        return False
    core.patch_namespaced_config_map(wake_name, namespace, {"metadata": {"annotations": {"wake": "up"}}})
    t.join(15)
    assert not t.is_alive(), "SharedInformer.stop() did not return even after an event on its watch"
    return True


def _earlier_informers(core, namespace: str) -> None:
    """What came before the misses in issue 5: informers on the same client, started and stopped,
    one of them with a resync period (so its watches end every 5 s and it relists)."""
    plain = SharedInformer(core.list_namespaced_config_map, namespace=namespace)
    plain.start()
    core.create_namespaced_config_map(namespace, labelled("earlier", "earlier"))
    assert wait_cached(plain, "earlier")
    _stop(plain, core, namespace, "earlier")
    resyncing = SharedInformer(core.list_namespaced_config_map, namespace=namespace, resync_period=5)
    resyncing.start()
    assert wait_cached(resyncing, "earlier")
    time.sleep(6)  # past one resync
    _stop(resyncing, core, namespace, "earlier")


def test_informer_sees_a_create_made_right_after_start(core, namespace):
    _earlier_informers(core, namespace)
    missed, woken = [], 0
    for i in range(RUNS):
        inf = SharedInformer(core.list_namespaced_config_map, namespace=namespace, label_selector=f"run=r{i}")
        inf.start()
        core.create_namespaced_config_map(namespace, labelled(f"cm-{i}", f"r{i}"))
        if not wait_cached(inf, f"cm-{i}"):
            missed.append(i)
        woken += _stop(inf, core, namespace, f"cm-{i}")
    assert missed == [], f"{len(missed)} of {RUNS} informers never saw their object within {SEEN_WITHIN}s " \
                         f"(stop() needed waking {woken} times)"


def _first_event(core, namespace: str, selector: str, rv: str, out: queue.Queue) -> None:
    try:
        for ev in watch.Watch().stream(core.list_namespaced_config_map, namespace, label_selector=selector,
                                       resource_version=rv, timeout_seconds=int(SEEN_WITHIN)):
            out.put((ev["type"], ev["object"].metadata.name))
            return
        out.put(("timeout", None))
    except Exception as e:  # noqa: BLE001 - shown in the test's assertion
        out.put(("raised", repr(e)))


@pytest.mark.parametrize("pairs", [pytest.param(1, id="one-at-a-time"), pytest.param(10, id="ten-at-once")])
def test_watch_from_listed_version_sees_a_create_made_at_once(core, namespace, pairs):
    """The informer's two requests without the informer: list, then watch from the listed
    resourceVersion while a create is in flight. With several (watch, create) pairs at once the
    server is busy, so creates are more likely to commit while a watch is being set up."""
    missed = []
    for i in range(RUNS // pairs):
        rv = core.list_namespaced_config_map(namespace, label_selector="run=none").metadata.resource_version
        outs = {f"w{i}-{j}": queue.Queue() for j in range(pairs)}
        threads = [threading.Thread(target=_first_event, args=(core, namespace, f"run={label}", rv, out), daemon=True)
                   for label, out in outs.items()]
        threads += [threading.Thread(target=core.create_namespaced_config_map,
                                     args=(namespace, labelled(f"cm-{label}", label)), daemon=True)
                    for label in outs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SEEN_WITHIN + 5)
        for label, out in outs.items():
            got = out.get() if not out.empty() else None
            if got != ("ADDED", f"cm-{label}"):
                missed.append((label, got))
    assert missed == [], "watches that did not see the create made as they started: (label, first event)"


def already_exists(resource: str, name: str, group: str = "") -> str:
    """An AlreadyExists Status exactly as upstream writes it: Go struct field order (kind,
    apiVersion, metadata, status, message, reason, details, code; details: name, group, kind),
    then a newline."""
    qualified = f"{resource}.{group}" if group else resource
    details = {"name": name, **({"group": group} if group else {}), "kind": resource}
    return ('{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
            f'"message":{json.dumps(f"{qualified} {json.dumps(name)} already exists")},'
            f'"reason":"AlreadyExists","details":{json.dumps(details, separators=(",", ":"))},"code":409}}\n')


def test_create_from_yaml_conflicts_print_upstreams_status(api, core, namespace):
    utils.create_from_yaml(api, str(FIXTURES / "create-conflict-first.yaml"), namespace=namespace)
    with pytest.raises(utils.FailToCreateError) as first:
        utils.create_from_yaml(api, str(FIXTURES / "create-conflict-second.yaml"), namespace=namespace)
    assert str(first.value) == "Error from server (Conflict): " + already_exists("services", "echo")
    # The documents after the conflicting one were still created.
    assert core.read_namespaced_config_map("echo-config", namespace).data == {"greeting": "hello"}

    with pytest.raises(utils.FailToCreateError) as second:
        utils.create_from_yaml(api, str(FIXTURES / "create-conflict-second.yaml"), namespace=namespace)
    assert str(second.value) == "".join("Error from server (Conflict): " + already_exists(*args) for args in (
        ("services", "echo"), ("configmaps", "echo-config"), ("deployments", "echo", "apps")))
