"""The `tidelog` command line: argument parsing and wiring, nothing else.

Exit codes: 0 success, 1 the operation failed (one line on stderr), 2 bad usage (argparse).
Server settings come from flags, then TIDELOG_* environment variables, then a TOML file (--config),
then the defaults (config.ServerConfig).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import __version__
from .errors import TidelogError

ENV_SETTINGS = {"TIDELOG_HOST": "host", "TIDELOG_PORT": "port", "TIDELOG_DATA_DIR": "data_dir",
                "TIDELOG_METRICS_PORT": "metrics_port"}
ENV_ENGINE_SETTINGS = {"TIDELOG_FSYNC": "fsync"}


class UsageError(Exception):
    """Bad input on the command line or in the config file: exit code 2."""


# -- serve -------------------------------------------------------------------------------------------

def load_server_config(args: argparse.Namespace):
    from .config import ServerConfig

    settings: dict = {}
    path = args.config or os.environ.get("TIDELOG_CONFIG")
    if path:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            with open(path, "rb") as f:
                settings = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read config file {path}: {exc}") from None
    engine = dict(settings.pop("engine", {}))
    for env, name in ENV_SETTINGS.items():
        if env in os.environ:
            settings[name] = int(os.environ[env]) if name in ("port", "metrics_port") else os.environ[env]
    for env, name in ENV_ENGINE_SETTINGS.items():
        if env in os.environ:
            engine[name] = os.environ[env]
    for name in ("host", "port", "data_dir", "metrics_port"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.fsync is not None:
        engine["fsync"] = args.fsync
    if not isinstance(engine, dict):
        raise UsageError(f"[engine] in {path} must be a table")
    if engine:
        settings["engine"] = engine
    return ServerConfig().with_overrides(settings)


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from .server.app import serve
    from .tuning import tune_malloc

    config = load_server_config(args)
    tune_malloc()
    asyncio.run(serve(config))  # its "server started" log line says where it serves
    return 0


def _configure_logs(args: argparse.Namespace) -> None:
    """--log-format / --log-level (or $TIDELOG_LOG_FORMAT / $TIDELOG_LOG_LEVEL); the server logs at
    info by default, client commands only warnings and errors."""
    from . import logs

    fmt = args.log_format or os.environ.get("TIDELOG_LOG_FORMAT") or "text"
    level = args.log_level or os.environ.get("TIDELOG_LOG_LEVEL") or ("info" if args.command == "serve" else "warning")
    if fmt not in logs.FORMATS:
        raise UsageError(f"log format must be one of {', '.join(logs.FORMATS)}, got {fmt!r}")
    if level.lower() not in logs.LEVELS:
        raise UsageError(f"log level must be one of {', '.join(logs.LEVELS)}, got {level!r}")
    logs.configure(fmt, level.lower())


# -- topics ------------------------------------------------------------------------------------------

def _admin(args):
    from .client import Admin

    return Admin(args.server)


def _topics_create(args) -> int:
    config = {}
    for item in args.set or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set takes NAME=VALUE, got {item!r}")
        config[name] = value
    with _admin(args) as admin:
        desc = admin.create_topic(args.topic, args.partitions, **config)
    print(f"created topic {desc.name} with {len(desc.partitions)} partition(s)")
    return 0


def _topics_list(args) -> int:
    with _admin(args) as admin:
        for name in admin.list_topics():
            print(name)
    return 0


def _topics_describe(args) -> int:
    with _admin(args) as admin:
        desc = admin.describe(args.topic)
    if args.format == "json":
        print(json.dumps({**desc, "partitions": [p._asdict() for p in desc["partitions"]]}, indent=2))
        return 0
    print(f"topic {desc['name']}  partitions {len(desc['partitions'])}")
    print("  " + "  ".join(f"{k}={v}" for k, v in sorted(desc["config"].items())))
    print(f"  {'partition':>9} {'start':>12} {'end':>12} {'high_wm':>12} {'bytes':>14} {'segments':>8}")
    for p in desc["partitions"]:
        print(f"  {p.partition:>9} {p.log_start:>12} {p.log_end:>12} {p.high_watermark:>12} "
              f"{p.size_bytes:>14} {p.segments:>8}")
    return 0


def _topics_delete(args) -> int:
    with _admin(args) as admin:
        admin.delete_topic(args.topic)
    print(f"deleted topic {args.topic}")
    return 0


# -- produce / consume -------------------------------------------------------------------------------

def _produce(args) -> int:
    from tqdm import tqdm

    from .client import Producer

    delimiter = args.delimiter.encode()
    source = open(args.file, "rb") if args.file else sys.stdin.buffer
    sent = 0
    failures: list[BaseException] = []

    def check(future):
        if future.exception() is not None and not failures:
            failures.append(future.exception())

    progress = tqdm(unit=" records", file=sys.stderr, disable=not sys.stderr.isatty() or args.quiet)
    with Producer(args.server, linger_ms=args.linger_ms, batch_bytes=args.batch_bytes,
                  compression=args.compression) as producer:
        for line in source:
            line = line.rstrip(b"\r\n")
            key = None
            if args.key_field is not None:
                fields = line.split(delimiter)
                if args.key_field > len(fields):
                    raise UsageError(f"line {sent + 1} has {len(fields)} field(s); --key-field is {args.key_field}")
                key = fields[args.key_field - 1]
            producer.send(args.topic, line, key=key, partition=args.partition).add_done_callback(check)
            sent += 1
            progress.update(1)
            if failures:
                break
        producer.flush()
    progress.close()
    if args.file:
        source.close()
    if failures:
        raise failures[0]
    if not args.quiet:
        print(f"produced {sent} record(s) to {args.topic}", file=sys.stderr)
    return 0


def _format_record(rec, partition: int, fmt: str) -> str:
    def text(b):
        return None if b is None else bytes(b).decode("utf-8", "replace")

    if fmt == "json":
        return json.dumps({"partition": partition, "offset": rec.offset, "timestamp": rec.timestamp,
                           "key": text(rec.key), "value": text(rec.value),
                           "headers": {k: text(v) for k, v in rec.headers}})
    if fmt == "value":
        return text(rec.value) or ""
    return f"{partition}\t{rec.offset}\t{text(rec.key) or ''}\t{text(rec.value) or ''}"


def _consume_group(args) -> int:
    from .client import Consumer

    consumer = Consumer(args.server, group_id=args.group, topics=[args.topic], auto_commit=True,
                        auto_offset_reset="earliest" if args.from_beginning else "latest")
    shown = 0
    idle_since = time.monotonic()
    try:
        while args.max is None or shown < args.max:
            records = consumer.poll(0.2)
            for rec in records[: None if args.max is None else args.max - shown]:
                print(_format_record(rec, rec.partition, args.format))
                shown += 1
            sys.stdout.flush()
            if records:
                idle_since = time.monotonic()
                positions = {}
                for rec in records[: shown if args.max is not None else None]:
                    positions[(rec.topic, rec.partition)] = rec.offset + 1
                consumer.commit(positions)  # only what was printed
            elif args.timeout_ms is not None and (time.monotonic() - idle_since) * 1000 >= args.timeout_ms:
                break
    finally:
        consumer.auto_commit = False  # everything printed is committed above; never more
        consumer.close()
    return 0


def _consume(args) -> int:
    from .client import Consumer

    if args.group:
        return _consume_group(args)

    with _admin(args) as admin:
        partitions = [args.partition] if args.partition is not None else list(range(admin.partitions(args.topic)))
    if args.offset is not None:
        start = args.offset
    else:
        start = "earliest" if args.from_beginning else "latest"
    consumers = [Consumer(args.server, args.topic, p, start) for p in partitions]
    shown = 0
    idle_since = time.monotonic()
    try:
        while args.max is None or shown < args.max:
            got = False
            for p, consumer in zip(partitions, consumers):
                for rec in consumer.poll(0.05 if len(consumers) > 1 else 0.2):
                    print(_format_record(rec, p, args.format), flush=False)
                    shown += 1
                    got = True
                    if args.max is not None and shown >= args.max:
                        break
                if args.max is not None and shown >= args.max:
                    break
            sys.stdout.flush()
            if got:
                idle_since = time.monotonic()
            elif args.timeout_ms is not None and (time.monotonic() - idle_since) * 1000 >= args.timeout_ms:
                break
    finally:
        for consumer in consumers:
            consumer.close()
    return 0


def _health(args) -> int:
    """Ask the broker's gRPC health service; exit 0 when it is SERVING (container health checks)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.server) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=args.service),
                                                               timeout=args.timeout_s)
        except grpc.RpcError as err:
            print(f"tidelog: error: health check of {args.server} failed: {err.code().name}", file=sys.stderr)
            return 1
    state = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(state)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


