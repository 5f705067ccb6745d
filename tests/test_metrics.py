"""Prometheus metrics and /healthz: exact counters and lag after known traffic, readiness through the lifecycle."""

from __future__ import annotations

import asyncio
import pathlib
import re
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tidelog import Engine
from tidelog.client import Admin, Consumer, Producer
from tidelog.config import ServerConfig
from tidelog.errors import InvalidConfigError
from tidelog.groups.coordinator import GroupCoordinator
from tidelog.server import app
from tidelog.server.metrics import EngineCollector

from .server_process import ServerProcess, config_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
N0, N1 = 37, 21  # records produced to partitions 0 and 1
COMMITTED = 12  # the offset group "g" commits on partition 0


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return samples(body)


def part(topic: str, partition: int, **more) -> tuple:
    return tuple(sorted({"topic": topic, "partition": str(partition), **more}.items()))


def wait_until(predicate, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def check_documented(text: str) -> None:
    """The README's metric table and the alert rules name exactly what a broker with traffic exposes."""
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(tidelog_\w+)` \|", readme, re.M))
    exposed = {
        f.name + "_total" if f.type == "counter" else f.name
        for f in text_string_to_metric_families(text)
        if not f.name.endswith("_created")
    }  # prometheus_client's creation timestamps
    assert documented == exposed
    alerts = (ROOT / "docs" / "monitoring" / "alerts.yml").read_text()
    used = {re.sub(r"_(bucket|count|sum)$", "", n) for n in re.findall(r"\b(tidelog_\w+)", alerts)}
    assert used <= documented


@pytest.fixture
def served(tmp_path):
    srv = ServerProcess(str(tmp_path / "data"), "--config", config_file(tmp_path)).start()
    yield srv
    srv.stop()


def test_scrape_after_known_traffic_reports_exact_counters_offsets_and_lag(served):
    base_ts = int(time.time() * 1000) - 3_600_000  # an hour old: lag seconds are about 3600
    with Admin(served.target) as admin:
        admin.create_topic("orders", 2)
        with Producer(served.target, linger_ms=1) as producer:
            for i in range(N0):
                producer.send("orders", b"v" * (10 + i), partition=0, timestamp_ms=base_ts + i)
            for i in range(N1):
                producer.send("orders", b"w" * 100, partition=1, timestamp_ms=base_ts + i)
            producer.flush()
        with Consumer(served.target, "orders", 0, 0) as consumer:
            got = []
            wait_until(lambda: got.extend(consumer.poll(0.2)) or len(got) >= N0, what="partition 0 consumed")
        assert len(got) == N0
        admin.reset_offsets("g", "orders", COMMITTED, partitions=[0])
        admin.reset_offsets("g", "orders", "latest", partitions=[1])
        before_ms = int(time.time() * 1000)
        m = scrape(served.metrics_port)
        after_ms = int(time.time() * 1000) + 1
    check_documented(get(f"http://127.0.0.1:{served.metrics_port}/metrics")[1])

    assert m[("tidelog_produce_records_total", part("orders", 0))] == N0
    assert m[("tidelog_produce_records_total", part("orders", 1))] == N1
    for p, n in ((0, N0), (1, N1)):
        size = m[("tidelog_log_size_bytes", part("orders", p))]
        assert size > n * 10
        assert m[("tidelog_produce_bytes_total", part("orders", p))] == size  # one segment holds every batch
        assert m[("tidelog_log_end_offset", part("orders", p))] == n
        assert m[("tidelog_log_high_watermark", part("orders", p))] == n
        assert m[("tidelog_log_start_offset", part("orders", p))] == 0
        assert m[("tidelog_log_segments", part("orders", p))] == 1
    # Partition 0 was read once from start to end; partition 1 never.
    assert m[("tidelog_fetch_records_total", part("orders", 0))] == N0
    assert m[("tidelog_fetch_bytes_total", part("orders", 0))] == m[("tidelog_log_size_bytes", part("orders", 0))]
    assert m[("tidelog_fetch_records_total", part("orders", 1))] == 0
    assert m[("tidelog_fetch_bytes_total", part("orders", 1))] == 0

    g0, g1 = part("orders", 0, group="g"), part("orders", 1, group="g")
    assert m[("tidelog_consumer_group_committed_offset", g0)] == COMMITTED
    assert m[("tidelog_consumer_group_lag_records", g0)] == N0 - COMMITTED
    assert m[("tidelog_consumer_group_lag_records", g1)] == 0
    assert m[("tidelog_consumer_group_lag_seconds", g1)] == 0  # caught up
    first_unconsumed_ms = base_ts + COMMITTED
    assert (
        (before_ms - first_unconsumed_ms) / 1000
        <= m[("tidelog_consumer_group_lag_seconds", g0)]
        <= (after_ms - first_unconsumed_ms) / 1000
    )
    assert m[("tidelog_consumer_group_members", (("group", "g"),))] == 0
    assert m[("tidelog_consumer_group_rebalances_total", (("group", "g"),))] == 0

    rpc = (("method", "tidelog.v1.Admin/CreateTopic"),)
    assert m[("tidelog_request_duration_seconds_count", rpc)] == 1
    assert m[("tidelog_request_duration_seconds_count", (("method", "tidelog.v1.Groups/ResetOffsets"),))] == 2
    assert m[("tidelog_inflight_requests", rpc)] == 0
    assert m[("tidelog_fsync_total", ())] == m[("tidelog_fsync_duration_seconds_count", ())] > 0
    assert m[("tidelog_ready", ())] == 1
    assert m[("tidelog_clean_start", ())] == 1
    assert m[("tidelog_metrics_omitted_series", (("kind", "partition"),))] == 0


def test_group_members_rebalances_and_open_streams_follow_a_live_consumer(served):
    with Admin(served.target) as admin:
        admin.create_topic("events", 2)
    group = (("group", "live"),)
    subscribe = (("method", "tidelog.v1.Consumer/Subscribe"),)
    consumer = Consumer(served.target, group_id="live", topics=["events"])
    try:
        # polling opens the partitions once granted (a new group waits group_initial_rebalance_delay_ms)
        wait_until(lambda: consumer.poll(0.1) is not None and consumer.assignment(), what="the partitions")
        m = wait_until(
            lambda: (
                lambda m: (
                    m
                    if m.get(("tidelog_consumer_group_members", group)) == 1
                    and m.get(("tidelog_open_streams", subscribe)) == 2
                    else None
                )
            )(scrape(served.metrics_port)),
            what="one member consuming both partitions",
        )
        assert m[("tidelog_consumer_group_rebalances_total", group)] == 1
        assert m[("tidelog_connections", ())] >= 1
        consumer.commit({("events", 0): 0})  # with a commit the group outlives its last member
    finally:
        consumer.close()
    m = wait_until(
        lambda: (
            lambda m: (
                m
                if m.get(("tidelog_consumer_group_members", group)) == 0
                and m.get(("tidelog_open_streams", subscribe)) == 0
                else None
            )
        )(scrape(served.metrics_port)),
        what="the member gone",
    )
    assert m[("tidelog_consumer_group_rebalances_total", group)] == 2  # join, leave
    assert m[("tidelog_consumer_group_lag_records", part("events", 0, group="live"))] == 0


def test_healthz_is_ok_while_serving_and_the_endpoint_closes_after_stop(served):
    assert get(f"http://127.0.0.1:{served.metrics_port}/healthz") == (200, "ok\n")
    assert get(f"http://127.0.0.1:{served.metrics_port}/nope")[0] == 404
    assert served.stop() == 0
    with pytest.raises(urllib.error.URLError):
        get(f"http://127.0.0.1:{served.metrics_port}/healthz")


def test_collector_reports_lag_in_seconds_from_record_timestamps(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as engine:
        engine.create_topic("t", 1)
        engine.produce("t", [b"a", b"b", b"c"], timestamps=[clock.now - 5000, clock.now - 4000, clock.now - 3000])
        coordinator = GroupCoordinator(engine, clock=clock)
        coordinator.reset_offsets("g", "t", 1)
        registry = CollectorRegistry()
        registry.register(EngineCollector(lambda: engine, lambda: coordinator, lambda: True, 10))
        clock.advance(250)
        m = samples(generate_latest(registry).decode())
        assert m[("tidelog_consumer_group_lag_records", part("t", 0, group="g"))] == 2
        assert m[("tidelog_consumer_group_lag_seconds", part("t", 0, group="g"))] == 4.25
        coordinator.reset_offsets("g", "t", "latest")
        m = samples(generate_latest(registry).decode())
        assert m[("tidelog_consumer_group_lag_seconds", part("t", 0, group="g"))] == 0
        # Lag is read without counting as consumption.
        assert m[("tidelog_fetch_records_total", part("t", 0))] == 0


def test_partitions_past_the_cap_are_counted_not_exported(data_dir):
    with Engine.open(data_dir) as engine:
        engine.create_topic("t", 3)
        registry = CollectorRegistry()
        registry.register(EngineCollector(lambda: engine, lambda: None, lambda: True, 2))
        m = samples(generate_latest(registry).decode())
        assert [p for p in range(3) if ("tidelog_log_size_bytes", part("t", p)) in m] == [0, 1]
        assert m[("tidelog_metrics_omitted_series", (("kind", "partition"),))] == 1


@pytest.mark.parametrize("port", [-2, 65536, "9464", True])
def test_metrics_port_is_validated(port):
    with pytest.raises(InvalidConfigError, match="metrics_port"):
        ServerConfig(metrics_port=port)


class _LoopThread:
    """An event loop on its own thread, so a test can drive an in-process Server and block on HTTP."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def hold_recovery(monkeypatch) -> threading.Event:
    """Make the server's Engine.open wait (the log "recovers") until the returned event is set."""
    opening = threading.Event()
    real_open = Engine.open

    def slow_open(*args, **kwargs):
        assert opening.wait(30)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(app.Engine, "open", staticmethod(slow_open))
    return opening


def test_healthz_answers_503_while_recovering_and_while_shutting_down(data_dir, monkeypatch):
    closing = threading.Event()
    opening = hold_recovery(monkeypatch)
    server = app.Server(ServerConfig(port=0, metrics_port=0, data_dir=data_dir))
    loop = _LoopThread()
    try:
        started = loop.submit(server.start())
        wait_until(lambda: server.metrics_port, what="the metrics endpoint")
        url = f"http://127.0.0.1:{server.metrics_port}"
        assert get(url + "/healthz") == (503, "recovering\n")
        assert samples(get(url + "/metrics")[1])[("tidelog_ready", ())] == 0
        opening.set()
        started.result(30)
        assert get(url + "/healthz") == (200, "ok\n")

        real_close = server.engine.close

        def slow_close():
            assert closing.wait(30)
            real_close()

        server.engine.close = slow_close
        stopped = loop.submit(server.stop())
        wait_until(lambda: get(url + "/healthz") == (503, "shutting down\n"), what="503 while shutting down")
        closing.set()
        stopped.result(30)
        with pytest.raises(urllib.error.URLError):
            get(url + "/healthz")
    finally:
        opening.set()
        closing.set()
        if server.engine is not None and not server.engine.closed:
            loop.submit(server.stop()).result(30)
        loop.close()


def test_metrics_port_minus_one_turns_the_endpoint_off(data_dir):
    server = app.Server(ServerConfig(port=0, metrics_port=-1, data_dir=data_dir))
    loop = _LoopThread()
    try:
        loop.submit(server.start()).result(30)
        assert server.metrics_port is None
    finally:
        loop.submit(server.stop()).result(30)
        loop.close()


def test_grpc_health_is_not_serving_and_calls_are_unavailable_while_recovering(data_dir, monkeypatch):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tidelog.v1 import tidelog_pb2 as pb

    opening = hold_recovery(monkeypatch)
    server = app.Server(ServerConfig(port=0, metrics_port=-1, data_dir=data_dir))
    loop = _LoopThread()
    try:
        started = loop.submit(server.start())
        wait_until(lambda: server.port, what="the gRPC port")
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                == health_pb2.HealthCheckResponse.NOT_SERVING
            )
            topics = ch.unary_unary(
                "/tidelog.v1.Admin/ListTopics",
                request_serializer=pb.ListTopicsRequest.SerializeToString,
                response_deserializer=pb.ListTopicsResponse.FromString,
            )
            with pytest.raises(grpc.RpcError) as err:
                topics(pb.ListTopicsRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "starting" in err.value.details()
            subscribe = ch.stream_stream(
                "/tidelog.v1.Consumer/Subscribe", request_serializer=None, response_deserializer=None
            )
            with pytest.raises(grpc.RpcError) as err:
                list(subscribe(iter([b""]), timeout=10))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            opening.set()
            started.result(30)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                == health_pb2.HealthCheckResponse.SERVING
            )
            assert topics(pb.ListTopicsRequest(), timeout=10) is not None
    finally:
        opening.set()
        if server.engine is not None:
            loop.submit(server.stop()).result(30)
        loop.close()


def test_stop_during_recovery_closes_the_log_once_it_is_open_and_start_fails(data_dir, monkeypatch):
    from tidelog.errors import EngineClosedError

    opening = hold_recovery(monkeypatch)
    server = app.Server(ServerConfig(port=0, metrics_port=-1, data_dir=data_dir))
    loop = _LoopThread()
    try:
        started = loop.submit(server.start())
        wait_until(lambda: server.port, what="the gRPC port")
        stopped = loop.submit(server.stop())
        stopped.result(30)  # nothing to close yet
        opening.set()
        with pytest.raises(EngineClosedError):
            started.result(30)
        assert server.engine.closed
        monkeypatch.undo()
        with Engine.open(data_dir) as engine:  # the lock was released and the stop was clean
            assert engine.clean_start
    finally:
        opening.set()
        loop.close()
