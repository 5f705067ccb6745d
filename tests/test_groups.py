"""Consumer groups in-process: assignors, the coordinator on a manual clock, embedded consumers."""

from __future__ import annotations

import collections
import functools
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog import Engine
from tidelog.client.embedded_group import EmbeddedGroupConsumer
from tidelog.errors import (
    DiskFullError,
    GroupNotEmptyError,
    InvalidRequestError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    PartitionNotAssignedError,
    StaleGenerationError,
    UnknownGroupError,
    UnknownMemberError,
    UnknownTopicError,
)
from tidelog.groups.assignor import ASSIGNORS, range_assign, round_robin_assign, sticky_assign
from tidelog.groups.coordinator import GroupCoordinator

# -- assignors ------------------------------------------------------------------------------------

members_st = st.dictionaries(
    st.sampled_from("abcdefg"), st.sets(st.sampled_from(["t", "u", "v"]), min_size=1), min_size=1, max_size=6
)
partitions_st = st.fixed_dictionaries({"t": st.integers(1, 12), "u": st.integers(1, 5), "v": st.integers(1, 3)})


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
@given(members=members_st, partitions=partitions_st)
def test_every_subscribed_partition_goes_to_exactly_one_subscriber(name, members, partitions):
    out = ASSIGNORS[name](members, partitions)
    owned = [tp for tps in out.values() for tp in tps]
    expected = {(t, p) for subs in members.values() for t in subs for p in range(partitions[t])}
    assert sorted(owned) == sorted(expected)
    for m, tps in out.items():
        assert all(t in members[m] for t, _ in tps)
    assert ASSIGNORS[name](members, partitions) == out  # deterministic


@given(partitions=st.integers(1, 30), n=st.integers(1, 8))
def test_sticky_is_balanced_for_a_common_subscription(partitions, n):
    members = {f"m{i}": ["t"] for i in range(n)}
    counts = [len(v) for v in sticky_assign(members, {"t": partitions}).values()]
    assert max(counts) - min(counts) <= 1


@given(partitions=st.integers(2, 30), n=st.integers(2, 8))
def test_sticky_moves_only_what_a_new_member_must_take(partitions, n):
    before_members = {f"m{i}": ["t"] for i in range(n)}
    before = sticky_assign(before_members, {"t": partitions})
    after = sticky_assign({**before_members, "new": ["t"]}, {"t": partitions}, before)
    moved = sum(1 for m in before_members for tp in before[m] if tp not in after[m])
    assert moved == len(after["new"])  # every moved partition went to the newcomer, none reshuffled
    counts = [len(v) for v in after.values()]
    assert max(counts) - min(counts) <= 1


def test_range_and_round_robin_layouts():
    members = {"a": ["t"], "b": ["t"], "c": ["t"]}
    assert range_assign(members, {"t": 7})["a"] == [("t", 0), ("t", 1), ("t", 2)]
    assert round_robin_assign(members, {"t": 7})["a"] == [("t", 0), ("t", 3), ("t", 6)]


# -- coordinator ---------------------------------------------------------------------------------


