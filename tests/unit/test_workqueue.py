"""The promises written in kubeling.client.workqueue's docstring, one test each."""

import asyncio

import pytest

from kubeling.client.clock import FakeClock
from kubeling.client.flowcontrol import TokenBucket
from kubeling.client.workqueue import (
    BucketRateLimiter,
    DelayingQueue,
    ItemExponentialFailureRateLimiter,
    ItemFastSlowRateLimiter,
    MaxOfRateLimiter,
    Queue,
    RateLimitingQueue,
    default_controller_rate_limiter,
)


async def settle(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_fair_order():
    async def main():
        q = Queue()
        for k in ["a", "b", "c"]:
            q.add(k)
        got = []
        for _ in range(3):
            item, shut = await q.get()
            assert not shut
            got.append(item)
            q.done(item)
        assert got == ["a", "b", "c"]

    asyncio.run(main())


def test_dedupe_while_queued():
    async def main():
        q = Queue()
        for k in ["a", "b", "a", "a", "b"]:
            q.add(k)
        assert len(q) == 2
        assert (await q.get()) == ("a", False)
        assert (await q.get()) == ("b", False)
        assert len(q) == 0

    asyncio.run(main())


def test_item_in_processing_is_not_handed_out_again_until_done():
    async def main():
        q = Queue()
        q.add("a")
        item, _ = await q.get()
        q.add("a")  # changed while being processed
        assert len(q) == 0, "re-added item must wait for done()"
        second = asyncio.create_task(q.get())
        await settle()
        assert not second.done(), "a second worker must not receive the item being processed"
        q.done("a")
        assert (await asyncio.wait_for(second, 1)) == ("a", False)
        # Re-adding it many times while processing still yields a single requeue.
        q.add("a")
        q.add("a")
        q.done("a")
        assert len(q) == 1

    asyncio.run(main())


def test_done_without_readd_does_not_requeue():
    async def main():
        q = Queue()
        q.add("a")
        await q.get()
        q.done("a")
        assert len(q) == 0 and q.processing() == 0

    asyncio.run(main())


def test_concurrent_workers_never_overlap_on_a_key():
    async def main():
        q = Queue()
        active: set[str] = set()
        overlaps = []
        processed = []

        async def worker():
            while True:
                key, shut = await q.get()
                if shut:
                    return
                if key in active:
                    overlaps.append(key)
                active.add(key)
                await asyncio.sleep(0)
                q.add(key if len(processed) < 200 else "unused")  # churn: re-add while processing
                await asyncio.sleep(0)
                active.discard(key)
                processed.append(key)
                q.done(key)
                if len(processed) >= 300:
                    q.shutdown()

        for k in "abcde":
            q.add(k)
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(4))), 5)
        assert overlaps == []
        assert len(processed) >= 300

    asyncio.run(main())


def test_shutdown_drains_queued_items_then_reports_shutdown():
    async def main():
        q = Queue()
        q.add("a")
        q.add("b")
        q.shutdown()
        q.add("c")  # ignored after shutdown
        assert (await q.get()) == ("a", False)
        assert (await q.get()) == ("b", False)
        assert (await q.get()) == (None, True)
        assert q.shutting_down()

    asyncio.run(main())


def test_shutdown_wakes_blocked_getters():
    async def main():
        q = Queue()
        getters = [asyncio.create_task(q.get()) for _ in range(3)]
        await settle()
        q.shutdown()
        assert await asyncio.wait_for(asyncio.gather(*getters), 1) == [(None, True)] * 3

    asyncio.run(main())


def test_cancelled_getter_passes_its_wakeup_on():
    async def main():
        q = Queue()
        g1 = asyncio.create_task(q.get())
        g2 = asyncio.create_task(q.get())
        await settle()
        q.add("a")  # wakes g1 ...
        g1.cancel()  # ... which is cancelled before it takes the item
        await settle()
        assert (await asyncio.wait_for(g2, 1)) == ("a", False)

    asyncio.run(main())


def test_shut_down_with_drain_waits_for_done():
    async def main():
        q = Queue()
        q.add("a")
        await q.get()
        drain = asyncio.create_task(q.shut_down_with_drain())
        await settle()
        assert not drain.done(), "drain must wait for the item in flight"
        q.done("a")
        await asyncio.wait_for(drain, 1)
        assert (await q.get()) == (None, True)

    asyncio.run(main())


