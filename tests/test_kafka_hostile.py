"""Hostile Kafka clients against a live broker: mutated frames of every served API, nulls and extremes in
every field, pipelining, a client that never reads, lying record batches, and abuse of the group
protocol. The rule: bad input gets Kafka's answer or a closed connection, never a crash, a hang, lost
data or a broken broker, and a client never writes what only the broker writes (internal topics,
other members' committed offsets).

A handler that raises on a request it decoded ("a Kafka request failed" in the server log) closes the
connection, which a client survives, but it is a bug: the request deserved an error code (or, for a
field Kafka's own decoder refuses, a close without a traceback). Those are reported by API, version
and what was sent.

Seeded: the seed is printed (pytest -s shows it, and every failure message names it); TIDELOG_SEED=<n>
replays a run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import itertools
import json
import os
import pathlib
import random
import re
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from tests.server_process import ServerProcess
from tests.test_kafka_protocol import batch, connect, read_frame, sized
from tidelog._native.checksum import crc32c
from tidelog.kafka_protocol import codec

pytest.importorskip("kafka", reason="kafka-python is a test dependency")
from kafka.record.legacy_records import LegacyRecordBatchBuilder  # noqa: E402

SEED = int(os.environ.get("TIDELOG_SEED") or random.SystemRandom().randrange(1 << 32))
print(f"\ntests/test_kafka_hostile.py: TIDELOG_SEED={SEED}")
WHY = f"(replay with TIDELOG_SEED={SEED})"

ANSWER_TIMEOUT_S = 5.0  # a request is answered, or its connection closed, within this
PARALLEL = 16  # connections in flight at once while mutants and variants are sent
TOPIC = "hostile"  # the topic the fuzzed requests name (created with a few records)
_unique = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_unique)}"


# -- brokers -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """The broker every test shares. No initial rebalance delay (a JoinGroup is answered at once) and
    fetch long polls of at most 200 ms (mutated max_wait_ms values cost little)."""
    directory = tmp_path_factory.mktemp("kafka-hostile")
    config = directory / "tidelog.toml"
    config.write_text("group_initial_rebalance_delay_ms = 0\nmax_fetch_wait_ms = 200\n")
    server = ServerProcess(str(directory / "data"), "--config", str(config), kafka=True).start()
    request(server, codec.METADATA, 4, {"topics": [{"name": TOPIC}], "allow_auto_topic_creation": True})
    for i in range(3):
        request(server, codec.PRODUCE, 8, produce_fields(TOPIC, batch([b"seed-%d" % i])))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A second broker, for what would poison a broker for every later test if the broker let it in
    (a huge or null group id, huge metadata) and for a small in-flight budget (8 MiB, frames up to 8 MiB)."""
    directory = tmp_path_factory.mktemp("kafka-hostile-scratch")
    config = directory / "tidelog.toml"
    config.write_text(
        "group_initial_rebalance_delay_ms = 0\nmax_inflight_bytes = 8388608\nmax_message_bytes = 8388608\n"
    )
    server = ServerProcess(str(directory / "data"), "--config", str(config), kafka=True).start()
    request(server, codec.METADATA, 4, {"topics": [{"name": TOPIC}], "allow_auto_topic_creation": True})
    request(server, codec.PRODUCE, 8, produce_fields(TOPIC, batch([b"seed"])))
    yield server
    server.stop()


class ServerLog:
    """What the server wrote to its log since this was made."""

    def __init__(self, server: ServerProcess) -> None:
        self.path = server.log_path
        self.start = os.path.getsize(self.path)

    def text(self) -> str:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace")

    def handler_failures(self) -> list[tuple[int, str]]:
        """(client port, "<Api> v<n> failed: <error>") of each request a handler raised on."""
        return [
            (int(m.group(2)), m.group(1))
            for m in re.finditer(
                r"Kafka connection closed: (\S+ v\d+ failed: .*?) peer=[\d.]+:(\d+) reason=failed", self.text()
            )
        ]

    def unexpected_tracebacks(self) -> list[str]:
        """Tracebacks other than the logged "a Kafka request failed" ones."""
        text = self.text()
        failed = text.count("a Kafka request failed")
        if text.count("Traceback") <= failed:
            return []
        return [block for block in text.split("\n20") if "Traceback" in block and "a Kafka request failed" not in block]


def rss_mib(server: ServerProcess) -> float:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# -- requests ----------------------------------------------------------------------------------------------
def encode(api_key: int, version: int, fields: dict, correlation_id: int = 1, client_id: str = "hostile") -> bytes:
    """A whole frame (size, header, body) of the request."""
    message = codec.build(codec.SERVED[api_key].request[version], fields)
    message.with_header(correlation_id=correlation_id, client_id=client_id)
    return bytes(message.encode(header=True, framed=True))


def decode(frame: bytes, api_key: int, version: int) -> Any:
    """A response frame (without its size) as the response of that request; raises if it is not one."""
    api = codec.SERVED[api_key]
    if codec.served(api_key, version) is None:  # ApiVersions answers an unknown version with a v0 body
        assert api_key == codec.API_VERSIONS
        version = 0
    body = frame[5:] if codec.response_header_flexible(api, version) else frame[4:]
    return api.response.decode(body, version=version)


def request(server: ServerProcess, api_key: int, version: int, fields: dict, client_id: str = "hostile") -> Any:
    """Send one request on a fresh connection: its decoded response, or None if the connection closed."""
    with connect(server) as s:
        s.settimeout(ANSWER_TIMEOUT_S)
        s.sendall(encode(api_key, version, fields, correlation_id=77, client_id=client_id))
        frame = read_frame(s)
    if frame is None:
        return None
    assert struct.unpack_from(">i", frame)[0] == 77
    return decode(frame, api_key, version)


def produce_fields(topic: str, records: bytes | None, partition: int = 0, acks: int = -1) -> dict:
    return {
        "transactional_id": None,
        "acks": acks,
        "timeout_ms": 5000,
        "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": records}]}],
    }


def fetch_fields(topic: str, offset: int = 0, partition_max_bytes: int = 1 << 20, max_wait_ms: int = 0) -> dict:
    return {
        "replica_id": -1,
        "max_wait_ms": max_wait_ms,
        "min_bytes": 1,
        "max_bytes": 16 << 20,
        "isolation_level": 0,
        "session_id": 0,
        "session_epoch": -1,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {
                        "partition": 0,
                        "fetch_offset": offset,
                        "partition_max_bytes": partition_max_bytes,
                        "log_start_offset": -1,
                        "current_leader_epoch": -1,
                    }
                ],
            }
        ],
        "forgotten_topics_data": [],
        "rack_id": "",
    }


def list_offsets_fields(topic: str, partition: int = 0, timestamp: int = -1) -> dict:
    return {
        "replica_id": -1,
        "isolation_level": 0,
        "topics": [
            {
                "name": topic,
                "partitions": [{"partition_index": partition, "timestamp": timestamp, "current_leader_epoch": -1}],
            }
        ],
    }


def high_watermark(server: ServerProcess, topic: str, partition: int = 0) -> int:
    answer = request(server, codec.LIST_OFFSETS, 1, list_offsets_fields(topic, partition))
    (p,) = answer.topics[0].partitions
    assert p.error_code == 0, f"ListOffsets of {topic}[{partition}]: error {p.error_code}"
    return p.offset


