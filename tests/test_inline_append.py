"""The event loop's own appends and reads (the per-message latency path): Engine.try_append writes a
small uncompressed batch exactly as append() would, and refuses (None, nothing written) whatever could
block or take long; a broker serving appends and reads both on its loop and in its pool neither
reorders, duplicates nor loses a record, and a subscriber at the tail sees what arrives while it waits."""

from __future__ import annotations

import random
import threading
import time

import pytest

import tidelog
from tidelog import Engine
from tidelog.client import Admin, Consumer, Producer
from tidelog.engine.engine import INLINE_APPEND_BYTES
from tidelog.errors import CorruptBatchError, InvalidTopicError, UnknownTopicError

from .server_process import ServerProcess


@pytest.fixture
def engine(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t")
        yield eng


def log_end(engine: Engine) -> int:
    return engine.list_offsets("t", 0).log_end


def test_a_small_batch_is_appended_on_the_spot_as_append_would(engine, clock):
    engine.produce("t", [b"first"])
    batch = tidelog.build_batch([b"x", b"y"], keys=[b"1", b"2"], timestamp=clock.now)
    result = engine.try_append("t", 0, batch)
    assert result is not None and (result.base_offset, result.last_offset) == (1, 2)
    fetched = engine.fetch("t", 0, 1).data
    assert bytes(fetched[8:]) == batch[8:], "stored verbatim, the base offset patched in"
    assert [(r.offset, r.value) for r in engine.fetch("t", 0, 0)] == [(0, b"first"), (1, b"x"), (2, b"y")]


def test_whatever_could_block_or_take_long_is_left_to_a_thread_with_nothing_written(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as engine:
        engine.create_topic("t", segment_bytes=16384, index_interval_bytes=256, max_index_bytes=4096)
        small = tidelog.build_batch([b"v" * 100], timestamp=clock.now)
        compressed = tidelog.build_batch([b"v" * 100] * 10, timestamp=clock.now, compression_name="lz4")
        assert engine.try_append("t", 0, compressed) is None, "compressed: validating it decompresses"
        big = tidelog.build_batch([b"v" * 1000] * (INLINE_APPEND_BYTES // 1000 + 1), timestamp=clock.now)
        assert engine.try_append("t", 0, big) is None, "larger than INLINE_APPEND_BYTES"
        assert log_end(engine) == 0

        plog = engine._topic("t").partition(0)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with plog._lock:
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait(10)
        try:
            assert engine.try_append("t", 0, small) is None, "the partition lock is busy"
        finally:
            release.set()
            holder.join()
        assert log_end(engine) == 0

        appended = 0
        while (result := engine.try_append("t", 0, small)) is not None:  # fill the active segment
            appended += 1
            assert result.base_offset == appended - 1
            assert appended < 1000, "the segment never filled"
        assert log_end(engine) == appended, "the batch that would roll the segment was not written"
        assert engine.describe("t").partitions[0].segments == 1
        assert engine.append("t", 0, small).base_offset == appended, "append() rolls, and goes on"


def test_under_fsync_always_every_append_goes_to_a_thread(data_dir, clock):
    with Engine.open(data_dir, {"fsync": "always"}, clock=clock) as engine:
        engine.create_topic("t")
        assert engine.try_append("t", 0, tidelog.build_batch([b"x"], timestamp=clock.now)) is None
        assert log_end(engine) == 0


def test_errors_are_the_ones_append_raises(engine, clock):
    batch = bytearray(tidelog.build_batch([b"x"], timestamp=clock.now))
    batch[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError):
        engine.try_append("t", 0, bytes(batch))
    with pytest.raises(UnknownTopicError):
        engine.try_append("nope", 0, tidelog.build_batch([b"x"], timestamp=clock.now))
    with pytest.raises(InvalidTopicError):
        engine.try_append("__consumer_offsets", 0, tidelog.build_batch([b"x"], timestamp=clock.now))
    assert log_end(engine) == 0


def test_an_idempotent_resend_appended_on_the_spot_gets_its_first_offsets(engine, clock):
    batch = tidelog.build_batch([b"a", b"b"], timestamp=clock.now, producer_id=7, producer_epoch=0, base_sequence=0)
    first = engine.try_append("t", 0, batch)
    again = engine.try_append("t", 0, batch)
    assert first is not None and again is not None
    assert (again.base_offset, again.last_offset) == (first.base_offset, first.last_offset) == (0, 1)
    assert log_end(engine) == 2


def test_loop_and_pool_appends_and_reads_keep_every_record_once_in_order(tmp_path):
    """Two idempotent producers on one partition, one sending lone small records (appended on the
    loop), one lz4 batches (appended in the pool), and a subscriber reading from the tail while they
    run: each producer's records arrive once each, in its order, and offsets have no gap."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    server = ServerProcess(str(tmp_path / "data"), "--fsync", "never").start()
    try:
        with Admin(server.target) as admin:
            admin.create_topic("mixed", 1)
        received: list = []
        consumer = Consumer(server.target, "mixed", partition=0, offset="latest")
        total = {"lone": 400, "batched": 4000}

        def reader() -> None:
            deadline = time.monotonic() + 60
            while len(received) < sum(total.values()) and time.monotonic() < deadline:
                received.extend(consumer.poll(0.2))

        reading = threading.Thread(target=reader)
        reading.start()
        time.sleep(0.3)  # subscribed at the tail

        def send(name: str, **settings) -> None:
            with Producer(server.target, **settings) as producer:
                for i in range(total[name]):
                    producer.send("mixed", b"%s-%06d" % (name.encode(), i), partition=0)
                    if name == "lone" and rng.random() < 0.3:
                        time.sleep(0.001)

        producers = [
            threading.Thread(target=send, args=("lone",), kwargs={"linger_ms": 0}),
            threading.Thread(target=send, args=("batched",), kwargs={"linger_ms": 5, "compression": "lz4"}),
        ]
        for p in producers:
            p.start()
        for p in producers:
            p.join(60)
        reading.join(60)
        consumer.close()
    finally:
        server.stop()
    assert [r.offset for r in received] == list(range(len(received))), f"seed={seed}: offsets with a gap or repeat"
    for name, count in total.items():
        mine = [r.value for r in received if r.value.startswith(name.encode())]
        assert mine == [b"%s-%06d" % (name.encode(), i) for i in range(count)], f"seed={seed}: {name}"
