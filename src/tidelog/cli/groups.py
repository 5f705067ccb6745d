"""`tidelog groups list|describe|reset-offsets|delete`: consumer groups, from the outside."""

from __future__ import annotations

import argparse
import json

from .broker import admin, talks_to_broker
from .failures import UsageError
from .parsing import add_command, add_format_option
from .values import non_negative_int


def register(commands) -> None:
    groups = talks_to_broker(
        add_command(commands, "groups", "list, describe, reset offsets of and delete consumer groups")
    )
    actions = groups.add_subparsers(dest="action", metavar="ACTION", required=True)

    talks_to_broker(add_command(actions, "list", "list consumer groups")).set_defaults(run=list_groups)

    describe = talks_to_broker(
        add_command(actions, "describe", "members, generation, assignment, and per partition committed/end/lag")
    )
    describe.add_argument("group", help="group id")
    add_format_option(describe)
    describe.set_defaults(run=describe_group)

    reset = talks_to_broker(
        add_command(actions, "reset-offsets", "move a group's committed offsets (the group must have no members)")
    )
    reset.add_argument("group", help="group id")
    reset.add_argument("--topic", required=True, help="topic whose offsets move")
    target = reset.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true", help="to each partition's earliest offset")
    target.add_argument("--to-latest", action="store_true", help="to each partition's latest offset")
    target.add_argument("--to-offset", type=non_negative_int, metavar="N", help="to offset N")
    target.add_argument(
        "--to-datetime",
        metavar="ISO",
        help="to the first record at or after this time, e.g. 2026-11-28T10:00:00 (local time) or with +00:00",
    )
    reset.add_argument(
        "--partition",
        type=non_negative_int,
        action="append",
        help="only this partition (repeatable; default: every partition)",
    )
    reset.set_defaults(run=reset_offsets)

    delete = talks_to_broker(add_command(actions, "delete", "delete a group and its committed offsets (no members)"))
    delete.add_argument("group", help="group id")
    delete.set_defaults(run=delete_group)


def list_groups(args: argparse.Namespace) -> int:
    with admin(args) as a:
        for name in a.list_groups():
            print(name)
    return 0


def describe_group(args: argparse.Namespace) -> int:
    with admin(args) as a:
        info = a.describe_group(args.group)
    if args.format == "json":
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"group {info['group_id']}  state {info['state']}  generation {info['generation']}  "
        f"members {len(info['members'])}  rebalances {info['rebalances']}"
    )
    for m in info["members"]:
        parts = ", ".join(f"{t}[{p}]" for t, p in m["assignment"]) or "-"
        print(f"  member {m['member_id']}  topics {','.join(m['topics'])}  assigned {parts}")
    print(f"  {'topic':<20} {'partition':>9} {'committed':>12} {'end':>12} {'lag':>10} {'time_lag_ms':>12}  owner")

    def show(v):
        return "-" if v is None else str(v)

    for p in info["partitions"]:
        print(
            f"  {p['topic']:<20} {p['partition']:>9} {show(p['committed']):>12} {p['end']:>12} "
            f"{show(p['lag']):>10} {show(p['time_lag_ms']):>12}  {p['owner'] or '-'}"
        )
    return 0


def reset_offsets(args: argparse.Namespace) -> int:
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
    with admin(args) as a:
        offsets = a.reset_offsets(args.group, args.topic, to, partitions=args.partition, **kwargs)
    for (topic, partition), offset in sorted(offsets.items()):
        print(f"{topic}\t{partition}\t{offset}")
    return 0


def delete_group(args: argparse.Namespace) -> int:
    with admin(args) as a:
        a.delete_group(args.group)
    print(f"deleted group {args.group}")
    return 0
