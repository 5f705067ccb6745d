"""What an open console costs the data path: the same runs against a broker whose console nobody looks at
and one whose console is open and refreshing, side by side.

    python -m benchmarks.console_bench [--rounds 4] [--records 1024000] [--json out.json]

Two `tidelog serve --fsync never --console-port 0` on 127.0.0.1, started together, each with a consumer
group (so that the console's samples describe one). Against the "open" broker a thread in this process
plays a console page refreshing faster than the real one (every second: overview, series, topics and the
group, where a page asks every 3 s), from WARM_S before the round to its end, so that the console
samples throughout; the other's console is never asked (its sampler sleeps). Halfway the two brokers swap roles, once the open one's console has gone idle, so that one
broker being faster than the other in a run does not pass for the console's cost. Each round (the order
rotates) produces ~1 MiB batches of 1 KiB records, 8 in flight, and reads
them back with a raw Subscribe (grpc_bench's clients). The issue's target: open / closed >= 0.95.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import threading
import time
import urllib.request

import grpc

from tidelog.client import Admin, Consumer, Producer
from tidelog.console.data import IDLE_S

from .grpc_bench import raw_subscribe, stream_produce
from .harness import cli
from .harness.machine import machine_info, machine_line
from .harness.payloads import SEED, Payloads
from .harness.processes import log, workspace
from .harness.servers import start_tidelog

WINDOW = 8
WARM_S = 3.0
CAP_S = 120.0
PAGE_CALLS = ("overview", "series", "topics", "groups/bench-group")


def console_port(path: str, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                return int(f.read())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError(f"no console port in {path}")


class Viewer:
    """A console page left open: its API calls every `every_s`, on a thread, until stopped."""

    def __init__(self, url: str, every_s: float = 1.0) -> None:
        self.url, self.every_s = url, every_s
        self.calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Viewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for call in PAGE_CALLS:
                with urllib.request.urlopen(f"{self.url}/api/{call}", timeout=30) as reply:
                    reply.read()
                self.calls += 1
            self._stop.wait(self.every_s)


def prepare(target: str, pay: Payloads) -> None:
    """A topic with records and a group with a committed offset, so that the console's samples have
    something to describe."""
    with Admin(target) as admin:
        admin.create_topic("console-seen", 4)
    with Producer(target, linger_ms=5) as producer:
        for i in range(2000):
            producer.send("console-seen", pay.batches[0][0][:100], partition=i % 4)
    with Consumer(target, group_id="bench-group", topics=["console-seen"], auto_commit=False) as consumer:
        for _ in range(100):
            consumer.poll(0.1)
            if len(consumer.assignment()) == 4:
                break
        consumer.commit({("console-seen", p): 100 for p in range(4)})


def one_round(target: str, pay: Payloads, records: int, viewer_url: str | None, every_s: float) -> dict[str, float]:
    topic = f"bench-{time.monotonic_ns()}"
    with Admin(target) as admin:
        admin.create_topic(topic, 1)
    n_batches = max(1, records // pay.records_per_batch)
    loop = asyncio.new_event_loop()
    calls = 0
    try:
        viewer = Viewer(viewer_url, every_s) if viewer_url else None
        if viewer is not None:
            viewer.__enter__()
            time.sleep(WARM_S)  # the page is open and the console sampling before the data path starts
        try:
            produced, _, dt, _ = loop.run_until_complete(
                stream_produce(target, pay.batches, n_batches, WINDOW, CAP_S, topic, None)
            )
            consumed, ct, _ = loop.run_until_complete(raw_subscribe(target, topic, produced, CAP_S))
        finally:
            if viewer is not None:
                viewer.__exit__()
                calls = viewer.calls
        if consumed != produced:
            raise RuntimeError(f"read back {consumed:,} of {produced:,} records")
    finally:
        loop.close()
    with Admin(target) as admin:
        admin.delete_topic(topic)
    return {
        "produce_mb_s": produced * pay.size / dt / 1e6,
        "consume_mb_s": consumed * pay.size / ct / 1e6,
        "console_calls": calls,
    }


def main(argv: list[str] | None = None) -> int:
    parser = cli.rounds_parser(__doc__, 4, 1_024_000)
    parser.add_argument("--every-s", type=float, default=1.0, help="the open page's refresh (default 1; a page: 3)")
    args = cli.rounds_args(parser, argv)
    pay = Payloads(1024, 32_000, SEED)
    runs: dict[str, list[dict[str, float]]] = {"closed": [], "open": []}
    with workspace("tidelog-console-", args.tmp) as procs:
        brokers = {}
        for name in ("closed", "open"):
            port_file = f"{procs.tmp}/{name}.console-port"
            proc = start_tidelog(
                procs, f"{procs.tmp}/{name}", name=f"tidelog-{name}",
                extra=("--console-port", "0", "--console-port-file", port_file),
            )  # fmt: skip
            brokers[name] = (proc.target, f"http://127.0.0.1:{console_port(port_file)}")
            prepare(proc.target, pay)
        for i in range(args.rounds):
            if i == args.rounds // 2 and i:
                # the brokers swap roles halfway (each broker's own speed differs from run to run): once the
                # open one's console has gone idle (it samples IDLE_S after the last page), it is the closed one
                log(f"swapping the brokers' roles: waiting {IDLE_S + 5:.0f} s for the open console to go idle")
                time.sleep(IDLE_S + 5)
                brokers = {"closed": brokers["open"], "open": brokers["closed"]}
            for name in ("closed", "open") if i % 2 == 0 else ("open", "closed"):
                log(f"round {i + 1} of {args.rounds}: console {name}")
                target, url = brokers[name]
                runs[name].append(one_round(target, pay, args.records, url if name == "open" else None, args.every_s))
    print("# an open console's cost to the data path (1 KiB records)\n")
    print(f"- {machine_line(machine_info(args.tmp, False, grpcio=grpc.__version__))}")
    print(
        f"- {args.rounds} rounds; produce: {args.records:,} records in ~1 MiB batches, {WINDOW} in flight; "
        "consume: raw Subscribe of the same; the open console is asked for "
        f"{', '.join(PAGE_CALLS)} every {args.every_s:g} s; every broker `--fsync never`\n"
    )
    print("| figure | console closed | console open | open / closed (per round) |")
    print("|---|---:|---:|---:|")
    for key, label in (("produce_mb_s", "produce MB/s"), ("consume_mb_s", "consume MB/s")):
        closed, opened = ([r[key] for r in runs[n]] for n in ("closed", "open"))
        ratios = [o / c for c, o in zip(closed, opened)]
        print(
            f"| {label} | {_cell(closed)} | {_cell(opened)} | {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f} - {max(ratios):.2f})x |"
        )
    calls = [r["console_calls"] for r in runs["open"]]
    print(f"\nConsole API calls served during the open rounds: {', '.join(str(int(c)) for c in calls)}.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": args.rounds, "records": args.records, "runs": runs}, f, indent=1)
    return 0


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f} - {max(values):,.0f})"


if __name__ == "__main__":
    sys.exit(main())
