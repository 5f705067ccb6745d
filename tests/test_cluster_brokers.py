"""`tidelog serve --cluster`: real broker processes on a real etcd register, elect one controller, hand
the role on when the controller's process is SIGKILLed, and refuse a second broker with a live id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from .helpers.etcd import EtcdProcess
from .server_process import ServerProcess

pytestmark = pytest.mark.slow  # real processes: a heavier suite

SESSION_MS = 1000


@pytest.fixture
def etcd_server(tmp_path):
    server = EtcdProcess(str(tmp_path / "etcd")).start()
    try:
        yield server
    finally:
        server.stop()


def status(url: str, *, server: str | None = None) -> dict:
    """What `tidelog cluster status` says, read from etcd (url) or asked of a broker (server)."""
    where = ["--server", server] if server else ["--cluster", url]
    result = subprocess.run(
        [sys.executable, "-m", "tidelog", "cluster", "status", *where, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def broker(tmp_path, url: str, broker_id: int) -> ServerProcess:
    return ServerProcess(
        str(tmp_path / f"b{broker_id}"),
        "--cluster",
        url,
        "--broker-id",
        str(broker_id),
        "--config",
        str(_config(tmp_path)),
    )


def _config(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text(f"broker_session_timeout_ms = {SESSION_MS}\n")
    return path


def _gauges(server: ServerProcess) -> dict[str, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        f.name: f.samples[0].value for f in text_string_to_metric_families(text) if f.name.startswith("tidelog_cluster")
    }


def wait_for(predicate, url: str, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = status(url)
        if predicate(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def test_three_brokers_elect_one_controller_and_a_killed_controller_is_replaced(tmp_path, etcd_server):
    url = etcd_server.url
    brokers = {i: broker(tmp_path, url, i).start() for i in (1, 2, 3)}
    try:
        seen = status(url)
        assert [(b["broker_id"], b["address"]) for b in seen["brokers"]] == [(i, brokers[i].target) for i in (1, 2, 3)]
        first = seen["controller"]
        assert first["broker_id"] in brokers
        for b in brokers.values():  # every broker answers with what etcd holds (Admin.DescribeCluster)
            assert status(url, server=b.target) == seen
        gauges = {i: _gauges(b) for i, b in brokers.items()}
        assert all(g["tidelog_cluster_member"] == 1 for g in gauges.values()), gauges
        assert [i for i, g in gauges.items() if g["tidelog_cluster_controller"] == 1] == [first["broker_id"]]

        brokers[first["broker_id"]].kill()  # SIGKILL: no clean leave, the lease has to expire
        after = wait_for(lambda s: s["controller"]["broker_id"] not in (None, first["broker_id"]), url)
        assert after["controller"]["broker_id"] in set(brokers) - {first["broker_id"]}, after
        assert after["controller"]["epoch"] > first["epoch"]
        assert first["broker_id"] not in [b["broker_id"] for b in after["brokers"]]

        survivor = after["controller"]["broker_id"]
        assert brokers[survivor].stop() == 0  # a clean stop leaves at once
        left = wait_for(lambda s: s["controller"]["broker_id"] not in (None, survivor), url)
        assert [b["broker_id"] for b in left["brokers"]] == sorted(set(brokers) - {first["broker_id"], survivor})
        assert left["controller"]["broker_id"] not in (None, survivor)
    finally:
        for b in brokers.values():
            b.stop()


def test_a_second_broker_with_a_live_id_is_refused_with_one_line(tmp_path, etcd_server):
    url = etcd_server.url
    first = broker(tmp_path, url, 5).start()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tidelog",
                "serve",
                "--data-dir",
                str(tmp_path / "other"),
                "--port",
                "0",
                "--metrics-port",
                "-1",
                "--cluster",
                url,
                "--broker-id",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1
        errors = [line for line in result.stderr.splitlines() if "broker id 5 is registered" in line]
        assert errors and first.target in errors[0], result.stderr
        assert [b["broker_id"] for b in status(url)["brokers"]] == [5]
    finally:
        first.stop()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cluster", "http://127.0.0.1:1", "--broker-id", "1"], "cluster must be etcd://"),
        (["--cluster", "etcd://127.0.0.1:2379"], "broker_id must be"),
    ],
)
def test_bad_cluster_settings_are_usage_errors(tmp_path, args, message):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidelog",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            "0",
            "--metrics-port",
            "-1",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode in (1, 2) and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_dev_cluster_runs_etcd_and_brokers_until_it_is_stopped(tmp_path):
    """`tidelog dev-cluster`: ready line, a cluster of two, and every process gone after SIGTERM."""
    import signal

    from .helpers.etcd import etcd_binary

    etcd_binary()  # installs or skips, as for the other cluster tests
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidelog", "dev-cluster", "--brokers", "2", "--dir", str(tmp_path / "dev")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("tidelog dev-cluster ready"), (line, proc.stderr.read() if proc.poll() else "")
        fields = dict(item.split("=", 1) for item in line.split()[3:])
        seen = status(fields["cluster"])
        assert [b["address"] for b in seen["brokers"]] == fields["brokers"].split(",")
        assert seen["controller"]["broker_id"] in (1, 2)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 3  # etcd and two brokers
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_a_single_broker_describes_itself_as_no_cluster(tmp_path):
    server = ServerProcess(str(tmp_path / "single")).start()
    try:
        seen = status("", server=server.target)
        text = subprocess.run(
            [sys.executable, "-m", "tidelog", "cluster", "status", "--server", server.target],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()
    assert seen == {
        "cluster": None,
        "controller": {"broker_id": None, "epoch": None},
        "brokers": [{"broker_id": -1, "address": server.target, "epoch": 0}],
        "partitions": {"total": 0, "under_replicated": [], "offline": [], "reassigning": []},
    }
    assert text.returncode == 0 and "a single broker at" in text.stdout


def test_a_broker_restarted_right_after_a_kill_waits_for_its_old_session(tmp_path, etcd_server):
    """Its previous run still holds the id until the lease expires: the new run waits for that (up to
    two sessions), then registers as a new epoch, instead of exiting."""
    url = etcd_server.url
    config = tmp_path / "long-session.toml"
    config.write_text("broker_session_timeout_ms = 4000\n")  # the old lease outlives the restart
    first = ServerProcess(str(tmp_path / "b7"), "--cluster", url, "--broker-id", "7", "--config", str(config))
    first.start()
    try:
        before = status(url)["brokers"]
        first.kill()
        first.start()  # at once
        after = status(url)["brokers"]
        assert [b["broker_id"] for b in after] == [7] and after[0]["epoch"] > before[0]["epoch"]
        assert "waiting for it to expire" in first.log()
    finally:
        first.stop()
