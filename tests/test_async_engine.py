"""AsyncEngine, the engine's one async API: no call of it blocks the event loop, also while a
partition's lock is held (as a segment roll holds it across its fsyncs)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tidelog import Engine
from tidelog.engine.async_engine import AsyncEngine


@pytest.fixture
def engine(tmp_path):
    with Engine.open(str(tmp_path / "data"), {"fsync": "never"}) as e:
        e.create_topic("t", 1)
        e.produce("t", [b"one", b"two"], partition=0)
        yield e


def held_partition_lock(engine, release: threading.Event, taken: threading.Event):
    """A thread holding partition t-0's lock until `release`, like a roll fsyncing the sealed segment."""
    lock = engine._topic("t").partition(0)._lock

    def hold():
        with lock:
            taken.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(10)
    return thread


@pytest.mark.parametrize("call", ["fetch_at_tail", "fetch", "list_offsets", "offset_at_time"])
def test_no_call_blocks_the_event_loop_while_a_roll_holds_the_partition_lock(engine, call):
    async def scenario():
        facade = AsyncEngine(engine, io_threads=2)
        release, taken = threading.Event(), threading.Event()
        holder = held_partition_lock(engine, release, taken)
        calls = {
            "fetch_at_tail": lambda: facade.fetch("t", 0, 0, 1 << 20, at_tail=True),
            "fetch": lambda: facade.fetch("t", 0, 0, 1 << 20),
            "list_offsets": lambda: facade.list_offsets("t", 0),
            "offset_at_time": lambda: facade.offset_at("t", 0, 0),
        }
        pending = asyncio.ensure_future(calls[call]())
        ticks = 0
        for _ in range(20):  # the loop keeps running while the call waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
        assert not pending.done(), "the call could not have finished: the lock is held"
        release.set()
        result = await asyncio.wait_for(pending, 30)
        holder.join()
        facade.close()
        return ticks, result

    ticks, result = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert ticks == 20
    if call.startswith("fetch"):
        assert [r.value for r in result] == [b"one", b"two"]
    elif call == "list_offsets":
        assert (result.log_start, result.high_watermark) == (0, 2)
    else:
        assert result == 0


def test_a_fetch_at_the_tail_reads_on_the_loop_when_the_partition_is_free(engine):
    async def scenario():
        facade = AsyncEngine(engine, io_threads=1)
        loop_thread = threading.get_ident()
        seen = []
        original = engine.try_fetch

        def spy(*args):
            seen.append(threading.get_ident())
            return original(*args)

        engine.try_fetch = spy
        try:
            result = await facade.fetch("t", 0, 1, 1 << 20, at_tail=True)
        finally:
            del engine.try_fetch
            facade.close()
        return seen, loop_thread, result

    seen, loop_thread, result = asyncio.run(scenario())
    assert seen == [loop_thread]
    assert [r.offset for r in result] == [1]


def test_fetch_many_reads_every_partition_in_one_trip_within_the_byte_budget(tmp_path):
    """The Kafka listener's fetch: each partition from its offset, the budget shared in order (the first
    partition always gets a batch), partitions at their end or past the budget get their offsets only,
    and an error stays with its own partition."""
    from tidelog.engine.results import FetchResult
    from tidelog.errors import InvalidPartitionError, OffsetOutOfRangeError
    from tidelog.values import PartitionOffsets

    with Engine.open(str(tmp_path / "data"), {"fsync": "never"}) as engine:
        engine.create_topic("m", 4)
        for p in range(3):
            engine.produce("m", [b"x" * 3000] * 2, partition=p)  # one batch of ~6 KB each

        async def scenario():
            facade = AsyncEngine(engine, 2)
            try:
                return await facade.fetch_many(
                    [("m", 0, 0, 1 << 20), ("m", 1, 1, 1 << 20), ("m", 2, 0, 1 << 20), ("m", 3, 0, 1 << 20),
                     ("m", 9, 0, 1 << 20), ("m", 0, 5, 1 << 20)],
                    7000,
                )  # fmt: skip
            finally:
                facade.close()

        first, second, third, empty, missing, beyond = asyncio.run(scenario())
    assert isinstance(first, FetchResult) and first.next_offset == 2  # the whole first batch
    assert isinstance(second, FetchResult) and len(second.data) > 0  # what was left of 7000 still takes a batch
    assert isinstance(third, PartitionOffsets) and third.high_watermark == 2  # the budget is spent
    assert isinstance(empty, PartitionOffsets) and empty.high_watermark == 0
    assert isinstance(missing, InvalidPartitionError)
    assert isinstance(beyond, OffsetOutOfRangeError)
