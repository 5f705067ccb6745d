"""The history checker proves something only if it catches a broken broker. Each scenario here runs
once against the real replication and once against a deliberately broken variant (the broker's
TIDELOG_TEST_MUTATION switch): the correct run must pass the checker, the broken one must not.

The scenario: the leader of a partition appends records its followers cannot copy (both followers are
paused with SIGSTOP), then dies (SIGKILL); the followers resume, one of them is elected, and producing
goes on; the old leader restarts as a follower. Correct: the records only the dead leader had were
never acknowledged (acks=all timed out: indeterminate) and the restarted broker cuts them from its log
(truncation by leader epoch) before copying the new leader's. Broken:

- ack-before-replication: those records were acknowledged, and the new leader never had them: lost.
- skip-epoch-truncation: the restarted broker keeps them where the new leader wrote others, re-enters
  the ISR and holds a log that diverges from the committed one.
"""

from __future__ import annotations

import random
import time

import pytest

from .helpers.cluster import Cluster, Settings, dump
from .helpers.history import History, check

pytestmark = pytest.mark.slow  # real processes

TOPIC = "m"


def run_scenario(tmp_path, monkeypatch, mutation: str):
    seed = random.randrange(1 << 30)
    print(f"seed={seed} mutation={mutation or 'none'}")
    rng = random.Random(seed)
    if mutation:
        monkeypatch.setenv("TIDELOG_TEST_MUTATION", mutation)
    # a session long enough that the paused followers keep their place in the ISR (and their leases)
    cluster = Cluster(str(tmp_path), 3, Settings(session_ms=6000, lag_ms=20_000, replication_timeout_ms=300)).start()
    history = History()
    try:
        cluster.create_topic(TOPIC, partitions=1, rf=3, min_isr=2)
        meta = cluster.wait_leaders(TOPIC, 1, isr=3)[0]
        leaders = {0: meta.leader_address}
        for i in range(20 + rng.randrange(20)):
            cluster.send_acked(history, "p", TOPIC, 0, b"before-%d" % i, leaders)
        old = meta.leader_id
        followers = [b for b in meta.replicas if b != old]
        for b in followers:
            cluster.pause(b)
        for i in range(3 + rng.randrange(3)):  # only the leader gets these (well within the followers' sessions)
            cluster.send(history, "p", TOPIC, 0, b"alone-%d" % i, dict(leaders))
        cluster.kill(old)
        for b in followers:
            cluster.resume(b)
        new = cluster.wait(
            lambda: (m := cluster.metadata(TOPIC)[0]).leader_id in followers and m, timeout_s=60, what="a new leader"
        )
        leaders = {0: new.leader_address}
        for i in range(60):
            cluster.send_acked(history, "p", TOPIC, 0, b"after-%d" % i, leaders)
        cluster.restart(old)
        cluster.wait_leaders(TOPIC, 1, isr=3, timeout_s=60)
        for i in range(10):
            cluster.send_acked(history, "p", TOPIC, 0, b"last-%d" % i, leaders)
        time.sleep(1)  # the followers copy the last records
        final = cluster.wait_leaders(TOPIC, 1)[0]
    finally:
        cluster.stop()
    for send in history.sends:
        if send.status != "ok":
            print("not acked:", send.value, send.status, send.error)
    logs = {b: dump(cluster.data_dir(b), TOPIC, 1).get(0, []) for b in cluster.ids}
    in_sync = {(TOPIC, 0): set(final.isr)}
    committed = {(TOPIC, 0): min(len(logs[b]) for b in final.isr)}
    return check(history, {(TOPIC, 0): logs}, committed, in_sync), seed


def test_the_real_broker_passes_the_scenario(tmp_path, monkeypatch):
    report, seed = run_scenario(tmp_path, monkeypatch, "")
    assert report.ok, f"seed={seed}: {report}"
    assert report.indeterminate >= 3  # the records only the dead leader had were never acknowledged


@pytest.mark.parametrize(
    "mutation, caught",
    [("ack-before-replication", {"lost-write"}), ("skip-epoch-truncation", {"divergent-replicas"})],
)
def test_the_checker_catches_a_broken_broker(tmp_path, monkeypatch, mutation, caught):
    report, seed = run_scenario(tmp_path, monkeypatch, mutation)
    assert not report.ok, f"seed={seed}: the checker missed {mutation}"
    assert caught & set(report.kinds), f"seed={seed}: {report}"
