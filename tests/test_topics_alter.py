"""`topics alter` without a cluster: placement of added partitions, the alter plan's refusals, the
engine's crash-safe partition increase, and the command line against a single broker."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from tidelog import Engine
from tidelog.cluster.alter import plan_alter
from tidelog.cluster.placement import TopicPlacement, assign_added_replicas, assign_replicas
from tidelog.engine.topic_meta import write_marker
from tidelog.errors import CorruptLogError, InvalidConfigError, InvalidPartitionError
from tidelog.storage.fs import TMP_PREFIX, FileSystem

from .server_process import ServerProcess
from .test_cli import one_error_line, tidelog

# -- placement ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [0, 1, 2])
def test_added_partitions_continue_the_spread_of_preferred_leaders(start):
    brokers = [1, 2, 3]
    existing = assign_replicas(brokers, 2, 3, start=start)
    added = assign_added_replicas(brokers, existing, 4, 3)
    # the preferred leaders of all six partitions go round the brokers without a break
    leaders = [r[0] for r in existing + added]
    assert leaders == [brokers[(start + p) % 3] for p in range(6)]
    assert all(sorted(r) == brokers for r in added)  # every copy on a distinct broker


def test_added_partitions_with_fewer_replicas_than_brokers_spread_copies_too():
    brokers = [1, 2, 3, 4]
    existing = assign_replicas(brokers, 2, 2, start=3)  # leaders 4, 1
    added = assign_added_replicas(brokers, existing, 2, 2)
    assert added == [(2, 3), (3, 4)]


def test_added_partitions_skip_a_dead_last_leader():
    existing = [(5, 1, 2), (9, 1, 2)]  # broker 9 is gone now
    added = assign_added_replicas([1, 2, 3], existing, 3, 3)
    assert sorted(r[0] for r in added) == [1, 2, 3]


def test_added_partitions_need_as_many_live_brokers_as_replicas():
    with pytest.raises(Exception, match="replication factor 3 needs"):
        assign_added_replicas([1, 2], [(1, 2, 3)], 1, 3)


# -- the plan -------------------------------------------------------------------------------------------


TOPIC = TopicPlacement("orders", 2, 3, {"min_insync_replicas": 2})


@pytest.mark.parametrize("count", [1, 2])
def test_a_partition_count_that_does_not_grow_is_refused_naming_the_current_one(count):
    with pytest.raises(InvalidPartitionError, match="has 2 partitions; the count can only grow") as err:
        plan_alter(TOPIC, [(1, 2, 3), (2, 3, 1)], [1, 2, 3], count, None, 100)
    assert err.value.code == 37


def test_a_plan_grows_the_topic_and_keeps_its_settings():
    after, added = plan_alter(TOPIC, [(1, 2, 3), (2, 3, 1)], [1, 2, 3], 4, None, 100)
    assert after.partitions == 4 and after.config == {"min_insync_replicas": 2}
    assert [r[0] for r in added] == [3, 1]


@pytest.mark.parametrize("value", [0, 4, -1])
def test_min_insync_replicas_outside_one_to_the_replication_factor_is_refused(value):
    with pytest.raises(InvalidConfigError, match="min_insync_replicas must be 1 to the replication factor 3"):
        plan_alter(TOPIC, [], [1, 2, 3], None, value, 100)


def test_min_insync_replicas_alone_changes_only_the_config():
    after, added = plan_alter(TOPIC, [], [1, 2, 3], None, 3, 100)
    assert (after.partitions, after.config, added) == (2, {"min_insync_replicas": 3}, [])


def test_an_alter_with_nothing_to_change_or_too_many_partitions_is_refused():
    with pytest.raises(InvalidConfigError, match="nothing to alter"):
        plan_alter(TOPIC, [], [1, 2, 3], None, None, 100)
    with pytest.raises(InvalidPartitionError, match="max_partitions_per_topic=3"):
        plan_alter(TOPIC, [], [1, 2, 3], 4, None, 3)


# -- the engine -----------------------------------------------------------------------------------------


def test_the_engine_grows_a_topic_durably_and_keyed_records_use_the_new_count(tmp_path):
    path = str(tmp_path / "d")
    keys = [b"user%d" % i for i in range(40)]
    with Engine.open(path) as engine:
        engine.create_topic("t", 2)
        before = engine.produce("t", [b"a"] * 40, keys=keys)
        desc = engine.alter_topic("t", 4, {"min_insync_replicas": 2})
        assert len(desc.partitions) == 4 and desc.config.min_insync_replicas == 2
        after = engine.produce("t", [b"b"] * 40, keys=keys)
        assert {r.partition for r in before} == {0, 1}
        assert {r.partition for r in after} == {0, 1, 2, 3}  # some keys moved, as in Kafka
        with pytest.raises(InvalidPartitionError, match="has 4 partitions"):
            engine.alter_topic("t", 4)
    with Engine.open(path) as engine:  # what was altered is what opens again, with every record
        desc = engine.describe("t")
        assert len(desc.partitions) == 4 and desc.config.min_insync_replicas == 2
        assert sum(p.log_end for p in desc.partitions) == 80


def test_a_partition_increase_interrupted_before_its_commit_is_rolled_back_at_open(tmp_path):
    """A crash after the new directories got their markers and before the topic file named them:
    the next open removes exactly those (empty) directories, and the topic opens as it was."""
    path = str(tmp_path / "d")
    with Engine.open(path) as engine:
        engine.create_topic("t", 2)
        engine.produce("t", [b"x"], partition=1)
        meta = engine._topic("t").meta
    grown = replace(meta, partitions=3)
    os.makedirs(os.path.join(path, "t-2"))
    write_marker(FileSystem(), os.path.join(path, "t-2"), grown, 2)
    with open(os.path.join(path, "t-2", "00000000000000000000.log"), "wb"):
        pass  # an empty first segment, as the increase made it
    with Engine.open(path) as engine:
        assert engine.partitions("t") == 2
        assert engine.list_offsets("t", 1).log_end == 1
    assert not os.path.exists(os.path.join(path, "t-2"))


def test_a_marked_directory_past_the_count_that_holds_records_is_refused_not_deleted(tmp_path):
    path = str(tmp_path / "d")
    with Engine.open(path) as engine:
        engine.create_topic("t", 2)
        meta = engine._topic("t").meta
    os.makedirs(os.path.join(path, "t-2"))
    write_marker(FileSystem(), os.path.join(path, "t-2"), replace(meta, partitions=3), 2)
    with open(os.path.join(path, "t-2", "00000000000000000000.log"), "wb") as f:
        f.write(b"not nothing")
    with pytest.raises(CorruptLogError, match="says it has 2 partitions"):
        Engine.open(path)
    assert os.path.exists(os.path.join(path, "t-2", "00000000000000000000.log"))


# -- the command line, one broker -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(str(tmp_path_factory.mktemp("alter") / "data")).start()
    yield srv
    assert srv.stop() == 0


def test_topics_alter_grows_a_topic_on_one_broker(server):
    s = f"--server={server.target}"
    assert tidelog("topics", "create", "grow", "--partitions", "2", s).returncode == 0
    out = tidelog("topics", "alter", "grow", "--partitions", "5", s)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().startswith("altered topic grow: 5 partition(s)")
    lines = b"".join(b"k%d\tv%d\n" % (i, i) for i in range(200))
    assert tidelog("produce", "grow", "--key-field", "1", s, input=lines).returncode == 0
    text = tidelog("topics", "describe", "grow", s).stdout.decode()
    assert "partitions 5" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--partitions", "2"], "has 3 partitions; the count can only grow, so 2 is refused"),
        (["--partitions", "3"], "has 3 partitions; the count can only grow, so 3 is refused"),
    ],
)
def test_topics_alter_refuses_a_count_that_does_not_grow_exit_1(server, args, message):
    s = f"--server={server.target}"
    tidelog("topics", "create", "fixed", "--partitions", "3", s)
    out = tidelog("topics", "alter", "fixed", *args, s)
    assert out.returncode == 1
    assert message in one_error_line(out)


def test_topics_alter_of_an_unknown_topic_exit_1(server):
    out = tidelog("topics", "alter", "nope", "--partitions", "3", f"--server={server.target}")
    assert out.returncode == 1 and "unknown topic 'nope'" in one_error_line(out)


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give --partitions and/or --min-insync-replicas"),
        (["--partitions", "0"], "--partitions"),
        (["--partitions", "x"], "--partitions"),
        (["--min-insync-replicas", "0"], "--min-insync-replicas"),
    ],
)
def test_topics_alter_bad_usage_exit_2(server, args, message):
    out = tidelog("topics", "alter", "t", *args, f"--server={server.target}")
    assert out.returncode == 2
    assert message in one_error_line(out)


def test_a_crash_at_any_step_of_a_partition_increase_leaves_the_topic_whole_before_or_after(tmp_path):
    """Every file operation of an increase 2 → 4, failed in turn (the process dies there): the next
    open holds the topic with 2 or 4 partitions, every record it had, and nothing past its count."""

    class Crash(BaseException):
        pass

    class CrashAt(FileSystem):
        def __init__(self) -> None:
            super().__init__()
            self.k, self.n = 0, 0

        def _tick(self) -> None:
            self.n += 1
            if self.n == self.k:
                raise Crash()

        def write_file_atomic(self, *a, **kw):
            self._tick()
            return super().write_file_atomic(*a, **kw)

        def makedirs(self, *a):
            self._tick()
            return super().makedirs(*a)

        def open(self, *a, **kw):
            self._tick()
            return super().open(*a, **kw)

        def remove(self, *a):
            self._tick()
            return super().remove(*a)

    seen = set()
    for k in range(1, 200):
        d = str(tmp_path / f"k{k}")
        with Engine.open(d) as engine:
            engine.create_topic("t", 2)
            engine.produce("t", [b"a", b"b"], partition=0)
            engine.produce("t", [b"c"], partition=1)
        fs = CrashAt()
        engine = Engine.open(d, fs=fs)
        fs.n, fs.k = 0, k  # count the increase's operations only
        try:
            engine.alter_topic("t", 4)
            finished = True
        except Crash:
            finished = False
        engine._housekeeper.stop()
        engine._catalog.trash.stop()
        for t in engine._topics.values():
            for plog in t.partitions:
                plog.close_files()
        fs.unlock_dir(engine._lock_fd)
        with Engine.open(d) as again:
            count = again.partitions("t")
            seen.add(count)
            assert count in (2, 4)
            assert [again.list_offsets("t", p).log_end for p in range(count)] == [2, 1] + [0] * (count - 2)
        leftover = os.path.join(d, f"t-{count}")
        # past the count: nothing, or a directory the crash left before its marker, holding no file of its own
        assert not os.path.exists(leftover) or all(n.startswith(TMP_PREFIX) for n in os.listdir(leftover))
        if finished:
            assert count == 4
            break
        if count == 2:  # the operator runs the command again: it completes
            with Engine.open(d) as again:
                assert len(again.alter_topic("t", 4).partitions) == 4
                assert [again.list_offsets("t", p).log_end for p in range(4)] == [2, 1, 0, 0]
    else:
        raise AssertionError("the increase never finished")
    assert seen == {2, 4}
