"""The cluster under network faults: etcd and three brokers, each in a network namespace of its own
(tests/helpers/netns.py), while a producer (acks=all) and a consumer run from the test process and
log every operation; at the end every replica is dumped and the history checker (as in
tests/test_cluster_chaos.py) must find no anomaly: no acknowledged record lost, no divergent replicas,
no read past the high watermark.

- the harness itself: links, drop rules, rate limit and the delay proxy do what they say, and heal;
- a partition's leader cut off from everything (its link down), then back;
- the leader cut off from etcd only (still heard by clients and followers): it stops acknowledging
  at its local deadline, another is elected;
- the leader cut off from its followers only: acks=all times out, the ISR shrinks to the leader and
  then acks=all is refused (min_insync_replicas 2), never acknowledged with one copy;
- a follower cut off: the ISR shrinks and producing goes on.

Needs root (network namespaces); skips, saying why, elsewhere. Each run prints its seed.
"""

from __future__ import annotations

import collections
import socket
import subprocess
import sys
import time

import pytest

from tidelog.errors import BrokerUnavailableError

from .helpers.netns import HOST, DelayProxy, network
from .helpers.netrun import LAG_MS, SESSION_MS, probe_produce, scenario

pytestmark = pytest.mark.slow  # real processes, real namespaces


@pytest.fixture
def net():
    with network() as n:
        yield n


# -- the harness ----------------------------------------------------------------------------------------
ECHO = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], 7000)); s.listen()\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(c.recv(100)); c.close()\n"
)
PROBE = (
    "import socket, sys\n"
    "try:\n"
    "    s = socket.create_connection((sys.argv[1], 7000), timeout=float(sys.argv[2])); s.sendall(b'x')\n"
    "    sys.exit(0 if s.recv(1) == b'x' else 1)\n"
    "except OSError:\n"
    "    sys.exit(1)\n"
)


def reaches(ip: str, timeout_s: float = 1.0, port: int = 7000) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout_s) as s:
            s.sendall(b"x")
            return s.recv(1) == b"x"
    except OSError:
        return False


def test_the_harness_cuts_and_heals(net):
    a, b = net.add_node("a"), net.add_node("b")
    servers = [subprocess.Popen([*n.exec, sys.executable, "-c", ECHO, n.ip]) for n in (a, b)]
    try:

        def a_reaches_b() -> bool:
            probe = [*a.exec, sys.executable, "-c", PROBE, b.ip, "1"]
            return subprocess.run(probe, timeout=10).returncode == 0

        deadline = time.monotonic() + 10
        while not (reaches(a.ip) and reaches(b.ip)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reaches(a.ip) and reaches(b.ip) and a_reaches_b()

        net.link_down("b")
        assert not reaches(b.ip) and not a_reaches_b() and reaches(a.ip)
        net.link_up("b")
        assert reaches(b.ip) and a_reaches_b()

        net.drop("a", "b")  # asymmetric: a's packets never reach b, so no connection either way
        assert not a_reaches_b() and reaches(b.ip)
        net.undrop("a", "b")
        assert a_reaches_b()

        net.cut(HOST, "a")
        assert not reaches(a.ip) and reaches(b.ip) and a_reaches_b()
        net.heal_drops()
        assert reaches(a.ip)

        net.rate_limit("b", "256kbit")
        assert reaches(b.ip, timeout_s=5)
        out = subprocess.run(["tc", "-n", b.ns, "qdisc", "show", "dev", "eth0"], capture_output=True, text=True)
        assert "tbf" in out.stdout
        net.unrate("b")

        proxy = DelayProxy(net.host_ip, b.ip, 7000, delay_s=0.4).start()
        try:
            t = time.monotonic()
            assert reaches(net.host_ip, timeout_s=5, port=proxy.port)
            assert time.monotonic() - t >= 0.8  # the request and the answer are each held 0.4 s
            proxy.delay_s = 0
            t = time.monotonic()
            assert reaches(net.host_ip, timeout_s=5, port=proxy.port)
            assert time.monotonic() - t < 0.4
        finally:
            proxy.stop()
        net.heal()
    finally:
        for s in servers:
            s.kill()
            s.wait()
    namespaces = list(net.namespaces)
    net.teardown()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in listed for ns in namespaces)
    assert net.host_if not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout


