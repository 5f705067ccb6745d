"""Structured logs: the formatters, one line per event in the engine and the coordinator, and a real
`tidelog serve --log-format json` whose every stderr line is a JSON event."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import time

import pytest

from tidelog import Engine
from tidelog.client import Admin, Consumer, Producer
from tidelog.errors import UnknownTopicError
from tidelog.groups.coordinator import GroupCoordinator
from tidelog.logging_setup import JsonFormatter, TextFormatter, configure

from .server_process import ServerProcess


def _record(msg="topic created", **extra):
    record = logging.LogRecord("tidelog.engine", logging.INFO, __file__, 1, msg, (), None)
    record.created, record.msecs = 1_764_361_918.123, 123.0
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_text_lines_carry_the_fields_as_key_value_pairs():
    line = TextFormatter().format(_record(event="topic_created", topic="orders", partitions=3))
    assert line == "2025-11-28T20:31:58.123Z INFO tidelog.engine topic created topic=orders partitions=3"


def test_text_values_with_spaces_or_structure_are_quoted_as_json():
    line = TextFormatter().format(_record(error="unknown topic 'x'", assignment={"m": ["t-0"]}, ok=True))
    assert line.endswith(""" error="unknown topic 'x'" assignment={"m":["t-0"]} ok=true""")


def test_json_lines_name_the_event_and_carry_typed_fields():
    out = json.loads(JsonFormatter().format(_record(event="topic_created", topic="orders", partitions=3)))
    assert out == {
        "ts": "2025-11-28T20:31:58.123Z",
        "level": "INFO",
        "logger": "tidelog.engine",
        "event": "topic_created",
        "message": "topic created",
        "topic": "orders",
        "partitions": 3,
    }


def test_json_lines_without_an_event_use_the_message_and_keep_the_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "it %s", ("failed",), sys.exc_info())
    out = json.loads(JsonFormatter().format(record))
    assert out["event"] == out["message"] == "it failed" and "ValueError: boom" in out["exception"]


def test_configure_replaces_its_own_handler_and_filters_by_level():
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        configure("text", "info", io.StringIO())
        stream = io.StringIO()
        configure("json", "warning", stream)
        assert sum(type(h).__name__ == "_OwnHandler" for h in root.handlers) == 1
        logging.getLogger("tidelog.test").info("hidden", extra={"event": "x"})
        logging.getLogger("tidelog.test").warning("shown", extra={"event": "y", "n": 1})
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [(x["event"], x["n"]) for x in lines] == [("y", 1)]
        with pytest.raises(ValueError):
            configure("xml", "info")
    finally:
        for h in list(root.handlers):
            if h not in before[0]:
                root.removeHandler(h)
        root.setLevel(before[1])


def events(caplog, name):
    return [r for r in caplog.records if getattr(r, "event", None) == name]


# -- the engine -----------------------------------------------------------------------------------


def test_engine_logs_topics_created_and_deleted(data_dir, caplog):
    caplog.set_level(logging.INFO, logger="tidelog")
    with Engine.open(data_dir) as eng:
        eng.create_topic("orders", 3)
        eng.delete_topic("orders")
    (created,) = events(caplog, "topic_created")
    assert (created.name, created.topic, created.partitions) == ("tidelog.engine", "orders", 3)
    (deleted,) = events(caplog, "topic_deleted")
    assert (deleted.topic, deleted.partitions) == ("orders", 3)
    (opened,) = events(caplog, "engine_opened")
    assert opened.start == "clean" and opened.topics == 0
    (closed,) = events(caplog, "engine_closed")
    assert closed.clean is True


def test_segments_rolled_and_deleted_by_retention_are_logged(data_dir, clock, caplog):
    caplog.set_level(logging.INFO, logger="tidelog")
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", 1, segment_bytes=4096, retention_ms=60_000)
        for _ in range(12):
            eng.produce("t", [b"x" * 1000])
        rolled = events(caplog, "segment_rolled")  # three 1 KB records fill a 4 KB segment
        assert [(r.log, r.sealed_base_offset, r.base_offset) for r in rolled] == [
            ("t-0", 0, 3),
            ("t-0", 3, 6),
            ("t-0", 6, 9),
        ]
        clock.advance(60_001)
        assert eng.enforce_retention() == 3
    deleted = events(caplog, "segment_deleted")
    assert [(d.base_offset, d.next_offset) for d in deleted] == [(0, 3), (3, 6), (6, 9)]
    assert all(d.reason == "retention" and d.log == "t-0" and d.size_bytes > 0 for d in deleted)


def test_a_clean_open_logs_each_partition_at_debug_and_a_repair_at_info_or_warning(data_dir, caplog):
    with Engine.open(data_dir) as eng:
        eng.create_topic("t", 2)
        eng.produce("t", [b"a", b"b"], partition=0)
    caplog.set_level(logging.DEBUG, logger="tidelog")
    with Engine.open(data_dir):
        pass
    opened = events(caplog, "partition_recovery")
    assert [(r.partition, r.levelno, r.result) for r in opened if r.topic == "t"] == [
        (0, logging.DEBUG, "clean"),
        (1, logging.DEBUG, "clean"),
    ]
    # An unclean stop with a torn tail: the marker is gone and garbage follows the last batch.
    os.remove(os.path.join(data_dir, ".clean_shutdown"))
    log_file = os.path.join(data_dir, "t-0", f"{0:020d}.log")
    good = os.path.getsize(log_file)
    with open(log_file, "ab") as f:
        f.write(b"\x07" * 40)
    caplog.clear()
    with Engine.open(data_dir) as eng:
        assert eng.list_offsets("t", 0).log_end == 2
    by_partition = {r.partition: r for r in events(caplog, "partition_recovery") if r.topic == "t"}
    torn = by_partition[0]
    assert torn.levelno == logging.WARNING and torn.truncated_at == good and torn.log_end == 2
    # The recovery point (written at the clean close) covers the good part: only the tail is scanned.
    assert torn.scanned_bytes == 0 and torn.rebuilt_indexes == 1 and torn.result not in ("clean", "recovered")
    assert by_partition[1].levelno == logging.INFO and by_partition[1].result == "recovered"
    assert events(caplog, "engine_opened")[0].start == "unclean"


# -- consumer groups ------------------------------------------------------------------------------


def test_group_membership_and_rebalances_are_logged_with_old_and_new_assignment(data_dir, clock, caplog):
    caplog.set_level(logging.INFO, logger="tidelog.groups")
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", 2)
        coord = GroupCoordinator(eng, clock=clock)
        a = coord.join("g", ["t"], client_id="a", session_timeout_ms=1000, assignor="range")
        b = coord.join("g", ["t"], client_id="b", session_timeout_ms=5000, assignor="range")
        coord.leave("g", b.member_id)
        coord.join("g", ["t"], client_id="c", session_timeout_ms=5000, assignor="range")
        clock.advance(1001)
        gone = coord.expire()
    assert gone == [a.member_id]
    joined = events(caplog, "member_joined")
    assert [(j.group, j.client_id, j.topics) for j in joined] == [
        ("g", "a", ["t"]),
        ("g", "b", ["t"]),
        ("g", "c", ["t"]),
    ]
    (left,) = events(caplog, "member_left")
    assert left.member == b.member_id
    (expired,) = events(caplog, "member_expired")
    assert expired.member == a.member_id and expired.silent_ms == 1001
    rebalances = events(caplog, "rebalance")
    assert [(r.generation, r.reason) for r in rebalances] == [
        (1, "member_joined"),
        (2, "member_joined"),
        (3, "member_left"),
        (4, "member_joined"),
        (5, "member_expired"),
    ]
    assert rebalances[0].old_assignment == {} and rebalances[0].new_assignment == {a.member_id: ["t-0", "t-1"]}
    second = rebalances[1]
    assert second.old_assignment == {a.member_id: ["t-0", "t-1"]}
    assert second.new_assignment == {a.member_id: ["t-0"], b.member_id: ["t-1"]}


# -- a real server ----------------------------------------------------------------------------------


def test_a_json_logging_server_writes_one_event_per_line_from_start_to_shutdown(tmp_path):
    srv = ServerProcess(str(tmp_path / "data"), "--log-format", "json").start()
    try:
        with Admin(srv.target) as admin:
            admin.create_topic("orders", 2)
            with pytest.raises(UnknownTopicError):
                admin.describe("missing")
        with Producer(srv.target) as producer:
            producer.send("orders", b"v", partition=0).result(30)
        consumer = Consumer(
            srv.target, group_id="billing", topics=["orders"], auto_offset_reset="earliest", auto_commit=False
        )
        got = []
        for _ in range(200):
            got += consumer.poll(0.1)
            if got:
                break
        assert [bytes(r.value) for r in got] == [b"v"]
        consumer.close()
        os.kill(srv.proc.pid, signal.SIGUSR1)  # where each task waits, in the log
        for _ in range(100):
            if "tasks dumped" in srv.log():
                break
            time.sleep(0.05)
    finally:
        assert srv.stop() == 0
    with open(srv.log_path) as f:
        lines = [json.loads(line) for line in f if line.strip()]  # every line is a JSON object
    by_event: dict[str, list[dict]] = {}
    for line in lines:
        assert set(line) >= {"ts", "level", "logger", "event", "message"}
        by_event.setdefault(line["event"], []).append(line)
    (started,) = by_event["server_started"]
    assert started["address"] == srv.target and started["fsync"] == "interval"
    assert started["data_dir"] == str(tmp_path / "data") and started["version"]
    assert {(e["topic"], e["partitions"]) for e in by_event["topic_created"]} >= {("orders", 2)}
    (failed,) = [e for e in by_event["rpc_error"] if e["method"] == "/tidelog.v1.Admin/DescribeTopic"]
    assert failed["code"] == "NOT_FOUND" and "missing" in failed["error"] and failed["peer"]
    *tasks, summary = by_event["task_dump"]
    assert summary["message"] == f"{len(tasks)} tasks dumped"
    assert any("serve (" in t["message"] and "app.py" in t["message"] for t in tasks), tasks  # the main task
    (joined,) = by_event["member_joined"]
    assert joined["group"] == "billing" and joined["topics"] == ["orders"]
    first = by_event["rebalance"][0]
    assert first["generation"] == 1 and first["new_assignment"] == {joined["member"]: ["orders-0", "orders-1"]}
    assert by_event["member_left"][0]["member"] == joined["member"]
    events_in_order = [line["event"] for line in lines]
    assert (
        events_in_order.index("server_started")
        < events_in_order.index("server_stopping")
        < events_in_order.index("engine_closed")
        < events_in_order.index("server_stopped")
    )
    assert events_in_order[-1] == "server_stopped"