def test_shut_down_with_drain_returns_at_once_when_idle():
    async def main():
        q = Queue()
        await asyncio.wait_for(q.shut_down_with_drain(), 1)

    asyncio.run(main())


def test_add_after_waits_for_the_clock():
    async def main():
        clock = FakeClock()
        q = DelayingQueue(clock=clock)
        q.add_after("a", 10)
        q.add_after("now", 0)
        assert len(q) == 1 and q.waiting() == 1
        clock.step(9.9)
        assert len(q) == 1
        clock.step(0.1)
        assert len(q) == 2 and q.waiting() == 0
        assert [(await q.get())[0], (await q.get())[0]] == ["now", "a"]

    asyncio.run(main())


@pytest.mark.parametrize("first,second,ready_at", [
    pytest.param(10, 5, 5, id="later-call-sooner-wins"),
    pytest.param(5, 10, 5, id="earlier-call-sooner-wins"),
])
def test_add_after_keeps_the_earliest_ready_time(first, second, ready_at):
    async def main():
        clock = FakeClock()
        q = DelayingQueue(clock=clock)
        q.add_after("a", first)
        q.add_after("a", second)
        assert q.waiting() == 1
        clock.step(ready_at - 0.01)
        assert len(q) == 0
        clock.step(0.01)
        assert len(q) == 1
        clock.step(100)
        assert len(q) == 1, "the superseded timer must not add a second copy"

    asyncio.run(main())


def test_shutdown_drops_waiting_items():
    async def main():
        clock = FakeClock()
        q = DelayingQueue(clock=clock)
        q.add_after("a", 1)
        q.shutdown()
        clock.step(5)
        assert (await q.get()) == (None, True)

    asyncio.run(main())


def test_exponential_backoff_and_forget():
    lim = ItemExponentialFailureRateLimiter(0.005, 1000)
    delays = [lim.when("a") for _ in range(5)]
    assert delays == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
    assert lim.num_requeues("a") == 5
    assert lim.when("b") == pytest.approx(0.005), "backoff is per item"
    for _ in range(100):
        last = lim.when("a")
    assert last == 1000
    lim.forget("a")
    assert lim.num_requeues("a") == 0
    assert lim.when("a") == pytest.approx(0.005)


def test_fast_slow_limiter():
    lim = ItemFastSlowRateLimiter(0.1, 10, 2)
    assert [lim.when("a") for _ in range(4)] == [0.1, 0.1, 10, 10]


def test_bucket_limiter_spreads_a_burst():
    clock = FakeClock()
    lim = BucketRateLimiter(10, 3, clock)
    delays = [lim.when(i) for i in range(5)]
    assert delays[:3] == [0, 0, 0]
    assert delays[3:] == pytest.approx([0.1, 0.2])
    clock.step(10)
    assert lim.when("x") == 0


def test_default_limiter_is_max_of_item_and_bucket():
    clock = FakeClock()
    lim = default_controller_rate_limiter(clock)
    assert isinstance(lim, MaxOfRateLimiter)
    # 100 distinct items drain the burst; the 101st waits for the bucket (1/10s)
    # even though its own backoff is only 5ms.
    for i in range(100):
        assert lim.when(i) == pytest.approx(0.005)
    assert lim.when("late") == pytest.approx(0.1)


def test_rate_limiting_queue_requeues_with_backoff():
    async def main():
        clock = FakeClock()
        q = RateLimitingQueue(ItemExponentialFailureRateLimiter(1, 100), clock=clock)
        q.add("k")
        for attempt, backoff in enumerate([1, 2, 4]):
            key, _ = await q.get()
            q.add_rate_limited(key)  # the sync failed
            q.done(key)
            assert q.num_requeues("k") == attempt + 1
            assert len(q) == 0
            clock.step(backoff - 0.001)
            assert len(q) == 0, f"attempt {attempt}: retried too early"
            clock.step(0.001)
            assert len(q) == 1
        key, _ = await q.get()
        q.forget(key)
        q.done(key)
        assert q.num_requeues("k") == 0

    asyncio.run(main())


def test_token_bucket_wait_uses_clock():
    async def main():
        clock = FakeClock()
        b = TokenBucket(2, 1, clock)
        await b.wait()  # the burst token
        t = asyncio.create_task(b.wait())
        await settle()
        assert not t.done()
        clock.step(0.5)
        await asyncio.wait_for(t, 1)
        assert not b.try_accept()
        clock.step(0.5)
        assert b.try_accept()

    asyncio.run(main())