# -- groups ------------------------------------------------------------------------------------------

def _groups_list(args) -> int:
    with _admin(args) as admin:
        for name in admin.list_groups():
            print(name)
    return 0


def _groups_describe(args) -> int:
    with _admin(args) as admin:
        info = admin.describe_group(args.group)
    if args.format == "json":
        print(json.dumps(info, indent=2))
        return 0
    print(f"group {info['group_id']}  state {info['state']}  generation {info['generation']}  "
          f"members {len(info['members'])}  rebalances {info['rebalances']}")
    for m in info["members"]:
        parts = ", ".join(f"{t}[{p}]" for t, p in m["assignment"]) or "-"
        print(f"  member {m['member_id']}  topics {','.join(m['topics'])}  assigned {parts}")
    print(f"  {'topic':<20} {'partition':>9} {'committed':>12} {'end':>12} {'lag':>10} {'time_lag_ms':>12}  owner")
    for p in info["partitions"]:
        def show(v):
            return "-" if v is None else str(v)
        print(f"  {p['topic']:<20} {p['partition']:>9} {show(p['committed']):>12} {p['end']:>12} "
              f"{show(p['lag']):>10} {show(p['time_lag_ms']):>12}  {p['owner'] or '-'}")
    return 0


def _groups_reset(args) -> int:
    import datetime

    kwargs = {}
    if args.to_earliest:
        to = "earliest"
    elif args.to_latest:
        to = "latest"
    elif args.to_offset is not None:
        to = args.to_offset
    else:
        try:
            when = datetime.datetime.fromisoformat(args.to_datetime)
        except ValueError:
            raise UsageError(f"--to-datetime takes an ISO date-time, got {args.to_datetime!r}") from None
        to, kwargs = "timestamp", {"timestamp_ms": int(when.timestamp() * 1000)}
    with _admin(args) as admin:
        offsets = admin.reset_offsets(args.group, args.topic, to, partitions=args.partition, **kwargs)
    for (topic, partition), offset in sorted(offsets.items()):
        print(f"{topic}\t{partition}\t{offset}")
    return 0


