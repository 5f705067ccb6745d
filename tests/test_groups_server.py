"""Consumer groups with real processes: a broker and member processes that can be SIGKILLed."""

from __future__ import annotations

import collections
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from tidelog.client import Admin, Consumer, Producer
from tidelog.client.metadata import Metadata
from tidelog.errors import StaleGenerationError, UnknownGroupError, UnknownMemberError
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import methods

from .server_process import ServerProcess, config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Member:
    def __init__(self, target, group, topic, session_ms=10_000):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.group_member", target, group, topic, str(session_ms)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        self.records: list[tuple[int, int, str]] = []
        self.commits: dict[int, int] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            parts = line.split()
            if parts[0] == "REC":
                self.records.append((int(parts[1]), int(parts[2]), parts[3]))
            elif parts[0] == "COMMIT":
                self.commits[int(parts[1])] = int(parts[2])
            self.lines.put(line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def wait_until(predicate, timeout_s=40.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def server(tmp_path):
    srv = ServerProcess(str(tmp_path / "data"), "--config", config_file(tmp_path)).start()
    yield srv
    srv.stop()


def stable_with(admin, group, n):
    try:
        info = admin.describe_group(group)
    except UnknownGroupError:  # no member has joined yet
        return False
    return (
        info["state"] == "stable"
        and len(info["members"]) == n
        and sum(len(m["assignment"]) for m in info["members"]) == 6
    )


def produce(target, topic, start, count):
    with Producer(target, linger_ms=2) as p:
        for i in range(start, start + count):
            p.send(topic, b"%d" % i, key=b"k%d" % i)


def test_three_members_share_six_partitions_and_two_groups_each_get_everything(server):
    with Admin(server.target) as admin:
        admin.create_topic("orders", 6)
        members = [Member(server.target, "billing", "orders") for _ in range(3)]
        other = Member(server.target, "audit", "orders")
        try:
            wait_until(lambda: stable_with(admin, "billing", 3), what="billing to be stable with 3 members")
            wait_until(lambda: stable_with(admin, "audit", 1), what="audit to be stable")
            produce(server.target, "orders", 0, 600)
            wait_until(lambda: sum(len(m.records) for m in members) >= 600 and len(other.records) >= 600)
        finally:
            for m in members + [other]:
                m.stop()
    billing = [r for m in members for r in m.records]
    assert sorted(int(v) for _, _, v in billing) == list(range(600))  # each record to exactly one member
    assert sorted(int(v) for _, _, v in other.records) == list(range(600))
    for m in members:
        assert m.records, "every member got a share"
        for p in {p for p, _, _ in m.records}:
            offsets = [o for q, o, _ in m.records if q == p]
            assert offsets == sorted(offsets)
    owners = collections.defaultdict(set)
    for i, m in enumerate(members):
        for p, _, _ in m.records:
            owners[p].add(i)
    assert all(len(who) == 1 for who in owners.values())


def test_a_killed_member_loses_its_partitions_to_the_others_and_no_record_is_lost(server):
    with Admin(server.target) as admin:
        admin.create_topic("orders", 6)
        members = [Member(server.target, "billing", "orders", session_ms=1500) for _ in range(3)]
        try:
            wait_until(lambda: stable_with(admin, "billing", 3), what="a stable group of 3")
            produce(server.target, "orders", 0, 300)
            wait_until(lambda: sum(len(m.records) for m in members) >= 300)
            victim, survivors = members[1], [members[0], members[2]]
            victim.kill()
            produce(server.target, "orders", 300, 300)
            wait_until(lambda: stable_with(admin, "billing", 2), what="the survivors to take over")
            wait_until(lambda: len({v for m in members for _, _, v in m.records}) >= 600, what="every record")
        finally:
            for m in members:
                m.stop() if m.proc.poll() is None else None
    processed = collections.Counter(v for m in members for _, _, v in m.records)
    assert set(processed) == {str(i) for i in range(600)}  # at least once
    victim_last_commit = victim.commits
    for m in survivors:
        for p in {p for p, _, _ in m.records}:
            offsets = [o for q, o, _ in m.records if q == p]
            assert offsets == sorted(offsets)
    for value, n in processed.items():
        if n > 1:  # a duplicate: first processed by the victim after its last commit of that partition
            (p, o) = next((p, o) for p, o, v in victim.records if v == value)
            assert o >= victim_last_commit.get(p, 0)


def test_committed_offsets_survive_a_broker_restart(tmp_path):
    srv = ServerProcess(str(tmp_path / "data"), "--config", config_file(tmp_path)).start()
    try:
        with Admin(srv.target) as admin:
            admin.create_topic("orders", 6)
        produce(srv.target, "orders", 0, 60)
        c = Consumer(srv.target, group_id="billing", topics=["orders"], auto_commit=False)
        got = []
        wait_until(lambda: got.extend(c.poll(0.1)) or len(got) >= 60)
        c.commit()
        c.close()
        with Admin(srv.target) as admin:
            before = admin.committed_offsets("billing")
        assert sum(before.values()) == 60
        assert srv.stop() == 0
        srv.start()
        with Admin(srv.target) as admin:
            assert admin.committed_offsets("billing") == before
            info = admin.describe_group("billing")
            assert all(p["lag"] == 0 for p in info["partitions"])
        produce(srv.target, "orders", 60, 6)
        again = Consumer(srv.target, group_id="billing", topics=["orders"], auto_commit=False)
        more = []
        wait_until(lambda: more.extend(again.poll(0.1)) or len(more) >= 6)
        assert sorted(int(r.value) for r in more) == list(range(60, 66))
        again.close()
    finally:
        srv.stop()


def test_a_stale_generation_commit_is_rejected_over_grpc(server):
    with Admin(server.target) as admin:
        admin.create_topic("orders", 6)
    produce(server.target, "orders", 0, 12)
    first = Consumer(server.target, group_id="g", topics=["orders"], auto_commit=False)
    # a new group's first assignment waits group_initial_rebalance_delay_ms (200 ms here)
    wait_until(lambda: first.poll(0.1) is not None and first.assignment(), what="the first member's partitions")
    old_generation = first.generation
    second = Consumer(server.target, group_id="g", topics=["orders"], auto_commit=False)
    owned = first.assignment()
    with pytest.raises(StaleGenerationError):
        first._commit(first.member_id, old_generation, {owned[0]: 1})
    first.close()
    second.close()


def test_groups_cli(server):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "tidelog", *args, f"--server={server.target}"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    with Admin(server.target) as admin:
        admin.create_topic("orders", 2)
    produce(server.target, "orders", 0, 20)
    out = cli("consume", "orders", "--group", "billing", "--from-beginning", "--max", "5")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 5
    assert cli("groups", "list").stdout.split() == ["billing"]
    desc = cli("groups", "describe", "billing")
    assert "lag" in desc.stdout and "committed" in desc.stdout
    assert cli("groups", "reset-offsets", "billing", "--topic", "orders", "--to-latest").returncode == 0
    with Admin(server.target) as admin:
        assert admin.describe_group("billing")["partitions"][0]["lag"] == 0
    assert cli("groups", "reset-offsets", "billing", "--topic", "orders", "--to-datetime", "not-a-date").returncode == 2
    assert cli("groups", "delete", "billing").returncode == 0
    missing = cli("groups", "describe", "billing")
    assert missing.returncode == 1 and missing.stderr.strip() == "tidelog: error: unknown group 'billing'"


def test_members_reconnect_and_rejoin_after_a_broker_restart(tmp_path):
    srv = ServerProcess(str(tmp_path / "data"), "--config", config_file(tmp_path)).start()
    try:
        with Admin(srv.target) as admin:
            admin.create_topic("orders", 2)
        produce(srv.target, "orders", 0, 10)
        c = Consumer(srv.target, group_id="g", topics=["orders"], auto_commit=False, session_timeout_ms=1500)
        got = []
        wait_until(lambda: got.extend(c.poll(0.1)) or len(got) >= 10)
        c.commit()
        assert srv.stop() == 0
        assert c.poll(0.3) == []  # the broker is gone: no error for the caller, just nothing
        srv.start()
        produce(srv.target, "orders", 10, 10)
        more = []
        wait_until(lambda: more.extend(c.poll(0.1)) or len(more) >= 10, what="records after the restart")
        assert sorted(int(r.value) for r in more) == list(range(10, 20))
        c.close()
    finally:
        srv.stop()


@pytest.mark.parametrize("timestamp_ms", [-1, -2])
def test_reset_offsets_to_a_negative_timestamp_is_refused_over_grpc(server, timestamp_ms):
    import grpc

    from tidelog.errors import InvalidRequestError
    from tidelog.v1 import tidelog_pb2 as pb
    from tidelog.wire.statuses import CODE_KEY

    with Admin(server.target) as admin:
        admin.create_topic("orders", 1)
        produce(server.target, "orders", 0, 5)
        admin.reset_offsets("billing", "orders", 2)
        with grpc.insecure_channel(server.target) as channel:
            stub = channel.unary_unary(
                "/tidelog.v1.Groups/ResetOffsets",
                request_serializer=pb.ResetOffsetsRequest.SerializeToString,
                response_deserializer=pb.ResetOffsetsResponse.FromString,
            )
            with pytest.raises(grpc.RpcError) as info:
                stub(pb.ResetOffsetsRequest(group_id="billing", topic="orders", timestamp_ms=timestamp_ms), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(info.value.trailing_metadata())[CODE_KEY] == str(InvalidRequestError.code)
        assert "timestamp_ms" in info.value.details()
        with pytest.raises(InvalidRequestError):
            admin.reset_offsets("billing", "orders", "timestamp", timestamp_ms=timestamp_ms)
        assert admin.committed_offsets("billing") == {("orders", 0): 2}  # neither earliest (0) nor latest (5)


def test_a_member_keeps_its_id_and_partitions_across_a_broker_sigkill_without_a_rebalance(tmp_path):
    srv = ServerProcess(str(tmp_path / "data"), "--config", config_file(tmp_path)).start()
    try:
        with Admin(srv.target) as admin:
            admin.create_topic("orders", 2)
        produce(srv.target, "orders", 0, 10)
        c = Consumer(srv.target, group_id="g", topics=["orders"], auto_commit=False, session_timeout_ms=6000)
        got = []
        wait_until(lambda: got.extend(c.poll(0.1)) or len(got) >= 10)
        member, generation = c.member_id, c.generation
        with Admin(srv.target) as admin:
            rebalances = admin.describe_group("g")["rebalances"]
        srv.kill()
        srv.start()
        produce(srv.target, "orders", 10, 10)
        more = []
        wait_until(lambda: more.extend(c.poll(0.1)) or len(more) >= 10, what="records after the restart")
        assert sorted(int(r.value) for r in more) == list(range(10, 20))
        assert (c.member_id, c.generation) == (member, generation)
        with Admin(srv.target) as admin:
            info = admin.describe_group("g")
        assert [m["member_id"] for m in info["members"]] == [member]
        assert (info["generation"], info["rebalances"]) == (generation, rebalances)
        c.close()
    finally:
        srv.stop()


def test_a_member_id_read_from_describe_group_is_not_enough_to_act_as_the_member(server):
    """DescribeGroup shows member ids; a caller who reads one and tries to commit, heartbeat, rejoin or
    leave as that member is refused as if there were no such member, and nothing changes. The member
    itself, which holds its session token, goes on."""
    with Admin(server.target) as admin:
        admin.create_topic("ledger", 2)
    produce(server.target, "ledger", 0, 10)
    member = Consumer(server.target, group_id="accounts", topics=["ledger"], auto_commit=False)
    try:
        wait_until(lambda: member.poll(0.1) is not None and member.assignment(), what="the member's partitions")
        member.commit({tp: 1 for tp in member.assignment()})
        with Admin(server.target) as admin:
            info = admin.describe_group("accounts")
            (seen,) = info["members"]
            before = admin.committed_offsets("accounts")
        stolen, generation = seen["member_id"], info["generation"]
        assert stolen == member.member_id
        metadata = Metadata(server.target)
        try:

            def call(name, **fields):
                method = methods.method("Groups", name)
                return metadata.call_coordinator(method, method.request(group_id="accounts", **fields))

            for token in ("", "guessed-token"):
                offsets = [pb.PartitionOffset(topic=t, partition=p, offset=999) for t, p in seen["assignment"]]
                attempts = {
                    "CommitOffsets": dict(member_id=stolen, generation=generation, offsets=offsets),
                    "Heartbeat": dict(member_id=stolen, generation=generation),
                    "JoinGroup": dict(member_id=stolen, topics=["ledger"]),
                    "LeaveGroup": dict(member_id=stolen),
                }
                for name, fields in attempts.items():
                    with pytest.raises(UnknownMemberError):
                        call(name, session_token=token, **fields)
        finally:
            metadata.close()
        with Admin(server.target) as admin:
            assert admin.committed_offsets("accounts") == before
            assert [m["member_id"] for m in admin.describe_group("accounts")["members"]] == [stolen]
        member.commit({tp: 2 for tp in member.assignment()})  # the real member still can
        with Admin(server.target) as admin:
            assert set(admin.committed_offsets("accounts").values()) == {2}
    finally:
        member.close()
