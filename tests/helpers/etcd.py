"""A real etcd for the cluster tests: one member on 127.0.0.1, in a temporary directory, stopped by PID.

etcd has no "any free port" mode whose port it reports, so its two ports are found by binding and
releasing them just before it starts; if another process takes one meanwhile, etcd exits at once and
is started again on new ports (bounded). Debian's `etcd-server` is installed when `etcd` is missing and
the tests run as root (as CI does); otherwise the cluster tests skip, saying why.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

from tidelog.cluster.etcd import server_command

from .debian import debian_binary

START_ATTEMPTS = 3
READY_TIMEOUT_S = 30.0


def etcd_binary() -> str:
    """The etcd executable, installing Debian's etcd-server first where that is possible."""
    return debian_binary("etcd", "etcd-server", "the cluster tests")


def wait_healthy(proc: subprocess.Popen, host: str, port: int, timeout_s: float) -> bool:
    """Whether the etcd process answers healthy on host:port within timeout_s (False once it exited:
    a port was taken meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=1) as r:
                if json.loads(r.read()).get("health") == "true":
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def _two_ports() -> tuple[int, int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(2)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return sockets[0].getsockname()[1], sockets[1].getsockname()[1]
    finally:
        for s in sockets:
            s.close()


class EtcdProcess:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.client_port = 0
        self.log_path = os.path.join(directory, "etcd.log")

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.client_port}"

    def start(self) -> EtcdProcess:
        binary = etcd_binary()
        for _ in range(START_ATTEMPTS):
            client, peer = _two_ports()
            data = os.path.join(self.directory, f"data-{client}")
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    server_command(binary, "s1", data, client, peer), stdout=log, stderr=subprocess.STDOUT
                )
            self.client_port = client
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"etcd did not start: {open(self.log_path, errors='replace').read()[-2000:]}")

    def _wait_ready(self) -> bool:
        return self.proc is not None and wait_healthy(self.proc, "127.0.0.1", self.client_port, READY_TIMEOUT_S)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
