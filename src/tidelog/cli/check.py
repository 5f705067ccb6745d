"""`tidelog check [--repair]`: verify a data directory from disk, and cut what is damaged on request."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .failures import CommandError
from .parsing import add_command, add_format_option

DESCRIPTION = (
    "Verify every batch's CRC-32C, offset continuity and the indexes of a data directory, read-only "
    "(the broker may be running). Exit 1 if anything is wrong. With --repair (broker stopped): cut "
    "each damaged log at its first invalid batch and drop wrong indexes, then check again."
)


def register(commands) -> None:
    check = add_command(commands, "check", "verify a data directory from disk (CRCs, offsets, indexes)", DESCRIPTION)
    check.add_argument("--data-dir", default="./data", help="data directory")
    check.add_argument("--topic", help="only this topic (default: every topic)")
    check.add_argument(
        "--repair",
        action="store_true",
        help="cut damaged logs where they stop being valid (loses the records after the damage) "
        "and remove wrong indexes; needs the broker stopped",
    )
    add_format_option(check)
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..examine import check, check_directory

    if not os.path.isdir(args.data_dir):
        raise CommandError(f"no data directory at {args.data_dir}")
    if args.repair:
        from ..repair import repair

        for action in repair(args.data_dir, args.topic):
            print(f"repaired {action}", file=sys.stderr)
    directory = check_directory(args.data_dir)
    results = check(args.data_dir, args.topic)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "metadata": {"problems": directory.problems, "notes": directory.notes},
                    "partitions": [dict(r.__dict__) for r in results],
                },
                indent=2,
            )
        )
    else:
        state = "ok" if not directory.problems else f"{len(directory.problems)} problem(s)"
        print(f"metadata: {state}")
        for problem in directory.problems:
            print(f"  - {problem}")
        for note in directory.notes:
            print(f"  (note) {note}")
        for r in results:
            state = "ok" if not r.problems else f"{len(r.problems)} problem(s)"
            print(
                f"{r.topic}[{r.partition}]  offsets {r.start_offset}..{r.end_offset}  {r.records} records in "
                f"{r.batches} batches, {r.bytes} bytes, {r.segments} segment(s): {state}"
            )
            for problem in r.problems:
                print(f"  - {problem}")
            for note in r.notes:
                print(f"  (note) {note}")
    return 1 if directory.problems or any(r.problems for r in results) else 0
