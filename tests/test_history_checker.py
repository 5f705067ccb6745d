"""The cluster tests' history checker (tests/helpers/history.py) on synthetic histories: a correct run
(indeterminate sends both in the log and not, several replicas and partitions, a failover, consumer
restarts) has no anomaly, and each anomaly, made on purpose in the smallest history showing it, is
reported under its own kind with a message naming the value, offset or replica."""

from __future__ import annotations

import threading
import time

import pytest

from tests.helpers.history import KINDS, History, check

T0 = ("t", 0)


def acked(history, process, value, offset, tp=T0):
    op = history.send_invoke(process, tp[0], tp[1], value)
    history.send_ok(op, offset)
    return op


def info(history, process, value, tp=T0):
    op = history.send_invoke(process, tp[0], tp[1], value)
    history.send_info(op, "timed out")
    return op


def log(*values, epoch=1, start=0):
    """A replica's log of these values from offset `start`, in one leader epoch."""
    return [(start + i, v, epoch) for i, v in enumerate(values)]


def only(report, kind, count=1):
    """The messages of `report`, which must hold `count` anomalies, all of `kind`."""
    assert report.kinds == {kind: count}, str(report)
    assert not report.ok
    assert kind in str(report)
    return [a.message for a in report.anomalies]


def test_a_correct_history_has_no_anomaly():
    h = History()
    # t/0, replicas 1 (leader), 2 and 3: p1 writes a0..a4 in epoch 1; leader 1 fails over to 2 in
    # epoch 2 (b0 timed out but made it, b1 timed out and did not, b2 was refused), then a5, and c0
    # timed out sitting uncommitted on the new leader; d0's producer died before hearing back.
    for i in range(5):
        acked(h, "p1", f"a{i}", i)
    info(h, "p2", "b0")
    info(h, "p2", "b1")
    h.send_fail(h.send_invoke("p2", "t", 0, "b2"), "NOT_ENOUGH_REPLICAS")
    acked(h, "p1", "a5", 6)
    info(h, "p2", "c0")
    h.send_invoke("p3", "t", 0, "d0")
    committed = log("a0", "a1", "a2", "a3", "a4") + log("b0", "a5", epoch=2, start=5)
    # t/1 and u/0: two more partitions, p1 and p2 writing concurrently (p2 invoked before p1's ack)
    op_x = h.send_invoke("p1", "t", 1, "x0")
    op_y = h.send_invoke("p2", "t", 1, "y0")
    h.send_ok(op_y, 0)
    h.send_ok(op_x, 1)
    acked(h, "p1", "x1", 2, ("t", 1))
    acked(h, "p1", "u0", 0, ("u", 0))
    acked(h, "p1", "u1", 1, ("u", 0))
    # consumers: c1 reads in two polls, restarts, reads all again; c2 seeks to 3
    h.poll_ok("c1", "t", 0, [(0, "a0"), (1, "a1")], high_watermark=2)
    h.poll_ok("c1", "t", 0, [(2, "a2"), (3, "a3"), (4, "a4")], high_watermark=5)
    h.poll_reset("c1", "t", 0)
    h.poll_ok("c1", "t", 0, [(o, v) for o, v, _ in committed], high_watermark=7)
    h.seek("c2", "t", 0, 3)
    h.poll_ok("c2", "t", 0, [(3, "a3"), (5, "b0")])  # a gap is allowed (compaction, markers)
    h.poll_ok("c2", "t", 1, [(0, "y0"), (1, "x0"), (2, "x1")], high_watermark=3)
    h.poll_ok("c2", "u", 0, [(0, "u0")], high_watermark=1)
    h.high_watermark("t", 0, 2, 7)
    h.high_watermark("t", 0, 1, 5)

    t0 = {
        1: committed + [(7, "c0", 2)],  # an uncommitted tail on the leader
        2: list(committed),
        3: log("a0", "a1", "a2"),  # a lagging follower
    }
    logs = {T0: t0, ("t", 1): {1: log("y0", "x0", "x1"), 2: log("y0", "x0")}, ("u", 0): {5: log("u0", "u1")}}
    ends = {T0: 7, ("t", 1): 3, ("u", 0): 2}
    report = check(h, logs, ends)
    assert report.ok, str(report)
    assert (report.acknowledged, report.failed, report.indeterminate, report.unfinished) == (11, 1, 4, 1)
    assert (report.recovered_indeterminate, report.lost, report.committed) == (1, 0, 12)
    assert report.polled == 2 + 3 + 7 + 2 + 3 + 1
    assert str(report).startswith("history ok: 11 acknowledged")

    # with the in-sync sets known, an out-of-sync replica may lack committed offsets and even hold
    # an old leader's divergent tail: it is not the reference
    t0[3] = log("a0", "a1", "a2", "a3") + [(4, "b1", 0)]
    t0[4] = []
    report = check(h, logs, ends, in_sync={T0: {1, 2}, ("t", 1): {1}})
    assert report.ok, str(report)
    assert report.recovered_indeterminate == 1