def sample(api_key: int, group: str) -> dict:
    """A valid request of each served API, naming TOPIC (and `group`, unique per request where a group
    is named: a JoinGroup alone in its group is answered at once)."""
    return {
        codec.PRODUCE: produce_fields(TOPIC, batch([b"m"]), acks=1),
        codec.FETCH: fetch_fields(TOPIC),
        codec.LIST_OFFSETS: list_offsets_fields(TOPIC),
        codec.METADATA: {
            "topics": [{"name": TOPIC}],
            "allow_auto_topic_creation": False,
            "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False,
        },
        codec.OFFSET_COMMIT: {
            "group_id": group,
            "generation_id_or_member_epoch": -1,
            "member_id": "",
            "group_instance_id": None,
            "retention_time_ms": -1,
            "topics": [
                {
                    "name": TOPIC,
                    "partitions": [
                        {
                            "partition_index": 0,
                            "committed_offset": 0,
                            "committed_leader_epoch": -1,
                            "committed_metadata": "",
                        }
                    ],
                }
            ],
        },
        codec.OFFSET_FETCH: {
            "group_id": group,
            "topics": [{"name": TOPIC, "partition_indexes": [0]}],
            "require_stable": False,
            "groups": [
                {
                    "group_id": group,
                    "member_id": None,
                    "member_epoch": -1,
                    "topics": [{"name": TOPIC, "partition_indexes": [0]}],
                }
            ],
        },
        codec.FIND_COORDINATOR: {"key": group, "key_type": 0, "coordinator_keys": [group]},
        codec.JOIN_GROUP: {
            "group_id": group,
            "session_timeout_ms": 1000,
            "rebalance_timeout_ms": 1000,
            "member_id": "",
            "group_instance_id": None,
            "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": b"\x00\x01"}],
            "reason": None,
        },
        codec.HEARTBEAT: {"group_id": group, "generation_id": 1, "member_id": "nobody", "group_instance_id": None},
        codec.LEAVE_GROUP: {
            "group_id": group,
            "member_id": "nobody",
            "members": [{"member_id": "nobody", "group_instance_id": None, "reason": None}],
        },
        codec.SYNC_GROUP: {
            "group_id": group,
            "generation_id": 1,
            "member_id": "nobody",
            "group_instance_id": None,
            "protocol_type": "consumer",
            "protocol_name": "range",
            "assignments": [{"member_id": "nobody", "assignment": b"\x00"}],
        },
        codec.DESCRIBE_GROUPS: {"groups": [group], "include_authorized_operations": True},
        codec.LIST_GROUPS: {"states_filter": ["Stable"], "types_filter": ["classic"]},
        codec.API_VERSIONS: {"client_software_name": "hostile", "client_software_version": "1.0"},
        codec.CREATE_TOPICS: {
            "topics": [
                {
                    "name": "never-created",
                    "num_partitions": 1,
                    "replication_factor": 1,
                    "assignments": [],
                    "configs": [{"name": "retention.ms", "value": "1000"}],
                }
            ],
            "timeout_ms": 1000,
            "validate_only": True,
        },
        codec.DELETE_TOPICS: {
            "topics": [{"name": "no-such-topic", "topic_id": None}],
            "topic_names": ["no-such-topic"],
            "timeout_ms": 1000,
        },
        codec.DELETE_RECORDS: {
            "topics": [{"name": TOPIC, "partitions": [{"partition_index": 0, "offset": 0}]}],
            "timeout_ms": 1000,
        },
        codec.INIT_PRODUCER_ID: {
            "transactional_id": None,
            "transaction_timeout_ms": 1000,
            "producer_id": -1,
            "producer_epoch": -1,
        },
        codec.OFFSET_FOR_LEADER_EPOCH: {
            "replica_id": -1,
            "topics": [
                {"topic": TOPIC, "partitions": [{"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}
            ],
        },
        codec.DESCRIBE_CONFIGS: {
            "resources": [{"resource_type": 2, "resource_name": TOPIC, "configuration_keys": None}],
            "include_synonyms": False,
            "include_documentation": True,
        },
        codec.DELETE_GROUPS: {"groups_names": [group]},
        # this broker has no SASL: a handshake is answered UNSUPPORTED_SASL_MECHANISM, an exchange ILLEGAL_SASL_STATE
        codec.SASL_HANDSHAKE: {"mechanism": "SCRAM-SHA-256"},
        codec.SASL_AUTHENTICATE: {"auth_bytes": b"n,,n=user,r=nonce"},
    }[api_key]


def versions_to_try(api: codec.Api, rng: random.Random | None = None) -> list[int]:
    """The lowest, the highest and the first flexible version (and one more, picked by rng)."""
    chosen = {api.min_version, api.max_version}
    chosen |= {
        next((v for v in range(api.min_version, api.max_version + 1) if codec.flexible(api, v)), api.min_version)
    }
    if rng is not None:
        chosen.add(rng.randint(api.min_version, api.max_version))
    return sorted(chosen)


# -- sending many requests, each on its own connection --------------------------------------------------
class Sent(NamedTuple):
    what: str  # a description of the request, for reports
    api_key: int  # of the header as sent (a mutant may have changed it)
    version: int
    correlation_id: int
    frames: list  # the answers read before the broker closed the connection
    closed: bool  # False: neither an answer nor a close within ANSWER_TIMEOUT_S
    seconds: float
    port: int  # the client's port: the server log names the peer


def send_one(server: ServerProcess, what: str, raw: bytes) -> Sent:
    """Send raw bytes, half-close (so a cut frame ends at once), and read what comes back until close."""
    head = raw[4:12] + b"\x00" * 8
    api_key, version, correlation_id = struct.unpack_from(">hhi", head)
    frames: list = []
    started = time.monotonic()
    with connect(server) as s:
        port = s.getsockname()[1]
        s.settimeout(ANSWER_TIMEOUT_S)
        try:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return Sent(what, api_key, version, correlation_id, frames, True, time.monotonic() - started, port)
        while True:
            try:
                frame = read_frame(s)
            except TimeoutError:
                return Sent(what, api_key, version, correlation_id, frames, False, time.monotonic() - started, port)
            if frame is None:
                return Sent(what, api_key, version, correlation_id, frames, True, time.monotonic() - started, port)
            frames.append(frame)


def send_all(server: ServerProcess, requests: list[tuple[str, bytes]]) -> list[Sent]:
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(lambda r: send_one(server, *r), requests))


def problems(log: ServerLog, sent: list[Sent]) -> dict[str, list[str]]:
    """What went wrong, by kind: hangs, answers that are not the request's response, handler
    failures (with the request that caused each), other tracebacks in the server log."""
    out: dict[str, list[str]] = {"hangs": [], "bad answers": [], "handler failures": [], "tracebacks": []}
    for r in sent:
        if not r.closed:
            out["hangs"].append(f"{r.what}: {len(r.frames)} answers, then nothing for {r.seconds:.1f}s")
        if r.frames:
            frame = r.frames[0]
            try:
                assert struct.unpack_from(">i", frame)[0] == r.correlation_id, "another correlation id"
                decode(frame, r.api_key, r.version)
            except Exception as exc:
                out["bad answers"].append(f"{r.what}: {type(exc).__name__}: {exc}")
    by_port = {r.port: r.what for r in sent}
    for port, failure in log.handler_failures():
        out["handler failures"].append(f"{failure}  <-  {by_port.get(port, 'another request')}")
    out["tracebacks"] = log.unexpected_tracebacks()
    return out


def assert_serving(server: ServerProcess) -> None:
    """The process lives, answers ApiVersions, and a produce then fetch round trip works."""
    assert server.proc is not None and server.proc.poll() is None, f"the broker died {WHY}: {server.log()}"
    answer = request(server, codec.API_VERSIONS, 3, sample(codec.API_VERSIONS, ""))
    assert answer is not None and answer.error_code == 0
    topic = unique("alive")
    request(server, codec.METADATA, 4, {"topics": [{"name": topic}], "allow_auto_topic_creation": True})
    produced = request(server, codec.PRODUCE, 9, produce_fields(topic, batch([b"still", b"here"])))
    assert produced.responses[0].partition_responses[0].error_code == 0
    fetched = request(server, codec.FETCH, 12, fetch_fields(topic))
    records = fetched.responses[0].partitions[0].records
    assert records is not None and b"still" in bytes(records) and b"here" in bytes(records)


# -- 1. mutated frames of every API ---------------------------------------------------------------------
INT16_LIES = (0x7FFF, -1, -0x8000, -2)
INT32_LIES = (0x7FFFFFFF, -1, -0x80000000, 0x00FFFFFF, 0x10000)
VARINT_LIES = (b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x80\x01", b"\xfe\xff\xff\xff\x07", b"\x00")


def mutate(rng: random.Random, request_bytes: bytes) -> tuple[str, bytes]:
    """A mutant of a request (header and body, no size): (what was done, the framed mutant)."""
    data = bytearray(request_bytes)
    low = 0 if rng.random() < 0.1 else min(8, len(data))  # mostly keep the API key and version
    done = []
    for _ in range(1 if rng.random() < 0.7 else 2):
        span = len(data) - low
        op = rng.choice(("truncate", "flip", "int16", "int32", "varint", "garbage", "repeat", "cut"))
        if op == "truncate" and span > 0:
            at = rng.randrange(low, len(data))
            del data[at:]
            done.append(f"truncated at {at}")
        elif op == "flip" and span > 0:
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(low, len(data))
                data[at] ^= rng.randrange(1, 256)
                done.append(f"flipped byte {at}")
        elif op == "int16" and span >= 2:
            at, value = rng.randrange(low, len(data) - 1), rng.choice(INT16_LIES)
            struct.pack_into(">h", data, at, value)
            done.append(f"int16 {value} at {at}")
        elif op == "int32" and span >= 4:
            at, value = rng.randrange(low, len(data) - 3), rng.choice(INT32_LIES)
            struct.pack_into(">i", data, at, value)
            done.append(f"int32 {value} at {at}")
        elif op == "varint" and span > 0:
            at, value = rng.randrange(low, len(data)), rng.choice(VARINT_LIES)
            data[at:at] = value
            done.append(f"varint {value.hex()} inserted at {at}")
        elif op == "garbage":
            n = rng.randint(1, 64)
            data += rng.randbytes(n)
            done.append(f"{n} bytes of garbage appended")
        elif op == "repeat" and span > 0:
            a = rng.randrange(low, len(data))
            b = rng.randrange(a, min(len(data), a + 64) + 1)
            data[b:b] = data[a:b]
            done.append(f"bytes {a}-{b} repeated")
        elif op == "cut" and span > 0:
            a = rng.randrange(low, len(data))
            b = rng.randrange(a, min(len(data), a + 16) + 1)
            del data[a:b]
            done.append(f"bytes {a}-{b} cut out")
    if rng.random() < 0.15:  # the frame size lies (the half-close then ends a frame that is too short)
        size = rng.choice((len(request_bytes), len(data) + rng.randint(1, 100), max(len(data) - 1, 0)))
        done.append(f"frame size {size} for {len(data)} bytes")
    else:
        size = len(data)
    return "; ".join(done) or "unchanged", struct.pack(">i", size) + bytes(data)


GOLDEN = json.loads((pathlib.Path(__file__).parent / "data" / "kafka_requests.json").read_text())
MUTANTS_PER_VERSION = 20
MUTANTS_PER_GOLDEN = 4


def mutants(rng: random.Random) -> list[tuple[str, bytes]]:
    out = []
    for api in codec.SERVED.values():
        for version in versions_to_try(api, rng):
            for _ in range(MUTANTS_PER_VERSION):
                raw = encode(api.key, version, sample(api.key, unique("fuzz")), correlation_id=rng.randrange(1 << 31))
                what, mutant = mutate(rng, raw[4:])
                out.append((f"{api.name} v{version}: {what}", mutant))
    for g in GOLDEN:
        if g["api_key"] == codec.JOIN_GROUP:
            continue  # every captured JoinGroup names one group: joins would wait on each other's members
        raw = bytes.fromhex(g["frame"])
        for _ in range(MUTANTS_PER_GOLDEN):
            what, mutant = mutate(rng, raw[4:])
            out.append((f"{g['client']} {codec.SERVED[g['api_key']].name} v{g['api_version']}: {what}", mutant))
    rng.shuffle(out)
    return out


# What the random mutants met, for the next test (so that the survival checks pass or fail on their own).
FUZZ: dict[str, Any] = {"ran": False, "handler failures": []}


def test_mutated_requests_of_every_api_get_an_answer_or_a_close_and_the_broker_serves_on(broker):
    rng = random.Random(SEED)
    log = ServerLog(broker)
    started = time.monotonic()
    sent = send_all(broker, mutants(rng))
    found = problems(log, sent)
    FUZZ["ran"], FUZZ["handler failures"] = True, found["handler failures"]
    print(f"{len(sent)} mutants in {time.monotonic() - started:.1f}s; handler failures: {found['handler failures']}")
    assert not found["hangs"], f"{WHY} {found['hangs']}"
    assert not found["bad answers"], f"{WHY} {found['bad answers']}"
    assert not found["tracebacks"], f"{WHY} {found['tracebacks']}"
    assert_serving(broker)
    round_trip_with_librdkafka(broker)
    assert not log.unexpected_tracebacks()


def test_no_mutant_made_a_handler_fail(broker):
    """Each handler failure is a request that deserved an error code (or a close without a
    traceback). Runs after the test above, which fills the list (alone, it runs that test's mutants)."""
    if not FUZZ["ran"]:
        test_mutated_requests_of_every_api_get_an_answer_or_a_close_and_the_broker_serves_on(broker)
    assert not FUZZ["handler failures"], f"{WHY}\n" + "\n".join(FUZZ["handler failures"])


def round_trip_with_librdkafka(server: ServerProcess) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka", reason="confluent-kafka is a test dependency")
    topic = unique("librdkafka")
    request(server, codec.METADATA, 4, {"topics": [{"name": topic}], "allow_auto_topic_creation": True})
    producer = confluent_kafka.Producer({"bootstrap.servers": server.kafka_target, "log_level": 2})
    errors: list = []
    for i in range(5):
        producer.produce(topic, b"after-%d" % i, on_delivery=lambda err, msg: errors.append(err))
    assert producer.flush(15) == 0 and errors == [None] * 5, errors
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": server.kafka_target,
            "group.id": unique("g"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 2,
        }
    )
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
        got: list = []
        deadline = time.monotonic() + 15
        while len(got) < 5 and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    assert got == [b"after-%d" % i for i in range(5)]


# -- 1b. nulls and extremes in every field ------------------------------------------------------------------
def leaves(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, value) of every field and list item of a request's fields, nested ones too."""
    if isinstance(value, dict):
        for key, v in value.items():
            yield (*path, key), v
            yield from leaves(v, (*path, key))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, (dict, list)):
                yield from leaves(v, (*path, i))
            else:
                yield (*path, i), v


