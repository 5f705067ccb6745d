"""--server: which broker a command talks to; accepted before the command or after it."""

from __future__ import annotations

import argparse
import os

from .failures import UsageError
from .parsing import Parser

DEFAULT_SERVER = "localhost:50051"
SERVER_HELP = (
    "broker address host:port, or several separated by commas (tried in order; in a cluster any broker "
    f"will do) (default: $TIDELOG_SERVER, else {DEFAULT_SERVER})"
)


def add_server_option(parser, root: bool = False) -> None:
    """The root parser holds the value given before the command; a command's own --server (after it)
    has a suppressed default so that it overrides that value only when given."""
    parser.add_argument(
        "--server", metavar="HOST:PORT[,...]", default=None if root else argparse.SUPPRESS, help=SERVER_HELP
    )


def talks_to_broker(parser: Parser) -> Parser:
    """Mark a command as a broker client: it takes --server."""
    add_server_option(parser.global_options)
    parser.set_defaults(talks_to_broker=True)
    return parser


def resolve_server(args: argparse.Namespace) -> None:
    """Fill in args.server for broker clients; refuse --server for the commands that never use it."""
    if getattr(args, "talks_to_broker", False):
        args.server = args.server or os.environ.get("TIDELOG_SERVER") or DEFAULT_SERVER
        addresses = [a.strip() for a in args.server.split(",")]
        if not all(addresses):
            raise UsageError(f"--server takes host:port addresses separated by commas, got {args.server!r}")
        args.server = ",".join(addresses)
    elif args.server is not None:
        raise UsageError(f"--server does not apply to `tidelog {args.command}`, which talks to no broker")


def admin(args: argparse.Namespace, timeout_s: float = 30.0):
    from ..client import Admin

    return Admin(args.server, timeout_s=timeout_s)
