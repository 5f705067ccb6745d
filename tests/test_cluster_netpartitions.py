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

from .helpers.netns import DelayProxy, network
from .helpers.netrun import SESSION_MS, probe_produce, scenario

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


def sessions_lost(run) -> dict[int, int]:
    """How many times each broker logged losing its etcd session (none should, with one etcd member
    of three down: the other two still make a quorum)."""
    out = {}
    for i, b in run.cluster.brokers.items():
        with open(b.log_path, errors="replace") as f:
            out[i] = f.read().count("broker left the cluster")
    return out


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
        lost = sessions_lost(run)
        assert not any(lost.values()), f"seed={run.seed}: sessions lost: {lost}"
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
        lost = sessions_lost(run)
        assert not any(lost.values()), f"seed={run.seed}: sessions lost: {lost}"
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
        lost = sessions_lost(run)
        assert not any(lost.values()), f"seed={run.seed}: sessions lost: {lost}"
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"


# -- a minority and a majority ----------------------------------------------------------------------------
def test_a_minority_side_stops_and_the_majority_elects(net, tmp_path):
    """{the leader, one etcd member} | {the other brokers, the other two etcd members}; the clients hear
    both sides. The minority's member has no quorum, so the leader's keepalives fail and it stops
    acknowledging at its local deadline; the majority elects one of its brokers; healed, nothing
    acknowledged is lost."""
    with scenario(net, tmp_path, etcd_members=3) as run:
        meta = run.start()
        old = meta.leader_id
        etcds = run.cluster.etcd_nodes
        lonely = run.rng.choice(etcds)
        minority = [f"b{old}", lonely]
        majority = [f"b{b}" for b in run.cluster.ids if b != old] + [e for e in etcds if e != lonely]
        for a in minority:
            net.isolate(a, majority)
        run.avoid.add(old)
        t_fault = time.monotonic()
        print(f"partition {minority} | {majority} at {t_fault - run.history.start:.2f}")
        run.wait(lambda: [a for a in run.acked(after=t_fault) if a.broker != old], 30, "an ack by a new leader")
        new_first = min(a.t_done for a in run.acked(after=t_fault) if a.broker != old)
        late = run.acked(old, after=t_fault)
        deadline = t_fault + 0.9 * SESSION_S
        stale = [a for a in late if a.t_invoke > deadline or a.t_done > deadline + 0.5]
        print(f"acks by the minority's leader after the cut: {len(late)}; first by the majority's after "
              f"{new_first - t_fault:.2f} s")  # fmt: skip
        assert not stale, f"seed={run.seed}: the minority's leader acknowledged past its deadline: {stale[:5]}"
        assert max((a.t_done for a in late), default=t_fault) < new_first, f"seed={run.seed}: two leaders acked"
        assert new_first - t_fault < BOUND_S, f"seed={run.seed}: unavailable {new_first - t_fault:.1f} s"
        print(f"a produce to the minority's leader: {probe_produce(run, old)}")
        run.wait_acks(20)
        time.sleep(run.rng.uniform(0, 2))
        net.heal_drops()
        t_heal = time.monotonic()
        print(f"first ack after the heal: {first_ack_after(run, t_heal):.2f} s")
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"


# -- an asymmetric link -----------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["leader-to-follower", "follower-to-leader"])
def test_an_asymmetric_link(net, tmp_path, direction):
    """One direction of one leader-follower link drops every packet (the other still carries them; TCP
    needs both, so the follower stops copying either way): the ISR drops the follower, acks=all goes on
    with two copies; healed, it catches up and nothing acknowledged is lost."""
    with scenario(net, tmp_path) as run:
        meta = run.start()
        leader = meta.leader_id
        follower = run.rng.choice([b for b in meta.replicas if b != leader])
        src, dst = (leader, follower) if direction == "leader-to-follower" else (follower, leader)
        net.drop(f"b{src}", f"b{dst}")
        t_fault = time.monotonic()
        print(f"b{src} -> b{dst} dropped at {t_fault - run.history.start:.2f} (leader b{leader})")
        run.wait(lambda: follower not in run.meta().isr, 2 + 15, "the follower out of the ISR")
        t = time.monotonic()
        print(f"ISR without b{follower} {t - t_fault:.2f} s after; {run.views()}")
        print(f"first ack after the drop: {first_ack_after(run, t_fault):.2f} s")
        run.wait_acks(20)
        net.heal_drops()
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"