def replaced(fields: dict, path: tuple, value: Any) -> dict:
    out = copy.deepcopy(fields)
    at: Any = out
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    return out


def variants(api_key: int, version: int) -> Iterator[tuple[str, bytes]]:
    """The sample request of this version with one field set to null (even where the spec says it
    is not nullable: Kafka's decoder refuses that) or to an extreme value, each field in turn."""
    for path, value in leaves(sample(api_key, "variants")):
        candidates: list[Any] = [None]
        if isinstance(value, int) and not isinstance(value, bool):
            candidates += [-1, -(2**31), 2**31 - 1, 2**15 - 1, -(2**15)]
        elif isinstance(value, str):
            candidates += ["", "x" * 300, "__consumer_offsets", "../x"]
        elif isinstance(value, bytes):
            candidates += [b"", b"\xff" * 300]
        for candidate in candidates:
            if api_key == codec.OFFSET_COMMIT and path == ("group_id",) and candidate is None:
                continue  # poisons the broker for every later test: test_a_null_group_id_..._list_groups
            group = unique("variant")
            fields = sample(api_key, group)
            if api_key == codec.JOIN_GROUP and path == ("group_id",) and candidate:
                candidate = f"{candidate}-{group}"  # alone in its group: answered at once
            try:
                raw = encode(api_key, version, replaced(fields, path, candidate))
            except Exception:
                continue  # not encodable (an int8 field given an int32, a null bool)
            if raw != encode(api_key, version, fields):  # the field is in this version
                yield f"{codec.SERVED[api_key].name} v{version} {'.'.join(map(str, path))}={candidate!r:.40}", raw