# -- the cluster under faults -----------------------------------------------------------------------------
def test_leader_cut_off_from_everything(net, tmp_path):
    """The leader's link goes down while producing; a new leader must acknowledge within the session
    plus 10 s; the old one comes back as a follower; nothing acknowledged is lost."""
    with scenario(net, tmp_path) as run:
        meta = run.start()
        old = meta.leader_id
        run.avoid.add(old)
        net.link_down(f"b{old}")
        t_fault = time.monotonic()  # the fault is in place
        print(f"broker {old} (leader) cut off at {t_fault - run.history.start:.2f}")
        run.wait(lambda: run.acked(after=t_fault), 30 + SESSION_MS / 1000, "an ack after the cut")
        first = min(a.t_done for a in run.acked(after=t_fault))
        took = first - t_fault
        print(f"first ack after the cut: {took:.2f} s later")
        assert all(a.broker != old for a in run.acked(after=t_fault))  # it cannot be reached at all
        assert took < SESSION_MS / 1000 + 10, f"seed={run.seed}: unavailable for {took:.1f} s"
        run.wait_acks(20)
        time.sleep(run.rng.uniform(0, 2))
        net.link_up(f"b{old}")
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"


def test_leader_cut_off_from_etcd_only(net, tmp_path):
    """The leader no longer hears etcd (nor etcd it) but clients and followers still reach it: it
    must stop acknowledging by its local deadline (before the session ends), another broker must
    lead and acknowledge; back, nothing acknowledged is lost."""
    with scenario(net, tmp_path) as run:
        meta = run.start()
        old = meta.leader_id
        run.avoid.add(old)
        net.cut(f"b{old}", "etcd")
        t_fault = time.monotonic()  # the fault is in place
        print(f"broker {old} (leader) cut off from etcd at {t_fault - run.history.start:.2f}")
        run.wait(lambda: [a for a in run.acked(after=t_fault) if a.broker != old], 30, "an ack by a new leader")
        new_first = min(a.t_done for a in run.acked(after=t_fault) if a.broker != old)
        late = run.acked(old, after=t_fault)
        last = max((a.t_done for a in late), default=t_fault) - t_fault
        print(f"acks by the old leader after the cut: {len(late)}, the last {last:.2f} s after it")
        print(f"first ack by the new leader: {new_first - t_fault:.2f} s after the cut")
        session = SESSION_MS / 1000
        # Its local deadline is 0.9 session after its last successful renewal, sent before the cut: no
        # request sent after that may be acknowledged, and no answer may leave it much later.
        deadline = t_fault + 0.9 * session
        stale = [a for a in late if a.t_invoke > deadline or a.t_done > deadline + 0.5]
        assert not stale, f"seed={run.seed}: the cut-off leader acknowledged after its deadline: {stale[:5]}"
        assert last < new_first - t_fault, f"seed={run.seed}: two leaders acknowledged at once"
        assert new_first - t_fault < session + 10, f"seed={run.seed}: unavailable for {new_first - t_fault:.1f} s"
        run.wait_acks(20)
        print(f"during the cut the brokers say: {run.views()}")
        print(f"a produce to the old leader during the cut: {probe_produce(run, old)}")
        time.sleep(run.rng.uniform(0, 2))
        net.uncut(f"b{old}", "etcd")
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"


