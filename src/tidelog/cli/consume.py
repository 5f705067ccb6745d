"""`tidelog consume`: print the records of a topic, as a reader of its partitions or as a group member.

Like Kafka's console consumer it starts at the latest offset unless told otherwise: it prints what is
produced from now on. A group that has committed nothing yet starts there too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .broker import admin, security, talks_to_broker
from .failures import CommandError, UsageError
from .parsing import add_command, add_format_option
from .values import non_negative_int, positive_int, positive_number

DESCRIPTION = (
    "Print the records of a topic, one per line. By default reading starts at the latest offset: "
    "only records produced from now on are printed. --from-beginning starts at the earliest "
    "offset, --offset N at offset N of each partition read. With --group the group assigns the partitions "
    "and reading starts at its committed offsets; a group that has committed nothing starts at "
    "the latest offset too (--from-beginning: the earliest)."
)


def register(commands) -> None:
    consume = talks_to_broker(
        add_command(
            commands, "consume", "print records of a topic (from the latest offset unless told otherwise)", DESCRIPTION
        )
    )
    consume.add_argument("topic", help="topic to read")
    consume.add_argument("--partition", type=non_negative_int, metavar="N", help="only this partition (default: all)")
    consume.add_argument(
        "--offset",
        type=non_negative_int,
        metavar="N",
        help="start at this offset (default: the latest offset: only new records)",
    )
    consume.add_argument(
        "--from-beginning", action="store_true", help="start at the earliest offset instead of the latest"
    )
    consume.add_argument(
        "--group", help="consume as a member of this consumer group, committing what it prints (default: no group)"
    )
    consume.add_argument(
        "--max", type=positive_int, metavar="N", help="stop after this many records (default: no limit)"
    )
    consume.add_argument(
        "--timeout-ms",
        type=positive_number,
        metavar="MS",
        help="stop after this long without a new record (default: wait forever)",
    )
    add_format_option(
        consume,
        ("text", "json", "value"),
        "text: partition, offset, key, value (tab-separated); json: one object per line; value: the value only",
    )
    consume.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.group is not None and (args.partition is not None or args.offset is not None):
        raise UsageError(
            "--group reads the partitions the group assigns, from its committed offsets: "
            "--partition and --offset do not apply"
        )
    if args.from_beginning and args.offset is not None:
        raise UsageError("--from-beginning and --offset both say where to start: give one")
    if args.group is not None:
        return _consume_as_group(args)
    return _consume_partitions(args)


def format_record(rec, partition: int, fmt: str) -> str:
    def text(b):
        return None if b is None else bytes(b).decode("utf-8", "replace")

    if fmt == "json":
        return json.dumps(
            {
                "partition": partition,
                "offset": rec.offset,
                "timestamp": rec.timestamp,
                "key": text(rec.key),
                "value": text(rec.value),
                "headers": {k: text(v) for k, v in rec.headers},
            }
        )
    if fmt == "value":
        return text(rec.value) or ""
    return f"{partition}\t{rec.offset}\t{text(rec.key) or ''}\t{text(rec.value) or ''}"


def _idle_too_long(args: argparse.Namespace, idle_since: float) -> bool:
    return args.timeout_ms is not None and (time.monotonic() - idle_since) * 1000 >= args.timeout_ms


def _consume_as_group(args: argparse.Namespace) -> int:
    from ..client import GroupConsumer

    with admin(args) as a:
        a.partitions(args.topic)  # a stopped broker or an unknown topic: one clear line now
    consumer = GroupConsumer(
        args.server,
        group_id=args.group,
        topics=[args.topic],
        auto_commit=True,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        security=security(args),
    )
    shown = 0
    idle_since = time.monotonic()
    try:
        while args.max is None or shown < args.max:
            records = consumer.poll(0.2)
            for rec in records[: None if args.max is None else args.max - shown]:
                print(format_record(rec, rec.partition, args.format))
                shown += 1
            sys.stdout.flush()
            if records:
                idle_since = time.monotonic()
                positions = {}
                for rec in records[: shown if args.max is not None else None]:
                    positions[(rec.topic, rec.partition)] = rec.offset + 1
                consumer.commit(positions)  # only what was printed
            elif _idle_too_long(args, idle_since):
                break
    finally:
        consumer.auto_commit = False  # everything printed is committed above; never more
        consumer.close()
    return 0


def _consume_partitions(args: argparse.Namespace) -> int:
    from ..client import PartitionConsumer
    from ..client.metadata import Metadata

    with admin(args) as a:
        count = a.partitions(args.topic)
    if args.partition is not None and args.partition >= count:
        raise CommandError(f"topic {args.topic!r} has {count} partition(s); there is no partition {args.partition}")
    partitions = [args.partition] if args.partition is not None else list(range(count))
    if args.offset is not None:
        start = args.offset
    else:
        start = "earliest" if args.from_beginning else "latest"
    metadata = Metadata(args.server, security=security(args))  # one lookup of leaders for all the partitions
    consumers = [PartitionConsumer(args.server, args.topic, p, start, metadata=metadata) for p in partitions]
    shown = 0
    idle_since = time.monotonic()
    try:
        while args.max is None or shown < args.max:
            got = False
            for p, consumer in zip(partitions, consumers):
                for rec in consumer.poll(0.05 if len(consumers) > 1 else 0.2):
                    print(format_record(rec, p, args.format), flush=False)
                    shown += 1
                    got = True
                    if args.max is not None and shown >= args.max:
                        break
                if args.max is not None and shown >= args.max:
                    break
            sys.stdout.flush()
            if got:
                idle_since = time.monotonic()
            elif _idle_too_long(args, idle_since):
                break
    finally:
        for consumer in consumers:
            consumer.close()
        metadata.close()
    return 0