@pytest.mark.parametrize(
    "api_key",
    list(codec.SERVED),
    ids=[a.name for a in codec.SERVED.values()],
)
def test_nulls_and_extremes_in_any_field_get_an_answer_or_a_close_never_a_handler_failure(broker, api_key):
    api = codec.SERVED[api_key]
    log = ServerLog(broker)
    sent = send_all(broker, [v for version in versions_to_try(api) for v in variants(api_key, version)])
    found = problems(log, sent)
    print(f"{api.name}: {len(sent)} variants; handler failures: {found['handler failures']}")
    assert not found["hangs"], found["hangs"]
    assert not found["bad answers"], found["bad answers"]
    assert not found["tracebacks"], found["tracebacks"]
    assert_serving(broker)
    assert not found["handler failures"], "\n".join(found["handler failures"])


# -- 2. pipelining -----------------------------------------------------------------------------------------
def test_200_pipelined_requests_are_answered_in_request_order_and_acks_zero_never(broker):
    rng = random.Random(SEED + 2)
    topic = unique("pipelined")
    request(broker, codec.METADATA, 4, {"topics": [{"name": topic}], "allow_auto_topic_creation": True})
    kinds = rng.choices(["metadata", "api_versions", "produce", "produce_acks0", "list_offsets", "fetch"], k=200)
    frames, expected = [], []
    for i, kind in enumerate(kinds):
        cid = 1000 + i
        if kind == "metadata":
            frames.append(encode(codec.METADATA, rng.choice((1, 9, 12)), {"topics": [{"name": topic}]}, cid))
        elif kind == "api_versions":
            frames.append(encode(codec.API_VERSIONS, rng.choice((0, 3)), sample(codec.API_VERSIONS, ""), cid))
        elif kind.startswith("produce"):
            acks = 0 if kind == "produce_acks0" else 1
            records = batch([b"p%d" % i])
            frames.append(
                encode(codec.PRODUCE, rng.choice((3, 8, 9, 12)), produce_fields(topic, records, acks=acks), cid)
            )
        elif kind == "list_offsets":
            frames.append(encode(codec.LIST_OFFSETS, rng.choice((1, 6)), list_offsets_fields(topic), cid))
        else:  # a small answer: the client reads nothing until all is sent
            frames.append(encode(codec.FETCH, rng.choice((4, 12)), fetch_fields(topic, 0, partition_max_bytes=1), cid))
        if kind != "produce_acks0":
            expected.append((cid, kind, struct.unpack_from(">hh", frames[-1], 4)))
    with connect(broker) as s:
        s.settimeout(10)
        s.sendall(b"".join(frames))
        answers = [read_frame(s) for _ in expected]
        s.sendall(encode(codec.API_VERSIONS, 0, {}, 9999))
        last = read_frame(s)
        # a broken frame behind good ones: the good ones are answered, then the connection closes
        s.sendall(encode(codec.API_VERSIONS, 3, {}, 10000) + sized(struct.pack(">hhi", codec.METADATA, 1, 10001)))
        before_close = read_frame(s)
        assert before_close is not None and struct.unpack_from(">i", before_close)[0] == 10000
        assert read_frame(s) is None
    assert all(a is not None for a in answers), "the broker closed the connection"
    got = [struct.unpack_from(">i", a)[0] for a in answers]
    assert got == [cid for cid, _, _ in expected], f"answers out of order {WHY}"
    assert last is not None and struct.unpack_from(">i", last)[0] == 9999, "an answer to an acks=0 produce came"
    offsets = []
    for answer, (_, kind, (api_key, version)) in zip(answers, expected):
        decoded = decode(answer, api_key, version)
        if kind == "produce":
            p = decoded.responses[0].partition_responses[0]
            assert p.error_code == 0
            offsets.append(p.base_offset)
        elif kind == "fetch":
            assert decoded.responses[0].partitions[0].error_code == 0
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    produced = sum(k.startswith("produce") for k in kinds)
    deadline = time.monotonic() + 5
    while high_watermark(broker, topic) < produced and time.monotonic() < deadline:
        time.sleep(0.05)
    assert high_watermark(broker, topic) == produced, "every produce, acks=0 too, was appended once"


