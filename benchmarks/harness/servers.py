"""How each server a benchmark measures is started: tidelog (alone or as clustered brokers with their own
etcd), Redis, NATS, RabbitMQ, each a private process.

Every server gets its own data directory under the benchmark's temporary directory and a free 127.0.0.1
port it binds itself (processes.Processes.serve); none is ever a system-wide service. A peer that is not
installed or does not come up raises Unavailable with the reason, which the benchmark reports as skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid

from .processes import LOOPBACK, Proc, Processes, free_port, listening_ports, log, wait_until

SETUP_HINT = "run: bash benchmarks/setup_peers.sh"
RABBIT_BIN = "/usr/lib/rabbitmq/bin"


class Unavailable(Exception):
    """A peer that cannot be measured here (not installed, not ready in time); the message says why."""


def tidelog_command() -> list[str]:
    exe = shutil.which("tidelog")
    return [exe] if exe else [sys.executable, "-m", "tidelog"]


def grpc_serving(port: int) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def start_tidelog(
    procs: Processes,
    data_dir: str,
    fsync: str = "never",
    extra: tuple[str, ...] = (),
    name: str = "tidelog-server",
    *,
    kafka: bool = False,
    ready=grpc_serving,
) -> Proc:
    """`tidelog serve --fsync <fsync>`, ready when its gRPC health check answers SERVING.

    ready(port): whether it serves (default: the gRPC health check over a plain channel; a broker with
    TLS needs one that speaks TLS). kafka=True: also `--kafka-port 0 --kafka-port-file FILE` (the broker picks the Kafka listener's port
    itself); then ready once it wrote that file, its own process tree listens on the port in it and a Kafka
    ApiVersions request is answered there, and
    `Proc.kafka_port` holds that port (the gRPC port stays `Proc.port`, checked as before)."""
    kafka_files: dict[int, str] = {}

    def argv(port: int) -> list[str]:
        kafka_args: list[str] = []
        if kafka:
            kafka_files[port] = os.path.join(procs.tmp, f"{name}-{port}.kafka-port")
            kafka_args = ["--kafka-port", "0", "--kafka-port-file", kafka_files[port]]
        return tidelog_command() + [
            "serve",
            "--data-dir",
            data_dir,
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--fsync",
            fsync,
            "--log-level",
            "warning",
            "--metrics-port",
            "0",
            *kafka_args,
            *extra,
        ]

    proc = procs.serve(name, argv, ready)
    if kafka:
        try:
            proc.kafka_port = _kafka_port(proc, kafka_files[proc.port])  # type: ignore[attr-defined]
        except RuntimeError:
            procs.stop(proc)
            raise
    return proc


def _kafka_port(proc: Proc, port_file: str, timeout_s: float = 30.0) -> int:
    """The Kafka listener's port from the broker's --kafka-port-file, once its own process tree listens
    there and a Kafka ApiVersions request is answered on it."""
    found: list[int] = []

    def listening() -> bool:
        with open(port_file) as f:
            port = int(f.read())
        if port in listening_ports(proc.pid) and kafka_answers(port):
            found.append(port)
            return True
        return False

    wait_until(proc, listening, timeout_s)
    return found[-1]


def kafka_answers(port: int) -> bool:
    """An ApiVersions v0 request (header v1, no client id) answered with its correlation id."""
    correlation = 0x7E1D
    request = struct.pack(">hhih", 18, 0, correlation, -1)
    with socket.create_connection((LOOPBACK, port), timeout=1.0) as s:
        s.sendall(struct.pack(">i", len(request)) + request)
        head = b""
        while len(head) < 8:
            chunk = s.recv(8 - len(head))
            if not chunk:
                return False
            head += chunk
    return struct.unpack(">ii", head)[1] == correlation


def restart_tidelog(procs: Processes, old: Proc, timeout_s: float = 60.0) -> Proc:
    """Stop a broker (SIGTERM: a graceful stop) and start it again with the same arguments and port, so that
    its clients reconnect to it."""
    procs.stop(old, timeout_s)
    return start_tidelog_again(procs, old, timeout_s)


def start_tidelog_again(procs: Processes, old: Proc, timeout_s: float = 60.0) -> Proc:
    """Start a broker that has exited (stopped, or killed with `Processes.kill`) again with the same
    arguments, data directory and port; ready when it listens there and answers SERVING. A clustered broker
    killed moments ago exits at once (its id stays registered until its etcd session expires, up to
    broker_session_timeout_ms): it is started again, every 0.5 s, until `timeout_s` has passed."""
    if old.popen.poll() is None:
        raise RuntimeError(f"{old.name} (pid {old.pid}) is still running")
    deadline = time.monotonic() + timeout_s
    while True:
        proc = procs.start(old.name, list(old.popen.args))
        proc.port = old.port
        try:
            wait_until(
                proc,
                lambda: old.port in listening_ports(proc.pid) and grpc_serving(old.port),
                max(deadline - time.monotonic(), 1.0),
            )
            return proc
        except RuntimeError:
            exited = proc.popen.poll() is not None
            procs.stop(proc)
            if not exited or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def start_etcd(procs: Processes, data_dir: str, name: str = "etcd") -> Proc:
    """A one-member etcd (`tidelog.cluster.etcd.server_command`: pre-vote, 100 ms heartbeats) listening for
    clients on a 127.0.0.1 port it bound, its peer port another free one; ready when /health says true.
    Proc.target is then host:port; the brokers' --cluster is `etcd://` + that."""
    exe = shutil.which("etcd")
    if exe is None:
        raise Unavailable("etcd is not installed (Debian: apt-get install etcd-server)")
    from tidelog.cluster.etcd import server_command

    os.makedirs(data_dir, exist_ok=True)
    proc = procs.serve(
        name,
        lambda port: server_command(exe, name, os.path.join(data_dir, f"data-{port}"), port, free_port()),
        _etcd_healthy,
    )
    proc.version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout.split("\n")[0]
    return proc


