"""`tidelog topics create|list|describe|alter|delete`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .broker import admin, talks_to_broker
from .failures import UsageError
from .parsing import add_command, add_format_option
from .values import positive_int


def register(commands) -> None:
    topics = talks_to_broker(add_command(commands, "topics", "create, list, describe, alter and delete topics"))
    actions = topics.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = talks_to_broker(add_command(actions, "create", "create a topic"))
    create.add_argument("topic", help="topic name")
    create.add_argument("--partitions", type=positive_int, default=1, help="number of partitions")
    create.add_argument(
        "--replication-factor",
        type=positive_int,
        metavar="R",
        help="copies of each partition in a cluster (default: the cluster's default_replication_factor)",
    )
    create.add_argument(
        "--min-insync-replicas",
        type=positive_int,
        metavar="M",
        help="acks=all produces are refused while fewer replicas are in sync (the topic setting "
        "min_insync_replicas; default: the broker's topic defaults)",
    )
    create.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="topic setting, e.g. retention_ms=3600000 (repeatable; default: the broker's topic defaults)",
    )
    create.set_defaults(run=create_topic)

    talks_to_broker(add_command(actions, "list", "list topics")).set_defaults(run=list_topics)

    describe = talks_to_broker(
        add_command(actions, "describe", "partitions: leader, epoch, replicas, in-sync replicas, offsets, sizes")
    )
    describe.add_argument("topic", help="topic name")
    add_format_option(describe)
    describe.set_defaults(run=describe_topic)

    alter = talks_to_broker(
        add_command(actions, "alter", "add partitions to a topic, or change its min_insync_replicas")
    )
    alter.add_argument("topic", help="topic name")
    alter.add_argument(
        "--partitions",
        type=positive_int,
        metavar="N",
        help="the new partition count, more than the current one (the count never shrinks; keyed records "
        "may map to another partition afterwards; default: unchanged)",
    )
    alter.add_argument(
        "--min-insync-replicas",
        type=positive_int,
        metavar="M",
        help="acks=all produces are refused while fewer replicas are in sync (1 to the replication factor; "
        "default: unchanged)",
    )
    alter.set_defaults(run=alter_topic)

    delete = talks_to_broker(add_command(actions, "delete", "delete a topic and its data"))
    delete.add_argument("topic", help="topic name")
    delete.set_defaults(run=delete_topic)

    from .reassign import register_reassign

    register_reassign(actions)


def topic_settings(items: list[str]) -> dict[str, str]:
    """--set NAME=VALUE items, checked against TopicConfig here (exit 2) rather than by the broker (exit 1):
    a bad value is a mistake on the command line."""
    from ..config import TopicConfig
    from ..errors import InvalidConfigError

    defaults = TopicConfig()
    raw: dict[str, str] = {}
    typed: dict[str, Any] = {}  # int or str per setting, checked by TopicConfig below
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--set takes NAME=VALUE, got {item!r}")
        if not hasattr(defaults, name):
            known = ", ".join(sorted(defaults.to_dict()))
            raise UsageError(f"--set: unknown topic setting {name!r}; known: {known}")
        if isinstance(getattr(defaults, name), int):
            try:
                typed[name] = int(value)
            except ValueError:
                raise UsageError(f"--set {name} takes an integer, got {value!r}") from None
        else:
            typed[name] = value
        raw[name] = value
    try:
        TopicConfig(**typed)
    except InvalidConfigError as exc:
        raise UsageError(f"--set: {exc.message}") from None
    return raw


def create_topic(args: argparse.Namespace) -> int:
    items = list(args.set)
    if args.min_insync_replicas is not None:
        items.append(f"min_insync_replicas={args.min_insync_replicas}")
    settings = topic_settings(items)
    if args.replication_factor is not None and "min_insync_replicas" in settings:
        if int(settings["min_insync_replicas"]) > args.replication_factor:
            raise UsageError(
                f"--min-insync-replicas {settings['min_insync_replicas']} is more than --replication-factor "
                f"{args.replication_factor}: no produce with acks=all could ever succeed"
            )
    with admin(args) as a:
        desc = a.create_topic(args.topic, args.partitions, args.replication_factor, **settings)
    print(f"created topic {desc.name} with {len(desc.partitions)} partition(s)")
    return 0


def list_topics(args: argparse.Namespace) -> int:
    with admin(args) as a:
        for name in a.list_topics():
            print(name)
    return 0


def describe_topic(args: argparse.Namespace) -> int:
    with admin(args) as a:
        desc = a.describe(args.topic)
    if args.format == "json":
        print(json.dumps({**desc, "partitions": [p._asdict() for p in desc["partitions"]]}, indent=2))
        return 0
    print(f"topic {desc['name']}  partitions {len(desc['partitions'])}")
    print("  " + "  ".join(f"{k}={v}" for k, v in sorted(desc["config"].items())))
    print(
        f"  {'partition':>9} {'leader':>6} {'epoch':>5} {'replicas':>12} {'isr':>12} {'start':>12} {'end':>12} "
        f"{'high_wm':>12} {'bytes':>14} {'segments':>8}"
    )
    for p in desc["partitions"]:
        leader = "-" if p.leader_id is None else str(p.leader_id)
        replicas = ",".join(map(str, p.replicas)) or "-"
        isr = ",".join(map(str, p.isr)) or "-"
        print(
            f"  {p.partition:>9} {leader:>6} {p.leader_epoch:>5} {replicas:>12} {isr:>12} {p.log_start:>12} "
            f"{p.log_end:>12} {p.high_watermark:>12} {p.size_bytes:>14} {p.segments:>8}"
        )
    for p in desc["partitions"]:
        if p.adding or p.removing:
            print(
                f"  partition {p.partition} is being reassigned: adding {','.join(map(str, p.adding)) or '-'}, "
                f"removing {','.join(map(str, p.removing)) or '-'}"
            )
    return 0


def alter_topic(args: argparse.Namespace) -> int:
    if args.partitions is None and args.min_insync_replicas is None:
        raise UsageError("topics alter: give --partitions and/or --min-insync-replicas")
    with admin(args) as a:
        desc = a.alter_topic(args.topic, partitions=args.partitions, min_insync_replicas=args.min_insync_replicas)
    print(
        f"altered topic {desc.name}: {len(desc.partitions)} partition(s), "
        f"min_insync_replicas={desc.config.get('min_insync_replicas', '?')}"
    )
    return 0


def delete_topic(args: argparse.Namespace) -> int:
    with admin(args) as a:
        a.delete_topic(args.topic)
    print(f"deleted topic {args.topic}")
    return 0
