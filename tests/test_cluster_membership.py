"""Cluster membership on a real etcd: brokers register on leases, one id is held by one live broker, one
controller at a time, and a deposed controller's writes are fenced off by its epoch."""

from __future__ import annotations

import asyncio

import pytest

from tidelog.cluster import etcd
from tidelog.cluster.membership import BrokerSession, cluster_status, controller_key, prefix
from tidelog.cluster.metadata import ClusterView
from tidelog.errors import BrokerIdInUseError, ClusterUnavailableError, InvalidConfigError

from .helpers.etcd import EtcdProcess


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory):
    server = EtcdProcess(str(tmp_path_factory.mktemp("etcd"))).start()
    try:
        yield server.url
    finally:
        server.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def session(url: str, cluster: str, broker_id: int, timeout_ms: int = 2000) -> BrokerSession:
    s = BrokerSession(etcd.connect(url), cluster, broker_id, f"127.0.0.1:{50000 + broker_id}", timeout_ms)
    await s.start()
    return s


def test_three_brokers_register_and_exactly_one_is_controller(etcd_url):
    async def scenario():
        brokers = [await session(etcd_url, "three", i) for i in (1, 2, 3)]
        status = await cluster_status(brokers[0].client, "three")
        controllers = [b.broker_id for b in brokers if b.is_controller]
        for b in brokers:
            await b.close()
        after = await cluster_status(brokers[0].client, "three")
        return status, controllers, after

    status, controllers, after = run(scenario())
    assert [(b.broker_id, b.endpoint) for b in status.brokers] == [(i, f"127.0.0.1:{50000 + i}") for i in (1, 2, 3)]
    assert len({b.epoch for b in status.brokers}) == 3
    assert controllers == [status.controller_id]
    assert after.brokers == [] and after.controller_id is None  # a clean stop leaves at once


def test_a_broker_id_is_held_by_one_live_broker_until_it_leaves(etcd_url):
    async def scenario():
        first = await session(etcd_url, "ids", 7)
        with pytest.raises(BrokerIdInUseError, match="broker id 7 is registered .* by 127.0.0.1:50007"):
            await session(etcd_url, "ids", 7)
        await first.close()
        second = await session(etcd_url, "ids", 7)  # free again once the first left
        epochs = (first.epoch, second.epoch)
        await second.close()
        return epochs

    first_epoch, second_epoch = run(scenario())
    assert second_epoch > first_epoch


def test_a_deposed_controller_cannot_write_and_the_next_has_a_higher_epoch(etcd_url):
    async def scenario():
        a = await session(etcd_url, "fence", 1)
        b = await session(etcd_url, "fence", 2)
        assert a.is_controller and not b.is_controller
        tx = a.client.transactions
        key = b"/tidelog/fence/marker"
        assert await a.fenced([tx.put(key, b"by the first controller")])
        # etcd expires a's lease (a paused process, a partition): its keys go, and b is elected, while
        # a's own clock has not yet reached its deadline
        await a.client.revoke_lease(a._lease.id)
        assert await b.campaign() and b.controller_epoch > a.controller_epoch
        assert a.is_controller  # it cannot know yet...
        wrote = await a.fenced([tx.put(key, b"by the deposed controller")])
        value = (await b.client.get(key)).value
        assert await b.fenced([tx.put(key, b"by the second controller")])
        holder = (await b.client.get(controller_key("fence"))).value
        await b.close()
        return wrote, value, a.is_controller, holder

    wrote, value, still, holder = run(scenario())
    assert not wrote and value == b"by the first controller"  # ...but its write is refused
    assert not still  # and it no longer takes itself for the controller
    assert b'"broker_id": 2' in holder


def test_a_controller_whose_lease_expires_loses_the_role_and_another_takes_it(etcd_url):
    async def scenario():
        a = await session(etcd_url, "expiry", 1, timeout_ms=1000)
        b = await session(etcd_url, "expiry", 2, timeout_ms=1000)
        a._keepalive.cancel()  # a stops renewing: as a frozen or dead process does
        for _ in range(100):  # b's keepalive campaigns again once a's lease expired (bounded wait)
            if b.is_controller:
                break
            await asyncio.sleep(0.1)
        result = (a.is_controller, b.is_controller, b.controller_epoch > (a.controller_epoch or 0))
        await b.close()
        return result

    a_controller, b_controller, higher = run(scenario())
    assert not a_controller  # its local deadline passed before etcd could elect b
    assert b_controller and higher


def test_a_campaign_whose_answer_was_lost_still_makes_its_broker_the_controller(etcd_url):
    """The campaign's transaction lands in etcd but its answer never arrives (the stream cut mid-call):
    the key is held by this broker's lease, so no other broker can take it while the lease is renewed.
    The next campaign must find it is the controller; before, the cluster had no acting controller
    (no elections) for as long as that broker lived."""

    async def scenario():
        client = etcd.connect(etcd_url)
        real = client.transaction
        calls, lost = [], []

        async def answer_lost(*args, **kwargs):
            result = await real(*args, **kwargs)
            calls.append(result)
            if len(calls) == 2:  # the first registers the broker, the second is its campaign
                lost.append(result)
                raise ConnectionError("Stream removed (the answer was lost)")
            return result

        client.transaction = answer_lost
        a = BrokerSession(client, "lost", 1, "127.0.0.1:50001", 1000)
        await a.start()
        first = a.is_controller
        b = await session(etcd_url, "lost", 2, timeout_ms=1000)
        for _ in range(50):  # a's keepalive campaigns again after its next renewal (bounded wait)
            if a.is_controller:
                break
            await asyncio.sleep(0.1)
        result = (bool(lost), first, a.is_controller, b.is_controller, (await cluster_status(b.client, "lost")))
        await a.close()
        await b.close()
        return result

    landed, first, a_controller, b_controller, status = run(scenario())
    assert landed and not first  # the answer was lost: it could not know yet
    assert status.controller_id == 1  # the key is a's
    assert a_controller and not b_controller