def _groups_delete(args) -> int:
    with _admin(args) as admin:
        admin.delete_group(args.group)
    print(f"deleted group {args.group}")
    return 0


# -- bench -------------------------------------------------------------------------------------------

def _bench(args) -> int:
    from .bench.runner import BenchConfig, run
    from .tuning import tune_malloc

    if args.embedded and not args.data_dir:
        raise UsageError("--embedded needs --data-dir")
    if args.scenario == "e2e" and args.embedded:
        raise UsageError("e2e measures producer → broker → consumer: it needs a server, not --embedded")
    if args.rate and args.rate < 0:
        raise UsageError("--rate must be positive")
    tune_malloc()
    cfg = BenchConfig(
        scenario=args.scenario, server=None if args.embedded else args.server,
        data_dir=args.data_dir if args.embedded else None, topic=args.topic, records=args.records,
        duration_s=args.duration, record_size=args.record_size, batch_bytes=args.batch_bytes,
        linger_ms=args.linger_ms, compression=args.compression, rate=args.rate or 0.0,
        producers=args.producers, consumers=args.consumers, partitions=args.partitions, group=args.group,
        fsync=args.fsync, progress=not args.json)
    result = run(cfg)
    print(result.to_json() if args.json else result.table())
    return 0


# -- looking inside -----------------------------------------------------------------------------------

