"""Shared fixtures and hypothesis profiles.

Profiles: "ci" (default; bounded examples, no deadline: the machine is shared and noisy) and "long"
(select with HYPOTHESIS_PROFILE=long for a deeper search).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class ManualClock:
    """An injected clock (ms) that moves only when a test says so."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@pytest.fixture(scope="session", autouse=True)
def no_server_left_behind():
    """Servers started by tests are stopped by them; this catches the ones a failing test left."""
    yield
    from .server_process import kill_leftovers

    kill_leftovers()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def data_dir(tmp_path) -> str:
    return str(tmp_path / "data")


def pytest_addoption(parser):
    parser.addoption(
        "--crash-rounds",
        type=int,
        default=int(os.environ.get("TIDELOG_CRASH_ROUNDS", "4")),
        help="SIGKILL rounds of the crash test (default 4; a long run: 200)",
    )
    parser.addoption(
        "--adversarial-rounds",
        type=int,
        default=200,
        help="broker kills of the long adversarial loop (-m long; default 200)",
    )
    parser.addoption(
        "--adversarial-seed",
        type=int,
        default=int(os.environ.get("TIDELOG_ADVERSARIAL_SEED", "1")),
        help="seed of the long adversarial loop (default 1)",
    )
    parser.addoption(
        "--adversarial-rate",
        type=float,
        default=1500,
        help="records a second of each producer of the long adversarial loop (default 1500)",
    )
    parser.addoption(
        "--group-chaos-rounds",
        type=int,
        default=int(os.environ.get("TIDELOG_GROUP_CHAOS_ROUNDS", "40")),
        help="adversary moves of the long group chaos run (-m long; default 40)",
    )
    parser.addoption(
        "--cluster-chaos-rounds",
        type=int,
        default=int(os.environ.get("TIDELOG_CLUSTER_CHAOS_ROUNDS", "30")),
        help="faults of the long cluster chaos run (-m long; default 30)",
    )
    parser.addoption(
        "--cluster-chaos-seed",
        type=int,
        default=int(os.environ.get("TIDELOG_CLUSTER_CHAOS_SEED", "0")),
        help="seed of the long cluster chaos run (default 0: a random one, printed)",
    )
    parser.addoption(
        "--net-chaos-faults",
        type=int,
        default=int(os.environ.get("TIDELOG_NET_CHAOS_FAULTS", "200")),
        help="faults of the long network chaos run (-m long; default 200)",
    )
    parser.addoption(
        "--net-chaos-seed",
        type=int,
        default=int(os.environ.get("TIDELOG_NET_CHAOS_SEED", "0")),
        help="seed of the network chaos runs (default 0: a random one, printed)",
    )
    parser.addoption(
        "--group-chaos-seed",
        type=int,
        default=int(os.environ.get("TIDELOG_GROUP_CHAOS_SEED", "0")),
        help="seed of the long group chaos run (default 0)",
    )


def pytest_generate_tests(metafunc):
    if "crash_round" in metafunc.fixturenames:
        metafunc.parametrize("crash_round", range(metafunc.config.getoption("--crash-rounds")))


@pytest.fixture
def cluster(tmp_path):
    """One etcd and three `tidelog serve --cluster` brokers (tests/helpers/cluster.py), stopped by PID."""
    from .helpers.cluster import Cluster

    c = Cluster(str(tmp_path)).start()
    try:
        yield c
    finally:
        c.stop()
