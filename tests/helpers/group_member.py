"""Child process for the group tests: a group member that prints what it processes and commits.

usage: python -m tests.helpers.group_member TARGET GROUP TOPIC SESSION_TIMEOUT_MS
Prints "REC <partition> <offset> <value>" per record processed, "COMMIT <partition> <offset>" after
each successful commit, "ASSIGNED <n>" when its assignment changes. Runs until killed or stdin closes.
"""

from __future__ import annotations

import sys
import threading

from tidelog.client import Consumer


def main() -> None:
    target, group, topic, session_ms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    out = threading.Lock()

    def say(line: str) -> None:
        with out:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    consumer = Consumer(target, group_id=group, topics=[topic], auto_commit=False, session_timeout_ms=session_ms,
                        on_assign=lambda tps: say(f"ASSIGNED +{len(tps)}"),
                        on_revoke=lambda tps: say(f"REVOKED -{len(tps)}"))
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    say("READY")
    while not stop.is_set():
        records = consumer.poll(0.1)
        for r in records:
            say(f"REC {r.partition} {r.offset} {r.value.decode()}")
        if records:
            positions = {}
            for r in records:
                positions[(r.topic, r.partition)] = r.offset + 1
            consumer.commit(positions)
            for (_, p), o in sorted(positions.items()):
                say(f"COMMIT {p} {o}")
    consumer.close()
    say("CLOSED")


if __name__ == "__main__":
    main()
