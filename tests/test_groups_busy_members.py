"""A busy member does not hold a rebalance up (issue 12, defect 11).

Three workers on six partitions: the first took all six and was working through one large poll when
the others joined, and they waited for its session to expire. Now a member iterating records gives up
revoked partitions between two records; one that does not come back within max_poll_interval_ms
leaves the group; and members starting together share from the start (the broker's
group_initial_rebalance_delay_ms). The assertions are about ownership, never about time: the busy
member is still inside its handler, blocked on an Event the test controls, when the others have
already received records of the partitions they own.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest

from tidelog.client import Admin, Consumer, Producer
from tidelog.errors import UnknownGroupError, UnknownMemberError

from .server_process import ServerProcess, config_file

PARTITIONS = 6
PER_PARTITION = 100
TIMEOUT_S = 60.0  # generous: only a broken build waits this long


@pytest.fixture
def server(tmp_path):
    """A broker whose new groups wait 200 ms for their first assignment: a member alone takes all six."""
    srv = ServerProcess(str(tmp_path / "data"), "--config", config_file(tmp_path)).start()
    yield srv
    srv.stop()


@pytest.fixture
def default_server(tmp_path):
    """A broker on the default group_initial_rebalance_delay_ms (3 s)."""
    srv = ServerProcess(str(tmp_path / "data")).start()
    yield srv
    srv.stop()


def produce(target: str, per_partition: int) -> None:
    with Producer(target, linger_ms=5) as producer:
        for i in range(per_partition * PARTITIONS):
            producer.send("orders", b"%d" % i, partition=i % PARTITIONS)


def wait_until(predicate, what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def member_of(admin: Admin, member_id: str) -> dict | None:
    try:
        info = admin.describe_group("workers")
    except UnknownGroupError:
        return None
    return next((m for m in info["members"] if m["member_id"] == member_id), None)


class Poller:
    """A member that polls in its own thread and keeps what it received, with the assignment it had then."""

    def __init__(self, target: str, **options) -> None:
        self.consumer = Consumer(target, group_id="workers", topics=["orders"], auto_commit=False, **options)
        self.records: list = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.records += self.consumer.poll(0.1)
                self.consumer.commit()
        finally:
            self.consumer.close()

    def partitions(self) -> set[int]:
        return {r.partition for r in self.records}

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def test_a_member_busy_in_a_large_poll_gives_up_revoked_partitions_between_records(server):
    with Admin(server.target) as admin:
        admin.create_topic("orders", PARTITIONS)
    produce(server.target, PER_PARTITION)
    revoked: list[list] = []
    handled = []
    in_handler = [threading.Event(), threading.Event()]
    release = [threading.Event(), threading.Event()]

    busy = Consumer(
        server.target,
        group_id="workers",
        topics=["orders"],
        auto_commit=False,
        on_revoke=lambda tps: (revoked.append(tps), busy.commit()),
    )

    def work():  # the README's loop, with a handler the test holds at the first and second record
        try:
            for rec in busy:
                handled.append(rec)
                in_handler[len(handled) - 1].set()
                release[len(handled) - 1].wait()
                busy.commit()
                if len(handled) == 2:
                    break
        finally:
            busy.close()

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    others = []
    try:
        assert in_handler[0].wait(TIMEOUT_S)
        assert len(busy.assignment()) == PARTITIONS  # alone, it took all six, and its poll holds many records
        others = [Poller(server.target), Poller(server.target)]
        with Admin(server.target) as admin:  # the busy member has been told to keep two
            wait_until(
                lambda: len((member_of(admin, busy.member_id) or {}).get("assignment", [])) == 2,
                "the busy member to learn the new assignment",
            )
        release[0].set()  # one record done; before the next one it must give up the other four
        assert in_handler[1].wait(TIMEOUT_S)
        wait_until(lambda: all(o.records for o in others), "the others to receive records of their partitions")
        # The busy member is still inside its handler (second record), and still inside its first poll.
        assert not release[1].is_set() and worker.is_alive() and len(handled) == 2
        kept = {p for _, p in busy.assignment()}
        assert len(kept) == 2 and handled[1].partition in kept
        assert [len(tps) for tps in revoked] == [4]
        moved = {p for _, p in revoked[0]}
        assert others[0].partitions() | others[1].partitions() <= moved
        assert not others[0].partitions() & others[1].partitions() and not kept & moved
        for o in others:  # each starts where the busy member stopped: after what it handed out, nothing skipped
            for p in o.partitions():
                offsets = [r.offset for r in o.records if r.partition == p]
                assert offsets[0] == (handled[0].offset + 1 if p == handled[0].partition else 0)
                assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    finally:
        release[0].set()
        release[1].set()
        worker.join(30)
        for o in others:
            o.close()


def test_a_member_that_does_not_poll_within_max_poll_interval_leaves_and_its_partitions_move(server):
    with Admin(server.target) as admin:
        admin.create_topic("orders", PARTITIONS)
    produce(server.target, PER_PARTITION)
    handled, lost, commit_errors = [], [], []
    in_handler, release, stop = threading.Event(), threading.Event(), threading.Event()
    # Its heartbeat thread keeps its session alive throughout: only leaving can free its partitions.
    busy = Consumer(
        server.target,
        group_id="workers",
        topics=["orders"],
        auto_commit=False,
        session_timeout_ms=6000,
        max_poll_interval_ms=1500,
        on_lost=lost.append,
    )
    first_member = busy.member_id

    def work():
        try:
            for rec in busy:
                handled.append(rec)
                if len(handled) == 1:
                    in_handler.set()
                    release.wait()  # stuck in its handler, well past max_poll_interval_ms
                try:
                    busy.commit()
                except UnknownMemberError as exc:
                    commit_errors.append(exc)
                if stop.is_set():
                    break
        finally:
            busy.close()

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    others = []
    try:
        assert in_handler.wait(TIMEOUT_S)
        assert len(busy.assignment()) == PARTITIONS
        others = [Poller(server.target), Poller(server.target)]
        wait_until(
            lambda: len(others[0].partitions() | others[1].partitions()) == PARTITIONS,
            "the others to receive records of all six partitions",
        )
        assert not release.is_set() and len(handled) == 1  # the busy member is still in its first handler
        assert not others[0].partitions() & others[1].partitions()
        first = handled[0]
        for o in others:  # the records the busy member had fetched but not handed out come again
            for p in o.partitions():
                offsets = [r.offset for r in o.records if r.partition == p]
                assert offsets[0] == 0 and offsets == list(range(len(offsets)))
        assert any(r.partition == first.partition and r.offset == first.offset for o in others for r in o.records)
        with Admin(server.target) as admin:
            assert member_of(admin, first_member) is None
        lines = [line for line in server.log().splitlines() if first_member in line]
        assert any("member left" in line for line in lines) and not any("expired" in line for line in lines)

        release.set()  # back from the handler: the commit is refused with the reason, then it rejoins
        wait_until(lambda: commit_errors and lost, "the commit to be refused and the partitions lost")
        assert "max_poll_interval_ms" in commit_errors[0].message
        assert sorted(lost[0]) == [("orders", p) for p in range(PARTITIONS)]
        with Admin(server.target) as admin:
            wait_until(
                lambda: busy.member_id != first_member and member_of(admin, busy.member_id) is not None,
                "the busy member to rejoin as a new member",
            )
    finally:
        stop.set()
        release.set()
        for o in others:  # first: the partitions go back to the busy member, which then sees records
            o.close()
        produce(server.target, 1)  # a record for each, so that the busy loop sees `stop`
        worker.join(30)


def test_members_that_start_together_share_the_partitions_from_their_first_assignment(default_server):
    """The broker's default group_initial_rebalance_delay_ms (3 s): nobody takes all six first."""
    server = default_server
    with Admin(server.target) as admin:
        admin.create_topic("orders", PARTITIONS)
    produce(server.target, 10)
    events = collections.defaultdict(list)
    members: dict[int, Poller] = {}
    start = threading.Barrier(3)

    def join(i: int) -> None:
        start.wait()
        members[i] = Poller(
            server.target,
            on_assign=lambda tps: events[i].append(("assign", sorted(tps))),
            on_revoke=lambda tps: events[i].append(("revoke", sorted(tps))),
        )

    joiners = [threading.Thread(target=join, args=(i,)) for i in range(3)]
    for t in joiners:
        t.start()
    for t in joiners:
        t.join(TIMEOUT_S)
    try:
        wait_until(
            lambda: all(len(members[i].consumer.assignment()) == 2 and members[i].records for i in range(3)),
            "each member to hold two partitions and receive records",
        )
        for i in range(3):  # each member's first assignment was its share; nothing had to move
            assert [kind for kind, _ in events[i]] == ["assign"] and len(events[i][0][1]) == 2, events
        assert sorted(tp for i in range(3) for tp in events[i][0][1]) == [("orders", p) for p in range(PARTITIONS)]
    finally:
        for m in members.values():
            m.close()
