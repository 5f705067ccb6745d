"""A queue worker process for tests/test_queue_processes.py: takes records of a queue and writes one
line per answer it got acknowledged ("ack TOPIC PARTITION OFFSET DELIVERY VALUE") to its output file,
flushed before the next record, so a test that SIGKILLs it knows what it completed.

    python -m tests.helpers.queue_worker TARGET QUEUE TOPIC OUT [--hold-s S] [--lock-ms MS]
           [--max-deliveries N] [--dlq TOPIC] [--fail-values V,...] [--no-extend]

--hold-s: seconds each job takes (the lock is extended meanwhile unless --no-extend); --fail-values:
values it releases instead of acknowledging (a poison message).
"""

from __future__ import annotations

import argparse
import sys
import time

from tidelog.client import QueueConsumer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("queue")
    ap.add_argument("topic")
    ap.add_argument("out")
    ap.add_argument("--hold-s", type=float, default=0.0)
    ap.add_argument("--lock-ms", type=int, default=0)
    ap.add_argument("--max-deliveries", type=int, default=0)
    ap.add_argument("--dlq", default=None)
    ap.add_argument("--fail-values", default="")
    ap.add_argument("--no-extend", action="store_true")
    ap.add_argument("--prefetch", type=int, default=1)
    a = ap.parse_args()
    poison = {v.encode() for v in a.fail_values.split(",") if v}
    with (
        open(a.out, "a", buffering=1) as out,
        QueueConsumer(
            a.target,
            queue=a.queue,
            topics=[a.topic],
            lock_ms=a.lock_ms,
            max_deliveries=a.max_deliveries,
            dead_letter_topic=a.dlq,
            prefetch=a.prefetch,
            wait_ms=200,
            auto_extend=not a.no_extend,
        ) as q,
    ):
        print(f"ready {q.consumer_id}", file=out)
        for msg in q:
            print(f"got {msg.topic} {msg.partition} {msg.offset} {msg.delivery_count} {msg.value.decode()}", file=out)
            if a.hold_s:
                time.sleep(a.hold_s)
            if msg.value in poison:
                msg.release(reason="poison")
                continue
            if msg.ack():
                print(
                    f"ack {msg.topic} {msg.partition} {msg.offset} {msg.delivery_count} {msg.value.decode()}", file=out
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
