"""A history checker for the cluster tests, after Jepsen's Kafka/queue workload.

Producers and consumers (threads, or tasks of one asyncio loop) log every operation in a `History`;
at the end the test dumps every replica's log of every partition, asks the leader for each
partition's final high watermark (`committed_end`), and `check` returns a `Report` of anomalies.

    history = History()
    op = history.send_invoke("p1", "t", 0, b"p1:7")
    history.send_ok(op, 41)                      # or send_fail (definitely not written: refused
                                                 # before the append) or send_info (indeterminate:
                                                 # a timeout, a lost connection)
    history.poll_ok("c1", "t", 0, [(41, b"p1:7")], high_watermark=42)
    history.poll_reset("c1", "t", 0)             # the consumer restarted or was rebalanced
    report = check(history, replica_logs, committed_end, in_sync)
    assert report.ok, str(report)

Values are any hashable (bytes, str); every send attempt must use a value of its own (a repeated
value is a bug in the test, refused at once with ValueError).

The committed log of a partition is the prefix of offsets below its committed_end, taken from the
replicas in `in_sync` (all replicas when in_sync is None, or has no entry for the partition) that hold
each offset; where they disagree the value most of them hold is taken. Replicas out of the in-sync set
are only used to say where a lost value went. Sends never completed count as indeterminate.

Anomalies (Anomaly.kind):

- lost-write: a send acknowledged (send_ok) whose value is not in the committed log of its
  partition. The one promise an acknowledgement makes is durability; the message says where the
  value is instead (above the committed end, on an out-of-sync replica, nowhere).
- ack-offset-mismatch: acknowledged at offset X, but the committed log holds the value at another
  offset. The producer (and anyone it told) believes in a position that does not exist.
- duplicate-ack-offset: two different values acknowledged at the same offset of a partition: two
  leaders (or one confused one) appended at the same position, so one of the two acks is a lie.
- duplicate-in-log: one value at more than one offset of a committed log. The test sends each value
  once; an idempotent producer's retry must not be appended twice.
- divergent-replicas: two replicas (of the reference set) disagree, in value or leader epoch, at an
  offset below committed_end; or an in-sync replica lacks a committed offset; or no replica holds
  one. Committed data must be identical on every in-sync replica, or a failover changes history.
- failed-write-present: a send reported as a definite failure (send_fail) whose value is in a
  committed log. A client told "not written" may retry elsewhere or give up: the broker must not
  have appended it.
- phantom-read: a consumer received (offset, value) and the committed log does not hold that value
  at that offset: it was never sent (to this partition), it is committed at another offset, or the
  committed log holds something else there. Consumers must see exactly the committed log.
- read-past-hw: a consumer received an offset at or past the high watermark the broker reported
  with it, or at or past the final committed_end. Consumers must only see committed data; a record
  read above the watermark can be truncated away after a failover (a read of data later lost).
- nonmonotonic-poll: within one consumer process and partition, an offset not greater than the one
  before (across polls, and within one), unless the process called poll_reset between them (after
  seek(offset) the next one must be at least that offset). Consumers rely on log order.
- nonmonotonic-send: within one producer process and partition, a send invoked after an earlier
  send was acknowledged got a lower offset. Once acknowledged a record is in the log; later records
  of the same producer must follow it (else the log was rewritten under it).
- unknown-value: a value in a committed log that no send invoked (for that partition). The broker
  invented, corrupted or misrouted data.
- hw-regression: a high watermark reported during the run (with a poll, or high_watermark()) above
  the final committed_end: records once declared committed are no longer committed. (Needs the final
  committed_end read once the cluster has settled, as read-past-hw does.)

Indeterminate sends (send_info, or never completed) may or may not be in the log: the report counts
how many were found (recovered_indeterminate). The checker is linear in the history and the logs
(dicts keyed by value and offset), for runs of ~500k operations.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field

KINDS = (
    "lost-write",
    "ack-offset-mismatch",
    "duplicate-ack-offset",
    "duplicate-in-log",
    "divergent-replicas",
    "failed-write-present",
    "phantom-read",
    "read-past-hw",
    "nonmonotonic-poll",
    "nonmonotonic-send",
    "unknown-value",
    "hw-regression",
)

PENDING, OK, FAIL, INFO = "pending", "ok", "fail", "info"
POLL, RESET, SEEK = "poll", "reset", "seek"

TopicPartition = tuple[str, int]
ReplicaLogs = Mapping[TopicPartition, Mapping[int, Iterable[tuple[int, Hashable, int]]]]


class Send:
    """One send attempt, from send_invoke to its outcome."""

    __slots__ = (
        "op_id",
        "process",
        "topic",
        "partition",
        "value",
        "t_invoke",
        "seq_invoke",
        "status",
        "offset",
        "error",
        "t_done",
        "seq_done",
    )

    def __init__(self, op_id: int, process, topic: str, partition: int, value, t: float, seq: int) -> None:
        self.op_id, self.process, self.topic, self.partition, self.value = op_id, process, topic, partition, value
        self.t_invoke, self.seq_invoke = t, seq
        self.status = PENDING
        self.offset: int | None = None
        self.error = None
        self.t_done: float | None = None
        self.seq_done: int | None = None

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)


@dataclass(frozen=True)
class ConsumerEvent:
    """A poll (records, high_watermark), a poll_reset, or a seek (offset) of one consumer process."""

    what: str
    t: float
    process: object
    topic: str
    partition: int
    records: tuple[tuple[int, Hashable], ...] = ()
    high_watermark: int | None = None
    offset: int | None = None


class History:
    """The operations of a run, appended by producers and consumers. Thread-safe (one lock, held for
    an append); plain method calls, so usable from asyncio code too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self.start = time.monotonic()
        self.sends: list[Send] = []
        self.consumer_events: list[ConsumerEvent] = []
        self.hw_observations: list[tuple[float, str, int, int, int]] = []  # (t, topic, partition, broker, hw)
        self._by_value: dict[Hashable, Send] = {}

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def __len__(self) -> int:
        """How many operations were logged (every invoke, outcome, poll, reset, seek, observation)."""
        with self._lock:
            return self._seq

    def send_invoke(self, process, topic: str, partition: int, value: Hashable) -> int:
        t = time.monotonic()
        with self._lock:
            earlier = self._by_value.get(value)
            if earlier is not None:
                raise ValueError(
                    f"value {_v(value)} sent twice (op {earlier.op_id} by {earlier.process}, now by {process}): "
                    "the test must make every send's value unique"
                )
            send = Send(len(self.sends), process, topic, partition, value, t, self._next())
            self.sends.append(send)
            self._by_value[value] = send
            return send.op_id

    def _complete(self, op_id: int, status: str, offset: int | None, error) -> None:
        t = time.monotonic()
        with self._lock:
            if not 0 <= op_id < len(self.sends):
                raise ValueError(f"no send op {op_id}")
            send = self.sends[op_id]
            if send.status != PENDING:
                raise ValueError(f"send op {op_id} ({_v(send.value)}) completed twice: {send.status}, then {status}")
            send.status, send.offset, send.error, send.t_done, send.seq_done = status, offset, error, t, self._next()

    def send_ok(self, op_id: int, offset: int) -> None:
        """The send was acknowledged, at `offset`."""
        self._complete(op_id, OK, offset, None)

    def send_fail(self, op_id: int, error) -> None:
        """The send definitely was not written (refused before the append: NOT_ENOUGH_REPLICAS, invalid)."""
        self._complete(op_id, FAIL, None, error)

    def send_info(self, op_id: int, error) -> None:
        """The send's outcome is unknown (a timeout, a lost connection): it may or may not be written."""
        self._complete(op_id, INFO, None, error)

    def poll_ok(
        self,
        process,
        topic: str,
        partition: int,
        records: Iterable[tuple[int, Hashable]],
        high_watermark: int | None = None,
    ) -> None:
        """A consumer received `records` ((offset, value), in the order received), with the high
        watermark the broker reported with them if known."""
        event = ConsumerEvent(POLL, time.monotonic(), process, topic, partition, tuple(records), high_watermark)
        with self._lock:
            self._next()
            self.consumer_events.append(event)

    def poll_reset(self, process, topic: str, partition: int) -> None:
        """The consumer restarted or was rebalanced: its next offsets may start anywhere."""
        event = ConsumerEvent(RESET, time.monotonic(), process, topic, partition)
        with self._lock:
            self._next()
            self.consumer_events.append(event)

    def seek(self, process, topic: str, partition: int, offset: int) -> None:
        """The consumer seeked: its next offset must be at least `offset`."""
        event = ConsumerEvent(SEEK, time.monotonic(), process, topic, partition, offset=offset)
        with self._lock:
            self._next()
            self.consumer_events.append(event)

    def high_watermark(self, topic: str, partition: int, broker_id: int, hw: int) -> None:
        """An observation of a broker's high watermark for a partition."""
        t = time.monotonic()
        with self._lock:
            self._next()
            self.hw_observations.append((t, topic, partition, broker_id, hw))

    def snapshot(self) -> tuple[list[Send], list[ConsumerEvent], list[tuple[float, str, int, int, int]]]:
        with self._lock:
            return list(self.sends), list(self.consumer_events), list(self.hw_observations)


