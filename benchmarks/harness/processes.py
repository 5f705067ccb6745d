"""Processes a benchmark starts: each listens on 127.0.0.1 on a port it bound itself, and is stopped by PID.

A benchmark must measure the server it started and nothing else (never a default port, never a
system-wide service that happens to answer there), and must leave nothing running, also after Ctrl-C,
SIGTERM or an error. So a server counts as ready only once /proc shows that its own process tree listens
on the port, and every process is stopped by its PID (with the process group it leads): SIGTERM, then
SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    """A port nothing listens on right now; the server may still lose it to another process, so `serve`
    checks who bound it and retries."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def proc_table() -> dict[int, tuple[int, int, int]]:
    """Every process: pid -> (CPU ticks used, user + system; parent pid; flags), from /proc/PID/stat."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    cols = f.read().rsplit(")", 1)[1].split()
                table[int(entry)] = (int(cols[11]) + int(cols[12]), int(cols[1]), int(cols[6]))
            except (OSError, IndexError, ValueError):
                continue
    return table


def process_tree(root: int, table: dict | None = None) -> set[int]:
    """`root` and every process descending from it (a server's script may run the real server as a child)."""
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in (table or proc_table()).items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    return tree


def listening_ports(root: int) -> set[int]:
    """TCP ports the process tree of `root` listens on, matched by socket inode in /proc/net/tcp{,6}."""
    inodes = set()
    for pid in process_tree(root):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == _LISTEN and cols[9] in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass
class Proc:
    """A started process, its log file, and what to do before signalling it (a graceful stop command)."""

    name: str
    popen: subprocess.Popen
    log_path: str
    before_stop: Callable[[], None] | None = None
    port: int = 0
    version: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def target(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) the process has used so far; 0 once it is gone."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                cols = f.read().rsplit(")", 1)[1].split()
            return (int(cols[11]) + int(cols[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0


@dataclass
class Processes:
    """Every process a benchmark started, so that all are stopped by PID at the end, in reverse order."""

    tmp: str
    running: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict | None = None, cwd: str | None = None) -> Proc:
        log_path = os.path.join(self.tmp, f"{name}.log")
        with open(log_path, "ab") as out:
            # A session of its own: a Ctrl-C in the terminal reaches only the benchmark, which then stops
            # its children itself, in order.
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd or self.tmp,
                env=env,
            )
        proc = Proc(name, popen, log_path)
        self.running.append(proc)
        log(f"started {name} (pid {proc.pid}): {' '.join(argv)}")
        return proc

    def serve(
        self,
        name: str,
        argv: Callable[[int], list[str]],
        ready: Callable[[int], bool],
        env: Callable[[int], dict] | None = None,
        timeout_s: float = 60.0,
        cwd: str | None = None,
    ) -> Proc:
        """Start a server on a free port; ready once its own process tree listens there and `ready(port)`
        holds. A server that exits (a port lost to another process between choosing and binding it) is
        started again on another port, three times at most."""
        for attempt in range(3):
            port = free_port()
            proc = self.start(name, argv(port), env(port) if env else None, cwd)
            proc.port = port
            try:
                wait_until(proc, lambda: port in listening_ports(proc.pid) and ready(port), timeout_s)
                return proc
            except RuntimeError:
                exited = proc.popen.poll() is not None  # most likely: the port was taken meanwhile
                self.stop(proc)
                if attempt == 2 or not exited:
                    raise
        raise AssertionError("unreachable")

    def stop(self, proc: Proc, timeout_s: float = 20.0) -> None:
        if proc.popen.poll() is None:
            if proc.before_stop is not None:
                try:
                    proc.before_stop()
                except Exception as exc:  # the signals below still stop it
                    log(f"{proc.name}: graceful stop failed: {exc}")
            try:
                _signal(proc.pid, signal.SIGTERM)
                proc.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log(f"{proc.name} (pid {proc.pid}) ignored SIGTERM for {timeout_s:.0f} s: SIGKILL")
                _signal(proc.pid, signal.SIGKILL)
                proc.popen.wait(10)
            except ProcessLookupError:
                pass
            log(f"stopped {proc.name} (pid {proc.pid}, exit code {proc.popen.returncode})")
        self.running = [p for p in self.running if p is not proc]

    def kill(self, proc: Proc, timeout_s: float = 10.0) -> float:
        """SIGKILL by PID (with the process group it leads), as a crash: no graceful stop. Returns the
        CLOCK_MONOTONIC time the signal was sent; the process is reaped before returning."""
        t = time.monotonic()
        if proc.popen.poll() is None:
            try:
                _signal(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.popen.wait(timeout_s)
            log(f"killed {proc.name} (pid {proc.pid}, SIGKILL)")
        self.running = [p for p in self.running if p is not proc]
        return t

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


@contextlib.contextmanager
def workspace(prefix: str, parent: str):
    """Processes started under a fresh temporary directory (their data and logs); on leaving, also after an
    error or a signal, every one of them is stopped by PID and the directory removed."""
    procs = Processes(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield procs
    finally:
        procs.stop_all()
        shutil.rmtree(procs.tmp, ignore_errors=True)


def _signal(pid: int, sig: int) -> None:
    """The process and what it started in its session (its process group has its PID): a server's script
    must not leave the real server running."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        os.kill(pid, sig)


def wait_until(proc: Proc, ready: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with code {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            if ready():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} was not ready within {timeout_s:.0f} s:\n{proc.log_tail()}")
