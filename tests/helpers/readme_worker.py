"""Child process of the at-least-once test: the README's consumer-group loop, unchanged.

usage: python -m tests.helpers.readme_worker TARGET GROUP TOPIC SESSION_TIMEOUT_MS LOG BLOCK_AT

handle(rec) appends "HANDLING <partition> <offset> <value>" to LOG when it starts and
"HANDLED <partition> <offset> <value>" when it is done, straight to the file (no buffer: a SIGKILL
loses nothing already written). The BLOCK_AT-th record's handling never finishes: the worker waits
there for the test's SIGKILL (0: never blocks). Runs until killed.
"""

from __future__ import annotations

import os
import sys
import threading

from tidelog.client import Consumer


def main() -> None:
    target, group, topic, session_ms, log_path, block_at = sys.argv[1:7]
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    handled = 0

    def handle(rec) -> None:
        nonlocal handled
        what = f"{rec.partition} {rec.offset} {rec.value.decode()}"
        os.write(log_fd, f"HANDLING {what}\n".encode())
        handled += 1
        if handled == int(block_at):
            threading.Event().wait()  # killed here, in the middle of handling a record
        os.write(log_fd, f"HANDLED {what}\n".encode())

    # The README's loop (session shortened so the test does not wait 10 s for the killed member).
    c = Consumer(
        target,
        group_id=group,
        topics=[topic],
        auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(session_ms),
        on_revoke=lambda tps: c.commit(),
    )
    for rec in c:
        handle(rec)
        c.commit()


if __name__ == "__main__":
    main()