# -- the controller isolated ------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["cut-from-etcd", "link-down"])
def test_the_controller_isolated_another_takes_over(net, tmp_path, how):
    """The controller cut off: another broker becomes controller and still elects leaders: the
    partition's leader (when it is not the cut-off controller) is then killed and a new one must be
    elected (with min_insync_replicas 1, so the one broker left acknowledges)."""
    with scenario(net, tmp_path, min_isr=1) as run:
        meta = run.start()
        old = controller(run)
        run.avoid.add(old)
        if how == "link-down":
            net.link_down(f"b{old}")
        else:
            net.isolate(f"b{old}", run.cluster.etcd_nodes)
        t_fault = time.monotonic()
        print(f"controller b{old} {how} at {t_fault - run.history.start:.2f}; partition led by {meta.leader_id}")
        others = [b for b in run.cluster.ids if b != old]

        def new_controller():
            reply = run.cluster.call(
                run.cluster.brokers[others[0]].target, "Admin", "DescribeCluster", pb.DescribeClusterRequest(), 2
            )
            return reply.controller_id > 0 and reply.controller_id != old and reply.controller_id

        took_over = run.wait(new_controller, BOUND_S, "a new controller")
        print(f"b{took_over} controls {time.monotonic() - t_fault:.2f} s after the cut")
        victim = run.wait(lambda: (m := run.meta()).leader_id not in (0, old) and m, BOUND_S, "a leader").leader_id
        run.avoid.add(victim)
        run.cluster.kill(victim)
        t_kill = time.monotonic()
        print(f"b{victim} (leader) killed at {t_kill - run.history.start:.2f}")
        last = [b for b in run.cluster.ids if b not in (old, victim)][0]
        run.wait(lambda: run.meta_of(last).leader_id == last, BOUND_S, f"b{last} elected")
        print(f"b{last} leads {time.monotonic() - t_kill:.2f} s after the kill")
        print(f"first ack after the kill: {first_ack_after(run, t_kill):.2f} s")
        run.cluster.restart(victim)
        net.heal()
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"


# -- a slow link ------------------------------------------------------------------------------------------
def test_a_slow_link_on_a_follower_then_on_the_leader(net, tmp_path):
    with scenario(net, tmp_path) as run:
        meta = run.start()
        for role, b in (("follower", [r for r in meta.replicas if r != meta.leader_id][0]), ("leader", meta.leader_id)):
            net.rate_limit(f"b{b}", "256kbit")
            t = time.monotonic()
            print(f"{role} b{b} at 256 kbit/s at {t - run.history.start:.2f}")
            print(f"first ack after: {first_ack_after(run, t):.2f} s")
            run.wait_acks(20)
            net.unrate(f"b{b}")
            run.wait_isr(3, timeout_s=BOUND_S)
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"


def test_a_delayed_client_and_a_delayed_etcd(net, tmp_path):
    """Every broker reaches etcd through a delay proxy, and the producer reaches the leader through one:
    200 ms each way to etcd (a keepalive's round trip is 400 ms of its 667 ms period), 300 ms to the
    leader: producing goes on, no broker loses its session, nothing acknowledged is lost."""
    with scenario(net, tmp_path) as run:
        etcd_ip = run.cluster.etcd.node.ip
        proxies = {b: DelayProxy(net.host_ip, etcd_ip, 2379).start() for b in run.cluster.ids}
        try:
            for b, proxy in proxies.items():
                run.cluster.etcd_urls[b] = f"etcd://{proxy.address}"
            meta = run.start()
            leader = run.cluster.brokers[meta.leader_id].target
            to_leader = DelayProxy(net.host_ip, *leader.rsplit(":", 1)[0:1], 9092).start()
            proxies[0] = to_leader
            run.via[leader] = to_leader.address
            for proxy in proxies.values():
                proxy.delay_s = 0.2
            to_leader.delay_s = 0.3
            t = time.monotonic()
            print(f"delays on at {t - run.history.start:.2f}")
            print(f"first ack after: {first_ack_after(run, t):.2f} s")
            run.wait_acks(10, timeout_s=30)
            time.sleep(3 * SESSION_S)  # several lease renewals through the delay
            now = run.wait_isr(3, timeout_s=BOUND_S)
            assert now.leader_id == meta.leader_id, f"seed={run.seed}: a session was lost: {run.views()}"
            via = [a for a in run.acked(after=t) if a.broker == meta.leader_id]
            assert via, f"seed={run.seed}: nothing acknowledged through the delayed link"
            for proxy in proxies.values():
                proxy.delay_s = 0
            report = run.finish()
        finally:
            for proxy in proxies.values():
                proxy.stop()
    assert report.ok, f"seed={run.seed}: {report}"