def test_lost_write():
    h = History()
    acked(h, "p1", "v", 0)
    report = check(h, {T0: {1: log("v"), 2: []}}, {T0: 0})
    (message,) = only(report, "lost-write")
    assert "'v'" in message and "offset 0" in message and "replica 1" in message
    assert report.lost == 1


def test_lost_write_is_on_no_replica():
    h = History()
    acked(h, "p1", "v", 0)
    (message,) = only(check(h, {T0: {1: []}}, {T0: 0}), "lost-write")
    assert "'v'" in message and "on no replica" in message


@pytest.mark.parametrize("variant", ["value at another offset", "another value at the offset"])
def test_ack_offset_mismatch(variant):
    h = History()
    if variant == "value at another offset":
        acked(h, "p1", "v", 1)
        replica = log("v")
    else:
        acked(h, "p1", "v", 0)
        info(h, "p2", "w")
        replica = log("w", "v")
    (message,) = only(check(h, {T0: {1: replica}}, {T0: len(replica)}), "ack-offset-mismatch")
    assert "'v'" in message
    if variant == "value at another offset":
        assert "acknowledged to p1 at offset 1" in message and "committed at offset 0" in message
    else:
        assert "offset 0 holds 'w'" in message


def test_duplicate_ack_offset():
    # two values acknowledged at one offset: the committed log holds one, so the other is also lost
    h = History()
    acked(h, "p1", "v", 0)
    acked(h, "p2", "w", 0)
    report = check(h, {T0: {1: log("v")}}, {T0: 1})
    assert report.kinds == {"duplicate-ack-offset": 1, "lost-write": 1}, str(report)
    (message,) = [a.message for a in report.of_kind("duplicate-ack-offset")]
    assert "offset 0" in message and "'v'" in message and "'w'" in message


def test_duplicate_in_log():
    h = History()
    acked(h, "p1", "v", 0)
    (message,) = only(check(h, {T0: {1: log("v", "v")}}, {T0: 2}), "duplicate-in-log")
    assert "'v'" in message and "offsets 0, 1" in message
    h = History()
    info(h, "p1", "w")
    acked(h, "p1", "v", 2)  # committed at its offset too: a duplicate, not a mismatch
    (message,) = only(check(h, {T0: {1: log("v", "w", "v")}}, {T0: 3}), "duplicate-in-log")
    assert "offsets 0, 2" in message


@pytest.mark.parametrize("variant", ["value", "leader epoch", "in-sync replica lacking", "on no replica"])
def test_divergent_replicas(variant):
    h = History()
    info(h, "p1", "v")
    info(h, "p2", "w")
    in_sync = None
    if variant == "value":
        logs = {1: log("v"), 2: log("w")}
    elif variant == "leader epoch":
        logs = {1: log("v", epoch=1), 2: log("v", epoch=2)}
    elif variant == "in-sync replica lacking":
        logs = {1: log("v", "w"), 2: log("v")}
        in_sync = {T0: {1, 2}}
    else:
        logs = {1: [], 2: log("v", start=1)}
    end = 1 if variant in ("value", "leader epoch") else 2
    (message,) = only(check(h, {T0: logs}, {T0: end}, in_sync), "divergent-replicas")
    if variant == "value":
        assert "offset 0" in message and "replica 1: 'v'" in message and "replica 2: 'w'" in message
    elif variant == "leader epoch":
        assert "offset 0" in message and "(epoch 1)" in message and "(epoch 2)" in message
    elif variant == "in-sync replica lacking":
        assert "in-sync replica 2 lacks committed offsets 1" in message
    else:
        assert "no replica holds committed offsets 0" in message


def test_failed_write_present():
    h = History()
    h.send_fail(h.send_invoke("p1", "t", 0, "v"), "NOT_ENOUGH_REPLICAS")
    (message,) = only(check(h, {T0: {1: log("v")}}, {T0: 1}), "failed-write-present")
    assert "'v'" in message and "offset 0" in message and "NOT_ENOUGH_REPLICAS" in message


