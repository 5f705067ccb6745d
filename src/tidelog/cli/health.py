"""`tidelog health`: ask the broker's gRPC health service; exit 0 when it is SERVING (container health checks)."""

from __future__ import annotations

import argparse

from .broker import security, talks_to_broker
from .failures import CommandError, UsageError
from .parsing import add_command, add_deprecated_alias
from .values import positive_number


def register(commands) -> None:
    health = talks_to_broker(
        add_command(commands, "health", "check that the broker is serving (exit 0) or not (exit 1)")
    )
    health.add_argument("--service", default="", help="service name (default: the whole server)")
    health.add_argument("--timeout-ms", type=positive_number, default=3000, help="how long to wait for the answer")
    add_deprecated_alias(health, "--timeout-s", "--timeout-ms", "timeout_ms", positive_number, scale=1000)
    health.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from ..client.channel import sync_channel

    if "," in args.server:
        raise UsageError(f"health checks one broker; --server names several: {args.server}")

    with sync_channel(args.server, security(args)) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout_ms / 1000
            )
        except grpc.RpcError as err:
            raise CommandError(f"health check of {args.server} failed: {err.code().name}") from None
    state = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(state)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1
