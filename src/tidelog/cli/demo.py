"""`tidelog demo`: the embedded engine in a few lines of output, no server needed."""

from __future__ import annotations

import argparse
import time

from .parsing import add_command
from .values import positive_int

DESCRIPTION = (
    "Open the embedded engine on a local directory (no server), write a few keyed records and read "
    "them back. The directory must not be in use by a running broker."
)


def register(commands) -> None:
    demo = add_command(
        commands, "demo", "write a few records with the embedded engine and read them back (no server)", DESCRIPTION
    )
    demo.add_argument("--data-dir", default="./data", help="data directory")
    demo.add_argument("--topic", default="demo", help="topic to write to (created if missing)")
    demo.add_argument("--partitions", type=positive_int, default=2, help="partitions if the topic is created")
    demo.add_argument("--records", type=positive_int, default=8, help="records to write")
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.engine import Engine

    with Engine.open(args.data_dir) as engine:
        if args.topic not in engine.list_topics():
            engine.create_topic(args.topic, partitions=args.partitions)
        values = [f"hello {i} at {time.strftime('%H:%M:%S')}".encode() for i in range(args.records)]
        keys = [f"key-{i % 4}".encode() for i in range(args.records)]
        written = engine.produce(args.topic, values, keys=keys)
        for res in written:
            print(
                f"produced {res.count} record(s) to {res.topic}[{res.partition}] at offsets "
                f"{res.base_offset}..{res.last_offset}"
            )
        read = 0
        for res in written:
            offset = res.base_offset
            while offset <= res.last_offset:
                fetched = engine.fetch(args.topic, res.partition, offset)
                for rec in fetched:
                    if rec.offset > res.last_offset:
                        break
                    print(
                        f"read {res.topic}[{res.partition}] offset {rec.offset}: "
                        f"key {_text(rec.key)} value {_text(rec.value)}"
                    )
                    read += 1
                if fetched.next_offset <= offset:  # nothing more to read (never expected right after a produce)
                    break
                offset = fetched.next_offset
        print(f"read back {read} of {args.records} record(s); data directory: {engine.path}")
    return 0


def _text(data: bytes | memoryview | None) -> str:
    return "null" if data is None else bytes(data).decode(errors="replace")