def test_a_failed_write_above_the_committed_end_is_no_anomaly():
    h = History()
    h.send_fail(h.send_invoke("p1", "t", 0, "v"), "NOT_ENOUGH_REPLICAS")
    assert check(h, {T0: {1: log("v")}}, {T0: 0}).ok


@pytest.mark.parametrize("variant", ["never sent", "at another offset", "not committed", "another partition"])
def test_phantom_read(variant):
    h = History()
    acked(h, "p1", "v", 0)
    acked(h, "p1", "w", 1)
    info(h, "p2", "x")
    acked(h, "p2", "y", 0, ("t", 1))
    record = {"never sent": (1, "z"), "at another offset": (1, "v"), "not committed": (1, "x")}.get(variant, (1, "y"))
    h.poll_ok("c1", "t", 0, [record], high_watermark=2)
    logs = {T0: {1: log("v", "w")}, ("t", 1): {1: log("y")}}
    (message,) = only(check(h, logs, {T0: 2, ("t", 1): 1}), "phantom-read")
    assert f"polled {record[1]!r} at offset 1" in message and "c1" in message
    assert {
        "never sent": "never sent",
        "at another offset": "committed at offset 0",
        "not committed": "offset 1 holds 'w'",
        "another partition": "sent to t/1",
    }[variant] in message


@pytest.mark.parametrize("variant", ["past the reported high watermark", "past the final committed end"])
def test_read_past_hw(variant):
    h = History()
    if variant == "past the reported high watermark":
        acked(h, "p1", "v", 0)
        h.poll_ok("c1", "t", 0, [(0, "v")], high_watermark=0)
        end = 1
    else:
        info(h, "p1", "v")  # on the leader, never committed (then truncated away)
        h.poll_ok("c1", "t", 0, [(0, "v")])
        end = 0
    (message,) = only(check(h, {T0: {1: log("v")}}, {T0: end}), "read-past-hw")
    assert "'v' at offset 0" in message
    assert ("high watermark 0" if end else "committed_end 0") in message


@pytest.mark.parametrize("variant", ["across polls", "within a poll", "after a seek"])
def test_nonmonotonic_poll(variant):
    h = History()
    acked(h, "p1", "v", 0)
    acked(h, "p1", "w", 1)
    if variant == "across polls":
        h.poll_ok("c1", "t", 0, [(1, "w")])
        h.poll_ok("c1", "t", 0, [(0, "v")])
    elif variant == "within a poll":
        h.poll_ok("c1", "t", 0, [(0, "v"), (1, "w"), (1, "w")])
    else:
        h.seek("c1", "t", 0, 1)
        h.poll_ok("c1", "t", 0, [(0, "v")])
    (message,) = only(check(h, {T0: {1: log("v", "w")}}, {T0: 2}), "nonmonotonic-poll")
    assert "c1" in message and "at offset" in message
    if variant == "across polls":
        assert "'v' at offset 0" in message and "after offset 1" in message


def test_polls_restart_after_a_reset_and_other_consumers_are_independent():
    h = History()
    acked(h, "p1", "v", 0)
    acked(h, "p1", "w", 1)
    h.poll_ok("c1", "t", 0, [(0, "v"), (1, "w")])
    h.poll_ok("c2", "t", 0, [(0, "v"), (1, "w")])
    h.poll_reset("c1", "t", 0)
    h.poll_ok("c1", "t", 0, [(0, "v")])
    assert check(h, {T0: {1: log("v", "w")}}, {T0: 2}).ok


def test_nonmonotonic_send():
    h = History()
    acked(h, "p1", "v", 1)
    acked(h, "p1", "w", 0)  # invoked after v's ack, yet before it in the log
    (message,) = only(check(h, {T0: {1: log("w", "v")}}, {T0: 2}), "nonmonotonic-send")
    assert "p1" in message and "'v' acknowledged at offset 1" in message and "'w'" in message
    assert "lower offset 0" in message


def test_concurrent_sends_of_one_process_may_be_acknowledged_out_of_order():
    h = History()
    op_v = h.send_invoke("p1", "t", 0, "v")
    op_w = h.send_invoke("p1", "t", 0, "w")  # invoked before v's ack: either order is fine
    h.send_ok(op_v, 1)
    h.send_ok(op_w, 0)
    acked(h, "p2", "x", 2)  # another process is not ordered with p1
    assert check(h, {T0: {1: log("w", "v", "x")}}, {T0: 3}).ok