def _etcd_healthy(port: int) -> bool:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/health", timeout=1) as r:
        return json.loads(r.read()).get("health") == "true"


def cluster_config(path: str, cluster_name: str, session_ms: int = 3000, **settings: int) -> str:
    """A server config file (TOML) for clustered brokers: the cluster's name in etcd (several clusters may
    share one etcd), broker_session_timeout_ms and any other integer setting (replica_lag_time_max_ms,
    replication_timeout_ms, replica_fetch_wait_ms, ...)."""
    with open(path, "w") as f:
        f.write(f'cluster_name = "{cluster_name}"\nbroker_session_timeout_ms = {session_ms}\n')
        for key, value in settings.items():
            f.write(f"{key} = {int(value)}\n")
    return path


def start_cluster(
    procs: Processes,
    base: str,
    etcd: Proc,
    brokers: int,
    name: str,
    config: str,
    fsync: str = "never",
    timeout_s: float = 60.0,
) -> list[Proc]:
    """`brokers` clustered `tidelog serve --cluster etcd://... --broker-id N --config FILE` (ids 1..N, each
    its own data directory under `base`; `config` from `cluster_config`, which names the cluster), named
    `<name>-b<N>`; ready once every broker answers SERVING and the cluster lists all of them."""
    from tidelog.client import Admin

    out = []
    for i in range(1, brokers + 1):
        out.append(
            start_tidelog(
                procs,
                os.path.join(base, f"b{i}"),
                fsync,
                ("--cluster", f"etcd://{etcd.target}", "--broker-id", str(i), "--config", config),
                name=f"{name}-b{i}",
            )
        )
    with Admin(",".join(p.target for p in out)) as admin:
        wait_until(out[0], lambda: len(admin.describe_cluster().brokers) == brokers, timeout_s)
    return out


