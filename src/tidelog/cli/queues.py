"""`tidelog queues list|describe|receive|reset|delete|redrive`: queues (per-message acknowledgement on
the log), from the outside."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .broker import admin, security, talks_to_broker
from .consume import format_record
from .failures import UsageError
from .parsing import add_command, add_format_option
from .values import non_negative_int, positive_int, positive_number


def register(commands) -> None:
    queues = talks_to_broker(
        add_command(commands, "queues", "list, describe, receive from, reset, delete and redrive queues")
    )
    actions = queues.add_subparsers(dest="action", metavar="ACTION", required=True)

    talks_to_broker(add_command(actions, "list", "list queues")).set_defaults(run=list_queues)

    describe = talks_to_broker(
        add_command(
            actions,
            "describe",
            "settings, totals, and per partition start, in flight, available, delayed, oldest unacked age",
        )
    )
    describe.add_argument("queue", help="queue name")
    add_format_option(describe)
    describe.set_defaults(run=describe_queue)

    receive = talks_to_broker(
        add_command(actions, "receive", "print records of a queue and acknowledge each one printed")
    )
    receive.add_argument("queue", help="queue name (created on first use, reading --topic)")
    receive.add_argument(
        "--topic",
        action="append",
        help="topic the queue reads (repeatable; default: the queue's own, needed only to create it)",
    )
    receive.add_argument(
        "--max", type=positive_int, metavar="N", help="stop after this many records (default: no limit)"
    )
    receive.add_argument(
        "--timeout-ms",
        type=positive_number,
        metavar="MS",
        help="stop after this long without a record (default: wait forever)",
    )
    receive.add_argument("--lock-ms", type=non_negative_int, default=0, help="a new queue's lock (default 30000)")
    receive.add_argument(
        "--max-deliveries", type=non_negative_int, default=0, help="a new queue's delivery limit (default 5)"
    )
    receive.add_argument("--dead-letter-topic", help="a new queue's dead-letter topic (default: none)")
    receive.add_argument(
        "--fifo", action="store_true", help="a new queue: one record per key at a time, in order (default: off)"
    )
    add_format_option(
        receive, ("text", "json", "value"), "text: partition, offset, key, value (tab-separated); json; value"
    )
    receive.set_defaults(run=receive_queue)

    reset = talks_to_broker(
        add_command(actions, "reset", "move a queue's start (forgets its locks, delays and delivery counts)")
    )
    reset.add_argument("queue", help="queue name")
    target = reset.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true", help="to each partition's earliest offset")
    target.add_argument("--to-latest", action="store_true", help="to each partition's end: skip everything there")
    target.add_argument("--to-offset", type=non_negative_int, metavar="N", help="to offset N (with --topic)")
    reset.add_argument("--topic", help="with --to-offset: the topic whose partitions move (default: none)")
    reset.add_argument(
        "--partition",
        type=non_negative_int,
        action="append",
        help="with --to-offset: only this partition (repeatable; default: every partition)",
    )
    reset.set_defaults(run=reset_queue)

    delete = talks_to_broker(add_command(actions, "delete", "forget a queue (its records stay in their topics)"))
    delete.add_argument("queue", help="queue name")
    delete.set_defaults(run=delete_queue)

    redrive = talks_to_broker(
        add_command(actions, "redrive", "move dead letters back to a topic (each once), without their DLQ headers")
    )
    redrive.add_argument("source", help="the dead-letter topic")
    redrive.add_argument("--to", required=True, help="the topic to move them to")
    redrive.add_argument("--limit", type=positive_int, help="move at most this many (default: all)")
    redrive.set_defaults(run=redrive_queue)


def list_queues(args: argparse.Namespace) -> int:
    with admin(args) as a:
        for name in a.list_queues():
            print(name)
    return 0


def describe_queue(args: argparse.Namespace) -> int:
    with admin(args) as a:
        d = a.describe_queue(args.queue)
    c = d.config
    if args.format == "json":
        out = {
            "queue": d.name,
            "settings": c.to_json(),
            "totals": d.totals,
            "partitions": [p._asdict() for p in d.partitions],
        }
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"queue {d.name}  topics {','.join(c.topics)}  lock_ms {c.lock_ms}  max_deliveries {c.max_deliveries}  "
        f"dead_letter_topic {c.dead_letter_topic or '-'}  max_in_flight {c.max_in_flight}"
        f"{'  fifo' if c.fifo else ''}"
    )
    print("  " + "  ".join(f"{k} {v}" for k, v in sorted(d.totals.items())))
    header = ("topic", "partition", "start", "end", "in_flight", "available", "delayed", "unread", "oldest_ms")
    print(f"  {header[0]:<20} " + " ".join(f"{h:>10}" for h in header[1:]))
    for p in d.partitions:
        oldest = "-" if p.oldest_unacked_ms is None else str(p.oldest_unacked_ms)
        values = (p.partition, p.start, p.log_end, p.in_flight, p.available, p.delayed, p.unread, oldest)
        print(f"  {p.topic:<20} " + " ".join(f"{v!s:>10}" for v in values))
    return 0


def receive_queue(args: argparse.Namespace) -> int:
    from ..client import QueueConsumer

    with admin(args) as a:
        exists = args.queue in a.list_queues()
        for topic in args.topic or ():
            a.partitions(topic)  # an unknown topic: one clear line now
    if not exists and not args.topic:
        raise UsageError(f"queue {args.queue!r} does not exist: give --topic to create it")
    with QueueConsumer(
        args.server,
        queue=args.queue,
        topics=args.topic or [],
        lock_ms=args.lock_ms,
        max_deliveries=args.max_deliveries,
        dead_letter_topic=args.dead_letter_topic,
        fifo=args.fifo,
        wait_ms=200,
        security=security(args),
    ) as q:
        shown = 0
        idle_since = time.monotonic()
        while args.max is None or shown < args.max:
            msgs = q.receive(min(100, (args.max - shown) if args.max is not None else 100), wait_ms=200)
            for m in msgs:
                print(format_record(m, m.partition, args.format))
            sys.stdout.flush()
            q.ack(msgs)  # only what was printed
            shown += len(msgs)
            if msgs:
                idle_since = time.monotonic()
            elif args.timeout_ms is not None and (time.monotonic() - idle_since) * 1000 >= args.timeout_ms:
                break
    return 0


def reset_queue(args: argparse.Namespace) -> int:
    if args.to_offset is None and (args.topic or args.partition):
        raise UsageError("--topic and --partition go with --to-offset")
    with admin(args) as a:
        if args.to_offset is not None:
            if not args.topic:
                raise UsageError("--to-offset needs --topic")
            parts = args.partition or range(a.partitions(args.topic))
            a.reset_queue(args.queue, {(args.topic, p): args.to_offset for p in parts})
        else:
            a.reset_queue(args.queue, "earliest" if args.to_earliest else "latest")
    print(f"reset queue {args.queue}")
    return 0


def delete_queue(args: argparse.Namespace) -> int:
    with admin(args) as a:
        a.delete_queue(args.queue)
    print(f"deleted queue {args.queue}")
    return 0


def redrive_queue(args: argparse.Namespace) -> int:
    with admin(args) as a:
        moved = a.redrive(args.source, args.to, args.limit or 0)
    print(f"moved {moved} record(s) from {args.source} to {args.to}")
    return 0
