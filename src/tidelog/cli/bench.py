"""`tidelog bench produce|consume|e2e`: the broker's own load tool."""

from __future__ import annotations

import argparse

from ..config import COMPRESSIONS, FSYNC_POLICIES
from .broker import talks_to_broker
from .failures import UsageError
from .parsing import add_command, add_deprecated_alias, add_format_option
from .values import non_negative_number, positive_int, positive_number


def register(commands) -> None:
    bench = talks_to_broker(add_command(commands, "bench", "measure throughput and latency (produce, consume, e2e)"))
    bench.add_argument("scenario", choices=["produce", "consume", "e2e"], help="what to measure")
    bench.add_argument("--embedded", action="store_true", help="run on the in-process engine (needs --data-dir)")
    bench.add_argument("--data-dir", help="data directory for --embedded (default: none)")
    bench.add_argument("--topic", default="bench", help="topic to use (created if missing)")
    bench.add_argument("--records", type=positive_int, default=100_000, help="records in all")
    bench.add_argument("--duration-ms", type=positive_number, default=60_000, help="stop after this long")
    add_deprecated_alias(bench, "--duration", "--duration-ms", "duration_ms", positive_number, scale=1000)
    bench.add_argument("--record-bytes", type=positive_int, default=1024, help="size of each record's value")
    add_deprecated_alias(bench, "--record-size", "--record-bytes", "record_bytes", positive_int)
    bench.add_argument("--batch-bytes", type=positive_int, default=1 << 20, help="largest batch a producer sends")
    bench.add_argument(
        "--linger-ms",
        type=non_negative_number,
        help="how long a batch waits for more records before it is sent (default: 5; 0 for e2e, which "
        "measures one record's latency: records still coalesce while the broker is busy)",
    )
    bench.add_argument("--compression", choices=COMPRESSIONS, default="none", help="batch compression")
    bench.add_argument(
        "--rate",
        type=positive_number,
        help="target records/s over all producers, latency measured from the schedule (default: as fast as possible)",
    )
    bench.add_argument("--producers", type=positive_int, default=1, help="producer processes (threads when --embedded)")
    bench.add_argument("--consumers", type=positive_int, default=1, help="consumer processes")
    bench.add_argument("--partitions", type=positive_int, default=1, help="partitions if the topic is created")
    bench.add_argument("--group", help="consume as a consumer group (default: read partitions directly)")
    bench.add_argument(
        "--fsync", choices=FSYNC_POLICIES, default="never", help="fsync policy, --embedded only (a server has its own)"
    )
    add_format_option(bench)
    bench.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..loadgen.runner import BenchConfig
    from ..loadgen.runner import run as run_bench
    from ..tuning import tune_malloc

    if args.embedded and not args.data_dir:
        raise UsageError("--embedded needs --data-dir")
    if args.data_dir and not args.embedded:
        raise UsageError("--data-dir is for --embedded; a server has its own data directory")
    if args.scenario == "e2e" and args.embedded:
        raise UsageError("e2e measures producer → broker → consumer: it needs a server, not --embedded")
    tune_malloc()
    cfg = BenchConfig(
        scenario=args.scenario,
        server=None if args.embedded else args.server,
        data_dir=args.data_dir if args.embedded else None,
        topic=args.topic,
        records=args.records,
        duration_s=args.duration_ms / 1000,
        record_size=args.record_bytes,
        batch_bytes=args.batch_bytes,
        linger_ms=args.linger_ms if args.linger_ms is not None else 0.0 if args.scenario == "e2e" else 5.0,
        compression=args.compression,
        rate=args.rate or 0.0,
        producers=args.producers,
        consumers=args.consumers,
        partitions=args.partitions,
        group=args.group,
        fsync=args.fsync,
        progress=args.format != "json",
    )
    result = run_bench(cfg)
    print(result.to_json() if args.format == "json" else result.table())
    return 0
