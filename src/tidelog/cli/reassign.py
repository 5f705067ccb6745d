"""`tidelog topics reassign` and `tidelog cluster decommission`: move partitions' replicas to other
brokers, in the cluster's etcd (the controller carries each move out: cluster/reassignment.py)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence

from .failures import CommandError, UsageError
from .values import non_negative_int, positive_number

Targets = dict[tuple[str, int], tuple[int, ...]]


def _etcd_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster", metavar="etcd://HOST:PORT[,...]", help="the cluster's etcd (default: $TIDELOG_CLUSTER)"
    )
    parser.add_argument("--cluster-name", default="tidelog", help="the cluster's name in etcd")


def _wait_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--wait", action="store_true", help=f"block until {what}")
    parser.add_argument(
        "--timeout", type=positive_number, default=300.0, metavar="SECONDS", help="with --wait: give up after this long"
    )


def register_reassign(actions) -> None:
    """Under `tidelog topics`."""
    from .parsing import add_command

    reassign = add_command(
        actions,
        "reassign",
        "move partitions' replicas to other brokers, in the cluster's etcd, losing no acknowledged record "
        "(new replicas copy the log and join the ISR before the old ones leave)",
    )
    reassign.add_argument("topic", nargs="?", help="the topic (with --partition and --replicas)")
    reassign.add_argument(
        "--partition",
        type=non_negative_int,
        metavar="P",
        help="the partition to move (no default: required with TOPIC)",
    )
    reassign.add_argument(
        "--replicas",
        metavar="B1,B2,...",
        help="the target broker ids; the first is the preferred leader (no default: required, except with --cancel)",
    )
    reassign.add_argument(
        "--plan",
        metavar="FILE",
        help='many partitions at once: {"partitions": [{"topic": T, "partition": P, "replicas": [B, ...]}, ...]} '
        "(default: the one partition TOPIC --partition names)",
    )
    mode = reassign.add_mutually_exclusive_group()
    mode.add_argument("--verify", action="store_true", help="show each partition's progress; change nothing")
    mode.add_argument(
        "--cancel",
        action="store_true",
        help="undo a reassignment in progress: back to the original replicas (while the leader is one of them)",
    )
    reassign.add_argument(
        "--allow-replication-factor-change",
        action="store_true",
        help="accept a target with more or fewer replicas than the partition has",
    )
    _wait_options(reassign, "every move is done")
    _etcd_options(reassign)
    reassign.set_defaults(run=run_reassign)


def register_decommission(actions) -> None:
    """Under `tidelog cluster`."""
    from .parsing import add_command

    decommission = add_command(
        actions,
        "decommission",
        "move every replica off a broker (to the live brokers with the fewest replicas, keeping each "
        "partition's replication factor) so that it can be stopped",
    )
    decommission.add_argument("broker", type=non_negative_int, help="the broker id to empty")
    _wait_options(decommission, "no partition names the broker")
    _etcd_options(decommission)
    decommission.set_defaults(run=run_decommission)


def _url(args: argparse.Namespace, what: str) -> str:
    url = args.cluster or os.environ.get("TIDELOG_CLUSTER")
    if not url:
        raise UsageError(f"{what} writes to the cluster's etcd: give --cluster etcd://HOST:PORT")
    return url


def _broker_list(text: str) -> tuple[int, ...]:
    try:
        ids = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--replicas takes broker ids separated by commas, e.g. 3,1,2; got {text!r}") from None
    if any(b < 0 for b in ids):
        raise UsageError(f"--replicas: broker ids are not negative, got {text!r}")
    return ids


def read_plan(path: str) -> Targets:
    """A plan file (kafka-reassign-partitions' JSON shape); a file that does not parse is a usage error."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise UsageError(f"--plan: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"--plan: {path} is not JSON: {exc}") from None
    entries = doc.get("partitions") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UsageError(f'--plan: {path} needs {{"partitions": [{{"topic", "partition", "replicas"}}, ...]}}')
    plan: Targets = {}
    for n, entry in enumerate(entries):
        try:
            topic, partition, replicas = entry["topic"], entry["partition"], entry["replicas"]
            ok = (
                isinstance(topic, str)
                and isinstance(partition, int)
                and isinstance(replicas, list)
                and all(isinstance(b, int) and not isinstance(b, bool) for b in replicas)
            )
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise UsageError(
                f'--plan: entry {n} of {path} must be {{"topic": NAME, "partition": NUMBER, "replicas": [BROKER, ...]}}'
            )
        if (topic, partition) in plan:
            raise UsageError(f"--plan: {topic}-{partition} appears more than once in {path}")
        plan[(topic, partition)] = tuple(replicas)
    return plan


def _targets(args: argparse.Namespace) -> Targets:
    if args.plan:
        if args.topic or args.partition is not None or args.replicas:
            raise UsageError("--plan names its partitions itself: give either TOPIC --partition --replicas or --plan")
        return read_plan(args.plan)
    if not args.topic or args.partition is None:
        raise UsageError("give TOPIC --partition P --replicas B1,B2,... (or --plan FILE)")
    if args.cancel or args.verify:
        if args.replicas and args.cancel:
            raise UsageError("--cancel restores the original replicas: --replicas does not go with it")
        if args.verify and not args.replicas:
            raise UsageError("--verify checks a target: give --replicas too")
        return {(args.topic, args.partition): _broker_list(args.replicas) if args.replicas else ()}
    if not args.replicas:
        raise UsageError("--replicas B1,B2,... is required (the target brokers)")
    return {(args.topic, args.partition): _broker_list(args.replicas)}


def _describe(state) -> str:
    text = f"replicas {_ids(state.replicas)}, leader {state.leader}, ISR {_ids(state.isr)}"
    if state.reassigning:
        text += f", adding {_ids(state.adding)}, removing {_ids(state.removing)}"
    return text


def _ids(brokers: Sequence[int]) -> str:
    return ",".join(map(str, brokers)) or "-"


def run_reassign(args: argparse.Namespace) -> int:
    from ..cluster import reassignment as r
    from .etcd_access import with_etcd as _with_etcd

    if args.wait and (args.verify or args.cancel):
        raise UsageError("--wait goes with submitting a reassignment, not with --verify or --cancel")
    targets = _targets(args)
    url = _url(args, "reassign")
    name = args.cluster_name
    if args.cancel:
        done = _with_etcd(url, lambda c: r.cancel_moves(c, name, targets), "cancel the reassignment in etcd")
        for item in done:
            print(f"{item.topic}-{item.partition}: reassignment cancelled; {_describe(item.after)}")
        return 0
    if args.verify:
        return _print_progress(_with_etcd(url, lambda c: r.progress_of(c, name, targets), "read the cluster"))
    submitted = _with_etcd(
        url,
        lambda c: r.submit(c, name, targets, args.allow_replication_factor_change),
        "submit the reassignment to etcd",
    )
    for item in submitted:
        if item.before == item.after:
            print(f"{item.topic}-{item.partition}: already on {_ids(item.after.replicas)}; nothing to do")
        else:
            print(f"{item.topic}-{item.partition}: reassignment started; {_describe(item.after)}")
    if args.wait:
        _wait(url, name, targets, args.timeout)
        print("reassignment done")
    return 0


def _print_progress(found: Mapping) -> int:
    from ..cluster import reassignment as r

    for (topic, partition), (status, state) in found.items():
        now = "not placed" if state is None else _describe(state)
        print(f"{topic}-{partition}: {status}; {now}")
    waiting = sum(1 for status, _ in found.values() if status == r.IN_PROGRESS)
    other = sum(1 for status, _ in found.values() if status == r.OTHER)
    print(f"{len(found) - waiting - other} done, {waiting} in progress, {other} not on this target")
    return 0


def _wait(url: str, name: str, targets: Targets, timeout: float) -> None:
    """Poll etcd until every partition reached its target (at most `timeout` seconds)."""
    import asyncio

    from ..cluster import reassignment as r
    from .etcd_access import with_etcd as _with_etcd

    async def until_done(client):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = await r.progress_of(client, name, targets)
            moving = [k for k, (status, _) in found.items() if status != r.DONE]
            if not moving:
                return
            elsewhere = [k for k in moving if found[k][0] == r.OTHER]
            if elsewhere:
                raise CommandError(
                    "reassignment of "
                    + ", ".join(f"{t}-{p}" for t, p in elsewhere)
                    + " was cancelled or replaced meanwhile"
                )
            if loop.time() > deadline:
                raise CommandError(
                    f"still in progress after {timeout:g} s: "
                    + ", ".join(f"{t}-{p}" for t, p in moving)
                    + " (a new replica copying or not alive?); check with --verify"
                )
            await asyncio.sleep(0.25)

    _with_etcd(url, until_done, "wait for the reassignment", timeout_s=timeout + 15)


def run_decommission(args: argparse.Namespace) -> int:
    import asyncio

    from ..cluster import reassignment as r
    from .etcd_access import with_etcd as _with_etcd

    url = _url(args, "decommission")
    name, broker = args.cluster_name, args.broker
    submitted = _with_etcd(url, lambda c: r.decommission(c, name, broker), "plan the decommission in etcd")
    for item in submitted:
        print(f"{item.topic}-{item.partition}: {_ids(item.before.replicas)} -> {_ids(r.target_of(item.after))}")
    print(f"{len(submitted)} partition(s) moving off broker {broker}")
    if not args.wait:
        print(f"follow it with: tidelog cluster decommission {broker} --wait (or topics reassign --verify)")
        return 0

    async def until_empty(client):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout
        while True:
            left = await r.still_named(client, name, broker)
            if not left:
                return
            if loop.time() > deadline:
                raise CommandError(
                    f"broker {broker} still holds {', '.join(f'{t}-{p}' for t, p in left)} after {args.timeout:g} s"
                )
            await asyncio.sleep(0.25)

    _with_etcd(url, until_empty, "wait for the decommission", timeout_s=args.timeout + 15)
    print(f"broker {broker} holds no replica: it can be stopped")
    return 0
