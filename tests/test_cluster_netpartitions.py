"""More network faults on the cluster (tests/helpers/netrun.py's Run: one partition, rf 3,
min_insync_replicas 2, an acks=all producer and a consumer logging to a History; at the end the
history checker must find no acknowledged record lost, no divergent replicas, no read past the high
watermark), each with a bound on how long producing stops:

- etcd as three members, each in its own namespace: one killed (SIGKILL) and restarted, one isolated
  (link down): the brokers' etcd clients move to the members that still have a quorum;
- a minority side {the leader, one etcd member} cut from a majority side {the other brokers, the other
  two etcd members}: the minority's leader loses its session and stops acknowledging, the majority
  elects a leader;
- an asymmetric link: the leader's packets to one follower dropped, not the reverse, and the reverse;
- the controller cut from etcd, and its link down: another broker takes over and still elects leaders;
- a slow link: a token bucket on a follower's and on the leader's link; a delay proxy between the
  clients and the leader, and between the leader and etcd;
- the leader's lease clock jumped 30 s ahead (it fences itself, then renews), and 30 s back while it is
  cut from etcd (it believes its lease valid for longer, but its followers follow etcd and leave it:
  acks=all cannot be acknowledged with its copy alone);
- a broken broker (TIDELOG_TEST_MUTATION=ack-before-replication) under a leader cut from its followers:
  the checker must catch it, so these scenarios can fail.

Needs root (network namespaces); skips, saying why, elsewhere. Each run prints its seed.
"""

from __future__ import annotations

import time

import pytest

from tidelog.v1 import tidelog_pb2 as pb

from .helpers.netns import network
from .helpers.netrun import SESSION_MS, scenario

pytestmark = pytest.mark.slow  # real processes, real namespaces

SESSION_S = SESSION_MS / 1000
BOUND_S = SESSION_S + 10
"""Producing must be back within this long after a fault (or its heal)."""


@pytest.fixture
def net():
    with network() as n:
        yield n


def first_ack_after(run, t: float, timeout_s: float = 30, broker: int | None = None) -> float:
    """Seconds from t to the first acknowledgement of a record sent after t (asserted within BOUND_S)."""
    run.wait(lambda: run.acked(broker, after=t), timeout_s, f"an ack after {t - run.history.start:.2f}")
    took = min(a.t_done for a in run.acked(broker, after=t)) - t
    assert took < BOUND_S, f"seed={run.seed}: producing stopped for {took:.1f} s (bound {BOUND_S} s)"
    return took


def controller(run) -> int:
    return run.cluster.any_call("Admin", "DescribeCluster", pb.DescribeClusterRequest(), 3).controller_id


# -- etcd with three members ------------------------------------------------------------------------------
def test_an_etcd_member_killed_and_restarted(net, tmp_path):
    with scenario(net, tmp_path, etcd_members=3) as run:
        run.start()
        member = run.rng.choice(run.cluster.etcd.members)
        member.kill()
        t_fault = time.monotonic()
        print(f"etcd member {member.node.name} killed at {t_fault - run.history.start:.2f}")
        took = first_ack_after(run, t_fault)
        print(f"first ack after the kill: {took:.2f} s")
        run.wait_acks(20)
        time.sleep(2 * SESSION_S)  # several lease renewals with one member down: the leader keeps its place
        meta = run.meta()
        assert len(meta.isr) == 3, f"seed={run.seed}: {run.views()}"
        member.restart()
        t_heal = time.monotonic()
        print(f"first ack after the restart: {first_ack_after(run, t_heal):.2f} s")
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"


def test_an_etcd_member_isolated(net, tmp_path):
    """Its link down: the brokers whose calls went to it must use the other two (a member cut from its
    quorum answers nothing useful); no broker loses its session for good."""
    with scenario(net, tmp_path, etcd_members=3) as run:
        meta = run.start()
        name = run.rng.choice(run.cluster.etcd_nodes)
        net.link_down(name)
        t_fault = time.monotonic()
        print(f"etcd member {name} isolated at {t_fault - run.history.start:.2f}")
        print(f"first ack after the cut: {first_ack_after(run, t_fault):.2f} s")
        run.wait_acks(20)
        time.sleep(2 * SESSION_S)
        # every broker is still a member: an ISR of three and the same leader (or a new one that acks)
        run.wait_isr(3, timeout_s=BOUND_S)
        print(f"during the cut: {run.views()} (leader before: {meta.leader_id})")
        t = time.monotonic()
        print(f"acks go on: first {first_ack_after(run, t):.2f} s after {t - run.history.start:.2f}")
        net.link_up(name)
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"


def test_an_etcd_member_cut_from_its_quorum_but_not_from_the_brokers(net, tmp_path):
    """The worst member to be stuck on: it still answers TCP but has no leader. The brokers' calls to
    it fail at once (they ask for a leader) and go to the others; producing goes on."""
    with scenario(net, tmp_path, etcd_members=3) as run:
        run.start()
        name = run.rng.choice(run.cluster.etcd_nodes)
        net.isolate(name, [m for m in run.cluster.etcd_nodes if m != name])
        t_fault = time.monotonic()
        print(f"etcd member {name} cut from the other members at {t_fault - run.history.start:.2f}")
        print(f"first ack after the cut: {first_ack_after(run, t_fault):.2f} s")
        time.sleep(3 * SESSION_S)
        run.wait_isr(3, timeout_s=BOUND_S)
        t = time.monotonic()
        print(f"acks go on: first {first_ack_after(run, t):.2f} s after; {run.views()}")
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"
