"""What security costs: the same runs against a broker without it and one with TLS, tokens and ACLs.

    python -m benchmarks.security_bench [--rounds 3] [--records 256000] [--json out.json]

Three `tidelog serve --fsync never` on 127.0.0.1, started together: "plain" (no security), "tls" (TLS
only, with a trustme-made certificate) and "secured" (TLS, `--users-file`, `--acls-file` allowing the
benchmark's user everything on topics): tls against secured isolates what tokens and ACLs add. Each
round runs, against each broker in turn (the order rotates by round):

- produce: pre-built ~1 MiB RecordBatch v2 of 1 KiB records on one Produce stream, 8 in flight
  (grpc_bench's raw produce: every request goes through the access check);
- consume: the same records read back with a raw Subscribe (grpc_bench's);
- latency: 2,000 single-record Produce round trips at 1,000/s, one in flight (latency_hops').

The report gives each figure's median (min - max) per broker and secured / plain per round (median,
min - max). The issue's target: >= 0.8x for 1 MiB batches.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import grpc
import trustme

from tidelog.client import Admin, ClientSecurity

from .grpc_bench import raw_subscribe, stream_produce
from .harness import cli
from .harness.machine import machine_info, machine_line
from .harness.payloads import SEED, Payloads
from .harness.processes import LOOPBACK, log, workspace
from .harness.servers import start_tidelog
from .latency_hops import percentiles, raw_produce

WINDOW = 8
CAP_S = 120.0
LATENCY_MESSAGES = 2000
LATENCY_RATE = 1000.0


def tls_serving(ca_file: str):
    """ready(port) for a broker with TLS: its gRPC health check over TLS (needs no token)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with open(ca_file, "rb") as f:
        credentials = grpc.ssl_channel_credentials(f.read())

    def ready(port: int) -> bool:
        with grpc.secure_channel(f"{LOOPBACK}:{port}", credentials) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    return ready


def secure_files(tmp: str) -> dict[str, str]:
    """A CA and a certificate for 127.0.0.1, users admin and bench, ACLs letting bench do anything on topics."""
    from tidelog.security.acls import Acl, AclFile
    from tidelog.security.users import UsersFile

    ca = trustme.CA()
    leaf = ca.issue_cert(LOOPBACK, "localhost")
    files = {name: f"{tmp}/{name}" for name in ("ca.pem", "server.crt", "server.key", "users.json", "acls.json")}
    ca.cert_pem.write_to_path(files["ca.pem"])
    with open(files["server.crt"], "wb") as f:
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    leaf.private_key_pem.write_to_path(files["server.key"])
    users = UsersFile(files["users.json"])
    files["admin"], files["bench"] = users.add("admin"), users.add("bench")
    AclFile(files["acls.json"]).add(Acl("bench", "topic", "*", "all"))
    return files


def one_round(
    name: str, broker, security: ClientSecurity | None, admin_security, pay: Payloads, records: int
) -> dict[str, float]:
    target = broker.target
    topic = f"bench-{name}-{time.monotonic_ns()}"
    with Admin(target, security=admin_security) as admin:
        admin.create_topic(topic, 1)
    n_batches = max(1, records // pay.records_per_batch)
    loop = asyncio.new_event_loop()
    try:
        before = broker.cpu_s()
        produced, _, dt, _ = loop.run_until_complete(
            stream_produce(target, pay.batches, n_batches, WINDOW, CAP_S, topic, security)
        )
        produce_cpu, before = broker.cpu_s() - before, broker.cpu_s()
        consumed, ct, _ = loop.run_until_complete(raw_subscribe(target, topic, produced, CAP_S, security))
        consume_cpu = broker.cpu_s() - before
        if consumed != produced:
            raise RuntimeError(f"{name}: read back {consumed:,} of {produced:,} records")
        rtt: list[float] = []
        loop.run_until_complete(raw_produce(target, topic, LATENCY_MESSAGES, LATENCY_RATE, rtt, security))
    finally:
        loop.close()
    with Admin(target, security=admin_security) as admin:
        admin.delete_topic(topic)
    p = percentiles(rtt)
    return {
        "produce_mb_s": produced * pay.size / dt / 1e6,
        "consume_mb_s": consumed * pay.size / ct / 1e6,
        # the broker's own CPU per GB: its cost apart from the client's (both share the machine's cores here)
        "produce_cpu_s_per_gb": produce_cpu / (produced * pay.size / 1e9),
        "consume_cpu_s_per_gb": consume_cpu / (consumed * pay.size / 1e9),
        "rtt_p50_ms": p["p50"],
        "rtt_p99_ms": p["p99"],
    }


def cell(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f} - {max(values):,.{digits}f})"


