"""`tidelog dev-cluster`: an etcd and N brokers on this machine, for development, until Ctrl-C.

Everything listens on 127.0.0.1 on ports found free at start; data goes under --dir (a new temporary
directory by default, removed at the end). Each process is stopped by its PID when the command ends,
however it ends.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from ..cluster.etcd import server_command
from .failures import CommandError
from .parsing import add_command
from .values import positive_int

READY_TIMEOUT_S = 60.0


def register(commands) -> None:
    dev = add_command(commands, "dev-cluster", "run an etcd and N brokers on this machine until Ctrl-C")
    dev.add_argument("--brokers", type=positive_int, default=3, help="how many brokers")
    dev.add_argument("--dir", help="where the data goes (default: a new temporary directory, removed at the end)")
    dev.add_argument("--etcd", default="etcd", help="the etcd executable (Debian: etcd-server)")
    dev.set_defaults(run=run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not predicate():
        if proc.poll() is not None:
            raise CommandError(f"{what} exited with code {proc.returncode} at start")
        if time.monotonic() > deadline:
            raise CommandError(f"{what} was not ready within {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def _etcd_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
            return b'"health":"true"' in reply.read().replace(b" ", b"")
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    etcd = shutil.which(args.etcd)
    if etcd is None:
        raise CommandError(f"{args.etcd} not found: install etcd (Debian: apt-get install etcd-server)")
    root = args.dir or tempfile.mkdtemp(prefix="tidelog-dev-cluster-")
    os.makedirs(root, exist_ok=True)
    procs: list[subprocess.Popen] = []
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        client, peer = _free_port(), _free_port()
        with open(os.path.join(root, "etcd.log"), "ab") as log:
            procs.append(
                subprocess.Popen(
                    server_command(etcd, "dev", os.path.join(root, "etcd"), client, peer),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        _wait(lambda: _etcd_healthy(client), procs[0], "etcd")
        url = f"etcd://127.0.0.1:{client}"
        addresses = []
        for broker_id in range(1, args.brokers + 1):
            port_file = os.path.join(root, f"broker-{broker_id}.port")
            with open(os.path.join(root, f"broker-{broker_id}.log"), "ab") as log:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tidelog",
                        "serve",
                        "--data-dir",
                        os.path.join(root, f"b{broker_id}"),
                        "--port",
                        "0",
                        "--metrics-port",
                        "0",
                        "--port-file",
                        port_file,
                        "--cluster",
                        url,
                        "--broker-id",
                        str(broker_id),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            procs.append(proc)
            _wait(lambda path=port_file: os.path.exists(path), proc, f"broker {broker_id}")
            with open(port_file) as f:
                addresses.append(f"127.0.0.1:{f.read().strip()}")
        print(f"tidelog dev-cluster ready cluster={url} brokers={','.join(addresses)} dir={root}", flush=True)
        print(f"  tidelog cluster status --cluster {url}", flush=True)
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        failed = [p for p in procs if p.poll() is not None]
        return 1 if failed and not stopping else 0
    finally:
        for proc in reversed(procs):  # brokers first (they leave the cluster cleanly), etcd last
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
