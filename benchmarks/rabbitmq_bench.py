"""RabbitMQ peer for the suite (`python -m benchmarks`): produce and consume with pika.

Setup: Debian's `rabbitmq-server` (3.10), started from /usr/lib/rabbitmq/bin (not the su wrapper) with a
private node: RABBITMQ_NODENAME unique, RABBITMQ_NODE_IP_ADDRESS=127.0.0.1, RABBITMQ_NODE_PORT a free
port, RABBITMQ_MNESIA_BASE / LOG_BASE under a temp dir, no plugins, and an `epmd` of its own on a free
127.0.0.1 port (ERL_EPMD_PORT). Both are stopped by PID (the node first with `rabbitmqctl stop`). When
anything of that fails or is not ready within SETUP_TIMEOUT_S, RabbitMQ is skipped with the reason.

Produce: a durable queue, persistent messages (delivery_mode=2), publisher confirms on, one message in
flight (pika's BlockingChannel waits for each confirm): RabbitMQ confirms a persistent message to a
durable queue once it is written to disk, so this is also its "durable produce" figure.
Consume: `basic_consume` with prefetch 1000, manual acks, `multiple=True` ack every 1000 messages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

from benchmarks.embedded import Sample
from benchmarks.grpc_bench import LOOPBACK, Processes, free_port, log, log_tail

SETUP_TIMEOUT_S = 90.0
PREFETCH = 1000
RABBIT_BIN = "/usr/lib/rabbitmq/bin"

SETTINGS = ("RabbitMQ (Debian rabbitmq-server) on 127.0.0.1, pika BlockingConnection; durable queue, "
            "persistent messages (delivery_mode=2), publisher confirms on, one publish in flight (each waits "
            "for its confirm, which RabbitMQ sends after the message is on disk); consume: basic_consume, "
            f"prefetch {PREFETCH}, manual ack multiple=True every {PREFETCH} messages")


class Rabbit:
    """A private RabbitMQ node; `start()` returns None on success or the reason it is skipped."""

    def __init__(self, procs: Processes, tmp: str) -> None:
        self.procs, self.tmp = procs, tmp
        self.node = f"tidelogbench{uuid.uuid4().hex[:8]}@localhost"
        self.port = 0
        self.env: dict = {}
        self.proc = self.epmd = None
        self.version = ""

    def _ctl(self, *args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(RABBIT_BIN, "rabbitmqctl"), "-n", self.node, *args],
                              env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout_s)

    def start(self) -> str | None:
        if not os.path.exists(os.path.join(RABBIT_BIN, "rabbitmq-server")) or not shutil.which("epmd"):
            return "rabbitmq-server is not installed (run: bash benchmarks/setup_peers.sh)"
        try:
            import pika  # noqa: F401
        except ImportError:
            return "the pika package is not installed (run: bash benchmarks/setup_peers.sh)"
        base = os.path.join(self.tmp, "rabbitmq")
        os.makedirs(base, exist_ok=True)
        plugins = os.path.join(base, "enabled_plugins")
        with open(plugins, "w") as f:
            f.write("[].\n")
        epmd_port, self.port = free_port(), free_port()
        self.env = dict(os.environ, RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_IP_ADDRESS=LOOPBACK,
                        RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(free_port()),
                        RABBITMQ_MNESIA_BASE=os.path.join(base, "mnesia"),
                        RABBITMQ_LOG_BASE=os.path.join(base, "log"), RABBITMQ_ENABLED_PLUGINS_FILE=plugins,
                        RABBITMQ_CONFIG_FILE=os.path.join(base, "none"),
                        RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(base, "none-advanced.config"),
                        RABBITMQ_SERVER_ERL_ARGS="+S 1:1",
                        ERL_EPMD_PORT=str(epmd_port), ERL_EPMD_ADDRESS=LOOPBACK, HOME=base)
        self.epmd, _ = self.procs.start("epmd", ["epmd", "-port", str(epmd_port), "-address", LOOPBACK])
        self.proc, log_path = start_with_env(self.procs, "rabbitmq-server",
                                             [os.path.join(RABBIT_BIN, "rabbitmq-server")], self.env)
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"rabbitmq-server exited with code {self.proc.returncode}: {log_tail(log_path, 5)}"
            try:
                r = self._ctl("await_startup", "--timeout", "5", timeout_s=15)
                if r.returncode == 0:
                    v = self._ctl("version")
                    self.version = v.stdout.strip()
                    return None
            except subprocess.TimeoutExpired:
                pass
            time.sleep(1)
        return f"rabbitmq-server was not ready within {SETUP_TIMEOUT_S:.0f} s: {log_tail(log_path, 5)}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._ctl("stop", timeout_s=30)
                self.proc.wait(30)
            except (subprocess.TimeoutExpired, OSError):
                pass
            self.procs.stop(self.proc)
        if self.epmd is not None:
            self.procs.stop(self.epmd)

    def connect(self):
        import pika

        return pika.BlockingConnection(pika.ConnectionParameters(host=LOOPBACK, port=self.port,
                                                                 heartbeat=0, blocked_connection_timeout=60))


def start_with_env(procs: Processes, name: str, argv: list[str], env: dict):
    """Processes.start (grpc_bench) with an environment: logged, own session, stopped by PID later."""
    log_path = os.path.join(procs.tmp, f"{name}.log")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=procs.tmp, env=env)
    procs.procs.append((name, proc, log_path))
    log(f"started {name} (pid {proc.pid}): {' '.join(argv)}")
    return proc, log_path


def produce(rabbit: Rabbit, values: list[bytes], n: int, cap_s: float, confirms: bool = True) -> Sample:
    """n persistent messages into a fresh durable queue (deleted afterwards unless it is kept for consume)."""
    import pika

    conn = rabbit.connect()
    try:
        ch = conn.channel()
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        ch.queue_declare(queue, durable=True)
        if confirms:
            ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2)
        npool = len(values)
        done = 0
        capped = False
        t0 = time.perf_counter()
        deadline = t0 + cap_s
        for i in range(n):
            ch.basic_publish("", queue, values[i % npool], props, mandatory=False)
            done += 1
            if not i & 63 and time.perf_counter() > deadline:
                capped = done < n
                break
        if not confirms:
            ch.queue_declare(queue, durable=True, passive=True)  # a round trip: everything before it arrived
        dt = time.perf_counter() - t0
        ch.queue_delete(queue)
        size = len(values[0])
        return Sample(done, done * size, dt, capped)
    finally:
        conn.close()


def consume(rabbit: Rabbit, values: list[bytes], n: int, cap_s: float) -> Sample:
    """Preload n messages (confirms off, untimed), then consume them all with prefetch and batched acks."""
    import pika

    conn = rabbit.connect()
    try:
        ch = conn.channel()
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        ch.queue_declare(queue, durable=True)
        props = pika.BasicProperties(delivery_mode=2)
        for i in range(n):
            ch.basic_publish("", queue, values[i % len(values)], props)
        for _ in range(600):  # bounded: until the queue holds everything (publishes are asynchronous)
            if ch.queue_declare(queue, durable=True, passive=True).method.message_count >= n:
                break
            time.sleep(0.05)
        ch.basic_qos(prefetch_count=PREFETCH)
        got = total = 0
        capped = False
        t0 = time.perf_counter()
        deadline = t0 + cap_s
        last = None
        for method, _props, body in ch.consume(queue, inactivity_timeout=2.0):
            if method is None:
                break
            got += 1
            total += len(body)
            last = method.delivery_tag
            if got % PREFETCH == 0:
                ch.basic_ack(last, multiple=True)
                last = None
                if time.perf_counter() > deadline:
                    capped = got < n
                    break
            if got >= n:
                break
        if last is not None:
            ch.basic_ack(last, multiple=True)
        dt = time.perf_counter() - t0
        ch.cancel()
        ch.queue_delete(queue)
        return Sample(got, total, dt, capped)
    finally:
        conn.close()