# -- 3. a client that never reads -----------------------------------------------------------------------
def test_a_client_that_never_reads_holds_up_nobody_and_costs_bounded_memory(broker):
    topic = unique("never-read")
    request(broker, codec.METADATA, 4, {"topics": [{"name": topic}], "allow_auto_topic_creation": True})
    for i in range(4):  # 1 MiB of records: every fetch answer below is about that size
        answer = request(broker, codec.PRODUCE, 8, produce_fields(topic, batch([os.urandom(256 << 10)])))
        assert answer.responses[0].partition_responses[0].error_code == 0
    before = rss_mib(broker)
    # a long client id makes each request 32 KiB, so that the socket buffers fill after a few hundred
    fetch = encode(codec.FETCH, 11, fetch_fields(topic, 0, partition_max_bytes=4 << 20), client_id="c" * 32000)
    hog = connect(broker)
    try:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        hog.setblocking(False)
        pending, sent, stalled_since = b"", 0, None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not pending:
                pending, sent = fetch, sent + 1
            try:
                pending = pending[hog.send(pending) :]
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 0.5:
                    break  # the broker stopped reading this connection: its writes backed up
                time.sleep(0.01)
        assert stalled_since is not None, f"{sent} fetches of 1 MiB were all taken without a read"
        for _ in range(3):  # everyone else is served promptly meanwhile
            started = time.monotonic()
            assert request(broker, codec.API_VERSIONS, 3, sample(codec.API_VERSIONS, "")).error_code == 0
            assert high_watermark(broker, topic) == 4
            answer = request(broker, codec.FETCH, 12, fetch_fields(topic, 3))
            assert answer.responses[0].partitions[0].error_code == 0
            assert time.monotonic() - started < 2.0, "another client waited behind the one that does not read"
        grown = rss_mib(broker) - before
        print(f"{sent} fetches of 1 MiB sent before the broker stopped reading; it grew {grown:.0f} MiB")
        assert grown < 300, f"the broker grew {grown:.0f} MiB for {sent} unread answers of 1 MiB"
    finally:
        hog.close()
    assert_serving(broker)


def test_frames_waiting_for_the_in_flight_budget_are_not_held_in_memory(scratch):
    """max_inflight_bytes (8 MiB here) bounds what the broker holds of requests not yet answered: a
    frame that does not fit waits unread (in the socket) rather than read and waiting in memory."""
    holder = connect(scratch)
    others: list[socket.socket] = []
    try:
        # a long poll holds its frame (and the 7 MiB frame queued behind it) against the budget
        holder.sendall(encode(codec.FETCH, 11, fetch_fields(TOPIC, 1, max_wait_ms=5000)))
        big = sized(struct.pack(">hhi", codec.METADATA, 1, 9) + b"\x00\x00" + b"\x00" * (7 << 20))
        holder.sendall(big)
        time.sleep(0.3)
        before = rss_mib(scratch)
        for _ in range(20):
            s = connect(scratch)
            others.append(s)
            s.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                s.sendall(big)  # what the broker does not take stays in the socket buffers
        time.sleep(1.0)
        grown = rss_mib(scratch) - before
        others[0].settimeout(0.2)
        with pytest.raises(TimeoutError):
            read_frame(others[0])  # still waiting for the budget, as it should
        assert grown < 64, f"{grown:.0f} MiB held for 20 frames of 7 MiB waiting for an 8 MiB budget"
    finally:
        for s in [holder, *others]:
            s.close()


# -- 4. produce edge cases ---------------------------------------------------------------------------------
CORRUPT_MESSAGE, UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC = 2, 3, 17
OUT_OF_ORDER_SEQUENCE, INVALID_REQUEST = 45, 42


def recrc(data: bytes | bytearray) -> bytes:
    """The batch with its CRC-32C (of everything from the attributes on) made right again."""
    data = bytearray(data)
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    return bytes(data)


def patched(data: bytes, at: int, fmt: str, value: int, fix_crc: bool = True) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return recrc(out) if fix_crc else bytes(out)


def legacy_message_set(magic: int) -> bytes:
    builder = LegacyRecordBatchBuilder(magic, 0, 1 << 20)
    builder.append(0, timestamp=1_700_000_000_000 if magic else None, key=None, value=b"old")
    return bytes(builder.build())


ONE, TWO = batch([b"a"]), batch([b"a", b"b"])
# Batch v2 layout: base offset 0, length 8, leader epoch 12, magic 16, crc 17, attributes 21,
# last offset delta 23, first timestamp 27, max timestamp 35, producer id 43, epoch 51, sequence 53, count 57.
BAD_RECORDS = {
    "crc-field-wrong": (patched(ONE, 17, ">I", 0x12345678, fix_crc=False), CORRUPT_MESSAGE),
    "a-payload-byte-flipped": (ONE[:-1] + bytes([ONE[-1] ^ 1]), CORRUPT_MESSAGE),
    "count-5-delta-0": (patched(ONE, 57, ">i", 5), CORRUPT_MESSAGE),
    "count-5-delta-4-of-1-record": (patched(patched(ONE, 57, ">i", 5), 23, ">i", 4), CORRUPT_MESSAGE),
    "count-0": (patched(patched(ONE, 57, ">i", 0), 23, ">i", -1), CORRUPT_MESSAGE),
    "count-1-of-2-records": (patched(patched(TWO, 57, ">i", 1), 23, ">i", 0), CORRUPT_MESSAGE),
    "count-2^31-1": (patched(patched(ONE, 57, ">i", 2**31 - 1), 23, ">i", 2**31 - 2), CORRUPT_MESSAGE),
    "magic-0-message-set": (legacy_message_set(0), CORRUPT_MESSAGE),
    "magic-1-message-set": (legacy_message_set(1), CORRUPT_MESSAGE),
    "magic-1-in-a-v2-header": (patched(ONE, 16, ">b", 1), CORRUPT_MESSAGE),
    "empty-records": (b"", CORRUPT_MESSAGE),
    "null-records": (None, CORRUPT_MESSAGE),
    "transactional-batch": (patched(ONE, 21, ">h", 0x10), CORRUPT_MESSAGE),
    "control-batch": (patched(ONE, 21, ">h", 0x20), CORRUPT_MESSAGE),
    "transactional-control-batch": (patched(ONE, 21, ">h", 0x30), CORRUPT_MESSAGE),
    "codec-7": (patched(ONE, 21, ">h", 7), CORRUPT_MESSAGE),
    "gzip-flag-on-plain-records": (patched(ONE, 21, ">h", 1), CORRUPT_MESSAGE),
    "zstd-flag-on-plain-records": (patched(ONE, 21, ">h", 4), CORRUPT_MESSAGE),
    "good-batch-then-garbage": (ONE + b"\x00" * 7, CORRUPT_MESSAGE),
    "good-batch-then-bad-crc": (ONE + patched(ONE, 17, ">I", 1, fix_crc=False), CORRUPT_MESSAGE),
    "length-cut-short": (patched(ONE, 8, ">i", 49, fix_crc=False), CORRUPT_MESSAGE),
    "length-past-the-end": (patched(ONE, 8, ">i", 10**6, fix_crc=False), CORRUPT_MESSAGE),
    "length-negative": (patched(ONE, 8, ">i", -1, fix_crc=False), CORRUPT_MESSAGE),
    "max-timestamp-lies": (patched(ONE, 35, ">q", 5), CORRUPT_MESSAGE),
    "a-header-only": (ONE[:61], CORRUPT_MESSAGE),
    "new-producer-starting-at-sequence-5": (batch([b"x"], 1234567, 0, 5), OUT_OF_ORDER_SEQUENCE),
    "new-producer-negative-sequence": (batch([b"x"], 1234568, 0, -7), OUT_OF_ORDER_SEQUENCE),
}


