"""`tidelog top`: live per-topic produce rates and per-group lag of a running broker (see tidelog/top.py)."""

from __future__ import annotations

import argparse
import sys

from .broker import admin, talks_to_broker
from .parsing import add_command, add_deprecated_alias
from .values import positive_int, positive_number


def register(commands) -> None:
    top = talks_to_broker(
        add_command(commands, "top", "live per-topic produce rates and per-group lag of a running broker")
    )
    top.add_argument("--interval-ms", type=positive_number, default=2000, help="time between samples")
    add_deprecated_alias(top, "--interval", "--interval-ms", "interval_ms", positive_number, scale=1000)
    frames = top.add_mutually_exclusive_group()
    frames.add_argument(
        "--once", action="store_true", help="print one frame (two samples --interval-ms apart), then exit"
    )
    frames.add_argument(
        "--iterations", type=positive_int, metavar="N", help="print N frames, then exit (default: until Ctrl-C)"
    )
    top.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..top import run as run_top

    interval_s = args.interval_ms / 1000
    iterations = 1 if args.once else args.iterations
    clear = iterations is None and sys.stdout.isatty()

    def write(frame: str) -> None:
        print(frame, flush=True)

    try:
        with admin(args, timeout_s=max(5.0, 2 * interval_s)) as a:
            run_top(a, args.server, interval_s, iterations, clear, write)
    except KeyboardInterrupt:
        pass
    return 0
