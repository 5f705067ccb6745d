"""The `tidelog` command line: argument parsing and wiring, nothing else.

Exit codes: 0 success, 1 the operation failed (a tidelog error, one line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import __version__
from .errors import TidelogError


def _demo(args: argparse.Namespace) -> int:
    """Open the embedded engine on a local directory, write a few records and read them back."""
    from .broker.engine import Engine

    with Engine.open(args.data_dir) as engine:
        if args.topic not in engine.list_topics():
            engine.create_topic(args.topic, partitions=args.partitions)
        values = [f"hello {i} at {time.strftime('%H:%M:%S')}".encode() for i in range(args.records)]
        keys = [f"key-{i % 4}".encode() for i in range(args.records)]
        for res in engine.produce(args.topic, values, keys=keys):
            print(f"produced {res.count} record(s) to {res.topic}[{res.partition}] at offsets "
                  f"{res.base_offset}..{res.last_offset}")
        for part in engine.describe(args.topic).partitions:
            start = max(part.high_watermark - 2, part.log_start)
            for rec in engine.fetch(args.topic, part.partition, start):
                print(f"  {args.topic}[{part.partition}] offset {rec.offset}: key={rec.key!r} value={rec.value!r}")
        print(f"data directory: {engine.path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidelog", description="A Kafka-like partitioned commit log.")
    parser.add_argument("--version", action="version", version=f"tidelog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="write and read a few records with the embedded engine",
                          description=_demo.__doc__)
    demo.add_argument("--data-dir", default="./data", help="data directory (default: ./data)")
    demo.add_argument("--topic", default="demo", help="topic to use (default: demo)")
    demo.add_argument("--partitions", type=int, default=2, help="partitions if the topic is new")
    demo.add_argument("--records", type=int, default=8, help="records to write")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except TidelogError as exc:
        print(f"tidelog: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