@pytest.fixture(scope="module")
def edge_topic(broker) -> str:
    topic = unique("edges")
    request(broker, codec.METADATA, 4, {"topics": [{"name": topic}], "allow_auto_topic_creation": True})
    answer = request(broker, codec.PRODUCE, 8, produce_fields(topic, batch([b"first"])))
    assert answer.responses[0].partition_responses[0].error_code == 0
    return topic


def produce_once(server: ServerProcess, version: int, fields: dict) -> list:
    answer = request(server, codec.PRODUCE, version, fields)
    assert answer is not None, f"Produce v{version}: the connection was closed instead of an error code"
    return [(p.index, p.error_code) for t in answer.responses for p in t.partition_responses]


@pytest.mark.parametrize("case", BAD_RECORDS)
def test_bad_records_get_their_error_code_and_append_nothing(broker, edge_topic, case):
    records, code = BAD_RECORDS[case]
    if code == OUT_OF_ORDER_SEQUENCE:
        records = batch([b"x"], random.Random(SEED).randrange(1 << 40) + len(case), 0, -7 if "negative" in case else 5)
    before = high_watermark(broker, edge_topic)
    for version in (3, 8, 9, 12):
        assert produce_once(broker, version, produce_fields(edge_topic, records)) == [(0, code)], f"v{version}"
    with connect(broker) as s:  # acks=0: no answer, nothing appended, and the connection serves on
        s.settimeout(ANSWER_TIMEOUT_S)
        s.sendall(encode(codec.PRODUCE, 9, produce_fields(edge_topic, records, acks=0), 5))
        s.sendall(encode(codec.API_VERSIONS, 0, {}, 6))
        answer = read_frame(s)
        assert answer is not None and struct.unpack_from(">i", answer)[0] == 6
    assert high_watermark(broker, edge_topic) == before, "a refused batch was appended"
    assert produce_once(broker, 8, produce_fields(edge_topic, batch([b"good"]))) == [(0, 0)]
    assert high_watermark(broker, edge_topic) == before + 1


@pytest.mark.parametrize(
    "name",
    ["../x", "", "x" * 300, ".", "..", "a/b", "a b", "\u00e9t\u00e9", "x" * 249 + "y"],
    ids=["dotdot-slash", "empty", "300-chars", "dot", "dotdot", "slash", "space", "non-ascii", "250-chars"],
)
def test_produce_to_an_invalid_topic_name_is_unknown_and_creates_nothing(broker, name):
    from tidelog.client import Admin

    for version in (3, 9, 12):
        assert produce_once(broker, version, produce_fields(name, batch([b"x"]))) == [(0, UNKNOWN_TOPIC_OR_PARTITION)]
    metadata = request(broker, codec.METADATA, 4, {"topics": [{"name": name}], "allow_auto_topic_creation": True})
    assert metadata.topics[0].error_code == INVALID_TOPIC, "auto-creating an invalid name is refused as invalid"
    with Admin(broker.target) as admin:
        assert name not in admin.list_topics()


@pytest.mark.parametrize("partition", [-1, 1, 99999, 2**31 - 1, -(2**31)])
def test_produce_to_a_partition_that_does_not_exist_is_unknown_and_appends_nothing(broker, edge_topic, partition):
    before = high_watermark(broker, edge_topic)
    for version in (3, 9, 12):
        fields = produce_fields(edge_topic, batch([b"x"]), partition=partition)
        assert produce_once(broker, version, fields) == [(partition, UNKNOWN_TOPIC_OR_PARTITION)]
    assert high_watermark(broker, edge_topic) == before


@pytest.mark.parametrize("topic", ["__consumer_offsets", "__queue_state"])
def test_produce_to_an_internal_topic_is_refused_and_appends_nothing(broker, topic):
    from tidelog.client import Admin

    metadata = request(broker, codec.METADATA, 4, {"topics": [{"name": topic}], "allow_auto_topic_creation": False})
    exists = metadata.topics[0].error_code == 0
    before = high_watermark(broker, topic) if exists else None
    forged = batch([b'["forged-group", "t", 0]'])
    for version in (3, 8, 9, 12):
        expected = INVALID_TOPIC if exists else UNKNOWN_TOPIC_OR_PARTITION
        assert produce_once(broker, version, produce_fields(topic, forged)) == [(0, expected)]
        assert produce_once(broker, version, produce_fields(topic, forged, partition=7)) != [(7, 0)]
    if exists:
        assert high_watermark(broker, topic) == before
        with Admin(broker.target) as admin:
            assert admin.list_offsets(topic, 0).high_watermark == before
    metadata = request(broker, codec.METADATA, 4, {"topics": [{"name": topic}], "allow_auto_topic_creation": True})
    assert (metadata.topics[0].error_code == 0) == exists, "a client created an internal topic"


def test_a_transactional_produce_is_refused_and_appends_nothing(broker, edge_topic):
    before = high_watermark(broker, edge_topic)
    fields = {**produce_fields(edge_topic, batch([b"tx"])), "transactional_id": "tx-1"}
    for version in (3, 8, 12):
        assert produce_once(broker, version, fields) == [(0, INVALID_REQUEST)]
    assert high_watermark(broker, edge_topic) == before


# -- 5. the group protocol -----------------------------------------------------------------------------
UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL = 25, 22, 23
INVALID_SESSION_TIMEOUT, NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND, OFFSET_OUT_OF_RANGE = 26, 68, 69, 1
INVALID_GROUP_ID, OFFSET_METADATA_TOO_LARGE = 24, 12


def join(server: ServerProcess, group: str, version: int = 5, **fields: Any) -> Any:
    answer = request(server, codec.JOIN_GROUP, version, {**sample(codec.JOIN_GROUP, group), **fields})
    assert answer is not None, "JoinGroup: the connection was closed"
    return answer


def member_of(server: ServerProcess, group: str) -> tuple[str, int]:
    """A classic member (the leader, alone) of a Stable group: (member id, generation)."""
    joined = join(server, group, session_timeout_ms=30000)
    assert joined.error_code == 0
    synced = request(
        server,
        codec.SYNC_GROUP,
        3,
        {
            **sample(codec.SYNC_GROUP, group),
            "generation_id": joined.generation_id,
            "member_id": joined.member_id,
            "assignments": [{"member_id": joined.member_id, "assignment": b"mine"}],
        },
    )
    assert synced.error_code == 0 and synced.assignment == b"mine"
    return joined.member_id, joined.generation_id


def commit(
    server: ServerProcess,
    group: str,
    offsets: dict,
    version: int = 8,
    generation: int = -1,
    member: str = "",
    metadata: Any = "",
) -> list[int]:
    """OffsetCommit of {(topic, partition): offset}: the error code of each partition."""
    by_topic: dict[str, list] = {}
    for (topic, partition), offset in offsets.items():
        by_topic.setdefault(topic, []).append(
            {
                "partition_index": partition,
                "committed_offset": offset,
                "committed_leader_epoch": -1,
                "committed_metadata": metadata[partition] if isinstance(metadata, dict) else metadata,
            }
        )
    answer = request(
        server,
        codec.OFFSET_COMMIT,
        version,
        {
            **sample(codec.OFFSET_COMMIT, group),
            "generation_id_or_member_epoch": generation,
            "member_id": member,
            "topics": [{"name": t, "partitions": parts} for t, parts in by_topic.items()],
        },
    )
    assert answer is not None, "OffsetCommit: the connection was closed instead of an error code"
    return [p.error_code for t in answer.topics for p in t.partitions]