def test_bad_cluster_urls_and_an_unreachable_etcd_are_clear_errors(tmp_path):
    for url in ("http://127.0.0.1:2379", "etcd://", "etcd://127.0.0.1", "etcd://127.0.0.1:99999", "etcd://h:1/x"):
        with pytest.raises(InvalidConfigError, match="cluster"):
            etcd.endpoints(url)
    assert etcd.endpoints("etcd://a:1,b:2") == [("a", 1), ("b", 2)]
    refused = __import__("socket").socket()
    refused.bind(("127.0.0.1", 0))  # bound, never listening: nothing answers there
    try:
        url = f"etcd://127.0.0.1:{refused.getsockname()[1]}"

        async def scenario():
            s = BrokerSession(etcd.connect(url), "down", 1, "127.0.0.1:1", 1000)
            with pytest.raises(ClusterUnavailableError, match="cannot register with etcd"):
                await s.start()

        run(scenario())
    finally:
        refused.close()


def test_a_broker_whose_lease_expired_registers_again_with_a_new_epoch(etcd_url):
    async def scenario():
        a = await session(etcd_url, "rejoin", 4, timeout_ms=1000)
        first_epoch = a.epoch
        await a.client.revoke_lease(a._lease.id)  # as etcd does when the broker was out of reach too long
        for _ in range(100):  # its keepalive finds the lease gone and registers again (bounded wait)
            if a.epoch != first_epoch and a.alive:
                break
            await asyncio.sleep(0.1)
        listed = await cluster_status(a.client, "rejoin")
        result = (first_epoch, a.epoch, [b.broker_id for b in listed.brokers], a.is_controller)
        await a.close()
        return result

    first_epoch, epoch, listed, controller = run(scenario())
    assert epoch > first_epoch and listed == [4]
    assert controller  # alone, it is elected again


def test_a_lease_clock_jumped_forward_fences_the_broker_until_its_next_renewal(etcd_url, tmp_path, monkeypatch):
    """The clock-jump test hook: a broker whose lease clock jumps past its deadline stops counting itself
    a member (and the controller) at once; its next successful renewal, read on the same clock, makes it
    a member again. A jump backward cannot outlast etcd: the session is still renewed on etcd's terms."""
    from tidelog.cluster.membership import SkewedClock, lease_clock

    skew = tmp_path / "skew"
    monkeypatch.setenv("TIDELOG_TEST_CLOCK_FILE", str(skew))
    clock = lease_clock()
    assert isinstance(clock, SkewedClock)
    monkeypatch.delenv("TIDELOG_TEST_CLOCK_FILE")
    assert lease_clock() is __import__("time").monotonic

    async def scenario():
        s = BrokerSession(etcd.connect(etcd_url), "skew", 1, "127.0.0.1:50001", 3000, clock)
        await s.start()
        before = (s.alive, s.is_controller)
        skew.write_text("30")
        await asyncio.sleep(0.1)  # the file is read again at most every 50 ms
        jumped = (s.alive, s.is_controller)
        for _ in range(60):  # renewed every session/3 = 1 s (bounded wait)
            if s.alive:
                break
            await asyncio.sleep(0.1)
        renewed = s.alive
        skew.write_text("-30")
        await asyncio.sleep(0.1)
        back = s.alive
        await s.close()
        return before, jumped, renewed, back, s.alive

    before, jumped, renewed, back, closed = run(scenario())
    assert before == (True, True)
    assert jumped == (False, False)
    assert renewed
    assert back and not closed  # a clean close ends membership whatever the clock says


def test_a_change_between_the_views_first_read_and_its_watch_is_not_missed(etcd_url):
    """A broker's view reads the state, then opens its watch: a topic created in between must be seen at
    once, not at the next periodic refresh (here never: refresh_s is 1000)."""

    async def scenario():
        real = etcd.connect(etcd_url)

        class WriteInTheGap:
            """The real client, but someone writes just before the view's watch opens."""

            def __getattr__(self, name):
                return getattr(real, name)

            async def watch_prefix(self, key, **options):
                await real.put(prefix("gap") + b"config/late", b"1")
                return await real.watch_prefix(key, **options)

        seen: list[dict] = []

        async def on_change(snapshot):
            seen.append(dict(snapshot.settings))

        view = ClusterView(WriteInTheGap(), "gap", on_change, refresh_s=1000)
        try:
            await view.start()
            for _ in range(100):
                if any("late" in s for s in seen):
                    break
                await asyncio.sleep(0.05)
        finally:
            await view.close()
            await real.close()
        return seen

    assert any(s.get("late") == "1" for s in run(scenario()))