def test_leader_cut_off_from_its_followers(net, tmp_path):
    """The leader still hears etcd and the clients, not its followers: acks=all times out
    (indeterminate), the ISR shrinks to the leader after replica_lag_time_max_ms, then acks=all is
    refused (min_insync_replicas 2): never acknowledged with one copy. Back, the ISR fills again."""
    with scenario(net, tmp_path) as run:
        meta = run.start()
        old = meta.leader_id
        followers = [b for b in meta.replicas if b != old]
        net.isolate(f"b{old}", [f"b{f}" for f in followers])
        t_fault = time.monotonic()  # the fault is in place
        print(f"broker {old} (leader) cut off from {followers} at {t_fault - run.history.start:.2f}")
        shrunk = run.wait(
            lambda: list((m := run.meta()).isr) == [old] and m, LAG_MS / 1000 + 15, "the ISR shrunk to the leader"
        )
        t_shrunk = time.monotonic()
        print(f"ISR {list(shrunk.isr)} {t_shrunk - t_fault:.2f} s after the cut, leader {shrunk.leader_id}")
        run.wait(
            lambda: [a for a in run.attempts if a.code == 19 and a.t_invoke > t_shrunk],
            10,
            "acks=all refused with NOT_ENOUGH_REPLICAS",
        )
        time.sleep(run.rng.uniform(1, 3))
        one_copy = run.acked(after=t_fault)
        outcomes = collections.Counter((a.status, a.code) for a in run.attempts if a.t_invoke > t_fault)
        print(f"outcomes during the cut: {dict(outcomes)}")
        assert not one_copy, f"seed={run.seed}: acknowledged while the leader was alone: {one_copy[:5]}"
        net.heal_drops()
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"


def test_follower_cut_off(net, tmp_path):
    """A follower's link goes down: acks=all stalls until the ISR drops it (replica_lag_time_max_ms,
    or its session), then goes on with two copies; back, it catches up and re-enters the ISR."""
    with scenario(net, tmp_path) as run:
        meta = run.start()
        follower = run.rng.choice([b for b in meta.replicas if b != meta.leader_id])
        run.avoid.add(follower)
        net.link_down(f"b{follower}")
        t_fault = time.monotonic()  # the fault is in place
        print(f"broker {follower} (follower of {meta.leader_id}) cut off at {t_fault - run.history.start:.2f}")
        shrunk = run.wait(
            lambda: follower not in (m := run.meta()).isr and m, LAG_MS / 1000 + 15, "the follower out of the ISR"
        )
        print(f"ISR {list(shrunk.isr)} {time.monotonic() - t_fault:.2f} s after the cut")
        run.wait_acks(20, timeout_s=30)
        first = min(a.t_done for a in run.acked(after=t_fault))
        print(f"first ack after the cut: {first - t_fault:.2f} s later")
        assert first - t_fault < LAG_MS / 1000 + 10, f"seed={run.seed}: stalled {first - t_fault:.1f} s"
        time.sleep(run.rng.uniform(0, 2))
        net.link_up(f"b{follower}")
        report = run.finish()
    assert report.ok, f"seed={run.seed}: {report}"


def test_a_leader_cut_off_from_etcd_does_not_name_itself(net, tmp_path):
    """Past its deadline the deposed leader must not send clients back to itself: its NOT_LEADER answer
    and its Metadata name another broker (or none)."""
    with scenario(net, tmp_path) as run:
        meta = run.start()
        old = meta.leader_id
        run.avoid.add(old)
        net.cut(f"b{old}", "etcd")
        t_fault = time.monotonic()
        run.wait(lambda: [a for a in run.acked(after=t_fault) if a.broker != old], 30, "an ack by a new leader")
        answer = probe_produce(run, old)
        try:
            said = run.meta_of(old)
        except BrokerUnavailableError as exc:  # out of its cluster: it sends clients to other brokers
            said = None
            print(f"the old leader's metadata: refused ({exc.message})")
        print(f"the old leader answers a produce: {answer}")
        assert f"led by broker {old} " not in answer, answer
        assert said is None or said.leader_id != old, f"broker {old} still says it leads (epoch {said.leader_epoch})"