def committed(server: ServerProcess, group: str, topic: str, partitions=(0,), version: int = 5) -> list:
    """OffsetFetch: (offset, metadata) of each partition."""
    answer = request(
        server,
        codec.OFFSET_FETCH,
        version,
        {
            **sample(codec.OFFSET_FETCH, group),
            "topics": [{"name": topic, "partition_indexes": list(partitions)}],
        },
    )
    assert answer is not None, f"OffsetFetch v{version}: the connection was closed"
    assert answer.error_code == 0
    return [(p.committed_offset, p.metadata) for t in answer.topics for p in t.partitions]


def test_requests_naming_a_made_up_member_or_generation_are_fenced_and_change_nothing(broker):
    group = unique("fenced")
    member, generation = member_of(broker, group)
    assert commit(broker, group, {(TOPIC, 0): 2}, generation=generation, member=member) == [0]

    def heartbeat(generation_id: int, member_id: str) -> int:
        fields = {**sample(codec.HEARTBEAT, group), "generation_id": generation_id, "member_id": member_id}
        return request(broker, codec.HEARTBEAT, 4, fields).error_code

    def sync(generation_id: int, member_id: str) -> int:
        fields = {
            **sample(codec.SYNC_GROUP, group),
            "generation_id": generation_id,
            "member_id": member_id,
            "assignments": [{"member_id": member, "assignment": b"stolen"}],
        }
        return request(broker, codec.SYNC_GROUP, 5, fields).error_code

    for generation_id, member_id, code in [
        (generation, "made-up", UNKNOWN_MEMBER_ID),
        (generation, "", UNKNOWN_MEMBER_ID),
        (generation + 1, member, ILLEGAL_GENERATION),
        (-1, member, ILLEGAL_GENERATION),
        (2**31 - 1, member, ILLEGAL_GENERATION),
    ]:
        assert heartbeat(generation_id, member_id) == code, (generation_id, member_id)
        assert sync(generation_id, member_id) == code, (generation_id, member_id)
        assert commit(broker, group, {(TOPIC, 0): 0}, generation=generation_id, member=member_id) == [code]
    assert commit(broker, group, {(TOPIC, 0): 0}) == [NON_EMPTY_GROUP], "an admin commit to a group with members"
    assert join(broker, group, member_id="made-up").error_code == UNKNOWN_MEMBER_ID
    leave = request(broker, codec.LEAVE_GROUP, 3, {"group_id": group, "members": [{"member_id": "made-up"}]})
    assert [m.error_code for m in leave.members] == [UNKNOWN_MEMBER_ID]
    deleted = request(broker, codec.DELETE_GROUPS, 2, {"groups_names": [group]})
    assert deleted.results[0].error_code == NON_EMPTY_GROUP
    # the member is untouched: its commit stands, its assignment is its own, its heartbeats go through
    assert committed(broker, group, TOPIC) == [(2, "")]
    assert heartbeat(generation, member) == 0
    assert (
        request(
            broker,
            codec.SYNC_GROUP,
            3,
            {**sample(codec.SYNC_GROUP, group), "generation_id": generation, "member_id": member},
        ).assignment
        == b"mine"
    )


@pytest.mark.parametrize(
    "fields, code",
    [
        ({"protocols": []}, INCONSISTENT_GROUP_PROTOCOL),
        ({"protocol_type": ""}, INCONSISTENT_GROUP_PROTOCOL),
        ({"session_timeout_ms": 2**31 - 1}, INVALID_SESSION_TIMEOUT),
        ({"session_timeout_ms": 30 * 60 * 1000 + 1}, INVALID_SESSION_TIMEOUT),
        ({"session_timeout_ms": 999}, INVALID_SESSION_TIMEOUT),
        ({"session_timeout_ms": 0}, INVALID_SESSION_TIMEOUT),
        ({"session_timeout_ms": -1}, INVALID_SESSION_TIMEOUT),
        ({"member_id": "never-joined"}, UNKNOWN_MEMBER_ID),
        ({"group_id": ""}, INVALID_GROUP_ID),
    ],
    ids=[
        "no-protocols",
        "no-protocol-type",
        "session-2^31-1",
        "session-over-30-min",
        "session-999-ms",
        "session-0",
        "session-negative",
        "unknown-member",
        "empty-group-id",
    ],
)
def test_join_group_with_bad_arguments_is_refused_with_its_code(broker, fields, code):
    group = unique("bad-join")
    for version in (0, 5, 9):
        answer = join(broker, group, version, **{"group_id": f"{group}-v{version}", **fields})
        assert answer.error_code == code, f"JoinGroup v{version}"
    described = request(broker, codec.DESCRIBE_GROUPS, 5, {"groups": [f"{group}-v0"]})
    assert described.groups[0].members == [], "a refused join left a member"


def test_commits_out_of_bounds_or_to_internal_topics_are_refused_and_store_nothing(broker, edge_topic):
    group = unique("bad-commit")
    end = high_watermark(broker, edge_topic)
    assert commit(broker, group, {("__consumer_offsets", 0): 0}) == [INVALID_TOPIC]
    assert commit(broker, group, {("__queue_state", 0): 0}) == [INVALID_TOPIC]
    assert commit(broker, group, {(edge_topic, 0): -5}) == [OFFSET_OUT_OF_RANGE]
    assert commit(broker, group, {(edge_topic, 0): -(2**63)}) == [OFFSET_OUT_OF_RANGE]
    assert commit(broker, group, {(edge_topic, 0): end + 1}) == [OFFSET_OUT_OF_RANGE]
    assert commit(broker, group, {(edge_topic, 0): 2**63 - 1}) == [OFFSET_OUT_OF_RANGE]
    assert commit(broker, group, {(edge_topic, 99): 0}) == [UNKNOWN_TOPIC_OR_PARTITION]
    assert commit(broker, group, {(edge_topic, -1): 0}) == [UNKNOWN_TOPIC_OR_PARTITION]
    assert commit(broker, group, {(unique("no-such-topic"), 0): 0}) == [UNKNOWN_TOPIC_OR_PARTITION]
    assert commit(broker, group, {(edge_topic, 0): 0}, generation=5, member="made-up") == [UNKNOWN_MEMBER_ID]
    assert committed(broker, group, edge_topic) == [(-1, "")], "a refused commit was stored"
    listed = request(broker, codec.LIST_GROUPS, 5, {})
    assert group not in [g.group_id for g in listed.groups]


