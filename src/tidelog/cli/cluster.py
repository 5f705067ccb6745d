"""`tidelog cluster status`: the brokers of a cluster and its controller, from any broker or from etcd."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

from ..values import ClusterBroker, ClusterDescription
from .broker import admin, talks_to_broker
from .etcd_access import with_etcd as _with_etcd
from .failures import CommandError, UsageError
from .parsing import add_command, add_format_option
from .values import non_negative_int


def register(commands) -> None:
    cluster = add_command(commands, "cluster", "look at a cluster of brokers (coordinated by etcd)")
    actions = cluster.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = talks_to_broker(
        add_command(
            actions,
            "status",
            "the live brokers (id, address, epoch) and the controller, from any broker (--server) or etcd",
        )
    )
    status.add_argument(
        "--cluster",
        metavar="etcd://HOST:PORT[,...]",
        help="read the cluster from its etcd instead of asking a broker (default: $TIDELOG_CLUSTER, else ask --server)",
    )
    status.add_argument("--cluster-name", default="tidelog", help="the cluster's name in etcd (with --cluster)")
    add_format_option(status)
    status.set_defaults(run=run_status)

    elect = add_command(
        actions,
        "elect-leader",
        "elect a partition's leader by hand, in etcd: the preferred replica again, or (unclean) a replica "
        "outside the ISR for an offline partition, losing what it lacks",
    )
    elect.add_argument("topic")
    elect.add_argument("partition", type=int)
    kind = elect.add_mutually_exclusive_group(required=True)
    kind.add_argument("--preferred", action="store_true", help="lead from the first replica again (clean)")
    kind.add_argument(
        "--unclean",
        action="store_true",
        help="an offline partition led by a live replica outside the ISR: acknowledged records it lacks are lost",
    )
    elect.add_argument("--broker", type=int, help="with --unclean: the replica to elect (default: the first live one)")
    elect.add_argument(
        "--cluster", metavar="etcd://HOST:PORT[,...]", help="the cluster's etcd (default: $TIDELOG_CLUSTER)"
    )
    elect.add_argument("--cluster-name", default="tidelog", help="the cluster's name in etcd")
    elect.set_defaults(run=run_elect)

    rebalance = add_command(
        actions,
        "rebalance-leaders",
        "move every partition's leadership back to its preferred (first) replica where it is alive and in "
        "sync, in etcd (after restarts left leaders piled up on some brokers)",
    )
    rebalance.add_argument(
        "--cluster", metavar="etcd://HOST:PORT[,...]", help="the cluster's etcd (default: $TIDELOG_CLUSTER)"
    )
    rebalance.add_argument("--cluster-name", default="tidelog", help="the cluster's name in etcd")
    rebalance.set_defaults(run=run_rebalance)

    throttle = add_command(
        actions,
        "throttle",
        "limit replication to catching-up followers on every broker, at runtime, in etcd (the setting "
        "replication_throttle_bytes_per_s; in-sync followers are never throttled)",
    )
    rate = throttle.add_mutually_exclusive_group(required=True)
    rate.add_argument("--rate", type=non_negative_int, metavar="BYTES_PER_S", help="the limit per broker; 0: none")
    rate.add_argument(
        "--clear", action="store_true", help="remove the runtime limit: each broker's own setting applies again"
    )
    throttle.add_argument(
        "--cluster", metavar="etcd://HOST:PORT[,...]", help="the cluster's etcd (default: $TIDELOG_CLUSTER)"
    )
    throttle.add_argument("--cluster-name", default="tidelog", help="the cluster's name in etcd")
    throttle.set_defaults(run=run_throttle)

    from .reassign import register_decommission

    register_decommission(actions)


def run_throttle(args: argparse.Namespace) -> int:
    from ..cluster.settings import THROTTLE, set_setting

    url = args.cluster or os.environ.get("TIDELOG_CLUSTER")
    if not url:
        raise UsageError("throttle writes to the cluster's etcd: give --cluster etcd://HOST:PORT")
    value = None if args.clear else args.rate
    before = _with_etcd(
        url, lambda client: set_setting(client, args.cluster_name, THROTTLE, value), "set the replication throttle"
    )
    was = "each broker's own" if before is None else f"{before} bytes/s"
    now = "each broker's own" if value is None else f"{value} bytes/s" + (" (no limit)" if value == 0 else "")
    print(f"replication throttle: {was} -> {now}")
    return 0


def run_rebalance(args: argparse.Namespace) -> int:
    from ..cluster.controller import rebalance_leaders

    url = args.cluster or os.environ.get("TIDELOG_CLUSTER")
    if not url:
        raise UsageError("rebalance-leaders writes to the cluster's etcd: give --cluster etcd://HOST:PORT")
    moved = _with_etcd(url, lambda client: rebalance_leaders(client, args.cluster_name), "rebalance leaders")
    for topic, partition, before, after in moved:
        print(f"{topic}-{partition}: leader {before} -> {after}")
    print(f"{len(moved)} partition(s) moved to their preferred leader")
    return 0


def run_elect(args: argparse.Namespace) -> int:
    from ..cluster.controller import elect_by_hand

    url = args.cluster or os.environ.get("TIDELOG_CLUSTER")
    if not url:
        raise UsageError("elect-leader writes to the cluster's etcd: give --cluster etcd://HOST:PORT")
    if args.broker is not None and not args.unclean:
        raise UsageError("--broker goes with --unclean")
    kind = "unclean" if args.unclean else "preferred"
    before, after = _with_etcd(
        url,
        lambda client: elect_by_hand(client, args.cluster_name, args.topic, args.partition, kind, args.broker),
        "elect a leader in the cluster's etcd",
    )
    if before == after:
        print(f"{args.topic}-{args.partition}: broker {after.leader} already leads (epoch {after.leader_epoch})")
        return 0
    print(
        f"{args.topic}-{args.partition}: leader {before.leader} -> {after.leader}, epoch {after.leader_epoch}, "
        f"ISR {list(after.isr)}"
    )
    return 0


# (topic, partition, leader or None, replicas, isr) for each partition of the cluster
Partitions = list[tuple[str, int, "int | None", tuple[int, ...], tuple[int, ...]]]


def run_status(args: argparse.Namespace) -> int:
    url = args.cluster or os.environ.get("TIDELOG_CLUSTER")
    return _print(args, *(_from_etcd(args, url) if url else _from_broker(args)))


def _from_broker(args: argparse.Namespace) -> tuple[ClusterDescription, Partitions, list[str]]:
    from ..errors import TidelogError

    try:
        with admin(args) as a:
            found = a.describe_cluster()
            parts: Partitions = []
            moving: list[str] = []
            if found.clustered:
                for topic in a.metadata().topics:
                    for p in topic.partitions:
                        target = tuple(b for b in p.replicas if b not in p.removing)  # what a move counts against
                        parts.append((topic.name, p.partition, p.leader_id, target, p.isr))
                        if p.adding or p.removing:
                            moving.append(_moving(topic.name, p.partition, p.adding, p.removing))
            return found, parts, moving
    except TidelogError as exc:
        raise CommandError(exc.message) from None


def _from_etcd(args: argparse.Namespace, url: str) -> tuple[ClusterDescription, Partitions, list[str]]:
    from ..cluster.membership import cluster_status, prefix
    from ..cluster.metadata import parse
    from ..cluster.reassignment import target_of

    async def read(client):
        found = await client.get_prefix(prefix(args.cluster_name))
        return await cluster_status(client, args.cluster_name), parse(args.cluster_name, 0, found)

    status, snapshot = _with_etcd(url, read, f"read cluster {args.cluster_name!r} from etcd")
    # a partition being moved counts against its target (Kafka's rule): new replicas still copying do
    # not make it under-replicated
    parts: Partitions = [
        (t, p, state.leader if state.leader >= 0 else None, target_of(state), state.isr)
        for (t, p), state in sorted(snapshot.partitions.items())
    ]
    moving = [
        _moving(t, p, state.adding, state.removing)
        for (t, p), state in sorted(snapshot.partitions.items())
        if state.reassigning
    ]
    return (
        ClusterDescription(
            True,
            args.cluster_name,
            None,
            [ClusterBroker(b.broker_id, b.endpoint, b.epoch) for b in status.brokers],
            status.controller_id,
            status.controller_epoch,
        ),
        parts,
        moving,
    )


def _moving(topic: str, partition: int, adding: Sequence[int], removing: Sequence[int]) -> str:
    return f"{topic}-{partition} (adding {','.join(map(str, adding)) or '-'}, removing {','.join(map(str, removing)) or '-'})"


def _print(args: argparse.Namespace, found: ClusterDescription, parts: Partitions, moving: Sequence[str] = ()) -> int:
    """`moving`: the reassignments in progress."""
    offline = [f"{t}-{p}" for t, p, leader, _, _ in parts if leader is None]
    under = [f"{t}-{p}" for t, p, leader, replicas, isr in parts if leader is not None and len(isr) < len(replicas)]
    if args.format == "json":
        brokers = [{"broker_id": b.broker_id, "address": b.address, "epoch": b.epoch} for b in found.brokers]
        print(
            json.dumps(
                {
                    "cluster": found.cluster_name if found.clustered else None,
                    "controller": {"broker_id": found.controller_id, "epoch": found.controller_epoch},
                    "brokers": brokers,
                    "partitions": {
                        "total": len(parts),
                        "under_replicated": under,
                        "offline": offline,
                        "reassigning": list(moving),
                    },
                }
            )
        )
        return 0
    if not found.clustered:
        print(f"a single broker at {found.brokers[0].address if found.brokers else '?'} (not part of a cluster)")
        return 0
    controller = (
        f"{found.controller_id} (epoch {found.controller_epoch})" if found.controller_id is not None else "none"
    )
    print(f"cluster {found.cluster_name}: {len(found.brokers)} broker(s) alive, controller {controller}")
    for b in found.brokers:
        role = "  controller" if b.broker_id == found.controller_id else ""
        print(f"  broker {b.broker_id}  {b.address}  epoch {b.epoch}{role}")
    print(f"partitions: {len(parts)}, under-replicated: {len(under)}, offline: {len(offline)}")
    if moving:
        print(f"reassignments in progress: {len(moving)}")
        for item in moving:
            print(f"  {item}")
    for name, which in (("under-replicated", under), ("offline", offline)):
        if which:
            print(f"  {name}: {', '.join(which)}")
    return 0
