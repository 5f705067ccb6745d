"""A client process of a fault test (a producer, a group member), started as `python -m MODULE ...`
from the repository, stopped through its stdin (the graceful way) or by signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Child:
    def __init__(self, args: list[str], name: str, stderr_path: str) -> None:
        self.name = name
        self.killed = False
        """The test SIGKILLed it (any other non-zero exit is the child's own failure)."""
        with open(stderr_path, "ab") as err:  # its warnings and tracebacks, for a failed run
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *args], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.killed = True
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def finish(self) -> None:
        """Close its stdin: it finishes and exits (`stop` then waits for it); several children told at
        once finish side by side."""
        self.signal(signal.SIGCONT)
        if self.alive() and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def stop(self, timeout_s: float = 30) -> None:
        """Close its stdin (it finishes and exits); SIGKILL it if it takes longer than timeout_s."""
        self.finish()
        if self.alive():
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
