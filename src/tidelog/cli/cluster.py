"""`tidelog cluster status`: the brokers registered in a cluster's etcd and its controller."""

from __future__ import annotations

import argparse
import json
import os

from .failures import CommandError, UsageError
from .parsing import add_command, add_format_option


def register(commands) -> None:
    cluster = add_command(commands, "cluster", "look at a cluster of brokers (coordinated by etcd)")
    actions = cluster.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = add_command(actions, "status", "the live brokers (id, address, epoch) and the controller")
    status.add_argument(
        "--cluster",
        metavar="etcd://HOST:PORT[,...]",
        help="the cluster's etcd (default: $TIDELOG_CLUSTER)",
    )
    status.add_argument("--cluster-name", default="tidelog", help="the cluster's name in etcd")
    add_format_option(status)
    status.set_defaults(run=run_status)


def run_status(args: argparse.Namespace) -> int:
    import asyncio

    from ..cluster import etcd
    from ..cluster.membership import cluster_status
    from ..errors import InvalidConfigError

    url = args.cluster or os.environ.get("TIDELOG_CLUSTER")
    if not url:
        raise UsageError("cluster status needs --cluster etcd://HOST:PORT (or $TIDELOG_CLUSTER)")
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
    if args.format == "json":
        print(
            json.dumps(
                {
                    "cluster": args.cluster_name,
                    "controller": {"broker_id": status.controller_id, "epoch": status.controller_epoch},
                    "brokers": [
                        {"broker_id": b.broker_id, "address": b.endpoint, "epoch": b.epoch} for b in status.brokers
                    ],
                }
            )
        )
        return 0
    print(
        f"cluster {args.cluster_name}: {len(status.brokers)} broker(s) alive, controller "
        + (f"{status.controller_id} (epoch {status.controller_epoch})" if status.controller_id is not None else "none")
    )
    for b in status.brokers:
        role = "  controller" if b.broker_id == status.controller_id else ""
        print(f"  broker {b.broker_id}  {b.endpoint}  epoch {b.epoch}{role}")
    return 0
