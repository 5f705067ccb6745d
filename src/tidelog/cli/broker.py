"""--server: which broker a command talks to, and how (TLS, a token); accepted before the command or after it."""

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
    """The root parser holds the values given before the command; a command's own options (after it)
    have a suppressed default so that they override those values only when given."""
    default = None if root else argparse.SUPPRESS
    parser.add_argument("--server", metavar="HOST:PORT[,...]", default=default, help=SERVER_HELP)
    parser.add_argument(
        "--tls",
        action="store_true",
        default=default,
        help="connect with TLS, trusting the system's CAs (implied by --ca-file; default: $TIDELOG_TLS=1, else plain)",
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        default=default,
        help="CAs that sign the broker's certificate (default: $TIDELOG_CA_FILE, else the system's with --tls)",
    )
    parser.add_argument(
        "--client-cert", metavar="PEM", default=default, help="this client's certificate, for mutual TLS "
        "(default: $TIDELOG_CLIENT_CERT, else none)"
    )  # fmt: skip
    parser.add_argument(
        "--client-key", metavar="PEM", default=default, help="its private key (default: $TIDELOG_CLIENT_KEY)"
    )
    parser.add_argument(
        "--server-name",
        metavar="NAME",
        default=default,
        help="the name the broker's certificate carries, when it is not the host dialled (default: "
        "$TIDELOG_SERVER_NAME, else the host dialled)",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        default=default,
        help="a file holding the token (user:secret) from `tidelog users add`; default: $TIDELOG_TOKEN. "
        "Never on the command line, where other users of the machine could read it",
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
    else:
        for option in ("server", "tls", "ca_file", "client_cert", "client_key", "server_name", "token_file"):
            if getattr(args, option, None) is not None:
                flag = "--" + option.replace("_", "-")
                raise UsageError(f"{flag} does not apply to `tidelog {args.command}`, which talks to no broker")


def security(args: argparse.Namespace):
    """The ClientSecurity of the options and environment (None: a plain connection)."""
    from ..client.security import ClientSecurity

    token = None
    if getattr(args, "token_file", None):
        try:
            with open(args.token_file) as f:
                token = f.read().strip()
        except OSError as exc:
            raise UsageError(f"--token-file: cannot read {args.token_file}: {exc.strerror or exc}") from None
    return ClientSecurity.from_env(
        tls=getattr(args, "tls", None),
        ca_file=getattr(args, "ca_file", None),
        cert_file=getattr(args, "client_cert", None),
        key_file=getattr(args, "client_key", None),
        server_name=getattr(args, "server_name", None),
        token=token,
    )


def admin(args: argparse.Namespace, timeout_s: float = 30.0):
    from ..client import Admin

    return Admin(args.server, timeout_s=timeout_s, security=security(args))