def test_offsets_and_descriptions_of_a_group_that_does_not_exist_are_empty_not_errors(broker):
    group = unique("nobody-home")
    for version in (1, 5, 7):
        assert committed(broker, group, TOPIC, (0, 5), version) == [(-1, ""), (-1, "")]
    answer = request(broker, codec.OFFSET_FETCH, 8, {"groups": [{"group_id": group, "topics": None}]})
    assert [(g.group_id, g.error_code, g.topics) for g in answer.groups] == [(group, 0, [])]
    described = request(broker, codec.DESCRIBE_GROUPS, 5, {"groups": [group]})
    assert (described.groups[0].error_code, described.groups[0].group_state) == (0, "Dead")
    deleted = request(broker, codec.DELETE_GROUPS, 2, {"groups_names": [group]})
    assert deleted.results[0].error_code == GROUP_ID_NOT_FOUND
    left = request(broker, codec.LEAVE_GROUP, 0, {"group_id": group, "member_id": "x"})
    assert left.error_code == UNKNOWN_MEMBER_ID
    heartbeat = request(broker, codec.HEARTBEAT, 0, {"group_id": group, "generation_id": 0, "member_id": "x"})
    assert heartbeat.error_code == UNKNOWN_MEMBER_ID


def test_a_kafka_client_cannot_touch_a_group_of_tidelogs_own_protocol(broker, edge_topic):
    """The group's members are tidelog GroupConsumers (gRPC): a Kafka client may not join it, commit
    over its members' offsets, or delete it."""
    from tidelog.client import Admin
    from tidelog.client.group_consumer import GroupConsumer

    group = unique("native")
    member = GroupConsumer(broker.target, group, [edge_topic], auto_commit=False, session_timeout_ms=10000)
    try:
        deadline = time.monotonic() + 15
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.2)
        member.commit({(edge_topic, 0): 1})
        assert join(broker, group).error_code == INCONSISTENT_GROUP_PROTOCOL
        assert commit(broker, group, {(edge_topic, 0): 0}) == [NON_EMPTY_GROUP]
        assert commit(broker, group, {(edge_topic, 0): 0}, generation=1, member="made-up") == [UNKNOWN_MEMBER_ID]
        deleted = request(broker, codec.DELETE_GROUPS, 2, {"groups_names": [group]})
        assert deleted.results[0].error_code == NON_EMPTY_GROUP
        with Admin(broker.target) as admin:
            assert admin.committed_offsets(group) == {(edge_topic, 0): 1}
    finally:
        member.close()


# -- known bugs: state a client can corrupt --------------------------------------------------------------
def test_each_partition_keeps_the_metadata_committed_with_it(broker):
    topic = unique("two-partitions")
    created = request(
        broker,
        codec.CREATE_TOPICS,
        5,
        {
            "topics": [{"name": topic, "num_partitions": 2, "replication_factor": 1, "assignments": [], "configs": []}],
            "timeout_ms": 1000,
            "validate_only": False,
        },
    )
    assert created.topics[0].error_code == 0
    for p in (0, 1):
        request(broker, codec.PRODUCE, 8, produce_fields(topic, batch([b"x"]), partition=p))
    group = unique("metadata")
    assert commit(broker, group, {(topic, 0): 1, (topic, 1): 1}, metadata={0: "zero", 1: "one"}) == [0, 0]
    assert committed(broker, group, topic, (0, 1)) == [(1, "zero"), (1, "one")]


def test_committed_metadata_over_the_limit_is_refused(broker):
    group = unique("big-metadata")
    assert commit(broker, group, {(TOPIC, 0): 1}, version=8, metadata="m" * 40000) == [OFFSET_METADATA_TOO_LARGE]
    for version in (1, 5, 6):
        committed(broker, group, TOPIC, (0,), version)  # answered, whatever was stored


def test_a_huge_group_id_cannot_break_list_groups_of_older_versions(scratch):
    """(Before the null group id test below, which breaks ListGroups of every version.)"""
    commit(scratch, "g" * 40000, {(TOPIC, 0): 1}, version=8)
    for version in (0, 2, 3):
        assert request(scratch, codec.LIST_GROUPS, version, {}) is not None, f"ListGroups v{version} failed"


def test_a_null_group_id_is_refused_and_cannot_break_list_groups(scratch):
    from tidelog.client import Admin

    assert commit(scratch, unique("fine"), {(TOPIC, 0): 1}, version=2) == [0]
    request(scratch, codec.OFFSET_COMMIT, 2, {**sample(codec.OFFSET_COMMIT, "x"), "group_id": None})
    # v3: not v0-v2, which the test above may have broken already
    assert request(scratch, codec.LIST_GROUPS, 3, {}) is not None, "ListGroups failed in its handler"
    with Admin(scratch.target) as admin:
        admin.list_groups()


def test_a_long_client_id_gets_a_member_id_every_version_can_carry(broker):
    group = unique("long-client-id")
    joined = request(broker, codec.JOIN_GROUP, 5, sample(codec.JOIN_GROUP, group), client_id="c" * 32767)
    described = request(broker, codec.DESCRIBE_GROUPS, 4, {"groups": [group]})
    assert joined is not None, "JoinGroup failed in its handler"
    assert described is not None, "DescribeGroups failed in its handler"


def test_init_producer_id_cannot_take_over_another_producers_id(broker, edge_topic):
    """Kafka answers an InitProducerId without a transactional id with a new producer id, whatever the
    request names (KIP-360's epoch bump is for transactional producers)."""

    def init(producer_id: int = -1, epoch: int = -1) -> Any:
        fields = {**sample(codec.INIT_PRODUCER_ID, ""), "producer_id": producer_id, "producer_epoch": epoch}
        answer = request(broker, codec.INIT_PRODUCER_ID, 4, fields)
        assert answer.error_code == 0
        return answer

    def produce(producer_id: int, epoch: int, sequence: int) -> list:
        return produce_once(broker, 9, produce_fields(edge_topic, batch([b"idem"], producer_id, epoch, sequence)))

    victim = init()
    assert produce(victim.producer_id, victim.producer_epoch, 0) == [(0, 0)]
    thief = init(victim.producer_id, victim.producer_epoch)
    assert produce(thief.producer_id, thief.producer_epoch, 0) == [(0, 0)]
    assert produce(victim.producer_id, victim.producer_epoch, 1) == [(0, 0)], "the victim was fenced"
    assert thief.producer_id != victim.producer_id


@pytest.mark.parametrize(
    "name, partitions",
    [
        ("../x", 1),
        ("", 1),
        ("x" * 300, 1),
        ("__private", 1),
        ("fine-name", 0),
        ("fine-name", -5),
        ("fine-name", 2**31 - 1),
    ],
    ids=["dotdot-slash", "empty", "300-chars", "internal", "0-partitions", "negative-partitions", "2^31-1-partitions"],
)
def test_create_topics_validate_only_answers_what_the_create_would(broker, name, partitions):
    fields = {
        "topics": [
            {"name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [], "configs": []}
        ],
        "timeout_ms": 1000,
    }
    created = request(broker, codec.CREATE_TOPICS, 5, {**fields, "validate_only": False}).topics[0].error_code
    assert created != 0, "a topic was created"
    checked = request(broker, codec.CREATE_TOPICS, 5, {**fields, "validate_only": True}).topics[0].error_code
    assert checked == created, f"validate_only answered {checked}, the create {created}"