@dataclass(frozen=True)
class Anomaly:
    kind: str
    message: str
    topic: str | None = None
    partition: int | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass
class Report:
    anomalies: list[Anomaly] = field(default_factory=list)
    acknowledged: int = 0
    failed: int = 0
    indeterminate: int = 0  # send_info, and sends never completed (counted in `unfinished` too)
    unfinished: int = 0
    polled: int = 0  # records received by consumers
    lost: int = 0  # acknowledged sends not in the committed log
    recovered_indeterminate: int = 0  # indeterminate sends found in the committed log
    committed: int = 0  # records in the committed logs, all partitions

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def of_kind(self, kind: str) -> list[Anomaly]:
        return [a for a in self.anomalies if a.kind == kind]

    @property
    def kinds(self) -> collections.Counter:
        return collections.Counter(a.kind for a in self.anomalies)

    def __str__(self, per_kind: int = 10) -> str:
        counts = (
            f"{self.acknowledged} acknowledged, {self.failed} failed, {self.indeterminate} indeterminate "
            f"({self.recovered_indeterminate} found in the log, {self.unfinished} never completed), "
            f"{self.polled} records polled, {self.committed} committed, {self.lost} lost"
        )
        if self.ok:
            return f"history ok: {counts}"
        kinds = self.kinds
        lines = [f"{len(self.anomalies)} anomalies ({', '.join(f'{k}: {n}' for k, n in kinds.items())}); {counts}"]
        for kind in kinds:
            items = self.of_kind(kind)
            lines += [f"  {a}" for a in items[:per_kind]]
            if len(items) > per_kind:
                lines.append(f"  ... and {len(items) - per_kind} more {kind}")
        return "\n".join(lines)


