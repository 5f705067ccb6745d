"""What every benchmark's command line shares: --quick, --json, --runs, --tmp, --only; stopping cleanly.

SIGINT, SIGTERM and SIGHUP unwind like Ctrl-C, so that the `finally` of a benchmark stops every process it
started (SIGINT explicitly too: a shell starts background jobs with it ignored).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys

from .processes import log

MIN_RUNS = 3


def parser(prog: str, doc: str, quick_help: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--json", metavar="PATH", help="also write every figure (all runs) as JSON here")
    ap.add_argument("--runs", type=int, help="timed runs per figure (>= 3; default 5, or 3 with --quick)")
    ap.add_argument("--tmp", default="/tmp", help="parent directory of the temporary data (default /tmp)")
    return ap


def rounds_parser(doc: str, rounds: int, records: int) -> argparse.ArgumentParser:
    """The options of a side-by-side benchmark (brokers compared round by round): --rounds, --records
    (1 KiB records per produce run), --json, --tmp; parse with rounds_args."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=rounds, help=f"rounds against each broker (default {rounds})")
    ap.add_argument("--records", type=int, default=records, help=f"1 KiB records per produce run (default {records})")
    ap.add_argument("--json", help="also write every round's figures here")
    ap.add_argument("--tmp", default="/tmp", help="where the brokers' data goes (default /tmp)")
    return ap


def rounds_args(ap: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.records < 2000:
        ap.error("--rounds must be >= 1 and --records >= 2000")
    return args


def profile(ap: argparse.ArgumentParser, args: argparse.Namespace, quick, default, runs_fields=("runs",)):
    """The profile the options ask for: --quick or the default, with --runs (>= 3) applied."""
    chosen = quick if args.quick else default
    if args.runs is not None:
        if args.runs < MIN_RUNS:
            ap.error(f"--runs must be at least {MIN_RUNS}")
        chosen = dataclasses.replace(chosen, **{f: args.runs for f in runs_fields})
    return chosen


def subset(ap: argparse.ArgumentParser, option: str, text: str, allowed: set[str]) -> set[str]:
    """A comma-separated --only style option, refused when it names anything unknown."""
    chosen = {s.strip() for s in text.split(",") if s.strip()}
    if chosen - allowed:
        ap.error(f"unknown {option}: {', '.join(sorted(chosen - allowed))}")
    return chosen


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def unwind_on_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)


def write_json(path: str | None, doc: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        log(f"\nwrote {path}")


def finish(text: str, json_path: str | None, doc: dict) -> int:
    """Print the report, write the JSON if asked; the exit code of a completed benchmark."""
    print()
    print(text)
    write_json(json_path, doc)
    return 0


def interrupted() -> int:
    print("interrupted: everything started was stopped", file=sys.stderr)
    return 130