def start_redis(procs: Processes, data_dir: str, *config: str, name: str = "redis-server") -> tuple[Proc, object]:
    """`redis-server --save '' --appendonly no` (or `config` instead) and a redis-py client connected to it."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise Unavailable(f"redis-server is not installed ({SETUP_HINT})")
    try:
        import redis
    except ImportError:
        raise Unavailable(f"the redis Python package is not installed ({SETUP_HINT})") from None
    config = config or ("--save", "", "--appendonly", "no")
    os.makedirs(data_dir, exist_ok=True)
    proc = procs.serve(
        name,
        lambda port: [
            exe,
            *config,
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--dir",
            data_dir,
            "--daemonize",
            "no",
            "--logfile",
            "",
        ],
        lambda port: redis.Redis(host=LOOPBACK, port=port, socket_timeout=5).ping(),
    )
    return proc, redis_client(proc.port)


def redis_client(port: int):
    import redis

    return redis.Redis(host=LOOPBACK, port=port, socket_timeout=60, protocol=2)


def redis_versions(client) -> dict:
    """The server's and the client's versions, and whether redis-py parses with hiredis."""
    import redis
    import redis.utils

    hiredis = None
    if redis.utils.HIREDIS_AVAILABLE:
        import hiredis as hiredis_module

        hiredis = hiredis_module.__version__
    return {"redis_server": client.info("server")["redis_version"], "redis_py": redis.__version__, "hiredis": hiredis}


def redis_version(client) -> str:
    v = redis_versions(client)
    return (
        f"Redis {v['redis_server']}, redis-py {v['redis_py']} with "
        f"{'hiredis' if v['hiredis'] else 'pure-Python parser'}"
    )


def redis_if_wanted(procs: Processes, closing, wanted: bool) -> tuple[Proc | None, object | None, str]:
    """(process, client, note) of a Redis for a benchmark's Redis rows: started unless not wanted
    (--no-redis), skipped with the reason when it cannot be; closing (an ExitStack) closes the client."""
    if not wanted:
        return None, None, "left out (--no-redis)"
    try:
        proc, client = start_redis(procs, os.path.join(procs.tmp, "redis"))
    except Unavailable as exc:
        log(f"skipping Redis: {exc}")
        return None, None, f"skipped: {exc}"
    closing.callback(client.close)
    return proc, client, redis_version(client)


def install_peers() -> str | None:
    """Run setup_peers.sh (apt-get and pip, idempotent); None on success, else why it failed."""
    cmd = ["bash", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup_peers.sh")]
    try:
        rc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, timeout=900, env=dict(os.environ, PYTHON=sys.executable)
        ).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(cmd)} failed: {exc}"
    import importlib

    importlib.invalidate_caches()
    return None if rc == 0 else f"{' '.join(cmd)} exited with {rc}"


def start_nats(procs: Processes, store_dir: str) -> Proc:
    """`nats-server -js` (JetStream, file store under store_dir); ready when JetStream answers."""
    exe = shutil.which("nats-server")
    if exe is None:
        raise Unavailable(f"nats-server is not installed ({SETUP_HINT})")
    try:
        import nats  # noqa: F401
    except ImportError:
        raise Unavailable(f"the nats-py package is not installed ({SETUP_HINT})") from None
    os.makedirs(store_dir, exist_ok=True)
    return procs.serve(
        "nats-server", lambda port: [exe, "-js", "-a", LOOPBACK, "-p", str(port), "-sd", store_dir], _jetstream_ready
    )


def _jetstream_ready(port: int) -> bool:
    import asyncio

    import nats

    async def ping() -> bool:
        nc = await nats.connect(
            f"nats://{LOOPBACK}:{port}", connect_timeout=1, max_reconnect_attempts=0, allow_reconnect=False
        )
        try:
            await nc.jetstream().account_info()
            return True
        finally:
            await nc.close()

    return asyncio.run(ping())


def nats_version() -> str:
    return subprocess.run(["nats-server", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()


def start_rabbitmq(procs: Processes, base: str, timeout_s: float = 90.0, erl_args: str = "+S 1:1") -> Proc:
    """A private RabbitMQ node: unique node name, its own `epmd` on a free 127.0.0.1 port, Mnesia and logs
    under `base`, no plugins; stopped with `rabbitmqctl stop`, then by PID. Proc.version holds its version.
    One Erlang scheduler (`+S 1:1`): on these 2 shared cores it confirmed faster than RabbitMQ's default VM
    flags in every round measured (2026-12-07: median 6.8k vs 6.1k msgs/s, 5 of 5 rounds); "" gives the
    defaults."""
    if not os.path.exists(os.path.join(RABBIT_BIN, "rabbitmq-server")) or not shutil.which("epmd"):
        raise Unavailable(f"rabbitmq-server is not installed ({SETUP_HINT})")
    try:
        import pika  # noqa: F401
    except ImportError:
        raise Unavailable(f"the pika package is not installed ({SETUP_HINT})") from None
    os.makedirs(base, exist_ok=True)
    plugins = os.path.join(base, "enabled_plugins")
    with open(plugins, "w") as f:
        f.write("[].\n")
    epmd = procs.serve("epmd", lambda port: ["epmd", "-port", str(port), "-address", LOOPBACK], lambda port: True)
    node = f"tidelogbench{uuid.uuid4().hex[:8]}@localhost"
    current: dict = {}  # the environment of the node being started, which rabbitmqctl needs too

    def env(port: int) -> dict:
        current.clear()
        current.update(
            os.environ,
            RABBITMQ_NODENAME=node,
            RABBITMQ_NODE_IP_ADDRESS=LOOPBACK,
            RABBITMQ_NODE_PORT=str(port),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_MNESIA_BASE=os.path.join(base, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(base, "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=plugins,
            RABBITMQ_CONFIG_FILE=os.path.join(base, "none"),
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(base, "none-advanced.config"),
            RABBITMQ_SERVER_ERL_ARGS=erl_args,
            ERL_EPMD_PORT=str(epmd.port),
            ERL_EPMD_ADDRESS=LOOPBACK,
            HOME=base,
        )
        return dict(current)

    def ctl(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [os.path.join(RABBIT_BIN, "rabbitmqctl"), "-n", node, *args],
            env=current,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    try:
        proc = procs.serve(
            "rabbitmq-server",
            lambda port: [os.path.join(RABBIT_BIN, "rabbitmq-server")],
            lambda port: ctl("await_startup", "--timeout", "5", timeout=15).returncode == 0,
            env=env,
            timeout_s=timeout_s,
        )
    except RuntimeError as exc:
        raise Unavailable(f"rabbitmq-server did not start: {exc}") from None

    def stop_node() -> None:
        ctl("stop")
        proc.popen.wait(30)

    proc.before_stop = stop_node
    proc.version = f"RabbitMQ {ctl('version').stdout.strip()}"
    return proc
