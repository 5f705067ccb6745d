"""`tidelog cluster status`: the brokers of a cluster and its controller, from any broker or from etcd."""

from __future__ import annotations

import argparse
import json
import os

from ..values import ClusterBroker, ClusterDescription
from .broker import admin, talks_to_broker
from .failures import CommandError, UsageError
from .parsing import add_command, add_format_option


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


def run_status(args: argparse.Namespace) -> int:
    url = args.cluster or os.environ.get("TIDELOG_CLUSTER")
    return _print(args, _from_etcd(args, url) if url else _from_broker(args))


def _from_broker(args: argparse.Namespace) -> ClusterDescription:
    from ..errors import TidelogError

    try:
        with admin(args) as a:
            return a.describe_cluster()
    except TidelogError as exc:
        raise CommandError(exc.message) from None


def _from_etcd(args: argparse.Namespace, url: str) -> ClusterDescription:
    import asyncio

    from ..cluster import etcd
    from ..cluster.membership import cluster_status
    from ..errors import InvalidConfigError

    try:
        client = etcd.connect(url)
    except InvalidConfigError as exc:
        raise UsageError(exc.message) from None

    async def read():
        try:
            return await cluster_status(client, args.cluster_name)
        finally:
            await client.close()

    try:
        status = asyncio.run(asyncio.wait_for(read(), 15))
    except (Exception, asyncio.TimeoutError) as exc:  # aetcd's own errors for an unreachable etcd
        raise CommandError(f"cannot read cluster {args.cluster_name!r} from {url}: {exc or 'timed out'}") from None
    return ClusterDescription(
        True,
        args.cluster_name,
        None,
        [ClusterBroker(b.broker_id, b.endpoint, b.epoch) for b in status.brokers],
        status.controller_id,
        status.controller_epoch,
    )


def _print(args: argparse.Namespace, found: ClusterDescription) -> int:
    if args.format == "json":
        brokers = [{"broker_id": b.broker_id, "address": b.address, "epoch": b.epoch} for b in found.brokers]
        print(
            json.dumps(
                {
                    "cluster": found.cluster_name if found.clustered else None,
                    "controller": {"broker_id": found.controller_id, "epoch": found.controller_epoch},
                    "brokers": brokers,
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
    return 0
