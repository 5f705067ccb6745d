"""`tidelog produce`: one record per input line, from stdin or a file."""

from __future__ import annotations

import argparse
import sys

from ..config import COMPRESSIONS
from .broker import admin, security, talks_to_broker
from .failures import CommandError
from .parsing import add_command
from .values import non_empty, non_negative_int, non_negative_number, positive_int


def register(commands) -> None:
    produce = talks_to_broker(add_command(commands, "produce", "produce one record per input line (stdin or --file)"))
    produce.add_argument("topic", help="topic to write to (it must exist)")
    produce.add_argument("--file", help="read lines from this file (default: stdin)")
    produce.add_argument(
        "--key-field",
        type=positive_int,
        metavar="N",
        help="use the N-th field (1-based) of each line, split by --delimiter, as the key (default: no key)",
    )
    produce.add_argument(
        "--delimiter", type=non_empty, default="\t", help="field delimiter for --key-field (default: tab)"
    )
    produce.add_argument(
        "--partition",
        type=non_negative_int,
        help="write every record to this partition (default: by key, else one partition per batch)",
    )
    produce.add_argument(
        "--acks",
        choices=["all", "1", "0"],
        help="when a record counts as written: all in-sync replicas have it, the leader has it, or once "
        "sent without waiting (default: the broker's, all in a cluster)",
    )
    produce.add_argument("--compression", choices=COMPRESSIONS, default="none", help="batch compression")
    produce.add_argument(
        "--linger-ms",
        type=non_negative_number,
        default=5,
        help="how long a batch waits for more records before it is sent",
    )
    produce.add_argument("--batch-bytes", type=positive_int, default=1 << 20, help="largest batch sent")
    produce.add_argument(
        "--delay-ms",
        type=non_negative_int,
        default=0,
        help="queue consumers do not receive the records before this long from now (a header; plain "
        "consumers see them at once)",
    )
    produce.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")
    produce.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..client import Producer

    # Asked first, so that a stopped broker, an unknown topic or a partition it does not have fail here
    # with one clear line, also when the input turns out to be empty.
    with admin(args) as a:
        partitions = a.partitions(args.topic)
    if args.partition is not None and args.partition >= partitions:
        raise CommandError(
            f"topic {args.topic!r} has {partitions} partition(s); there is no partition {args.partition}"
        )

    delimiter = args.delimiter.encode()
    source = open(args.file, "rb") if args.file else sys.stdin.buffer
    sent = 0
    failures: list[BaseException] = []

    def check(future) -> None:
        if future.exception() is not None and not failures:
            failures.append(future.exception())

    progress = tqdm(unit=" records", file=sys.stderr, disable=not sys.stderr.isatty() or args.quiet)
    try:
        with Producer(
            args.server,
            acks=args.acks,
            linger_ms=args.linger_ms,
            batch_bytes=args.batch_bytes,
            compression=args.compression,
            security=security(args),
        ) as producer:
            for line in source:
                line = line.rstrip(b"\r\n")
                key = None
                if args.key_field is not None:
                    fields = line.split(delimiter)
                    if args.key_field > len(fields):
                        raise CommandError(
                            f"line {sent + 1} has {len(fields)} field(s); --key-field is {args.key_field}"
                        )
                    key = fields[args.key_field - 1]
                producer.send(
                    args.topic, line, key=key, partition=args.partition, delay_ms=args.delay_ms
                ).add_done_callback(check)
                sent += 1
                progress.update(1)
                if failures:
                    break
            producer.flush()
    finally:
        progress.close()
        if args.file:
            source.close()
    if failures:
        raise failures[0]
    if not args.quiet:
        print(f"produced {sent} record(s) to {args.topic}", file=sys.stderr)
    return 0