def main(argv: list[str] | None = None) -> int:
    args = cli.rounds_args(cli.rounds_parser(__doc__, 3, 256_000), argv)
    pay = Payloads(1024, 32_000, SEED)
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "tls": [], "secured": []}
    with workspace("tidelog-security-", args.tmp) as procs:
        files = secure_files(procs.tmp)
        plain = start_tidelog(procs, f"{procs.tmp}/plain", name="tidelog-plain")
        tls_only = start_tidelog(
            procs,
            f"{procs.tmp}/tls",
            name="tidelog-tls",
            extra=("--tls-cert", files["server.crt"], "--tls-key", files["server.key"]),
            ready=tls_serving(files["ca.pem"]),
        )
        secured = start_tidelog(
            procs,
            f"{procs.tmp}/secured",
            name="tidelog-secured",
            extra=(
                "--tls-cert", files["server.crt"], "--tls-key", files["server.key"],
                "--users-file", files["users.json"], "--acls-file", files["acls.json"], "--superusers", "admin",
            ),
            ready=tls_serving(files["ca.pem"]),
        )  # fmt: skip
        brokers = {
            "plain": (plain, None, None),
            "tls": (tls_only, ClientSecurity(ca_file=files["ca.pem"]), ClientSecurity(ca_file=files["ca.pem"])),
            "secured": (
                secured,
                ClientSecurity(ca_file=files["ca.pem"], token=files["bench"]),
                ClientSecurity(ca_file=files["ca.pem"], token=files["admin"]),
            ),
        }
        for i in range(args.rounds):
            order = ["plain", "tls", "secured"][i % 3 :] + ["plain", "tls", "secured"][: i % 3]
            for name in order:
                log(f"round {i + 1} of {args.rounds}: {name}")
                broker, security, admin_security = brokers[name]
                runs[name].append(one_round(name, broker, security, admin_security, pay, args.records))
    print("# security's cost: TLS + tokens + ACLs against no security (1 KiB records)\n")
    print(f"- {machine_line(machine_info(args.tmp, False, grpcio=grpc.__version__))}")
    print(
        f"- {args.rounds} rounds; produce: {args.records:,} records in ~1 MiB batches, {WINDOW} in flight; "
        f"consume: raw Subscribe of the same; RTT: {LATENCY_MESSAGES:,} single-record Produce round trips at "
        f"{LATENCY_RATE:,.0f}/s; every broker `--fsync never`\n"
    )
    print("| figure | plain | TLS | TLS + tokens + ACLs | TLS / plain | secured / plain (per round) |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, label, higher_better in (
        ("produce_mb_s", "produce MB/s", True),
        ("consume_mb_s", "consume MB/s", True),
        ("produce_cpu_s_per_gb", "broker CPU s per GB produced", False),
        ("consume_cpu_s_per_gb", "broker CPU s per GB consumed", False),
        ("rtt_p50_ms", "Produce RTT p50 ms", False),
        ("rtt_p99_ms", "Produce RTT p99 ms", False),
    ):
        a, t, b = ([r[key] for r in runs[name]] for name in ("plain", "tls", "secured"))

        def ratios(xs: list[float], ys: list[float]) -> list[float]:
            return [y / x if higher_better else x / y for x, y in zip(xs, ys)]

        digits = 0 if higher_better else 2 if "cpu" in key else 3
        print(
            f"| {label} | {cell(a, digits)} | {cell(t, digits)} | {cell(b, digits)} | {cell(ratios(a, t), 2)}x "
            f"| {cell(ratios(a, b), 2)}x |"
        )
    print(
        "\nRatios above 1 mean the secured broker did better (for latency and CPU: plain / secured). The "
        "broker's CPU per GB is its own cost, apart from the client's: here both share two cores, so the "
        "client's decryption also takes from the broker's throughput."
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": args.rounds, "records": args.records, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