def _check(args) -> int:
    from .inspect import check, check_directory

    if not os.path.isdir(args.data_dir):
        raise UsageError(f"no data directory at {args.data_dir}")
    if args.repair:
        from .repair import repair

        for action in repair(args.data_dir, args.topic):
            print(f"repaired {action}", file=sys.stderr)
    directory = check_directory(args.data_dir)
    results = check(args.data_dir, args.topic)
    if args.format == "json":
        print(json.dumps({"metadata": {"problems": directory.problems, "notes": directory.notes},
                          "partitions": [{k: v for k, v in r.__dict__.items()} for r in results]}, indent=2))
    else:
        state = "ok" if not directory.problems else f"{len(directory.problems)} problem(s)"
        print(f"metadata: {state}")
        for problem in directory.problems:
            print(f"  - {problem}")
        for note in directory.notes:
            print(f"  (note) {note}")
        for r in results:
            state = "ok" if not r.problems else f"{len(r.problems)} problem(s)"
            print(f"{r.topic}[{r.partition}]  offsets {r.start_offset}..{r.end_offset}  {r.records} records in "
                  f"{r.batches} batches, {r.bytes} bytes, {r.segments} segment(s): {state}")
            for problem in r.problems:
                print(f"  - {problem}")
            for note in r.notes:
                print(f"  (note) {note}")
    return 1 if directory.problems or any(r.problems for r in results) else 0


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


def _dump_record(rec, partition: int, fmt: str) -> str:
    def size(b):
        return None if b is None else len(b)

    def text(b):
        return None if b is None else bytes(b).decode("utf-8", "replace")

    if fmt == "json":
        return json.dumps({"partition": partition, "offset": rec.offset, "timestamp": rec.timestamp,
                           "key_size": size(rec.key), "value_size": size(rec.value),
                           "key": text(rec.key), "value": text(rec.value),
                           "headers": [{"key": k, "size": size(v), "value": text(v)} for k, v in rec.headers]})
    headers = ", ".join(f"{k}={'-' if v is None else f'{len(v)} B'}" for k, v in rec.headers)
    return (f"  offset {rec.offset}  timestamp {rec.timestamp} ({_iso_ms(rec.timestamp)})  "
            f"key {'-' if rec.key is None else f'{len(rec.key)} B'}  "
            f"value {'-' if rec.value is None else f'{len(rec.value)} B'}  "
            f"headers {len(rec.headers)}{f' [{headers}]' if headers else ''}")


def _dump(args) -> int:
    from .inspect import dump_batches, in_time_range, partition_dirs

    from_time = None if args.from_time is None else parse_time_ms(args.from_time, "--from-time")
    to_time = None if args.to_time is None else parse_time_ms(args.to_time, "--to-time")
    dirs = [d for t, p, d in partition_dirs(args.data_dir, args.topic) if p == args.partition]
    if not dirs:
        raise UsageError(f"no partition {args.topic}[{args.partition}] in {args.data_dir}")
    for batch in dump_batches(dirs[0], args.from_offset, args.to_offset, from_time, to_time):
        crc = "ok" if batch.crc_ok() else "BAD"
        if args.format == "json":
            print(json.dumps({"batch": {"base_offset": batch.base_offset, "last_offset": batch.last_offset,
                                        "count": batch.count, "size": batch.size, "codec": batch.codec,
                                        "first_timestamp": batch.first_timestamp,
                                        "max_timestamp": batch.max_timestamp, "crc": crc}}))
        else:
            print(f"batch {batch.base_offset}..{batch.last_offset}  count {batch.count}  size {batch.size}  "
                  f"codec {batch.codec}  max_timestamp {batch.max_timestamp} ({_iso_ms(batch.max_timestamp)})  "
                  f"crc {crc}")
        if args.records:
            mask = in_time_range(batch, from_time, to_time)
            for i, rec in enumerate(batch.records()):
                if rec.offset < args.from_offset or (mask is not None and not mask[i]):
                    continue
                if args.to_offset is not None and rec.offset > args.to_offset:
                    break
                print(_dump_record(rec, args.partition, args.format))
    return 0


