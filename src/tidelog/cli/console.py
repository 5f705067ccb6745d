"""`tidelog console`: the web console for a broker, in a process of its own (README: Console).

`tidelog serve --console-port` starts one beside the broker: apart from the broker's process, the
console's work never holds the broker's GIL while the data path waits. Run by hand it serves a console
for any broker it can reach (`--server`, with the CLI's TLS and token options).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading

from .broker import security, talks_to_broker
from .failures import CommandError, UsageError
from .parsing import add_command
from .values import port_number

SETTINGS_ENV = "TIDELOG_CONSOLE_SETTINGS"
"""The broker's settings as JSON, for the settings page (set by `tidelog serve`)."""


def register(commands) -> None:
    console = talks_to_broker(
        add_command(commands, "console", "serve the web console for a broker (topics, groups, queues, messages)")
    )
    console.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    console.add_argument("--port", type=port_number, default=8080, help="port; 0: any free one (default: 8080)")
    console.add_argument("--port-file", metavar="FILE", help="once serving, write the port to FILE (default: none)")
    console.add_argument(
        "--write",
        action="store_true",
        help="let the console act: create and delete topics, reset offsets, produce, redrive (default: read-only)",
    )
    console.add_argument(
        "--metrics-url", help="the broker's /metrics, for its out rate (default: none: the rate is not shown)"
    )
    console.add_argument("--https-cert", metavar="PEM", help="serve HTTPS with this certificate (default: HTTP)")
    console.add_argument("--https-key", metavar="PEM", help="its private key (default: none)")
    console.add_argument(
        "--ask-users",
        action="store_true",
        help="the broker has users: ask the browser for one, and read the broker as that user (default: off)",
    )
    console.add_argument(
        "--insecure",
        action="store_true",
        help="listen beyond loopback without HTTPS and users anyway (default: refuse)",
    )
    console.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..config import is_loopback
    from ..console import ConsoleSecurity, start_console
    from .serve import write_atomically

    if bool(args.https_cert) != bool(args.https_key):
        raise UsageError("--https-cert and --https-key go together")
    if not is_loopback(args.host) and not (args.https_cert and args.ask_users) and not args.insecure:
        raise UsageError(
            f"refusing to serve the console on {args.host} without HTTPS and users: anyone reaching it could "
            "read every topic; keep it on 127.0.0.1, or pass --insecure"
        )
    client = security(args)
    settings = json.loads(os.environ.get(SETTINGS_ENV, "{}") or "{}")
    console_security = ConsoleSecurity(
        args.https_cert or "",
        args.https_key or "",
        (client.ca_file or "") if client else "",
        (client.server_name or "") if client else "",
        args.ask_users,
        (client.token or "") if client else "",
    )
    try:
        console = start_console(
            args.server, args.metrics_url, args.host, args.port, settings, write=args.write, security=console_security
        )
    except OSError as exc:
        raise CommandError(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if args.port_file:
            write_atomically(args.port_file, f"{console.port}\n")
        print(f"tidelog console serving address={args.host}:{console.port} broker={args.server}", flush=True)
        stop.wait()
    finally:
        console.stop()
        if args.port_file:
            try:
                os.unlink(args.port_file)
            except OSError:
                pass
    return 0