def _v(value) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def _tp(tp: TopicPartition) -> str:
    return f"{tp[0]}/{tp[1]}"


def _ranges(offsets: list[int]) -> str:
    """Sorted offsets as "3, 7..12" (the first few runs)."""
    runs: list[list[int]] = []
    for o in offsets:
        if runs and o == runs[-1][1] + 1:
            runs[-1][1] = o
        else:
            runs.append([o, o])
    text = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in runs[:5])
    return text + (f" (and {len(runs) - 5} more runs)" if len(runs) > 5 else "")


class _Checker:
    def __init__(self, history: History, replica_logs: ReplicaLogs, committed_end, in_sync) -> None:
        self.history = history
        self.sends, self.events, self.hw_observations = history.snapshot()
        self.by_value = {s.value: s for s in self.sends}
        self.committed_end = dict(committed_end)
        self.in_sync = in_sync
        self.report = Report()
        # broker -> {offset: (value, epoch)}, per partition
        self.replicas: dict[TopicPartition, dict[int, dict[int, tuple[Hashable, int]]]] = {}
        self.committed: dict[TopicPartition, list] = {}  # offset -> value (None: no replica holds it)
        self.position: dict[TopicPartition, dict[Hashable, int]] = {}  # value -> first committed offset
        self.strays: dict[Hashable, list[tuple[TopicPartition, int]]] = {}  # committed where not sent
        self._add_replicas(replica_logs)

    def add(self, kind: str, message: str, tp: TopicPartition | None = None) -> None:
        tp = tp or (None, None)
        self.report.anomalies.append(Anomaly(kind, message, tp[0], tp[1]))

    def at(self, t: float | None) -> str:
        return "t=?" if t is None else f"t=+{t - self.history.start:.3f}s"

    def _add_replicas(self, replica_logs: ReplicaLogs) -> None:
        for tp, brokers in replica_logs.items():
            tp = (tp[0], tp[1])
            self.replicas[tp] = {}
            for broker, log in brokers.items():
                entries: dict[int, tuple[Hashable, int]] = {}
                repeated = []
                for offset, value, epoch in log:
                    if offset in entries:
                        repeated.append(offset)
                    entries[offset] = (value, epoch)
                if repeated:
                    self.add(
                        "divergent-replicas",
                        f"{_tp(tp)}: replica {broker}'s log holds offsets {_ranges(sorted(set(repeated)))} more than once",
                        tp,
                    )
                self.replicas[tp][broker] = entries

    def run(self) -> Report:
        partitions = set(self.committed_end) | set(self.replicas) | {s.tp for s in self.sends}
        partitions |= {(e.topic, e.partition) for e in self.events}
        missing = sorted(tp for tp in partitions if tp not in self.committed_end)
        if missing:
            raise ValueError(f"no committed_end for {', '.join(map(_tp, missing))}")
        for tp in sorted(partitions):
            self._committed_log(tp)
        self._sends()
        self._unknown_values()
        self._send_order()
        self._polls()
        self._hw_regression()
        return self.report

    def _committed_log(self, tp: TopicPartition) -> None:
        end = self.committed_end[tp]
        brokers = self.replicas.get(tp, {})
        in_sync = None if self.in_sync is None else self.in_sync.get(tp)
        reference = sorted(brokers) if in_sync is None else sorted(in_sync)
        logs = [(b, brokers.get(b, {})) for b in reference]
        committed: list = [None] * end
        lacking: dict[int, list[int]] = collections.defaultdict(list)
        nowhere: list[int] = []
        for offset in range(end):
            held = []
            for broker, log in logs:
                entry = log.get(offset)
                if entry is None:
                    if in_sync is not None:
                        lacking[broker].append(offset)
                else:
                    held.append((broker, entry))
            if not held:
                nowhere.append(offset)
                continue
            first = held[0][1]
            if any(entry != first for _, entry in held[1:]):
                versions = ", ".join(f"replica {b}: {_v(v)} (epoch {e})" for b, (v, e) in held)
                self.add("divergent-replicas", f"{_tp(tp)} offset {offset} (committed_end {end}): {versions}", tp)
                votes = collections.Counter(v for _, (v, _) in held)
                top = max(votes.values())
                committed[offset] = next(v for _, (v, _) in held if votes[v] == top)
            else:
                committed[offset] = first[0]
        if in_sync is not None:
            for broker, offsets in sorted(lacking.items()):
                self.add(
                    "divergent-replicas",
                    f"{_tp(tp)}: in-sync replica {broker} lacks committed offsets {_ranges(offsets)} "
                    f"(committed_end {end})" + ("" if broker in brokers else "; its log was not given"),
                    tp,
                )
        elif nowhere:
            self.add(
                "divergent-replicas",
                f"{_tp(tp)}: no replica holds committed offsets {_ranges(nowhere)} (committed_end {end})",
                tp,
            )
        position: dict[Hashable, int] = {}
        repeats: dict[Hashable, list[int]] = {}
        for offset, value in enumerate(committed):
            if value is None:
                continue
            self.report.committed += 1
            if value in position:
                repeats.setdefault(value, [position[value]]).append(offset)
            else:
                position[value] = offset
        for value, offsets in repeats.items():
            send = self.by_value.get(value)
            by = "" if send is None else f" (sent by {send.process}, op {send.op_id}, {send.status})"
            self.add(
                "duplicate-in-log",
                f"{_tp(tp)}: value {_v(value)}{by} is committed at offsets {', '.join(map(str, offsets))}",
                tp,
            )
        self.committed[tp] = committed
        self.position[tp] = position

    def _sends(self) -> None:
        report = self.report
        acked_at: dict[tuple[TopicPartition, int], Send] = {}
        lost: list[Send] = []
        for send in self.sends:
            tp = send.tp
            found = self.position.get(tp, {}).get(send.value)
            if send.status == OK:
                report.acknowledged += 1
                other = acked_at.setdefault((tp, send.offset), send)
                if other is not send:
                    self.add(
                        "duplicate-ack-offset",
                        f"{_tp(tp)} offset {send.offset}: acknowledged for {_v(other.value)} "
                        f"({other.process}, {self.at(other.t_done)}) and for {_v(send.value)} "
                        f"({send.process}, {self.at(send.t_done)})",
                        tp,
                    )
                committed = self.committed[tp]
                there = committed[send.offset] if 0 <= send.offset < len(committed) else None
                if found is None:
                    lost.append(send)
                elif there != send.value:  # (a value committed twice, once at its offset: duplicate-in-log)
                    self.add(
                        "ack-offset-mismatch",
                        f"{_tp(tp)}: value {_v(send.value)} acknowledged to {send.process} at offset {send.offset} "
                        f"({self.at(send.t_done)}) is committed at offset {found}"
                        + ("" if there is None else f"; offset {send.offset} holds {_v(there)}"),
                        tp,
                    )
            elif send.status == FAIL:
                report.failed += 1
                if found is not None:
                    self.add(
                        "failed-write-present",
                        f"{_tp(tp)}: value {_v(send.value)} reported failed to {send.process} ({send.error!r}, "
                        f"{self.at(send.t_done)}) is committed at offset {found}",
                        tp,
                    )
            else:
                report.indeterminate += 1
                report.unfinished += send.status == PENDING
                report.recovered_indeterminate += found is not None
        report.lost = len(lost)
        if not lost:
            return
        # where the lost values are, if anywhere: one pass over every replica's log
        wanted = {send.value: send for send in lost}
        seen: dict[Hashable, list[str]] = collections.defaultdict(list)
        for tp, brokers in self.replicas.items():
            for broker, entries in brokers.items():
                for offset, (value, epoch) in entries.items():
                    if value in wanted:
                        seen[value].append(f"replica {broker} of {_tp(tp)} at offset {offset} (epoch {epoch})")
        for send in lost:
            tp = send.tp
            committed = self.committed[tp]
            where = seen.get(send.value)
            there = committed[send.offset] if 0 <= send.offset < len(committed) else None
            self.add(
                "lost-write",
                f"{_tp(tp)}: value {_v(send.value)} acknowledged to {send.process} at offset {send.offset} "
                f"({self.at(send.t_done)}) is not in the committed log (committed_end {len(committed)})"
                + ("" if there is None else f"; offset {send.offset} holds {_v(there)}")
                + ("; it is on no replica" if not where else "; it is on " + ", ".join(sorted(where)[:5])),
                tp,
            )

    def _unknown_values(self) -> None:
        for tp, position in sorted(self.position.items()):
            for value, offset in position.items():
                send = self.by_value.get(value)
                if send is None:
                    self.add("unknown-value", f"{_tp(tp)} offset {offset}: value {_v(value)} was never sent", tp)
                elif send.tp != tp:
                    self.add(
                        "unknown-value",
                        f"{_tp(tp)} offset {offset}: value {_v(value)} was sent to {_tp(send.tp)} "
                        f"(by {send.process}, {send.status}), not to this partition",
                        tp,
                    )

    def _send_order(self) -> None:
        """nonmonotonic-send: per (process, partition), the highest offset acknowledged before each
        acknowledged send was invoked, compared with the offset it got."""
        steps = []
        for send in self.sends:
            if send.status == OK:
                steps.append((send.seq_invoke, False, send))
                steps.append((send.seq_done, True, send))
        steps.sort(key=lambda step: step[0])
        highest: dict[tuple, Send] = {}
        before: dict[int, Send] = {}
        for _, acked, send in steps:
            key = (send.process, send.tp)
            top = highest.get(key)
            if not acked:
                if top is not None:
                    before[send.op_id] = top
                continue
            earlier = before.get(send.op_id)
            if earlier is not None and send.offset < earlier.offset:
                self.add(
                    "nonmonotonic-send",
                    f"{_tp(send.tp)}: {send.process} had {_v(earlier.value)} acknowledged at offset {earlier.offset} "
                    f"({self.at(earlier.t_done)}), then sent {_v(send.value)} ({self.at(send.t_invoke)}), "
                    f"acknowledged at lower offset {send.offset}",
                    send.tp,
                )
            if top is None or send.offset > top.offset:
                highest[key] = send

    def _polls(self) -> None:
        last: dict[tuple, int] = {}  # (process, tp) -> last offset received (or seek offset - 1)
        for event in self.events:
            tp = (event.topic, event.partition)
            key = (event.process, tp)
            if event.what == RESET:
                last.pop(key, None)
                continue
            if event.what == SEEK:
                last[key] = event.offset - 1
                continue
            committed = self.committed[tp]
            end = len(committed)
            position = self.position[tp]
            hw = event.high_watermark
            for offset, value in event.records:
                self.report.polled += 1
                where = f"{_tp(tp)}: {event.process} polled {_v(value)} at offset {offset} ({self.at(event.t)})"
                previous = last.get(key)
                if previous is not None and offset <= previous:
                    self.add("nonmonotonic-poll", f"{where} after offset {previous}, with no reset between", tp)
                last[key] = offset
                past = []
                if hw is not None and offset >= hw:
                    past.append(f"the high watermark {hw} reported with it")
                if offset >= end:
                    past.append(f"the final committed_end {end}")
                if past:
                    self.add("read-past-hw", f"{where}: at or past {' and '.join(past)}", tp)
                if 0 <= offset < end and committed[offset] == value:
                    continue
                send = self.by_value.get(value)
                if send is None:
                    self.add("phantom-read", f"{where}: the value was never sent", tp)
                elif send.tp != tp:
                    self.add("phantom-read", f"{where}: the value was sent to {_tp(send.tp)}", tp)
                elif value in position:
                    self.add("phantom-read", f"{where}: the value is committed at offset {position[value]}", tp)
                elif 0 <= offset < end:
                    there = committed[offset]
                    self.add(
                        "phantom-read",
                        f"{where}: the value is not committed; offset {offset} holds "
                        + ("nothing" if there is None else _v(there)),
                        tp,
                    )
                # else: an uncommitted value above the committed end: read-past-hw, reported above

    def _hw_regression(self) -> None:
        highest: dict[TopicPartition, tuple[int, str]] = {}
        for t, topic, partition, broker, hw in self.hw_observations:
            tp = (topic, partition)
            if tp in self.committed_end and hw > highest.get(tp, (-1, ""))[0]:
                highest[tp] = (hw, f"broker {broker} reported it ({self.at(t)})")
        for event in self.events:
            tp = (event.topic, event.partition)
            if event.high_watermark is not None and event.high_watermark > highest.get(tp, (-1, ""))[0]:
                highest[tp] = (event.high_watermark, f"reported with a poll by {event.process} ({self.at(event.t)})")
        for tp, (hw, source) in sorted(highest.items()):
            if hw > self.committed_end[tp]:
                self.add(
                    "hw-regression",
                    f"{_tp(tp)}: high watermark {hw} ({source}) is above the final committed_end "
                    f"{self.committed_end[tp]}",
                    tp,
                )


def check(
    history: History,
    replica_logs: ReplicaLogs,
    committed_end: Mapping[TopicPartition, int],
    in_sync: Mapping[TopicPartition, set[int]] | None = None,
) -> Report:
    """Every anomaly of the run: `replica_logs[(topic, partition)][broker_id]` is that replica's whole
    log as [(offset, value, leader_epoch)]; `committed_end[(topic, partition)]` the final high
    watermark (records below it are committed); `in_sync` the in-sync replicas, if known. Raises
    ValueError for a partition with no committed_end."""
    return _Checker(history, replica_logs, committed_end, in_sync).run()