# -- clock jumps ------------------------------------------------------------------------------------------
def test_the_leaders_clock_jumps_ahead(net, tmp_path):
    """+30 s on the leader's lease clock: its deadline has passed at once, so it stops acting as a member
    until its next renewal (within a third of the session) restores it; producing goes on. Then cut
    from etcd, where no renewal can restore it, and +30 s again: it must stop acknowledging at once,
    not at its deadline (0.9 session after its last renewal)."""
    with scenario(net, tmp_path) as run:
        meta = run.start()
        old = meta.leader_id
        run.cluster.jump_clock(old, 30)
        t = time.monotonic()
        print(f"b{old}'s clock +30 s at {t - run.history.start:.2f}")
        print(f"first ack after: {first_ack_after(run, t):.2f} s")
        run.wait_acks(30)
        assert run.meta().leader_id == old, f"seed={run.seed}: it did not recover: {run.views()}"
        run.cluster.jump_clock(old, 0)  # back: now 30 s behind its own deadline
        t = time.monotonic()
        print(f"first ack after the clock went back: {first_ack_after(run, t):.2f} s")
        run.wait_acks(20)
        # a renewal on the honest clock puts its deadline back where etcd has it: before it, the deadline
        # a renewal gave it on the +30 s clock still stands and the jump below would only undo it
        time.sleep(SESSION_S / 2)

        net.isolate(f"b{old}", run.cluster.etcd_nodes)  # first: no renewal may land after the jump
        run.avoid.add(old)
        time.sleep(0.1)
        run.cluster.jump_clock(old, 30)
        t_fault = time.monotonic()
        print(f"b{old} cut from etcd, then its clock +30 s at {t_fault - run.history.start:.2f}")
        time.sleep(0.2)  # the file is read within 50 ms
        # well inside the 0.9 session its last renewal gave it on an honest clock, while its followers
        # still follow it: only the jump can make it refuse
        answers = [probe_produce(run, old) for _ in range(3)]
        print(f"b{old} answers {time.monotonic() - t_fault:.2f} s after the jump: {answers}")
        assert not any("acknowledged" in a for a in answers), f"seed={run.seed}: not fenced at once: {answers}"
        late = [a for a in run.acked(old, after=t_fault) if a.t_invoke > t_fault + 0.2]
        assert not late, f"seed={run.seed}: acknowledged with its deadline 30 s behind it: {late[:5]}"
        run.wait(lambda: [a for a in run.acked(after=t_fault) if a.broker != old], 30, "an ack by a new leader")
        run.cluster.jump_clock(old, 0)
        net.heal_drops()
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"


def test_the_leaders_clock_jumps_back_while_cut_from_etcd(net, tmp_path):
    """-30 s on the leader's lease clock, then the leader cut from etcd: it believes its lease valid 30 s
    longer than etcd does. Etcd expires it, a follower is elected, the followers follow etcd and stop
    fetching from it: with min_insync_replicas 2 it cannot acknowledge acks=all alone (and it cannot
    shrink its ISR, a write to etcd). Nothing it acknowledged after the new leader's election is lost,
    and the two never acknowledge at once."""
    with scenario(net, tmp_path) as run:
        meta = run.start()
        old = meta.leader_id
        run.cluster.jump_clock(old, -30)
        time.sleep(0.2)  # the broker reads the file within 50 ms
        net.isolate(f"b{old}", run.cluster.etcd_nodes)
        run.avoid.add(old)
        t_fault = time.monotonic()
        print(f"b{old}'s clock -30 s, then cut from etcd at {t_fault - run.history.start:.2f}")
        run.wait(lambda: [a for a in run.acked(after=t_fault) if a.broker != old], 30, "an ack by a new leader")
        new_first = min(a.t_done for a in run.acked(after=t_fault) if a.broker != old)
        late = run.acked(old, after=t_fault)
        print(f"acks by the old leader after the cut: {len(late)}; the new leader's first after "
              f"{new_first - t_fault:.2f} s")  # fmt: skip
        assert max((a.t_done for a in late), default=t_fault) < new_first, f"seed={run.seed}: two leaders acked"
        assert new_first - t_fault < BOUND_S, f"seed={run.seed}: unavailable {new_first - t_fault:.1f} s"
        print(f"a produce to the old leader now: {probe_produce(run, old)}")
        run.wait_acks(20)
        run.cluster.jump_clock(old, 0)
        net.heal_drops()
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"


# -- the scenarios can fail ------------------------------------------------------------------------------
@pytest.mark.parametrize("mutation", ["", "ack-before-replication"])
def test_a_leader_cut_from_followers_and_etcd(net, tmp_path, monkeypatch, mutation):
    """The leader hears only the clients: its followers cannot copy, etcd elects another. The real
    broker never acknowledges acks=all alone (timeouts: indeterminate); a broker that acknowledges
    before replicating (TIDELOG_TEST_MUTATION) loses those records, and the checker must say so."""
    if mutation:
        monkeypatch.setenv("TIDELOG_TEST_MUTATION", mutation)
    with scenario(net, tmp_path) as run:
        meta = run.start()
        old = meta.leader_id
        net.isolate(f"b{old}", [f"b{b}" for b in meta.replicas if b != old] + run.cluster.etcd_nodes)
        run.avoid.add(old)
        t_fault = time.monotonic()
        print(f"mutation={mutation or 'none'}: b{old} hears only the clients from {t_fault - run.history.start:.2f}")
        run.wait(lambda: [a for a in run.acked(after=t_fault) if a.broker != old], 30, "an ack by a new leader")
        alone = run.acked(old, after=t_fault + 0.2)
        print(f"acknowledged by the cut-off leader: {len(alone)}")
        run.wait_acks(20)
        net.heal_drops()
        report = run.finish()
    if not mutation:
        assert report.ok, f"seed={run.seed}: {report}"
        assert not alone, f"seed={run.seed}: acknowledged with one copy: {alone[:5]}"
    else:
        assert not report.ok, f"seed={run.seed}: the checker missed {mutation}"
        assert {"lost-write", "divergent-replicas"} & set(report.kinds), f"seed={run.seed}: {report}"
