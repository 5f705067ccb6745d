"""`tidelog dump`: a partition's batches and records, straight from its segment files (read-only)."""

from __future__ import annotations

import argparse
import json

from .failures import CommandError, UsageError
from .parsing import add_command, add_format_option
from .values import non_negative_int

DESCRIPTION = (
    "Print a partition's batches (offsets, size, codec, CRC check) and, with --records, its records, "
    "read-only from the segment files (the broker may be running)."
)


def register(commands) -> None:
    dump = add_command(commands, "dump", "print a partition's batches and records straight from disk", DESCRIPTION)
    dump.add_argument("--data-dir", default="./data", help="data directory")
    dump.add_argument("--topic", required=True, help="topic to dump")
    dump.add_argument("--partition", type=non_negative_int, default=0, help="partition to dump")
    dump.add_argument("--from-offset", type=non_negative_int, default=0, help="first offset shown")
    dump.add_argument("--to-offset", type=non_negative_int, help="last offset shown (default: the log's end)")
    dump.add_argument(
        "--from-time",
        metavar="TIME",
        help="only records timestamped at or after TIME: epoch ms or ISO-8601 (local time unless "
        "zoned, e.g. ...T10:00:00Z) (default: no lower bound)",
    )
    dump.add_argument(
        "--to-time", metavar="TIME", help="only records timestamped at or before TIME (default: no upper bound)"
    )
    dump.add_argument("--records", action="store_true", help="also print every record (sizes, headers)")
    add_format_option(dump)
    dump.set_defaults(run=run)


def parse_time_ms(text: str, flag: str) -> int:
    """Epoch milliseconds, or an ISO-8601 date-time (local time unless it names a zone, e.g. Z)."""
    import datetime

    if text.isdigit():
        return int(text)
    try:
        return int(datetime.datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise UsageError(f"{flag} takes epoch milliseconds or an ISO-8601 date-time, got {text!r}") from None


def _iso_ms(ms: int) -> str:
    import datetime

    try:
        when = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "?"
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def format_record(rec, partition: int, fmt: str) -> str:
    def size(b):
        return None if b is None else len(b)

    def text(b):
        return None if b is None else bytes(b).decode("utf-8", "replace")

    if fmt == "json":
        return json.dumps(
            {
                "partition": partition,
                "offset": rec.offset,
                "timestamp": rec.timestamp,
                "key_size": size(rec.key),
                "value_size": size(rec.value),
                "key": text(rec.key),
                "value": text(rec.value),
                "headers": [{"key": k, "size": size(v), "value": text(v)} for k, v in rec.headers],
            }
        )
    headers = ", ".join(f"{k}={'-' if v is None else f'{len(v)} B'}" for k, v in rec.headers)
    return (
        f"  offset {rec.offset}  timestamp {rec.timestamp} ({_iso_ms(rec.timestamp)})  "
        f"key {'-' if rec.key is None else f'{len(rec.key)} B'}  "
        f"value {'-' if rec.value is None else f'{len(rec.value)} B'}  "
        f"headers {len(rec.headers)}{f' [{headers}]' if headers else ''}"
    )


def run(args: argparse.Namespace) -> int:
    import os

    from ..examine import dump_batches, in_time_range, partition_dirs

    if args.to_offset is not None and args.to_offset < args.from_offset:
        raise UsageError(f"--to-offset {args.to_offset} is before --from-offset {args.from_offset}")
    from_time = None if args.from_time is None else parse_time_ms(args.from_time, "--from-time")
    to_time = None if args.to_time is None else parse_time_ms(args.to_time, "--to-time")
    if from_time is not None and to_time is not None and to_time < from_time:
        raise UsageError("--to-time is before --from-time")
    if not os.path.isdir(args.data_dir):
        raise CommandError(f"no data directory at {args.data_dir}")
    dirs = [d for t, p, d in partition_dirs(args.data_dir, args.topic) if p == args.partition]
    if not dirs:
        raise CommandError(f"no partition {args.topic}[{args.partition}] in {args.data_dir}")
    for batch in dump_batches(dirs[0], args.from_offset, args.to_offset, from_time, to_time):
        crc = "ok" if batch.crc_ok() else "BAD"
        if args.format == "json":
            print(
                json.dumps(
                    {
                        "batch": {
                            "base_offset": batch.base_offset,
                            "last_offset": batch.last_offset,
                            "count": batch.count,
                            "size": batch.size,
                            "codec": batch.codec,
                            "first_timestamp": batch.first_timestamp,
                            "max_timestamp": batch.max_timestamp,
                            "crc": crc,
                        }
                    }
                )
            )
        else:
            print(
                f"batch {batch.base_offset}..{batch.last_offset}  count {batch.count}  size {batch.size}  "
                f"codec {batch.codec}  max_timestamp {batch.max_timestamp} ({_iso_ms(batch.max_timestamp)})  "
                f"crc {crc}"
            )
        if args.records:
            mask = in_time_range(batch, from_time, to_time)
            for i, rec in enumerate(batch.records()):
                if rec.offset < args.from_offset or (mask is not None and not mask[i]):
                    continue
                if args.to_offset is not None and rec.offset > args.to_offset:
                    break
                print(format_record(rec, args.partition, args.format))
    return 0