def _top(args) -> int:
    from .client import Admin
    from .top import run

    if args.interval <= 0:
        raise UsageError(f"--interval must be positive, got {args.interval}")
    if args.iterations is not None and args.iterations < 1:
        raise UsageError(f"--iterations must be at least 1, got {args.iterations}")
    iterations = 1 if args.once else args.iterations
    clear = iterations is None and sys.stdout.isatty()

    def write(frame: str) -> None:
        print(frame, flush=True)

    try:
        with Admin(args.server, timeout_s=max(5.0, 2 * args.interval)) as admin:
            run(admin, args.server, args.interval, iterations, clear, write)
    except KeyboardInterrupt:
        pass
    return 0


# -- demo --------------------------------------------------------------------------------------------

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
        print(f"data directory: {engine.path}")
    return 0


# -- parser ------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidelog", description="A Kafka-like partitioned commit log.")
    parser.add_argument("--version", action="version", version=f"tidelog {__version__}")

    def log_options(p, default):
        p.add_argument("--log-format", choices=["text", "json"], default=default,
                       help="log lines as text or JSON objects, on stderr ($TIDELOG_LOG_FORMAT; default text)")
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=default,
                       help="least severe log lines shown ($TIDELOG_LOG_LEVEL; default info for serve, "
                            "else warning)")

    log_options(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def client_parser(name, help_text, parent=sub):
        """A command that talks to a broker: it takes --server."""
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--server", default=os.environ.get("TIDELOG_SERVER", "localhost:50051"),
                       help="broker address (default: localhost:50051, or $TIDELOG_SERVER)")
        return p

    serve = sub.add_parser("serve", help="run the broker (gRPC) on a local data directory",
                           description="Run the broker. Settings: flags > TIDELOG_* env > --config TOML > defaults.")
    serve.add_argument("--data-dir", dest="data_dir", help="data directory (default ./data; $TIDELOG_DATA_DIR)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1; $TIDELOG_HOST)")
    serve.add_argument("--port", type=int, help="port (default 50051; $TIDELOG_PORT)")
    serve.add_argument("--metrics-port", dest="metrics_port", type=int,
                       help="Prometheus /metrics and /healthz port (default 9464; 0: any free port; -1: off; "
                            "$TIDELOG_METRICS_PORT)")
    serve.add_argument("--fsync", choices=["always", "interval", "never"], help="fsync policy (default interval)")
    serve.add_argument("--config", help="TOML config file ($TIDELOG_CONFIG)")
    log_options(serve, argparse.SUPPRESS)  # also after the command; a global one stays unless repeated
    serve.set_defaults(run=_serve)

    topics = sub.add_parser("topics", help="create, list, describe and delete topics",
                            description="Create, list, describe and delete topics.")
    tsub = topics.add_subparsers(dest="action", metavar="ACTION")
    tsub.required = True

    def topics_parser(name, help_text):
        return client_parser(name, help_text, tsub)

    create = topics_parser("create", "create a topic")
    create.add_argument("topic")
    create.add_argument("--partitions", type=int, default=1)
    create.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="topic setting, e.g. retention_ms=3600000 (repeatable)")
    create.set_defaults(run=_topics_create)
    lst = topics_parser("list", "list topics")
    lst.set_defaults(run=_topics_list)
    describe = topics_parser("describe", "partitions with start/end offsets and sizes")
    describe.add_argument("topic")
    describe.add_argument("--format", choices=["text", "json"], default="text")
    describe.set_defaults(run=_topics_describe)
    delete = topics_parser("delete", "delete a topic and its data")
    delete.add_argument("topic")
    delete.set_defaults(run=_topics_delete)

    produce = client_parser("produce", "produce one record per input line (stdin or --file)")
    produce.add_argument("topic")
    produce.add_argument("--file", help="read lines from this file instead of stdin")
    produce.add_argument("--key-field", type=int, metavar="N",
                         help="use the N-th field (1-based) of each line, split by --delimiter, as the key")
    produce.add_argument("--delimiter", default="\t", help="field delimiter for --key-field (default: tab)")
    produce.add_argument("--partition", type=int, help="write every record to this partition")
    produce.add_argument("--compression", choices=["none", "lz4"], default="none")
    produce.add_argument("--linger-ms", type=float, default=5)
    produce.add_argument("--batch-bytes", type=int, default=1 << 20)
    produce.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")
    produce.set_defaults(run=_produce)

    consume = client_parser("consume", "print records of a topic")
    consume.add_argument("topic")
    consume.add_argument("--partition", type=int, help="only this partition (default: all)")
    consume.add_argument("--offset", type=int, help="start at this offset")
    consume.add_argument("--from-beginning", action="store_true", help="start at the earliest offset")
    consume.add_argument("--group", help="consume as a member of this consumer group (commits what it prints)")
    consume.add_argument("--max", type=int, help="stop after this many records")
    consume.add_argument("--timeout-ms", type=int, help="stop after this long without a new record")
    consume.add_argument("--format", choices=["text", "json", "value"], default="text",
                         help="text: partition, offset, key, value (tab-separated); json; value only")
    consume.set_defaults(run=_consume)

    groups = sub.add_parser("groups", help="list, describe, reset and delete consumer groups",
                            description="List, describe, reset offsets of and delete consumer groups.")
    gsub = groups.add_subparsers(dest="action", metavar="ACTION")
    gsub.required = True

    def groups_parser(name, help_text):
        return client_parser(name, help_text, gsub)

    groups_parser("list", "list consumer groups").set_defaults(run=_groups_list)
    gdesc = groups_parser("describe", "members, generation, assignment, and per partition committed/end/lag")
    gdesc.add_argument("group")
    gdesc.add_argument("--format", choices=["text", "json"], default="text")
    gdesc.set_defaults(run=_groups_describe)
    greset = groups_parser("reset-offsets", "move a group's committed offsets (the group must have no members)")
    greset.add_argument("group")
    greset.add_argument("--topic", required=True)
    target = greset.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true")
    target.add_argument("--to-latest", action="store_true")
    target.add_argument("--to-offset", type=int, metavar="N")
    target.add_argument("--to-datetime", metavar="ISO", help="e.g. 2026-11-28T10:00:00 (local time) or with +00:00")
    greset.add_argument("--partition", type=int, action="append", help="only this partition (repeatable)")
    greset.set_defaults(run=_groups_reset)
    gdel = groups_parser("delete", "delete a group and its committed offsets (no members)")
    gdel.add_argument("group")
    gdel.set_defaults(run=_groups_delete)

    bench = client_parser("bench", "measure throughput and latency (produce, consume, e2e)")
    bench.add_argument("scenario", choices=["produce", "consume", "e2e"])
    bench.add_argument("--embedded", action="store_true", help="run on the in-process engine (needs --data-dir)")
    bench.add_argument("--data-dir", help="data directory for --embedded")
    bench.add_argument("--topic", default="bench")
    bench.add_argument("--records", type=int, default=100_000, help="records in all (default 100000)")
    bench.add_argument("--duration", type=float, default=60.0, help="stop after this many seconds (default 60)")
    bench.add_argument("--record-size", type=int, default=1024)
    bench.add_argument("--batch-bytes", type=int, default=1 << 20)
    bench.add_argument("--linger-ms", type=float, default=5.0)
    bench.add_argument("--compression", choices=["none", "lz4"], default="none")
    bench.add_argument("--rate", type=float, help="target records/s over all producers (latency from the schedule)")
    bench.add_argument("--producers", type=int, default=1, help="producer processes (threads when --embedded)")
    bench.add_argument("--consumers", type=int, default=1, help="consumer processes")
    bench.add_argument("--partitions", type=int, default=1, help="partitions if the topic is created")
    bench.add_argument("--group", help="consume as a consumer group")
    bench.add_argument("--fsync", choices=["always", "interval", "never"], default="never", help="--embedded only")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.set_defaults(run=_bench)

    check = sub.add_parser("check", help="verify a data directory from disk (CRCs, offsets, indexes)",
                           description="Verify every batch's CRC-32C, offset continuity and the indexes of a "
                                       "data directory, read-only (the broker may be running). Exit 1 if anything "
                                       "is wrong. With --repair (broker stopped): cut each damaged log at its "
                                       "first invalid batch and drop wrong indexes, then check again.")
    check.add_argument("--data-dir", default="./data")
    check.add_argument("--topic", help="only this topic")
    check.add_argument("--repair", action="store_true",
                       help="cut damaged logs where they stop being valid (loses the records after the damage) "
                            "and remove wrong indexes; needs the broker stopped")
    check.add_argument("--format", choices=["text", "json"], default="text")
    check.set_defaults(run=_check)
    dump = sub.add_parser("dump", help="print a partition's batches and records straight from disk",
                          description="Print a partition's batches (offsets, size, codec, CRC check) and, with "
                                      "--records, its records, read-only from the segment files.")
    dump.add_argument("--data-dir", default="./data")
    dump.add_argument("--topic", required=True)
    dump.add_argument("--partition", type=int, default=0)
    dump.add_argument("--from-offset", type=int, default=0)
    dump.add_argument("--to-offset", type=int)
    dump.add_argument("--from-time", metavar="TIME", help="only records timestamped at or after TIME: epoch ms or "
                                                         "ISO-8601 (local time unless zoned, e.g. ...T10:00:00Z)")
    dump.add_argument("--to-time", metavar="TIME", help="only records timestamped at or before TIME")
    dump.add_argument("--records", action="store_true", help="also print every record (sizes, headers)")
    dump.add_argument("--format", choices=["text", "json"], default="text")
    dump.add_argument("--json", dest="format", action="store_const", const="json", help="same as --format json")
    dump.set_defaults(run=_dump)

    top = client_parser("top", "live per-topic produce rates and per-group lag of a running broker")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between samples (default 2)")
    top.add_argument("--once", action="store_true", help="print one frame (two samples --interval apart), then exit")
    top.add_argument("--iterations", type=int, metavar="N", help="print N frames, then exit")
    top.set_defaults(run=_top)

    health = client_parser("health", "check that the broker is serving (exit 0) or not (exit 1)")
    health.add_argument("--service", default="", help="service name (default: the whole server)")
    health.add_argument("--timeout-s", type=float, default=3.0)
    health.set_defaults(run=_health)

    demo = sub.add_parser("demo", help="write a few records with the embedded engine (no server)",
                          description=_demo.__doc__)
    demo.add_argument("--data-dir", default="./data", help="data directory (default: ./data)")
    demo.add_argument("--topic", default="demo")
    demo.add_argument("--partitions", type=int, default=2)
    demo.add_argument("--records", type=int, default=8)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _configure_logs(args)
        return args.run(args)
    except UsageError as exc:
        print(f"tidelog: error: {exc}", file=sys.stderr)
        return 2
    except TidelogError as exc:
        print(f"tidelog: error: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tidelog: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
