"""A real `tidelog serve` subprocess on loopback, for integration tests.

The server binds port 0 and writes the ports it got to files (`--port-file`, `--metrics-port-file`) once
it serves, so no port is ever guessed in advance: guessing (bind, close, hand the number on) races with
every other program on the machine. A restart reuses the port of the first start, so clients keep
their address.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time

_LIVE: set = set()
_SERIAL = itertools.count()


def kill_leftovers() -> None:
    """Kill servers a failed test left running (called at the end of the test session)."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _LIVE.discard(proc)


@contextlib.contextmanager
def refused_address():
    """host:port of a socket bound and never listening: a connection to it is refused for as long as the
    block runs (no other program can take the port meanwhile), as to a stopped broker."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{s.getsockname()[1]}"


def wait_for_file(path: str, proc: subprocess.Popen, timeout_s: float, what: str) -> str:
    """The content of `path` once it exists (it is written atomically); RuntimeError if the process
    exits first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                return f.read()
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not write {path} within {timeout_s}s")


QUICK_GROUPS = "group_initial_rebalance_delay_ms = 200\n"
"""A broker setting for tests whose groups need not wait the default 3 s before their first assignment
(as the Kafka listener's tests: a new group's members join within 200 ms, or rebalance as they come).
The tests of that delay itself run on the default."""


def config_file(directory, text: str = QUICK_GROUPS) -> str:
    """A `--config` TOML file in `directory` holding `text`; its path."""
    path = os.path.join(str(directory), "tidelog.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


class ServerProcess:
    def __init__(
        self,
        data_dir: str,
        *extra: str,
        port: int | None = None,
        host: str = "127.0.0.1",
        wrapper: tuple = (),
        kafka: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.host = host
        """The address it listens on (and clients reach it at)."""
        self.wrapper = tuple(wrapper)
        """A command the server runs under, e.g. ("ip", "netns", "exec", NS): it must exec the server, so
        that the PID is the server's."""
        self.port = port
        """The gRPC port: given, or picked by the server at its first start (then kept for restarts)."""
        self.metrics_port: int | None = None
        """The metrics port of the current run (a new one at each start), unless extra sets --metrics-port."""
        self.kafka = kafka
        self.kafka_port: int | None = None
        """With kafka=True: the Kafka listener's port, picked at the first start and kept for restarts."""
        self.proc: subprocess.Popen | None = None
        parent = os.path.dirname(os.path.abspath(data_dir))
        name = f"{os.path.basename(os.path.abspath(data_dir))}-{os.getpid()}-{next(_SERIAL)}"
        self.log_path = os.path.join(parent, f"{name}-server.log")
        self._port_file = os.path.join(parent, f"{name}.port")
        self._metrics_port_file = os.path.join(parent, f"{name}.metrics-port")
        self._kafka_port_file = os.path.join(parent, f"{name}.kafka-port")

    @property
    def target(self) -> str:
        if self.port is None:
            raise RuntimeError("the server has not been started yet: its port is not known")
        return f"{self.host}:{self.port}"

    @property
    def kafka_target(self) -> str:
        """host:port of the Kafka listener (bootstrap.servers)."""
        if self.kafka_port is None:
            raise RuntimeError("the server has not been started with kafka=True")
        return f"{self.host}:{self.kafka_port}"

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        """Start and return once the server serves (it writes its port file only then)."""
        own_metrics = "--metrics-port" in self.extra
        for path in (self._port_file, self._metrics_port_file, self._kafka_port_file):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by a SIGKILLed run
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                *self.wrapper,
                sys.executable,
                "-m",
                "tidelog",
                "serve",
                "--data-dir",
                self.data_dir,
                "--host",
                self.host,
                "--port",
                str(self.port or 0),
                "--port-file",
                self._port_file,
                # never the fixed default metrics port: tests and other servers run side by side
                *(() if own_metrics else ("--metrics-port", "0", "--metrics-port-file", self._metrics_port_file)),
                *(
                    ("--kafka-port", str(self.kafka_port or 0), "--kafka-port-file", self._kafka_port_file)
                    if self.kafka
                    else ()
                ),
                # stdout holds only the "tidelog serving" line: the port files say the same
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        _LIVE.add(self.proc)
        try:
            self.port = int(wait_for_file(self._port_file, self.proc, timeout_s, "the server"))
            if not own_metrics:
                self.metrics_port = int(wait_for_file(self._metrics_port_file, self.proc, timeout_s, "the server"))
            if self.kafka:
                self.kafka_port = int(wait_for_file(self._kafka_port_file, self.proc, timeout_s, "the server"))
        except RuntimeError as exc:
            self.kill()
            raise RuntimeError(f"{exc}: {self.log()}") from None
        return self

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        _LIVE.discard(self.proc)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._log.close()
            _LIVE.discard(self.proc)
            self.proc = None

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]
