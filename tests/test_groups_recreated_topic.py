"""A recreated topic never resumes a group at an offset of the old log (issue 12, defect 12).

After `topics delete orders` and a new `orders`, group billing2 kept its committed offset 3 while the
new log ended at 1, and x1 and x2 were never delivered. Now deleting a topic deletes every group's
offsets of it, durably (tombstones in __consumer_offsets); and a committed offset that does not fit
the log anyway (the broker lost the tombstones, retention) follows auto_offset_reset with a WARNING,
or is an error for the application with "none".
"""

from __future__ import annotations

import logging
import time

import pytest

from tidelog import Engine
from tidelog.client import Admin, Consumer, Producer
from tidelog.errors import OffsetOutOfRangeError

from .server_process import ServerProcess, config_file

TIMEOUT_S = 60.0
# the brokers: tests/server_process.py's QUICK_GROUPS (each consume() is a new group's only member)


def produce(target: str, *values: bytes) -> None:
    with Producer(target, linger_ms=0) as producer:
        for v in values:
            producer.send("orders", v, partition=0).result(timeout=30)


def consume(target: str, count: int, **options) -> list:
    c = Consumer(target, group_id="billing2", topics=["orders"], auto_commit=False, **options)
    try:
        got = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < count and time.monotonic() < deadline:
            got += c.poll(0.2)
        c.commit()
        return got
    finally:
        c.close()


def test_a_recreated_topic_keeps_no_committed_offset_of_the_old_one_across_a_broker_restart(tmp_path):
    server = ServerProcess(str(tmp_path / "data"), "--config", config_file(tmp_path)).start()
    try:
        with Admin(server.target) as admin:
            admin.create_topic("orders", 1)
            produce(server.target, b"a", b"b", b"c")
            assert [r.value for r in consume(server.target, 3)] == [b"a", b"b", b"c"]
            assert admin.committed_offsets("billing2") == {("orders", 0): 3}
            admin.delete_topic("orders")
            admin.create_topic("orders", 1)
            produce(server.target, b"x1")
            assert admin.committed_offsets("billing2") == {}
        server.kill()  # SIGKILL: the deletion must be in __consumer_offsets already
        server.start()
        with Admin(server.target) as admin:
            assert admin.committed_offsets("billing2") == {}
        produce(server.target, b"x2")
        assert [r.value for r in consume(server.target, 2, auto_offset_reset="earliest")] == [b"x1", b"x2"]
    finally:
        server.stop()


@pytest.mark.parametrize("policy", ["earliest", "none"])
def test_a_committed_offset_past_the_log_end_is_reset_with_a_warning_or_raised(tmp_path, caplog, policy):
    """The broker's tombstones are bypassed: the topic is recreated on disk while it is stopped."""
    data = str(tmp_path / "data")
    server = ServerProcess(data, "--config", config_file(tmp_path)).start()
    try:
        with Admin(server.target) as admin:
            admin.create_topic("orders", 1)
        produce(server.target, b"a", b"b", b"c")
        consume(server.target, 3)
        assert server.stop() == 0
        with Engine.open(data) as engine:  # no coordinator watching: the commit of 3 stays
            engine.delete_topic("orders")
            engine.create_topic("orders", 1)
            engine.produce("orders", [b"x1"], partition=0)
        server.start()
        with Admin(server.target) as admin:
            assert admin.committed_offsets("billing2") == {("orders", 0): 3}  # past the new log's end, 1
        caplog.set_level(logging.WARNING, logger="tidelog.groups")
        if policy == "earliest":
            assert [r.value for r in consume(server.target, 1, auto_offset_reset="earliest")] == [b"x1"]
        else:
            with pytest.raises(OffsetOutOfRangeError, match=r"committed offset 3 of orders\[0\] is out of range"):
                consume(server.target, 1, auto_offset_reset="none")
        [warning] = [r for r in caplog.records if getattr(r, "event", None) == "offset_out_of_range"]
        assert (
            warning.group,
            warning.topic,
            warning.partition,
            warning.offset,
            warning.log_start,
            warning.log_end,
        ) == ("billing2", "orders", 0, 3, 0, 1)
        with Admin(server.target) as admin:
            expected = {("orders", 0): 1} if policy == "earliest" else {("orders", 0): 3}
            assert admin.committed_offsets("billing2") == expected
    finally:
        server.stop()
