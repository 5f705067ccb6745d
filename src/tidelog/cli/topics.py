"""`tidelog topics create|list|describe|delete`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .broker import admin, talks_to_broker
from .failures import UsageError
from .parsing import add_command, add_format_option
from .values import positive_int


def register(commands) -> None:
    topics = talks_to_broker(add_command(commands, "topics", "create, list, describe and delete topics"))
    actions = topics.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = talks_to_broker(add_command(actions, "create", "create a topic"))
    create.add_argument("topic", help="topic name")
    create.add_argument("--partitions", type=positive_int, default=1, help="number of partitions")
    create.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="topic setting, e.g. retention_ms=3600000 (repeatable; default: the broker's topic defaults)",
    )
    create.set_defaults(run=create_topic)

    talks_to_broker(add_command(actions, "list", "list topics")).set_defaults(run=list_topics)

    describe = talks_to_broker(add_command(actions, "describe", "partitions with start/end offsets and sizes"))
    describe.add_argument("topic", help="topic name")
    add_format_option(describe)
    describe.set_defaults(run=describe_topic)

    delete = talks_to_broker(add_command(actions, "delete", "delete a topic and its data"))
    delete.add_argument("topic", help="topic name")
    delete.set_defaults(run=delete_topic)


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
    settings = topic_settings(args.set)
    with admin(args) as a:
        desc = a.create_topic(args.topic, args.partitions, **settings)
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
    print(f"  {'partition':>9} {'start':>12} {'end':>12} {'high_wm':>12} {'bytes':>14} {'segments':>8}")
    for p in desc["partitions"]:
        print(
            f"  {p.partition:>9} {p.log_start:>12} {p.log_end:>12} {p.high_watermark:>12} "
            f"{p.size_bytes:>14} {p.segments:>8}"
        )
    return 0


def delete_topic(args: argparse.Namespace) -> int:
    with admin(args) as a:
        a.delete_topic(args.topic)
    print(f"deleted topic {args.topic}")
    return 0
