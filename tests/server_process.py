"""A real `tidelog serve` subprocess on a free loopback port, for integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def refused_address():
    """host:port of a socket bound and never listening: a connection to it is refused for as long as the
    block runs (no other program can take the port meanwhile), as to a stopped broker."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{s.getsockname()[1]}"


_LIVE: set = set()


def kill_leftovers() -> None:
    """Kill servers a failed test left running (called at the end of the test session)."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _LIVE.discard(proc)


class ServerProcess:
    def __init__(self, data_dir: str, *extra: str, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.port = port or free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(os.path.dirname(os.path.abspath(data_dir)), f"server-{self.port}.log")

    def start(self, timeout_s: float = 30.0) -> "ServerProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidelog", "serve", "--data-dir", self.data_dir, "--port", str(self.port),
             # never the fixed default metrics port: tests and other servers run side by side
             *(() if "--metrics-port" in self.extra else ("--metrics-port", "0")),
             *self.extra], stdout=self._log, stderr=subprocess.STDOUT)
        _LIVE.add(self.proc)
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not become healthy: {self.log()}")

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
