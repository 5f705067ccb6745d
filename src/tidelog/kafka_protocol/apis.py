"""One handler per Kafka API, translating to the engine, the offset store and the classic groups.

Handlers are thin: a request in (decoded by the codec, or walked by hand for Produce), the engine
called through its async facade (and, in a cluster, the Topology: leaders, placement, the group
coordinator, topology.py), a response out (fields for the codec, or parts for Fetch). Errors of
one partition, topic or group go into that entry's error code (errors.code_of); nothing a client sends
raises out of here except a MalformedError, on which the connection is closed.

Event-loop only; blocking work (engine calls, offset-store writes) runs in the engine's pool.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from ..config import TopicConfig
from ..engine.async_engine import AsyncEngine
from ..engine.engine import is_internal_topic
from ..engine.results import FetchResult
from ..engine.topic import validate_topic_name
from ..errors import (
    InvalidConfigError,
    InvalidTopicError,
    NotCoordinatorError,
    OffsetOutOfRangeError,
    TidelogError,
    TopicExistsError,
    UnknownGroupError,
    UnknownTopicError,
)
from ..groups.coordinator import GroupCoordinator
from ..security.acls import CLUSTER
from ..security.authorizer import audit_done, caller
from ..values import ProduceResult
from . import classic_groups, codec, produce, topic_configs
from . import errors as kerr
from .access import KafkaAccess
from .fetch import PartitionFetch, response_parts
from .topology import Node, PartitionPlacement, Topology

log = logging.getLogger("tidelog.kafka")

NOT_REQUESTED = None  # the codec writes INT32_MIN, Kafka's "not requested"
EARLIEST, LATEST = -2, -1
TOPIC_RESOURCE, BROKER_RESOURCE = 2, 4
GROUP_KEY, TRANSACTION_KEY = 0, 1
MAX_METADATA_BYTES = 4096  # a committed offset's metadata (Kafka: offset.metadata.max.bytes)


def _group_id_error(group_id: object) -> int:
    """INVALID_GROUP_ID for a group id tidelog's groups cannot hold (as its own coordinator's rule)."""
    if not isinstance(group_id, str) or not group_id or len(group_id) > classic_groups.MAX_GROUP_ID_CHARS:
        return kerr.INVALID_GROUP_ID
    return kerr.NONE


class FetchParts(NamedTuple):
    """A response written by hand: its parts (bytes and segment memoryviews) and their total size."""

    parts: list
    size: int


class KafkaApis:
    def __init__(
        self,
        engine: AsyncEngine,
        coordinator: Callable[[], GroupCoordinator | None],
        groups: classic_groups.ClassicGroups,
        node: Callable[[], Node],
        cluster_id: str,
        *,
        auto_create_topics: bool,
        max_fetch_bytes: int,
        max_fetch_wait_ms: int,
        errors: Callable[[str, int], None] = lambda api, code: None,
        topology: Topology | None = None,
        access: KafkaAccess | None = None,
    ) -> None:
        self.engine = engine
        self.access = access if access is not None else KafkaAccess(None)  # who may do what (the ACLs)
        self._coordinator = coordinator  # None in a cluster while another broker coordinates the groups
        self.topology = topology  # in a cluster: where partitions, topics and the coordinator are
        self.groups = groups
        self.node = node
        self.cluster_id = cluster_id
        self.auto_create_topics = auto_create_topics
        self.max_fetch_bytes = max_fetch_bytes
        self.max_fetch_wait_ms = max_fetch_wait_ms
        self._errors = errors  # (api name, error code): counted per API on the metrics endpoint

    def _error(self, api: str, code: int) -> int:
        if code:
            self._errors(api, code)
        return code

    # -- metadata ---------------------------------------------------------------------------------
    async def api_versions(self, req: Any, version: int) -> dict:
        return {
            "error_code": 0,
            "api_keys": [
                {"api_key": a.key, "min_version": a.min_version, "max_version": a.max_version}
                for a in sorted(codec.SERVED.values())
            ],
            "throttle_time_ms": 0,
        }

    async def metadata(self, req: Any, version: int) -> dict:
        node = self.node()
        brokers, controller_id = [node], node.node_id
        if self.topology is not None:
            brokers, controller_id = self.topology.brokers(), self.topology.controller_id()
        if req.topics is None or (version == 0 and not req.topics):
            names = self.topology.topic_names() if self.topology is not None else await self.engine.list_topics()
            names = [n for n in names if self.access.allows("describe", "topic", n)]  # the others unlisted
        else:
            names = [t.name for t in req.topics]
        auto = self.auto_create_topics and (req.allow_auto_topic_creation if version >= 4 else True)
        topics = [await self._topic_metadata(name, auto, node.node_id, req) for name in names]
        out: dict[str, Any] = {
            "throttle_time_ms": 0,
            "brokers": [{"node_id": b.node_id, "host": b.host, "port": b.port, "rack": None} for b in brokers],
            "cluster_id": self.cluster_id,
            "controller_id": controller_id,
            "topics": topics,
        }
        if 8 <= version <= 10:
            out["authorized_operations"] = (
                self.access.operations("cluster") if req.include_cluster_authorized_operations else NOT_REQUESTED
            )
        return out

    async def _topic_metadata(self, name: str | None, auto: bool, node_id: int, req: Any) -> dict:
        operations = NOT_REQUESTED
        if name is not None and getattr(req, "include_topic_authorized_operations", False):
            operations = self.access.operations("topic", name)
        entry: dict[str, Any] = {
            "name": name,
            "is_internal": False,
            "partitions": [],
            "authorized_operations": operations,
        }
        if name is None:
            entry["error_code"] = self._error("Metadata", kerr.UNKNOWN_TOPIC_OR_PARTITION)
            return entry
        refused = self.access.code("describe", "topic", name)
        if refused:
            entry["error_code"] = self._error("Metadata", refused)
            return entry
        auto = auto and self.access.allows("create", "topic", name)
        try:
            if self.topology is not None:
                placement = await self._placement(self.topology, name, auto)
            else:
                placement = await self._local_placement(name, auto, node_id)
        except TidelogError as exc:
            entry["error_code"] = self._error("Metadata", kerr.code_of(exc))
            return entry
        if placement is None:  # created a moment ago in a cluster: no leaders yet, as Kafka answers
            entry["error_code"] = self._error("Metadata", kerr.LEADER_NOT_AVAILABLE)
            return entry
        entry["error_code"] = 0
        entry["is_internal"] = is_internal_topic(name)
        entry["partitions"] = [
            {
                "error_code": kerr.LEADER_NOT_AVAILABLE if p.leader == -1 else 0,
                "partition_index": p.partition,
                "leader_id": p.leader,
                "leader_epoch": p.leader_epoch,
                "replica_nodes": p.replicas,
                "isr_nodes": p.isr,
                "offline_replicas": p.offline,
            }
            for p in placement
        ]
        return entry

    async def _auto_create(self, name: str) -> None:
        try:
            if self.topology is not None:
                await self.topology.create_topic(name, 1, -1, {}, False)  # as a single broker's: 1 partition
            else:
                await self.engine.create_topic(name)
            log.info("topic created for a Kafka client", extra={"event": "kafka_topic_auto_created", "topic": name})
        except TopicExistsError:
            pass

    async def _local_placement(self, name: str, auto: bool, node_id: int) -> list[PartitionPlacement]:
        """A single broker's topic (created first when allowed): this broker leads every partition."""
        if not self.engine.has_topic(name):
            if not auto:
                raise UnknownTopicError(f"unknown topic {name!r}")
            await self._auto_create(name)
        described = await self.engine.describe(name)
        return [PartitionPlacement(p, node_id, -1, [node_id], [node_id], []) for p in range(len(described.partitions))]

    async def _placement(self, topology: Topology, name: str, auto: bool) -> list[PartitionPlacement] | None:
        """A cluster's topic: each partition's leader, epoch and replicas from etcd's state; None for a
        topic auto-created here (the client asks again once its leaders are elected)."""
        try:
            return topology.placement(name)
        except UnknownTopicError:
            if not auto or is_internal_topic(name):
                raise
        await self._auto_create(name)
        return None

    async def find_coordinator(self, req: Any, version: int) -> dict:
        node = self.node()
        elsewhere: TidelogError | None = None
        if self.topology is not None:
            try:
                node = self.topology.coordinator()
            except TidelogError as exc:
                elsewhere = exc

        def one(key_type: int, key: str) -> dict:
            why = "transactions are not supported" if key_type == TRANSACTION_KEY else None
            refused = self.access.refusal("describe", "group", key) if why is None else None
            if refused is not None:
                code = self._error("FindCoordinator", refused.code)
                return {"error_code": code, "error_message": refused.message, "node_id": -1, "host": "", "port": -1}
            if why is None and elsewhere is not None:
                why = kerr.message_of(elsewhere)
            if why is not None:
                code = self._error("FindCoordinator", kerr.COORDINATOR_NOT_AVAILABLE)
                return {"error_code": code, "error_message": why, "node_id": -1, "host": "", "port": -1}
            return {
                "error_code": 0,
                "error_message": None,
                "node_id": node.node_id,
                "host": node.host,
                "port": node.port,
            }

        if version >= 4:
            return {
                "throttle_time_ms": 0,
                "coordinators": [{"key": key, **one(req.key_type, key)} for key in req.coordinator_keys],
            }
        return {"throttle_time_ms": 0, **one(req.key_type if version >= 1 else GROUP_KEY, req.key)}

    # -- produce ----------------------------------------------------------------------------------
    async def produce(self, requests: list[produce.ProduceRequest]) -> list[list[produce.Outcome]]:
        """Several Produce requests of one connection, appended in one engine call (in their order, one
        fsync under fsync="always"); the outcomes of each. In a cluster, appended as the partitions'
        leader and answered at each request's acks level (all: once every in-sync replica has them)."""
        appends: list[tuple[str, int, memoryview]] = []
        acks: list[int] = []
        slots: list[list[produce.Outcome | int]] = []
        refusals: dict[str, Any] = {}  # per topic, asked once for all the requests
        for request in requests:
            slot: list[produce.Outcome | int] = []
            for p in request.partitions:
                if p.topic not in refusals:
                    refusals[p.topic] = self.access.refusal("produce", "topic", p.topic)
                refused = refusals[p.topic]
                if refused is not None:
                    slot.append(produce.Outcome(p.topic, p.partition, refused.code, -1, refused.message))
                elif request.transactional_id is not None:
                    slot.append(
                        produce.Outcome(p.topic, p.partition, kerr.INVALID_REQUEST, -1, produce.NO_TRANSACTIONS)
                    )
                elif p.records is None or not len(p.records):
                    slot.append(produce.Outcome(p.topic, p.partition, kerr.CORRUPT_MESSAGE, -1, "no records"))
                elif self.topology is None and not self.engine.has_topic(p.topic):
                    slot.append(produce.Outcome(p.topic, p.partition, kerr.UNKNOWN_TOPIC_OR_PARTITION, -1, None))
                else:
                    slot.append(len(appends))
                    appends.append((p.topic, p.partition, p.records))
                    acks.append(request.acks)
            slots.append(slot)
        results: list[ProduceResult | TidelogError] = []
        if appends:
            if self.topology is not None:
                results = await self.topology.append(appends, acks)
            else:
                now = self.engine.try_append(*appends[0]) if len(appends) == 1 else None  # (no pool hop)
                results = [now] if now is not None else await self.engine.append_many(appends)
        out = []
        for request, slot in zip(requests, slots):
            outcomes = []
            for p, s in zip(request.partitions, slot):
                if isinstance(s, produce.Outcome):
                    outcomes.append(s)
                    continue
                result = results[s]
                if isinstance(result, ProduceResult):
                    outcomes.append(produce.Outcome(p.topic, p.partition, 0, result.base_offset))
                else:
                    outcomes.append(
                        produce.Outcome(p.topic, p.partition, kerr.code_of(result), -1, kerr.message_of(result))
                    )
            for o in outcomes:
                self._error("Produce", o.error)
            out.append(outcomes)
        return out

    async def init_producer_id(self, req: Any, version: int) -> dict:
        """A producer id for an idempotent producer: random 62 bits, as tidelog's own producer picks
        (nothing to store: each partition dedups by producer id, epoch and sequence). Always a new one,
        also when the request names the producer's current id and epoch (KIP-360), as Kafka does
        without a transactional id: bumping the epoch of a named id would let any client that read a
        batch (whose header carries the id) fence that producer."""
        if req.transactional_id is not None:
            return {"throttle_time_ms": 0, "error_code": self._error("InitProducerId", kerr.INVALID_REQUEST),
                    "producer_id": -1, "producer_epoch": -1}  # fmt: skip
        return {"throttle_time_ms": 0, "error_code": 0, "producer_id": secrets.randbits(62), "producer_epoch": 0}

    # -- fetch and offsets ------------------------------------------------------------------------
    async def fetch(self, req: Any, version: int) -> FetchParts:
        """Whole batches from each partition's fetch offset; waits (on the partitions' append signals,
        never spinning) up to max_wait_ms until min_bytes have come."""
        wanted = [
            (t.topic, p.partition, p.fetch_offset, p.partition_max_bytes) for t in req.topics for p in t.partitions
        ]
        epochs = [p.current_leader_epoch if version >= 9 else -1 for t in req.topics for p in t.partitions]
        max_bytes = min(req.max_bytes if version >= 3 else self.max_fetch_bytes, self.max_fetch_bytes)
        refused = {topic: self.access.code("consume", "topic", topic) for topic in {w[0] for w in wanted}}
        answers = await self._read(wanted, epochs, max_bytes, refused)
        waited = min(max(req.max_wait_ms, 0), self.max_fetch_wait_ms) / 1000
        if waited > 0 and sum(len(a.records) for a in answers) < max(req.min_bytes, 1):
            waits = [
                asyncio.ensure_future(self.engine.wait_for_data(t, p, o, waited))
                for (t, p, o, _), a in zip(wanted, answers)
                if a.error == 0 and not len(a.records)
            ]
            if waits:
                try:
                    await asyncio.wait(waits, timeout=waited, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        if w.done() and not w.cancelled():
                            w.exception()  # a topic deleted meanwhile: the read below answers for it
                        w.cancel()
                answers = await self._read(wanted, epochs, max_bytes, refused)
        by_topic: dict[str, list[PartitionFetch]] = {}
        for (topic, *_), answer in zip(wanted, answers):
            by_topic.setdefault(topic, []).append(answer)
            self._error("Fetch", answer.error)
        parts, size = response_parts(version, list(by_topic.items()))
        return FetchParts(parts, size)

    def _readable(self, topic: str, partition: int, leader_epoch: int) -> int:
        """0 when this broker may answer reads of the partition now, else the error code to answer."""
        if self.topology is not None:
            try:
                self.topology.check_leader(topic, partition, leader_epoch)
            except TidelogError as exc:
                return kerr.code_of(exc)
        return kerr.NONE if self.engine.has_topic(topic) else kerr.UNKNOWN_TOPIC_OR_PARTITION

    async def _read(
        self, wanted: list[tuple[str, int, int, int]], epochs: list[int], max_bytes: int, refused: dict[str, int]
    ) -> list[PartitionFetch]:
        """One trip to the engine's pool for all the partitions (the first batch may exceed the limits,
        so that a consumer always progresses). refused: per topic, the code of an ACL refusal (or 0)."""
        # checked once: a topic may go, or a leadership move, while this runs
        errors = [refused[w[0]] or self._readable(w[0], w[1], e) for w, e in zip(wanted, epochs)]
        known = [w for w, e in zip(wanted, errors) if not e]
        results = iter(await self.engine.fetch_many(known, max_bytes) if known else [])
        out = []
        for (_, partition, _, _), e in zip(wanted, errors):
            if e:
                out.append(PartitionFetch(partition, e, -1, -1, b""))
                continue
            result = next(results)
            if isinstance(result, TidelogError):
                out.append(PartitionFetch(partition, kerr.code_of(result), -1, -1, b""))
            elif isinstance(result, FetchResult):
                out.append(PartitionFetch(partition, 0, result.high_watermark, result.log_start, result.data))
            else:  # at the high watermark, or past max_bytes: its offsets only
                out.append(PartitionFetch(partition, 0, result.high_watermark, result.log_start, b""))
        return out

    def _check_leader(self, topic: str, partition: int, leader_epoch: int) -> None:
        """In a cluster, raise unless this broker leads the partition (a follower's offsets may lag)."""
        if self.topology is not None:
            self.topology.check_leader(topic, partition, leader_epoch)

    async def _each_partition(
        self,
        api: str,
        topics: Any,
        topic_key: str,
        answer: Callable[[str, Any], Awaitable[dict]],
        failed: Callable[[Any, int], dict],
        needs: str,
    ) -> list[dict]:
        """Per topic of a request, its partitions' entries: answer(topic, partition) gives one; a
        TidelogError it raises becomes that partition's error entry, failed(partition, code). needs: the
        operation on each topic the caller must be allowed (else every partition's entry says so)."""
        out = []
        for t in topics:
            name = getattr(t, topic_key)
            refused = self.access.code(needs, "topic", name)
            entries = []
            for p in t.partitions:
                try:
                    entry = failed(p, refused) if refused else await answer(name, p)
                except TidelogError as exc:
                    entry = failed(p, kerr.code_of(exc))
                self._error(api, entry["error_code"])
                entries.append(entry)
            out.append({topic_key: name, "partitions": entries})
        return out

    async def list_offsets(self, req: Any, version: int) -> dict:
        def failed(p: Any, code: int) -> dict:
            return {"partition_index": p.partition_index, "error_code": code, "timestamp": -1, "offset": -1,
                    "leader_epoch": -1}  # fmt: skip

        async def answer(topic: str, p: Any) -> dict:
            self._check_leader(topic, p.partition_index, p.current_leader_epoch if version >= 4 else -1)
            entry = failed(p, 0)
            if p.timestamp in (EARLIEST, LATEST):
                at = "earliest" if p.timestamp == EARLIEST else "latest"
                entry["offset"] = await self.engine.offset_at(topic, p.partition_index, at)
            elif p.timestamp >= 0:
                found = await self.engine.offset_at(topic, p.partition_index, p.timestamp)
                if found is not None:
                    stamp = await self.engine.record_timestamp(topic, p.partition_index, found)
                    entry["offset"], entry["timestamp"] = found, -1 if stamp is None else stamp
            else:  # -3 (max timestamp) and the tiered-storage specs need ListOffsets v7+, not served
                entry["error_code"] = kerr.INVALID_REQUEST
            return entry

        topics = await self._each_partition("ListOffsets", req.topics, "name", answer, failed, "describe")
        return {"throttle_time_ms": 0, "topics": topics}

    async def offset_for_leader_epoch(self, req: Any, version: int) -> dict:
        """Where a leader epoch ends, on the partition's leader (a consumer checks that what it read
        was not truncated). A single broker has one leader epoch (none stamped): every epoch ends at
        the log end."""

        def failed(p: Any, code: int) -> dict:
            return {"error_code": code, "partition": p.partition, "leader_epoch": p.leader_epoch, "end_offset": -1}

        async def answer(topic: str, p: Any) -> dict:
            if self.topology is not None:
                current = p.current_leader_epoch if version >= 2 else -1
                epoch, end = await self.topology.epoch_end_offset(topic, p.partition, current, p.leader_epoch)
                return {**failed(p, 0), "leader_epoch": epoch, "end_offset": end}
            return {**failed(p, 0), "end_offset": (await self.engine.list_offsets(topic, p.partition)).log_end}

        topics = await self._each_partition("OffsetForLeaderEpoch", req.topics, "topic", answer, failed, "describe")
        return {"throttle_time_ms": 0, "topics": topics}

    async def delete_records(self, req: Any, version: int) -> dict:
        """Kafka's DeleteRecords, by whole segments: the low watermark is where the log now starts (at
        or below the offset asked for; the records between stay readable until their segment goes)."""

        def failed(p: Any, code: int) -> dict:
            return {"partition_index": p.partition_index, "low_watermark": -1, "error_code": code}

        async def answer(topic: str, p: Any) -> dict:
            if is_internal_topic(topic):
                return failed(p, kerr.INVALID_TOPIC_EXCEPTION)
            if self.topology is not None:  # the followers would keep them: refused, nothing deleted
                return failed(p, kerr.POLICY_VIOLATION)
            offsets = await self.engine.list_offsets(topic, p.partition_index)
            before = offsets.high_watermark if p.offset == -1 else p.offset
            if not 0 <= before <= offsets.high_watermark:
                raise OffsetOutOfRangeError(f"offset {before} is past the high watermark {offsets.high_watermark}")
            await self.engine.delete_records(topic, p.partition_index, before)
            audit_done(caller.get(), "Kafka/DeleteRecords", [f"delete topic {topic} records before {before}"])
            log_start = (await self.engine.list_offsets(topic, p.partition_index)).log_start
            return {**failed(p, 0), "low_watermark": log_start}

        topics = await self._each_partition("DeleteRecords", req.topics, "name", answer, failed, "delete")
        return {"throttle_time_ms": 0, "topics": topics}

    # -- topics -----------------------------------------------------------------------------------
    async def create_topics(self, req: Any, version: int) -> dict:
        results = []
        for t in req.topics:
            entry: dict[str, Any] = {"name": t.name, "error_code": 0, "error_message": None, "num_partitions": -1,
                                     "replication_factor": -1, "configs": []}  # fmt: skip
            try:
                refused = self.access.refusal("create", "topic", t.name)
                if refused is not None:
                    raise refused
                if t.assignments:
                    raise InvalidConfigError("replica assignments are not supported: give num_partitions")
                partitions = t.num_partitions if t.num_partitions != -1 else 1
                most = self.engine.config.max_partitions_per_topic
                if not 1 <= partitions <= most:
                    entry["error_code"] = kerr.INVALID_PARTITIONS
                    entry["error_message"] = f"num_partitions must be 1 to {most}, got {partitions}"
                elif self.topology is not None:
                    validate_topic_name(t.name)
                    if is_internal_topic(t.name):
                        raise InvalidTopicError(f"topic names starting with '__' are the broker's own: {t.name!r}")
                    settings = topic_configs.overrides([(c.name, c.value) for c in t.configs])
                    created = await self.topology.create_topic(
                        t.name, partitions, t.replication_factor, settings, req.validate_only
                    )
                    entry["num_partitions"], entry["replication_factor"] = created
                    if not req.validate_only:
                        defaults = self.engine.config.topic_defaults
                        entry["configs"] = self._created_configs(defaults.with_overrides(settings))
                elif t.replication_factor not in (-1, 1):
                    entry["error_code"] = kerr.INVALID_REPLICATION_FACTOR
                    entry["error_message"] = f"a single broker keeps 1 copy, not {t.replication_factor}"
                else:
                    settings = topic_configs.overrides([(c.name, c.value) for c in t.configs])
                    if req.validate_only:  # everything the create would check, nothing created
                        validate_topic_name(t.name)
                        if is_internal_topic(t.name):
                            raise InvalidTopicError(f"topic names starting with '__' are the broker's own: {t.name!r}")
                        TopicConfig().with_overrides(settings)
                        if self.engine.has_topic(t.name):
                            raise TopicExistsError(f"topic {t.name!r} already exists")
                        entry["num_partitions"], entry["replication_factor"] = partitions, 1
                    else:
                        described = await self.engine.create_topic(t.name, partitions, **settings)
                        entry["num_partitions"], entry["replication_factor"] = len(described.partitions), 1
                        entry["configs"] = self._created_configs(described.config)
            except TidelogError as exc:
                entry["error_code"], entry["error_message"] = kerr.code_of(exc), kerr.message_of(exc)
            self._error("CreateTopics", entry["error_code"])
            if not entry["error_code"] and not req.validate_only:
                audit_done(caller.get(), "Kafka/CreateTopics", [f"create topic {t.name}"])
            results.append(entry)
        return {"throttle_time_ms": 0, "topics": results}

    def _created_configs(self, config: TopicConfig) -> list[dict]:
        """CreateTopics' account of a new topic's settings."""
        return [
            {k: c[k] for k in ("name", "value", "read_only", "config_source", "is_sensitive")}
            for c in topic_configs.describe(config, self.engine.config.topic_defaults, None)
        ]

    async def delete_topics(self, req: Any, version: int) -> dict:
        names = [t.name for t in req.topics] if version >= 6 else list(req.topic_names)
        responses = []
        for name in names:
            entry: dict[str, Any] = {"name": name, "error_code": 0, "error_message": None}
            try:
                if name is None:
                    raise UnknownTopicError("topics are named here, not addressed by id")
                refused = self.access.refusal("delete", "topic", name)
                if refused is not None:
                    raise refused
                if self.topology is not None:
                    await self.topology.delete_topic(name)
                else:
                    await self.engine.delete_topic(name)
            except TidelogError as exc:
                entry["error_code"], entry["error_message"] = kerr.code_of(exc), kerr.message_of(exc)
            self._error("DeleteTopics", entry["error_code"])
            if not entry["error_code"]:
                audit_done(caller.get(), "Kafka/DeleteTopics", [f"delete topic {name}"])
            responses.append(entry)
        return {"throttle_time_ms": 0, "responses": responses}

    async def describe_configs(self, req: Any, version: int) -> dict:
        results = []
        for r in req.resources:
            entry: dict[str, Any] = {"error_code": 0, "error_message": None, "resource_type": r.resource_type,
                                     "resource_name": r.resource_name, "configs": []}  # fmt: skip
            try:
                if r.resource_type in (TOPIC_RESOURCE, BROKER_RESOURCE):
                    is_topic = r.resource_type == TOPIC_RESOURCE
                    refused = self.access.refusal("describe", "topic" if is_topic else "cluster",
                                                  r.resource_name if is_topic else CLUSTER)  # fmt: skip
                    if refused is not None:
                        raise refused
                if r.resource_type == TOPIC_RESOURCE:
                    defaults = self.engine.config.topic_defaults
                    if self.topology is not None:
                        config = defaults.with_overrides(self.topology.topic_settings(r.resource_name))
                    else:
                        config = (await self.engine.describe(r.resource_name)).config
                    entry["configs"] = topic_configs.describe(config, defaults, r.configuration_keys)
                elif r.resource_type != BROKER_RESOURCE:
                    entry["error_code"] = kerr.INVALID_REQUEST
                    entry["error_message"] = f"resource type {r.resource_type} is not described by tidelog"
            except TidelogError as exc:
                entry["error_code"], entry["error_message"] = kerr.code_of(exc), kerr.message_of(exc)
            self._error("DescribeConfigs", entry["error_code"])
            results.append(entry)
        return {"throttle_time_ms": 0, "results": results}

    # -- groups -----------------------------------------------------------------------------------
    def _coordinator_here(self) -> GroupCoordinator:
        """The group coordinator, when this broker is it (always, for a single broker); else
        NotCoordinatorError, on which a client looks the coordinator up again."""
        coordinator = self._coordinator()
        if coordinator is None:
            raise NotCoordinatorError("this broker does not coordinate consumer groups now: find the coordinator")
        return coordinator

    async def join_group(self, req: Any, version: int, client_id: str, host: str) -> dict:
        refused = self.access.code("consume", "group", req.group_id)
        if refused or self._coordinator() is None:
            result = classic_groups.JoinResult(refused or kerr.NOT_COORDINATOR)
        else:
            result = await self._join(req, version, client_id, host)
        return {
            "throttle_time_ms": 0,
            "error_code": self._error("JoinGroup", result.error),
            "generation_id": result.generation,
            "protocol_type": result.protocol_type,
            "protocol_name": result.protocol or ("" if version < 7 else None),
            "leader": result.leader,
            "skip_assignment": False,
            "member_id": result.member_id,
            "members": [
                {"member_id": m, "group_instance_id": instance, "metadata": metadata}
                for m, instance, metadata in result.members
            ],
        }

    async def _join(self, req: Any, version: int, client_id: str, host: str) -> classic_groups.JoinResult:
        return await self.groups.join(
            req.group_id,
            req.member_id,
            req.group_instance_id if version >= 5 else None,
            client_id,
            host,
            req.session_timeout_ms,
            req.rebalance_timeout_ms if version >= 1 else req.session_timeout_ms,
            req.protocol_type,
            [(p.name, bytes(p.metadata)) for p in req.protocols],
        )

    async def sync_group(self, req: Any, version: int) -> dict:
        refused = self.access.code("consume", "group", req.group_id)
        if refused or self._coordinator() is None:
            result = classic_groups.SyncResult(refused or kerr.NOT_COORDINATOR)
        else:
            result = await self.groups.sync(
                req.group_id,
                req.generation_id,
                req.member_id,
                {a.member_id: bytes(a.assignment) for a in req.assignments},
            )
        return {
            "throttle_time_ms": 0,
            "error_code": self._error("SyncGroup", result.error),
            "protocol_type": result.protocol_type,
            "protocol_name": result.protocol,
            "assignment": result.assignment,
        }

    async def heartbeat(self, req: Any, version: int) -> dict:
        code = self.access.code("consume", "group", req.group_id) or (
            kerr.NOT_COORDINATOR
            if self._coordinator() is None
            else self.groups.heartbeat(req.group_id, req.generation_id, req.member_id)
        )
        return {"throttle_time_ms": 0, "error_code": self._error("Heartbeat", code)}

    async def leave_group(self, req: Any, version: int) -> dict:
        refused = self.access.code("consume", "group", req.group_id)
        if refused or self._coordinator() is None:
            return {"throttle_time_ms": 0, "error_code": self._error("LeaveGroup", refused or kerr.NOT_COORDINATOR),
                    "members": []}  # fmt: skip
        if version < 3:
            code = self.groups.leave(req.group_id, [req.member_id])[0]
            return {"throttle_time_ms": 0, "error_code": self._error("LeaveGroup", code)}
        codes = self.groups.leave(req.group_id, [m.member_id for m in req.members])
        return {
            "throttle_time_ms": 0,
            "error_code": 0,
            "members": [
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.group_instance_id,
                    "error_code": self._error("LeaveGroup", c),
                }  # fmt: skip
                for m, c in zip(req.members, codes)
            ],
        }

    async def offset_commit(self, req: Any, version: int) -> dict:
        coordinator = self._coordinator()
        code = (
            _group_id_error(req.group_id)
            or self.access.code("consume", "group", req.group_id)
            or (
                kerr.NOT_COORDINATOR
                if coordinator is None
                else self.groups.check_commit(req.group_id, req.generation_id_or_member_epoch, req.member_id)
            )
        )
        codes: dict[tuple[str, int], int] = {}
        by_metadata: dict[str, dict[tuple[str, int], int]] = {}  # one write per metadata string
        for t in req.topics:
            refused = self.access.code("consume", "topic", t.name) if code == kerr.NONE else 0
            for p in t.partitions:
                metadata = p.committed_metadata or ""
                if refused:
                    codes[(t.name, p.partition_index)] = refused
                elif code == kerr.NONE and len(metadata.encode()) > MAX_METADATA_BYTES:
                    codes[(t.name, p.partition_index)] = kerr.OFFSET_METADATA_TOO_LARGE
                else:
                    by_metadata.setdefault(metadata, {})[(t.name, p.partition_index)] = p.committed_offset
        if code == kerr.NONE and coordinator is not None:
            for metadata, offsets in by_metadata.items():
                try:
                    await self.engine.offload(coordinator.commit, req.group_id, None, -1, offsets, metadata)
                except TidelogError as exc:
                    codes.update(dict.fromkeys(offsets, kerr.code_of(exc)))
        topics = []
        for t in req.topics:
            parts = [{"partition_index": p.partition_index, "error_code": codes.get((t.name, p.partition_index), code)}
                     for p in t.partitions]  # fmt: skip
            for part in parts:
                self._error("OffsetCommit", part["error_code"])
            topics.append({"name": t.name, "partitions": parts})
        return {"throttle_time_ms": 0, "topics": topics}

    async def offset_fetch(self, req: Any, version: int) -> dict:
        if version >= 8:
            groups = []
            for g in req.groups:
                topics, code = await self._committed(g.group_id, g.topics)
                groups.append({"group_id": g.group_id, "topics": topics, "error_code": code})
            return {"throttle_time_ms": 0, "groups": groups}
        topics, code = await self._committed(req.group_id, req.topics)
        return {"throttle_time_ms": 0, "topics": topics, "error_code": code}

    async def _committed(self, group_id: str, topics: Any) -> tuple[list[dict], int]:
        refused = self.access.code("describe", "group", group_id)
        if refused:
            return [], self._error("OffsetFetch", refused)
        wanted = None if topics is None else [(t.name, p) for t in topics for p in t.partition_indexes]
        try:
            committed = await self.engine.offload(self._coordinator_here().offsets.fetch, group_id, wanted)
        except TidelogError as exc:
            return [], self._error("OffsetFetch", kerr.code_of(exc))
        by_topic: dict[str, list[dict]] = {}
        if wanted is None:  # all the group's offsets: those of topics the caller may not describe unlisted
            wanted = [tp for tp in sorted(committed) if self.access.allows("describe", "topic", tp[0])]
            refusals = {}
        else:
            refusals = {topic: self.access.code("describe", "topic", topic) for topic, _ in wanted}
        for tp in wanted:
            c = None if refusals.get(tp[0]) else committed.get(tp)
            by_topic.setdefault(tp[0], []).append(
                {
                    "partition_index": tp[1],
                    "committed_offset": -1 if c is None else c.offset,
                    "committed_leader_epoch": -1,
                    "metadata": "" if c is None else c.metadata,
                    "error_code": self._error("OffsetFetch", refusals.get(tp[0], 0)),
                }
            )
        return [{"name": t, "partitions": parts} for t, parts in by_topic.items()], 0

    async def describe_groups(self, req: Any, version: int) -> dict:
        out = []
        asked = getattr(req, "include_authorized_operations", False)
        coordinator = self._coordinator()
        for group_id in req.groups:
            operations = self.access.operations("group", group_id) if asked else NOT_REQUESTED
            entry: dict[str, Any] = {"error_code": 0, "error_message": None, "group_id": group_id, "group_state": "Dead",
                                     "protocol_type": "", "protocol_data": "", "members": [],
                                     "authorized_operations": operations}  # fmt: skip
            group = self.groups.get(group_id)
            refused = self.access.refusal("describe", "group", group_id)
            if refused is not None:
                entry["error_code"], entry["error_message"] = refused.code, refused.message
            elif coordinator is None:
                entry["error_code"] = kerr.NOT_COORDINATOR
            elif group is not None and group.members:
                entry.update(group_state=group.state, protocol_type=group.protocol_type or "",
                             protocol_data=group.protocol or "")  # fmt: skip
                entry["members"] = [
                    {
                        "member_id": m.member_id,
                        "group_instance_id": m.group_instance_id,
                        "client_id": m.client_id,
                        "client_host": m.client_host,
                        "member_metadata": m.metadata(group.protocol),
                        "member_assignment": m.assignment,
                    }  # fmt: skip
                    for m in group.members.values()
                ]
            else:
                try:
                    described = await self.engine.offload(coordinator.describe, group_id)
                    tidelog_members = described["members"]
                    entry.update(group_state="Stable" if tidelog_members else "Empty",
                                 protocol_type="tidelog" if tidelog_members else "consumer")  # fmt: skip
                    entry["members"] = [
                        {
                            "member_id": m["member_id"],
                            "client_id": m["client_id"],
                            "client_host": "",
                            "member_metadata": b"",
                            "member_assignment": b"",
                        }  # fmt: skip
                        for m in tidelog_members
                    ]
                except UnknownGroupError:
                    pass  # Kafka describes an unknown group as Dead, without an error
                except TidelogError as exc:
                    entry["error_code"], entry["error_message"] = kerr.code_of(exc), kerr.message_of(exc)
            self._error("DescribeGroups", entry["error_code"])
            out.append(entry)
        return {"throttle_time_ms": 0, "groups": out}

    async def list_groups(self, req: Any, version: int) -> dict:
        """The groups this broker coordinates (an admin client asks every broker and joins the lists;
        in a cluster, every broker but the coordinator answers none)."""
        listed: dict[str, dict] = {}
        coordinator = self._coordinator()
        stored = await self.engine.offload(coordinator.list_groups) if coordinator is not None else []
        for group_id in stored:
            listed[group_id] = {"group_id": group_id, "protocol_type": "consumer", "group_state": "Empty",
                                "group_type": "classic"}  # fmt: skip
        for group in self.groups.groups() if coordinator is not None else []:
            listed[group.group_id] = {"group_id": group.group_id, "protocol_type": group.protocol_type or "",
                                      "group_state": group.state, "group_type": "classic"}  # fmt: skip
        states = {s.lower() for s in (req.states_filter or [])} if version >= 4 else set()
        types = {t.lower() for t in (req.types_filter or [])} if version >= 5 else set()
        everything = self.access.allows("describe", "cluster")  # else only the groups it may describe, as Kafka
        groups = [
            g
            for g in listed.values()
            if (not states or g["group_state"].lower() in states)
            and (not types or g["group_type"] in types)
            and (everything or self.access.allows("describe", "group", g["group_id"]))
        ]
        return {"throttle_time_ms": 0, "error_code": 0, "groups": sorted(groups, key=lambda g: g["group_id"])}

    async def delete_groups(self, req: Any, version: int) -> dict:
        results = []
        for group_id in req.groups_names:
            code = self.access.code("delete", "group", group_id)
            if code:
                pass
            elif self.groups.has_members(group_id):
                code = kerr.NON_EMPTY_GROUP
            else:
                try:
                    await self.engine.offload(self._coordinator_here().delete_group, group_id)
                    self.groups.forget(group_id)
                    audit_done(caller.get(), "Kafka/DeleteGroups", [f"delete group {group_id}"])
                except TidelogError as exc:
                    code = kerr.code_of(exc)
            results.append({"group_id": group_id, "error_code": self._error("DeleteGroups", code)})
        return {"throttle_time_ms": 0, "results": results}