@pytest.fixture
def engine(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("orders", 6)
        yield eng


@pytest.fixture
def coord(engine, clock):
    return GroupCoordinator(engine, clock=clock)


def beat(coord, group, state, owned=None):
    """Heartbeat reporting the grant as consumed (what a well-behaved member does)."""
    return coord.heartbeat(group, state.member_id, state.generation, state.assignment if owned is None else owned)


def test_a_partition_is_never_granted_to_two_members_at_once(coord):
    a = coord.join("g", ["orders"])
    assert len(a.assignment) == 6
    a = beat(coord, "g", a)
    b = coord.join("g", ["orders"])
    assert b.assignment == []  # a still holds everything until it reports releasing
    with pytest.raises(StaleGenerationError):
        beat(coord, "g", a)
    a = coord.join("g", ["orders"], member_id=a.member_id, owned=a.assignment)
    assert len(a.assignment) == 3  # told to keep three; it still consumes six until its next heartbeat
    b = beat(coord, "g", b, owned=[])
    assert b.assignment == []
    a = beat(coord, "g", a)  # now reports only its three
    b = beat(coord, "g", b, owned=[])
    assert len(b.assignment) == 3 and not set(a.assignment) & set(b.assignment)


def test_a_member_that_stops_heartbeating_is_removed_after_its_session_timeout(coord, clock):
    a = coord.join("g", ["orders"], session_timeout_ms=1000)
    b = coord.join("g", ["orders"], session_timeout_ms=1000)
    a = coord.join("g", ["orders"], member_id=a.member_id, owned=[])
    clock.advance(600)
    a = beat(coord, "g", a)
    clock.advance(600)  # b has been silent for 1200 ms
    assert coord.expire() == [b.member_id]
    with pytest.raises(StaleGenerationError):
        beat(coord, "g", a)
    a = coord.join("g", ["orders"], member_id=a.member_id, owned=a.assignment)
    assert len(a.assignment) == 6
    with pytest.raises(UnknownMemberError):
        coord.heartbeat("g", b.member_id, b.generation, [])
    with pytest.raises(UnknownMemberError):
        coord.commit("g", b.member_id, b.generation, {("orders", 0): 0})


def test_commits_are_fenced_by_generation_member_and_ownership(coord, engine):
    engine.produce("orders", [b"x"] * 5, partition=0)
    a = beat(coord, "g", coord.join("g", ["orders"]))
    coord.commit("g", a.member_id, a.generation, {("orders", 0): 3})
    assert coord.committed("g") == {("orders", 0): 3}
    b = coord.join("g", ["orders"])  # new generation
    with pytest.raises(StaleGenerationError):
        coord.commit("g", a.member_id, a.generation, {("orders", 0): 4})
    with pytest.raises(PartitionNotAssignedError):
        coord.commit("g", b.member_id, b.generation, {("orders", 0): 5})
    with pytest.raises(OffsetOutOfRangeError):
        a2 = coord.join("g", ["orders"], member_id=a.member_id, owned=a.assignment)
        coord.commit("g", a.member_id, a2.generation, {("orders", 0): 99})
    assert coord.committed("g") == {("orders", 0): 3}


def test_committed_offsets_survive_reopening_the_engine(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("orders", 2)
        eng.produce("orders", [b"x"] * 9, partition=1)
        coord = GroupCoordinator(eng, clock=clock)
        a = coord.join("g", ["orders"])
        coord.commit("g", a.member_id, a.generation, {("orders", 1): 7})
    with Engine.open(data_dir, clock=clock) as eng:
        assert GroupCoordinator(eng, clock=clock).committed("g") == {("orders", 1): 7}
        assert "__consumer_offsets" not in eng.list_topics()


def test_describe_reports_members_and_lag_in_records_and_time(coord, engine, clock):
    engine.produce("orders", [b"a", b"b", b"c", b"d"], partition=2)
    clock.advance(5000)
    a = beat(coord, "g", coord.join("g", ["orders"], client_id="billing-1"))
    coord.commit("g", a.member_id, a.generation, {("orders", 2): 1})
    info = coord.describe("g")
    assert info["state"] == "stable" and len(info["members"]) == 1
    assert info["members"][0]["client_id"] == "billing-1"
    p2 = next(p for p in info["partitions"] if p["partition"] == 2)
    assert (p2["committed"], p2["end"], p2["lag"]) == (1, 4, 3)
    assert p2["time_lag_ms"] == 5000
    assert p2["owner"] == a.member_id
    with pytest.raises(UnknownGroupError):
        coord.describe("nobody")


def test_reset_and_delete_need_a_group_without_members(coord, engine):
    engine.produce("orders", [b"x"] * 4, partition=0)
    a = beat(coord, "g", coord.join("g", ["orders"]))
    with pytest.raises(GroupNotEmptyError):
        coord.reset_offsets("g", "orders", "earliest")
    with pytest.raises(GroupNotEmptyError):
        coord.delete_group("g")
    coord.leave("g", a.member_id)
    assert coord.reset_offsets("g", "orders", "latest")[("orders", 0)] == 4
    assert coord.reset_offsets("g", "orders", 99)[("orders", 0)] == 4  # clamped into the log
    assert coord.reset_offsets("g", "orders", "earliest", partitions=[0]) == {("orders", 0): 0}
    coord.delete_group("g")
    assert coord.list_groups() == []
    with pytest.raises(UnknownGroupError):
        coord.delete_group("g")


@pytest.mark.parametrize("timestamp_ms", [-1, -2, -1000, None])
def test_reset_to_a_negative_or_missing_timestamp_is_refused(coord, engine, timestamp_ms):
    engine.produce("orders", [b"x"] * 4, partition=0)
    coord.reset_offsets("g", "orders", 2, partitions=[0])
    with pytest.raises(InvalidRequestError, match="timestamp_ms"):
        coord.reset_offsets("g", "orders", "timestamp", timestamp_ms=timestamp_ms)
    assert coord.committed("g") == {("orders", 0): 2}


def test_joining_an_unknown_topic_is_refused(coord):
    with pytest.raises(UnknownTopicError):
        coord.join("g", ["nope"])


# -- embedded consumers --------------------------------------------------------------------------


def consume_all(consumers, expected, seconds=20.0):
    seen = collections.defaultdict(list)
    lock = threading.Lock()
    done = threading.Event()

    def run(c):
        while not done.is_set():
            records = c.poll(0.05)
            with lock:
                for r in records:
                    seen[(r.topic, r.partition)].append((r.offset, id(c)))
                if sum(len(v) for v in seen.values()) >= expected:
                    done.set()
            c.commit()

    threads = [threading.Thread(target=run, args=(c,)) for c in consumers]
    for t in threads:
        t.start()
    done.wait(seconds)
    done.set()
    for t in threads:
        t.join(30)
    return seen


def test_three_embedded_consumers_share_six_partitions_each_record_once_in_order(engine, coord):
    consumers = [EmbeddedGroupConsumer(coord, "billing", ["orders"], auto_commit=False) for _ in range(3)]
    for c in consumers * 2:
        c.heartbeat_now()
    for c in consumers:
        c.poll(0)
    for c in consumers:
        c.heartbeat_now()
    assert sorted(tp for c in consumers for tp in c._granted) == [("orders", p) for p in range(6)]
    for i in range(600):
        engine.produce("orders", [b"%d" % i], keys=[b"k%d" % i])
    seen = consume_all(consumers, 600)
    assert sum(len(v) for v in seen.values()) == 600
    for tp, items in seen.items():
        offsets = [o for o, _ in items]
        assert offsets == list(range(len(offsets)))  # once each, in order
        assert len({who for _, who in items}) == 1  # one owner per partition
    for c in consumers:
        c.close()


def test_two_groups_each_receive_every_record(engine, coord):
    for i in range(120):
        engine.produce("orders", [b"%d" % i], partition=i % 6)
    a = [EmbeddedGroupConsumer(coord, "ga", ["orders"], auto_commit=False)]
    b = [EmbeddedGroupConsumer(coord, "gb", ["orders"], auto_commit=False) for _ in range(2)]
    seen_a = consume_all(a, 120)
    seen_b = consume_all(b, 120)
    assert sum(len(v) for v in seen_a.values()) == 120
    assert sum(len(v) for v in seen_b.values()) >= 120
    assert {tp: sorted({o for o, _ in v}) for tp, v in seen_b.items()} == {
        tp: sorted({o for o, _ in v}) for tp, v in seen_a.items()
    }
    for c in a + b:
        c.close()


def test_callbacks_hear_assignments_and_revocations(engine, coord):
    events = []
    first = EmbeddedGroupConsumer(
        coord,
        "g",
        ["orders"],
        auto_commit=False,
        on_assign=lambda tps: events.append(("assign", len(tps))),
        on_revoke=lambda tps: events.append(("revoke", len(tps))),
    )
    first.poll(0)
    second = EmbeddedGroupConsumer(coord, "g", ["orders"], auto_commit=False)
    first.heartbeat_now()
    first.poll(0)
    assert events == [("assign", 6), ("revoke", 3)]
    first.close()
    second.close()
    assert events[-1] == ("revoke", 3)


def test_a_restarted_member_resumes_from_the_committed_offset(engine, coord):
    for i in range(10):
        engine.produce("orders", [b"%d" % i], partition=0)
    c = EmbeddedGroupConsumer(coord, "g", ["orders"], auto_commit=False)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 10 and time.monotonic() < deadline:
        got += [r for r in c.poll(0.1) if r.partition == 0]
    c.commit({("orders", 0): 6})
    c.close()
    again = EmbeddedGroupConsumer(coord, "g", ["orders"], auto_commit=False)
    more = []
    deadline = time.monotonic() + 10
    while len(more) < 4 and time.monotonic() < deadline:
        more += [r for r in again.poll(0.1) if r.partition == 0]
    assert [r.offset for r in more] == [6, 7, 8, 9]
    again.close()


def test_the_offsets_topic_is_compacted_and_replays_to_the_same_state(data_dir, clock):
    from tidelog.groups.offset_store import OFFSETS_TOPIC, OffsetStore

    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("orders", 4)
        eng.produce("orders", [b"x"] * 100, partition=0)
        eng.create_topic(OFFSETS_TOPIC, 1, segment_bytes=16 * 1024, retention_ms=-1, internal=True)  # small segments
        store = OffsetStore(eng)
        store.compact_min_records = 50
        for i in range(3000):  # many commits of few keys
            store.commit("g", {("orders", 0): i % 100, ("orders", 1): 0})
            if i % 500 == 0:
                store.commit("h", {("orders", 2): 0})
        store.delete("h")
        expected = store.fetch("g")
        offsets = eng.list_offsets(OFFSETS_TOPIC, 0)
        assert offsets.log_start > 0  # old segments went
        assert offsets.log_end - offsets.log_start < 3000
    with Engine.open(data_dir, clock=clock) as eng:
        again = OffsetStore(eng)
        assert again.fetch("g") == expected
        assert again.groups() == ["g"]


def test_internal_topics_cannot_be_consumed_committed_or_reset_by_a_group(coord, engine):
    from tidelog.groups.offset_store import OFFSETS_TOPIC

    a = beat(coord, "g", coord.join("g", ["orders"]))
    with pytest.raises(InvalidTopicError, match="internal"):
        coord.join("h", [OFFSETS_TOPIC])
    with pytest.raises(InvalidTopicError, match="internal"):
        coord.commit("g", a.member_id, a.generation, {(OFFSETS_TOPIC, 0): 0})
    with pytest.raises(InvalidTopicError, match="internal"):
        coord.commit("nobody", None, 0, {(OFFSETS_TOPIC, 0): 0})
    with pytest.raises(InvalidTopicError, match="internal"):
        coord.reset_offsets("nobody", OFFSETS_TOPIC, "earliest")
    assert coord.committed("g") == {} and coord.committed("nobody") == {}


def test_replay_skips_malformed_group_records_counts_and_logs_each_once(data_dir, clock, caplog):
    from tidelog.groups.offset_store import OFFSETS_TOPIC, OffsetStore

    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("orders", 2)
        eng.produce("orders", [b"x"] * 9, partition=0)
        eng.produce("orders", [b"x"] * 9, partition=1)
        coord = GroupCoordinator(eng, clock=clock)
        a = coord.join("g", ["orders"])
        coord.commit("g", a.member_id, a.generation, {("orders", 0): 0, ("orders", 1): 4})
        bad = [b"not json", b'["g", "orders"]', b'{"membership": "g"}', b'["g", "orders", 1]']
        values = [b"{}", b'{"offset": 1}', b'{"generation": "one"}', b'{"offset": -5}']
        written = eng.produce(OFFSETS_TOPIC, values, keys=bad, partition=0, internal=True)[0]
        coord.commit("g", a.member_id, a.generation, {("orders", 0): 7})
    caplog.set_level("WARNING", logger="tidelog.groups")
    with Engine.open(data_dir, clock=clock) as eng:
        store = OffsetStore(eng)
        assert store.malformed == 4
        assert {tp: c.offset for tp, c in store.fetch("g").items()} == {("orders", 0): 7, ("orders", 1): 4}
        assert list(store.memberships()) == ["g"]  # the good membership record before the bad one
        warnings = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
        assert len(warnings) == 4
        for offset, message in zip(range(written.base_offset, written.last_offset + 1), warnings):
            assert f"at offset {offset}" in message and "tidelog check" in message


# -- ownership: a member delivers only what it holds, and only while its lease runs ------------------


def drain(consumer, n, seconds=10.0):
    got = []
    deadline = time.monotonic() + seconds
    while len(got) < n and time.monotonic() < deadline:
        got += consumer.poll(0.05)
    return got


LONG_SESSION_MS = 30_000  # the heartbeat thread waits 10 real seconds: only the test moves the clock


def test_a_member_whose_lease_ran_out_delivers_nothing_until_a_heartbeat_renews_it(engine, coord, clock):
    engine.produce("orders", [b"%d" % i for i in range(5)], partition=0)
    c = EmbeddedGroupConsumer(coord, "g", ["orders"], auto_commit=False, session_timeout_ms=LONG_SESSION_MS)
    got = drain(c, 5)
    engine.produce("orders", [b"%d" % i for i in range(5, 10)], partition=0)
    clock.advance(LONG_SESSION_MS - 1000)  # past the lease (90% of the session), not past the session
    assert c.lease_remaining_s() == 0
    assert c.poll(0.3) == []
    c.heartbeat_now()
    assert c.lease_remaining_s() > 0
    more = drain(c, 5)
    assert [r.offset for r in got + more] == list(range(10))  # held back, not skipped


def test_an_expired_member_stops_delivering_before_it_hears_so_then_loses_everything_and_rejoins(engine, coord, clock):
    for p in range(6):
        engine.produce("orders", [b"a", b"b"], partition=p)
    events = []
    a = EmbeddedGroupConsumer(
        coord,
        "g",
        ["orders"],
        auto_commit=False,
        session_timeout_ms=LONG_SESSION_MS,
        on_assign=lambda tps: events.append(("assign", len(tps))),
        on_revoke=lambda tps: events.append(("revoke", len(tps))),
        on_lost=lambda tps: events.append(("lost", len(tps))),
    )
    assert len(drain(a, 12)) == 12
    for p in range(6):
        engine.produce("orders", [b"c"], partition=p)
    clock.advance(LONG_SESSION_MS + 1000)  # a was paused past its session
    b = EmbeddedGroupConsumer(coord, "g", ["orders"], auto_commit=False, session_timeout_ms=LONG_SESSION_MS)
    assert len(b._granted) == 6  # a expired: b holds everything
    assert a.poll(0.3) == []  # a has not heard yet, but its lease ran out
    a.heartbeat_now()  # unknown member: everything is lost, it rejoins owning nothing
    assert a.poll(0.3) == []
    assert events == [("assign", 6), ("lost", 6)]
    assert a.assignment() == [] and a.member_id != b.member_id
    with pytest.raises(PartitionNotAssignedError):  # committing what it lost is refused
        a.commit({("orders", 0): 3})
    assert sorted((r.partition, r.offset) for r in drain(b, 18)) == [(p, o) for p in range(6) for o in range(3)]
    a.close()
    b.close()


def test_a_lost_partition_goes_to_on_revoke_when_there_is_no_on_lost(engine, coord, clock):
    revoked = []
    a = EmbeddedGroupConsumer(
        coord, "g", ["orders"], auto_commit=False, session_timeout_ms=LONG_SESSION_MS, on_revoke=revoked.append
    )
    a.poll(0)
    clock.advance(LONG_SESSION_MS + 1000)
    coord.expire()
    a.heartbeat_now()
    a.poll(0)
    assert revoked == [[("orders", p) for p in range(6)]]
    a.close()


def test_a_member_reports_its_grant_as_held_even_before_it_opens_it(engine, coord):
    """The grant's readers may open while a heartbeat is in flight: the report must cover them."""

    class OpensDuringJoin(EmbeddedGroupConsumer):
        race = False

        def _join(self, member_id, owned):
            if self.race:  # the caller's poll() runs between the report and the coordinator's answer
                self._rebalance_readers()
            return super()._join(member_id, owned)

    a = OpensDuringJoin(coord, "g", ["orders"], auto_commit=False, session_timeout_ms=LONG_SESSION_MS)
    b = EmbeddedGroupConsumer(coord, "g", ["orders"], auto_commit=False, session_timeout_ms=LONG_SESSION_MS)
    a.race = True
    a.heartbeat_now()  # stale generation: rejoins; its readers of all six open meanwhile
    a.race = False
    for step in range(4):
        b.heartbeat_now()
        assert not set(a.assignment()) & set(b._granted), f"step {step}: a partition with two owners"
        a.poll(0)
        a.heartbeat_now()
    assert len(a.assignment()) == 3 and len(b._granted) == 3
    a.close()
    b.close()


def test_membership_survives_a_broker_restart_and_its_members_keep_their_partitions(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("orders", 6)
        coord = GroupCoordinator(eng, clock=clock)
        a = beat(coord, "g", coord.join("g", ["orders"], session_timeout_ms=5000))
        assert len(a.assignment) == 6
    clock.advance(60_000)  # the broker was down for a minute: sessions start afresh when it is back
    with Engine.open(data_dir, clock=clock) as eng:
        coord = GroupCoordinator(eng, clock=clock)
        again = beat(coord, "g", a)  # a goes on with its id and generation: no rebalance
        assert (again.generation, again.assignment) == (a.generation, a.assignment)
        b = coord.join("g", ["orders"], session_timeout_ms=5000)
        assert b.assignment == []  # a may still be consuming all six
        clock.advance(4000)
        a = coord.join("g", ["orders"], session_timeout_ms=5000, member_id=a.member_id, owned=a.assignment)
        b = beat(coord, "g", b, owned=[])
        assert len(a.assignment) == 3 and b.assignment == []  # a still holds them until it reports otherwise
        a = beat(coord, "g", a)
        b = beat(coord, "g", b)
        assert len(b.assignment) == 3 and not set(a.assignment) & set(b.assignment)
        assert coord.describe("g")["generation"] == b.generation


def test_a_member_restored_after_a_restart_expires_one_session_after_the_start(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("orders", 6)
        coord = GroupCoordinator(eng, clock=clock)
        gone = beat(coord, "g", coord.join("g", ["orders"], session_timeout_ms=5000))
    with Engine.open(data_dir, clock=clock) as eng:
        coord = GroupCoordinator(eng, clock=clock)
        b = coord.join("g", ["orders"], session_timeout_ms=5000)
        clock.advance(4000)
        b = beat(coord, "g", b)
        assert b.assignment == []
        clock.advance(1500)  # the restored member never came back
        assert coord.expire() == [gone.member_id]
        b = beat(coord, "g", coord.join("g", ["orders"], session_timeout_ms=5000, member_id=b.member_id))
        assert len(b.assignment) == 6
        with pytest.raises(UnknownMemberError):
            coord.heartbeat("g", gone.member_id, gone.generation, gone.assignment)


def test_a_grant_is_stored_before_it_is_returned(coord, monkeypatch):
    def disk_full(group, state):
        raise DiskFullError("no space left on device")

    monkeypatch.setattr(coord.offsets, "save_membership", disk_full)
    with pytest.raises(DiskFullError):
        coord.join("g", ["orders"])


def test_a_jump_of_the_wall_clock_does_not_expire_a_member(data_dir, monkeypatch):
    with Engine.open(data_dir) as eng:  # the default clocks
        eng.create_topic("orders", 2)
        coord = GroupCoordinator(eng)
        a = coord.join("g", ["orders"], session_timeout_ms=10_000)
        wall_ns = time.time_ns
        monkeypatch.setattr(time, "time_ns", lambda: wall_ns() + 3600 * 10**9)  # NTP steps an hour ahead
        monkeypatch.setattr(time, "time", lambda: wall_ns() / 1e9 + 3600)
        assert coord.expire() == []
        assert coord.heartbeat("g", a.member_id, a.generation, a.assignment).assignment == a.assignment


# -- what commit() covers: the position, i.e. what the application was given ------------------------


def test_iterating_moves_the_position_record_by_record_and_commit_covers_only_what_the_loop_got(engine, coord):
    engine.produce("orders", [b"%d" % i for i in range(100)], partition=0)
    c = EmbeddedGroupConsumer(coord, "g", ["orders"], auto_commit=False)
    loop = iter(c)
    got = [next(loop) for _ in range(3)]  # one fetch brought in all 100
    c.commit()
    assert [r.offset for r in got] == [0, 1, 2] and coord.committed("g") == {("orders", 0): 3}
    rest = drain(c, 97)  # poll() goes on where the loop stopped: nothing skipped, nothing twice
    assert [r.offset for r in rest] == list(range(3, 100))
    c.close()


def test_poll_returns_at_most_max_poll_records_and_keeps_the_rest_in_order(engine, coord):
    for p in range(6):
        engine.produce("orders", [b"%d" % i for i in range(50)], partition=p)
    c = EmbeddedGroupConsumer(coord, "g", ["orders"], auto_commit=False, max_poll_records=7)
    polls = []
    deadline = time.monotonic() + 20
    while sum(map(len, polls)) < 300 and time.monotonic() < deadline:
        polls.append(c.poll(0.05))
        c.commit()
        assert coord.committed("g") == {tp: o for tp, o in c._positions.items() if o}  # only what was returned
    assert max(map(len, polls)) == 7
    by_partition = collections.defaultdict(list)
    for r in (r for batch in polls for r in batch):
        by_partition[r.partition].append(r.offset)
    assert by_partition == {p: list(range(50)) for p in range(6)}
    c.close()


@pytest.mark.parametrize(
    "options", [{"max_poll_records": 0}, {"max_poll_interval_ms": 0}, {"auto_offset_reset": "nearest"}]
)
def test_consumer_options_are_checked(engine, coord, options):
    with pytest.raises(ValueError):
        EmbeddedGroupConsumer(coord, "g", ["orders"], **options)


# -- a busy member: initial rebalance delay, poll interval ----------------------------------------------


def test_a_new_group_waits_the_initial_rebalance_delay_so_that_members_starting_together_share(engine, clock):
    coord = GroupCoordinator(engine, clock=clock, initial_rebalance_delay_ms=3000)
    a = coord.join("g", ["orders"])
    assert a.assignment == [] and a.heartbeat_interval_ms == 3000  # come back when the wait is over
    clock.advance(2000)
    b = coord.join("g", ["orders"])  # restarts the wait
    clock.advance(2500)  # past a's 3 s, not past b's
    a = coord.join("g", ["orders"], member_id=a.member_id, owned=[])
    assert a.assignment == [] and a.heartbeat_interval_ms == 500
    clock.advance(500)
    a, b = beat(coord, "g", a), beat(coord, "g", b)
    assert len(a.assignment) == 3 and len(b.assignment) == 3 and not set(a.assignment) & set(b.assignment)
    c = coord.join("g", ["orders"])  # the group has members: no wait, the usual hand-over
    a = coord.join("g", ["orders"], member_id=a.member_id, owned=a.assignment)
    b = coord.join("g", ["orders"], member_id=b.member_id, owned=b.assignment)
    a, b, c = beat(coord, "g", a), beat(coord, "g", b), beat(coord, "g", c)
    assert sorted(len(s.assignment) for s in (a, b, c)) == [2, 2, 2]


def test_joins_postpone_a_new_groups_first_assignment_at_most_ten_delays(engine, clock):
    coord = GroupCoordinator(engine, clock=clock, initial_rebalance_delay_ms=1000)
    join = functools.partial(coord.join, "g", ["orders"], session_timeout_ms=60_000)
    states = [join()]
    for _ in range(11):  # a member every 900 ms would postpone it forever
        clock.advance(900)
        states.append(join())
    first = join(member_id=states[0].member_id, owned=[])
    assert first.assignment == [] and first.heartbeat_interval_ms == 100  # 10 delays after the first join
    clock.advance(900)
    states.append(join())  # no longer postpones anything
    states = [join(member_id=s.member_id, owned=[]) for s in states]
    assert sorted(tp for s in states for tp in s.assignment) == [("orders", p) for p in range(6)]


def test_a_member_that_does_not_poll_within_max_poll_interval_leaves_then_rejoins_at_its_next_poll(engine, coord):
    engine.produce("orders", [b"x"] * 6, partition=0)
    lost = []
    c = EmbeddedGroupConsumer(
        coord,
        "g",
        ["orders"],
        auto_commit=False,
        max_poll_interval_ms=200,
        session_timeout_ms=LONG_SESSION_MS,
        on_lost=lost.append,
    )
    first_member = c.member_id
    assert len(drain(c, 6)) == 6
    deadline = time.monotonic() + 20  # the application is away; the heartbeat thread leaves for it
    while "g" in coord.list_groups() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "g" not in coord.list_groups()  # no members (and nothing committed)
    with pytest.raises(UnknownMemberError, match="max_poll_interval_ms=200"):
        c.commit()
    again = drain(c, 6)  # back: on_lost for everything it held, and a new membership
    assert lost == [[("orders", p) for p in range(6)]]
    assert c.member_id != first_member and [m["member_id"] for m in coord.describe("g")["members"]] == [c.member_id]
    assert [r.offset for r in again] == list(range(6))  # nothing was committed: all of it again
    c.close()


# -- committed offsets that do not fit the log: a recreated topic, retention --------------------------


def test_deleting_a_topic_deletes_every_groups_offsets_of_it_durably(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("orders", 2)
        eng.create_topic("other", 1)
        eng.produce("orders", [b"a", b"b", b"c"], partition=0)
        eng.produce("other", [b"a"], partition=0)
        coord = GroupCoordinator(eng, clock=clock)
        coord.commit("billing", None, 0, {("orders", 0): 3, ("other", 0): 1})
        coord.commit("audit", None, 0, {("orders", 0): 2})
        eng.delete_topic("orders")
        eng.create_topic("orders", 2)
        eng.produce("orders", [b"x1"], partition=0)
        assert coord.committed("billing") == {("other", 0): 1} and coord.committed("audit") == {}
    with Engine.open(data_dir, clock=clock) as eng:  # the replay of __consumer_offsets forgets them too
        coord = GroupCoordinator(eng, clock=clock)
        assert coord.committed("billing") == {("other", 0): 1} and coord.committed("audit") == {}
        c = EmbeddedGroupConsumer(coord, "billing", ["orders"], auto_commit=False)
        eng.produce("orders", [b"x2"], partition=0)
        assert [r.value for r in drain(c, 2)] == [b"x1", b"x2"]  # from the new log's start
        c.close()


def test_offsets_of_a_topic_deleted_behind_the_coordinators_back_are_deleted_at_its_start(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("orders", 1)
        eng.produce("orders", [b"a", b"b", b"c"], partition=0)
        GroupCoordinator(eng, clock=clock).commit("billing", None, 0, {("orders", 0): 3})
    with Engine.open(data_dir, clock=clock) as eng:  # e.g. the broker stopped before it wrote the tombstones
        eng.delete_topic("orders")
    with Engine.open(data_dir, clock=clock) as eng:
        assert GroupCoordinator(eng, clock=clock).committed("billing") == {}
        eng.create_topic("orders", 1)
    with Engine.open(data_dir, clock=clock) as eng:
        assert GroupCoordinator(eng, clock=clock).committed("billing") == {}


def out_of_range_warnings(caplog) -> list:
    return [r for r in caplog.records if getattr(r, "event", None) == "offset_out_of_range"]


@pytest.mark.parametrize("policy, expected", [("earliest", [b"x1", b"x2", b"x3"]), ("latest", [b"x3"])])
def test_a_commit_past_the_log_end_is_reset_per_auto_offset_reset_with_a_warning(
    engine, coord, caplog, policy, expected
):
    engine.create_topic("single", 1)
    engine.produce("single", [b"x1", b"x2"], partition=0)
    coord.offsets.commit("g", {("single", 0): 3})  # an offset of an older, longer log
    caplog.set_level("WARNING", logger="tidelog.groups")
    c = EmbeddedGroupConsumer(coord, "g", ["single"], auto_commit=False, auto_offset_reset=policy)
    got = drain(c, 2, seconds=2.0)
    engine.produce("single", [b"x3"], partition=0)
    got += drain(c, 1)
    assert [r.value for r in got] == expected
    [warning] = out_of_range_warnings(caplog)
    assert (warning.group, warning.topic, warning.partition, warning.offset, warning.log_start, warning.log_end) == (
        "g",
        "single",
        0,
        3,
        0,
        2,
    )
    message = warning.getMessage()
    assert "group g" in message and "committed offset 3 of single[0]" in message and "0 to 2" in message
    assert policy in message
    c.commit()
    assert coord.committed("g") == {("single", 0): 3}  # the next offset after x3, on the new log
    c.close()


def test_a_commit_before_the_log_start_is_reset_with_a_warning(engine, coord, caplog):
    engine.create_topic("single", 1, segment_bytes=4096)
    for i in range(6):  # one record per segment
        engine.produce("single", [b"%d" % i + b"." * 3000], partition=0)
    coord.offsets.commit("g", {("single", 0): 1})
    engine.delete_records("single", 0, 4)  # retention moved the start past the commit
    caplog.set_level("WARNING", logger="tidelog.groups")
    c = EmbeddedGroupConsumer(coord, "g", ["single"], auto_commit=False, auto_offset_reset="earliest")
    assert [r.offset for r in drain(c, 2)] == [4, 5]
    [warning] = out_of_range_warnings(caplog)
    assert (warning.offset, warning.log_start, warning.log_end, warning.to) == (1, 4, 6, 4)
    c.close()


def test_with_auto_offset_reset_none_an_offset_outside_the_log_is_an_error_for_the_application(engine, coord, caplog):
    engine.create_topic("single", 1)
    engine.produce("single", [b"x1"], partition=0)
    caplog.set_level("WARNING", logger="tidelog.groups")
    c = EmbeddedGroupConsumer(coord, "g", ["single"], auto_commit=False, auto_offset_reset="none")
    with pytest.raises(OffsetOutOfRangeError, match="no committed offset for single"):
        c.poll(0.1)
    c.close()
    coord.offsets.commit("g", {("single", 0): 3})
    c = EmbeddedGroupConsumer(coord, "g", ["single"], auto_commit=False, auto_offset_reset="none")
    for _ in range(2):  # every poll says so until the offsets are reset (nothing is skipped meanwhile)
        with pytest.raises(OffsetOutOfRangeError, match=r"committed offset 3 of single\[0\] is out of range") as info:
            drain(c, 1)
        assert (info.value.log_start, info.value.log_end) == (0, 1)
    assert len(out_of_range_warnings(caplog)) >= 1
    c.close()
    assert coord.committed("g") == {("single", 0): 3}


def test_commit_async_runs_on_one_worker_in_the_order_asked_and_close_waits_for_it(engine, coord):
    """A commit held up (a slow broker) must not be overtaken by a later one: the committed offset would
    move back. And a loop of commit_async() calls costs one thread, not one each."""
    tp = ("orders", 0)
    for _ in range(80):
        engine.produce("orders", [b"x"], partition=0)
    consumer = EmbeddedGroupConsumer(coord, "async", ["orders"], auto_commit=False)
    consumer.heartbeat_now()
    consumer.poll(0)  # applies the grant
    assert tp in consumer.assignment()
    release, calls, done = threading.Event(), [], []
    transport = consumer._commit

    def held_first(member_id, generation, offsets):
        calls.append(dict(offsets))
        if len(calls) == 1:
            assert release.wait(30)
        transport(member_id, generation, offsets)

    consumer._commit = held_first
    futures = [consumer.commit_async({tp: 10 + i}, callback=done.append) for i in range(50)]
    workers = [t for t in threading.enumerate() if t.name.startswith("tidelog-commit")]
    assert len(workers) == 1
    assert len(calls) <= 1  # the later commits wait behind the held one
    release.set()
    for future in futures:
        assert future.result(timeout=30) is None
    assert [c[tp] for c in calls] == list(range(10, 60))
    assert done == [None] * 50
    assert coord.committed("async") == {tp: 59}
    consumer._commit = transport
    consumer.commit_async({tp: 70})
    consumer.close()  # waits for the pending commit before it leaves
    assert coord.committed("async") == {tp: 70}
