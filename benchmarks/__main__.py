"""`python -m benchmarks --quick | --full`: tidelog next to its peers, results in benchmarks/results/."""

from __future__ import annotations

import argparse
import sys

from benchmarks.harness import cli

PARTS = {"embedded", "grpc", "groups", "peers"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="small sizes, 1 run per figure (under 5 minutes)")
    g.add_argument("--full", action="store_true", help="3 runs per figure after a warm-up: median, min-max")
    ap.add_argument("--out", help="results directory (default benchmarks/results)")
    ap.add_argument("--tmp", default="/tmp", help="parent of the temporary data (default /tmp)")
    ap.add_argument(
        "--only", default="embedded,grpc,groups,peers", help="comma-separated subset of: embedded, grpc, groups, peers"
    )
    args = ap.parse_args(argv)
    from benchmarks import suite

    only = cli.subset(ap, "--only", args.only, PARTS)
    cli.unwind_on_signals()
    try:
        result = suite.run(suite.FULL if args.full else suite.QUICK, args.out or suite.RESULTS_DIR, args.tmp, only)
    except KeyboardInterrupt:
        return cli.interrupted()
    for system, why in result["skipped"].items():
        print(f"skipped {system}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
