import pytest

from kubeling.scheduler.framework.types import PodInfo, QueuedPodInfo
from kubeling.scheduler.plugins.queuesort import PrioritySort


def qp(priority, ts):
    pod = {"metadata": {"name": "p"}, "spec": {"containers": []}}
    if priority is not None:
        pod["spec"]["priority"] = priority
    return QueuedPodInfo(PodInfo.of(pod), timestamp=ts)


@pytest.mark.parametrize("a,b,want", [
    pytest.param(qp(10, 2.0), qp(5, 1.0), True, id="higher-priority-first-even-if-later"),
    pytest.param(qp(5, 1.0), qp(10, 2.0), False, id="lower-priority-after"),
    pytest.param(qp(5, 1.0), qp(5, 2.0), True, id="same-priority-earlier-first"),
    pytest.param(qp(5, 2.0), qp(5, 1.0), False, id="same-priority-later-after"),
    pytest.param(qp(5, 1.0), qp(5, 1.0), False, id="equal-is-not-less"),
    pytest.param(qp(None, 1.0), qp(-1, 2.0), True, id="missing-priority-is-zero"),
])
def test_less(a, b, want):
    assert PrioritySort().less(a, b) is want


def test_sorting_a_queue():
    import functools
    items = [qp(0, 3.0), qp(100, 5.0), qp(0, 1.0), qp(100, 4.0)]
    cmp = functools.cmp_to_key(lambda x, y: -1 if PrioritySort().less(x, y) else (1 if PrioritySort().less(y, x) else 0))
    got = [(q.pod["spec"].get("priority"), q.timestamp) for q in sorted(items, key=cmp)]
    assert got == [(100, 4.0), (100, 5.0), (0, 1.0), (0, 3.0)]
