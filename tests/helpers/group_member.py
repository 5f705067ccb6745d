"""Child process for the group tests: a group member that prints what it processes and commits.

usage: python -m tests.helpers.group_member TARGET GROUP TOPIC SESSION_TIMEOUT_MS [DELIVERY_LOG NAME [MODE]]
Prints "REC <partition> <offset> <value>" per record processed, "COMMIT <partition> <offset>" after
each successful commit, "ASSIGNED +<n>" / "REVOKED -<n>" / "LOST -<n>" when its assignment changes.
Runs until killed or stdin closes.

MODE "poll" (default): poll(), then commit what it returned. MODE "iterate": the README's loop, one
record at a time with `commit()` (the position) after each; it steps the iterator's own
`_next_record` (what `for rec in consumer` runs) so that it can also notice stdin closing while idle.

With DELIVERY_LOG, it also appends one line per event to that file, written straight to the file
(no buffer: a SIGKILL loses nothing already written), for the group chaos test's checker:

    D <t_mono_ns> <wall_ns> <member> <tenure> <topic> <partition> <offset>   a delivery
    A|R|L <t_mono_ns> <wall_ns> <member> <tenure> <topic> <partition>       assigned, revoked, lost

A tenure is one uninterrupted ownership of a partition by this member: a new one starts at every
assignment and ends at its revocation or loss. t_mono_ns is CLOCK_MONOTONIC, which every process
of the host shares, so deliveries of different members can be ordered; for a delivery it is the
moment poll() handed the records over (after checking its lease), not the moment this loop got
round to logging them: a SIGSTOP between the two would otherwise look like a late delivery.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time

from tidelog.client import Consumer
from tidelog.errors import TidelogError


def main() -> None:
    target, group, topic, session_ms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    log_fd = os.open(sys.argv[5], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if len(sys.argv) > 5 else None
    name = sys.argv[6] if len(sys.argv) > 6 else str(os.getpid())
    iterate = len(sys.argv) > 7 and sys.argv[7] == "iterate"
    out = threading.Lock()
    tenures: dict[tuple[str, int], str] = {}
    numbers = itertools.count(1)

    def say(line: str) -> None:
        with out:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def record(line: str) -> None:
        if log_fd is not None:
            os.write(log_fd, (line + "\n").encode())

    def stamp(mono_ns: int | None = None) -> str:
        return f"{time.monotonic_ns() if mono_ns is None else mono_ns} {time.time_ns()}"

    def assigned(tps):
        for t, p in tps:
            tenures[(t, p)] = f"{name}.{next(numbers)}"
            record(f"A {stamp()} {name} {tenures[(t, p)]} {t} {p}")
        say(f"ASSIGNED +{len(tps)}")

    def ended(kind):
        def callback(tps):
            for t, p in tps:
                record(f"{kind} {stamp()} {name} {tenures.pop((t, p), 'none')} {t} {p}")
            say(f"{'REVOKED' if kind == 'R' else 'LOST'} -{len(tps)}")

        return callback

    deadline = time.monotonic() + 60
    while True:  # the broker may be restarting right now: an application would retry too
        try:
            consumer = Consumer(
                target,
                group_id=group,
                topics=[topic],
                auto_commit=False,
                session_timeout_ms=session_ms,
                on_assign=assigned,
                on_revoke=ended("R"),
                on_lost=ended("L"),
            )
            break
        except TidelogError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    say("READY")
    while not stop.is_set():
        try:
            if iterate:
                rec = consumer._next_record(0.1)
                records = [rec] if rec is not None else []
            else:
                records = consumer.poll(0.1)
        except TidelogError as exc:  # the broker is away: the member keeps trying, as an application would
            say(f"POLL_FAILED {exc.message}")
            continue
        delivered_at = stamp(int(consumer.last_delivery_monotonic * 1e9)) if records else ""
        for r in records:
            record(
                f"D {delivered_at} {name} {tenures.get((r.topic, r.partition), 'none')} {r.topic} "
                f"{r.partition} {r.offset}"
            )
            say(f"REC {r.partition} {r.offset} {r.value.decode()}")
        if records:
            positions = {}
            for r in records:
                positions[(r.topic, r.partition)] = r.offset + 1
            try:
                consumer.commit(None if iterate else positions)
            except TidelogError as exc:  # fenced (lost or stale) or the broker is away: redelivered later
                say(f"COMMIT_FAILED {exc.message}")
                continue
            for (_, p), o in sorted(positions.items()):
                say(f"COMMIT {p} {o}")
    consumer.close()
    say("CLOSED")


if __name__ == "__main__":
    main()
