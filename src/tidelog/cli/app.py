"""The `tidelog` command: a parser made of each command module's subparser, and the exit codes.

Exit codes: 0 success; 1 the operation failed; 2 bad usage (see failures.py). Either way the reason is
one line on stderr, never a traceback (`--log-level debug` logs the traceback of an unexpected error).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from . import (
    acls,
    bench,
    check,
    cluster,
    console,
    consume,
    demo,
    dev_cluster,
    dump,
    groups,
    health,
    produce,
    queues,
    serve,
    top,
    topics,
    users,
)
from .broker import add_server_option, resolve_server
from .failures import FAILED, USAGE, CommandError, UsageError
from .parsing import LOG_FORMATS, LOG_LEVELS, HelpFormatter, Parser, add_log_options

COMMANDS = (
    serve,
    topics,
    users,
    acls,
    produce,
    consume,
    groups,
    queues,
    cluster,
    top,
    console,
    health,
    bench,
    check,
    dump,
    demo,
    dev_cluster,
)
"""In the order `tidelog --help` lists them; each module's register() adds its subparser and handler."""

log = logging.getLogger("tidelog.cli")


def build_parser() -> Parser:
    parser = Parser(
        prog="tidelog",
        description="A Kafka-like partitioned commit log. Global options (--server, "
        "--log-format, --log-level) go before or after the command.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tidelog {__version__}")
    add_server_option(parser, root=True)
    add_log_options(parser, None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(commands)
    return parser


def configure_logs(args: argparse.Namespace) -> None:
    """--log-format / --log-level, else $TIDELOG_LOG_FORMAT / $TIDELOG_LOG_LEVEL; the server logs at info by
    default, the client commands only warnings and errors."""
    from .. import logging_setup

    fmt = args.log_format or os.environ.get("TIDELOG_LOG_FORMAT") or "text"
    level = args.log_level or os.environ.get("TIDELOG_LOG_LEVEL") or ("info" if args.command == "serve" else "warning")
    if fmt not in LOG_FORMATS:
        raise UsageError(f"$TIDELOG_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    if level.lower() not in LOG_LEVELS:
        raise UsageError(f"$TIDELOG_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    logging_setup.configure(fmt, level.lower())
    args.log_format, args.log_level = fmt, level.lower()  # as resolved, for the commands that print on their own


def _fail(code: int, message: str) -> int:
    print(f"tidelog: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    from ..errors import TidelogError

    args = build_parser().parse_args(argv)
    try:
        resolve_server(args)
        configure_logs(args)
        return args.run(args)
    except UsageError as exc:
        return _fail(USAGE, str(exc))
    except CommandError as exc:
        return _fail(FAILED, str(exc))
    except TidelogError as exc:
        return _fail(FAILED, exc.message)
    except BrokenPipeError:
        # The reader of our stdout went away (`tidelog consume ... | head`): that is the end, not an error.
        # Point stdout at /dev/null so that the interpreter's last flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        return _fail(FAILED, str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug, or a library error nobody mapped: still one line, never a traceback
        log.debug("unexpected error", exc_info=True)
        return _fail(FAILED, f"unexpected {type(exc).__name__}: {exc} (--log-level debug shows where)")