@pytest.mark.parametrize("variant", ["never sent", "sent to another partition"])
def test_unknown_value(variant):
    h = History()
    acked(h, "p1", "v", 0)
    if variant == "sent to another partition":
        info(h, "p1", "x", ("t", 1))
    logs = {T0: {1: log("v", "x")}, ("t", 1): {1: []}}
    (message,) = only(check(h, logs, {T0: 2, ("t", 1): 0}), "unknown-value")
    assert "t/0 offset 1" in message and "'x'" in message
    assert ("never sent" if variant == "never sent" else "sent to t/1") in message


def test_hw_regression():
    h = History()
    acked(h, "p1", "v", 0)
    h.high_watermark("t", 0, 3, 2)
    (message,) = only(check(h, {T0: {1: log("v")}}, {T0: 1}), "hw-regression")
    assert "high watermark 2" in message and "broker 3" in message and "committed_end 1" in message


def test_every_kind_is_tested():
    tested = {name.removeprefix("test_").replace("_", "-") for name in globals() if name.startswith("test_")}
    assert set(KINDS) <= tested


def test_test_bugs_are_refused_at_once():
    h = History()
    op = h.send_invoke("p1", "t", 0, b"v")
    with pytest.raises(ValueError, match="sent twice"):
        h.send_invoke("p2", "t", 1, b"v")
    h.send_ok(op, 0)
    with pytest.raises(ValueError, match="completed twice"):
        h.send_info(op, "timeout")
    with pytest.raises(ValueError, match="no send op"):
        h.send_ok(op + 1, 0)
    with pytest.raises(ValueError, match="no committed_end for t/0"):
        check(h, {}, {})


def test_the_report_summarises_for_an_assert_message():
    h = History()
    for i in range(15):
        acked(h, "p1", f"v{i}", i)
    text = str(check(h, {T0: {1: []}}, {T0: 0}))
    assert text.startswith("15 anomalies (lost-write: 15); 15 acknowledged")
    assert "'v9'" in text and "'v10'" not in text and "... and 5 more lost-write" in text


def test_history_is_safe_under_concurrent_use():
    h = History()
    threads, per_thread = 8, 2000
    logs = {("t", 0): [], ("t", 1): []}  # a leader's log per partition, appended under its lock
    leader = threading.Lock()
    start = threading.Barrier(threads)

    def work(n):
        start.wait()
        tp = ("t", n % 2)
        for i in range(per_thread):
            value = (n, i)
            op = h.send_invoke(f"p{n}", tp[0], tp[1], value)
            if i % 10 == 9 and i % 20 != 19:  # indeterminate, and not written
                h.send_info(op, "timeout")
                continue
            with leader:
                offset = len(logs[tp])
                logs[tp].append((offset, value, 1))
            if i % 10 == 9:  # indeterminate, but written
                h.send_info(op, "connection lost")
            else:
                h.send_ok(op, offset)
            h.poll_ok(f"c{n}", tp[0], tp[1], [(offset, value)])

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    total = threads * per_thread
    assert len(h) == 2 * total + total * 19 // 20
    assert len(h.sends) == total and [s.op_id for s in h.sends] == list(range(total))
    report = check(h, {tp: {1: entries} for tp, entries in logs.items()}, {tp: len(e) for tp, e in logs.items()})
    assert report.ok, str(report)
    assert (report.acknowledged, report.indeterminate) == (total * 9 // 10, total // 10)
    assert report.recovered_indeterminate == total // 20 and report.polled == total * 19 // 20
    assert report.committed == total * 19 // 20


def test_half_a_million_operations_check_in_linear_time():
    h = History()
    n = 250_000  # 500k operations, and 500k records polled
    replica = []
    for i in range(n):
        value = b"%d" % i
        acked(h, f"p{i % 4}", value, i)
        replica.append((i, value, 1 + i // 100_000))
    for c in range(2):
        for first in range(0, n, 500):
            h.poll_ok(f"c{c}", "t", 0, replica_records := [(o, v) for o, v, _ in replica[first : first + 500]], n)
    assert len(h) == 2 * n + 2 * n // 500 and len(replica_records) == 500
    started = time.monotonic()
    report = check(h, {T0: {1: replica, 2: replica, 3: replica[: n // 2]}}, {T0: n}, {T0: {1, 2}})
    elapsed = time.monotonic() - started
    assert report.ok, str(report)
    assert report.polled == 2 * n and report.acknowledged == n
    assert elapsed < 20, f"check took {elapsed:.1f}s"
