"""Typed, frozen, validated configuration. Units are the last part of every name.

Validated once where it enters (Engine.open, create_topic, later the CLI and server) and passed down;
the core never reads the environment.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidConfigError

COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")  # Kafka's codecs (codec/compression.py)


class FsyncPolicy(str, enum.Enum):
    """When appended data is made durable; what each policy means is said here and nowhere else."""

    ALWAYS = "always"  # fsync before an append returns (appends that arrive together share one fsync)
    INTERVAL = "interval"  # a background flush every fsync_interval_ms
    NEVER = "never"  # the OS writes back when it likes

    @property
    def syncs_each_append(self) -> bool:
        """An append returns only once it is durable; readers see only durable records."""
        return self is FsyncPolicy.ALWAYS

    @property
    def flushes_periodically(self) -> bool:
        return self is FsyncPolicy.INTERVAL

    def __str__(self) -> str:
        return self.value


FSYNC_POLICIES = tuple(p.value for p in FsyncPolicy)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicConfig:
    """Per-topic settings, with Kafka's names and defaults where Kafka has them."""

    segment_bytes: int = 1 << 30
    """Roll to a new segment when the active one would exceed this size (Kafka: segment.bytes)."""
    segment_ms: int = 7 * DAY_MS
    """Roll when an append's newest record timestamp is this much later than the active segment's
    first batch (segment.ms; record time, as Kafka does, checked on append)."""
    retention_ms: int = 7 * DAY_MS
    """Delete sealed segments whose newest record is older than this; -1 keeps forever (retention.ms)."""
    retention_bytes: int = -1
    """Delete oldest sealed segments while the partition is larger than this; -1: no limit."""
    compression: str = "none"
    """Codec for batches the engine encodes (produce); appended batches keep their own codec."""
    max_batch_bytes: int = 8 << 20
    """Largest record batch accepted, default 8 MiB (Kafka: max.message.bytes); capped at segment_bytes.
    A bigger batch is refused with RecordTooLargeError (RESOURCE_EXHAUSTED); record headers count here."""
    index_interval_bytes: int = 4096
    """Bytes of log between two entries of the sparse offset and time indexes."""
    max_index_bytes: int = 10 << 20
    """Size each index file is preallocated to; a full index rolls the segment."""
    min_insync_replicas: int = 1
    """In a cluster: an acks=all produce is refused (NOT_ENOUGH_REPLICAS, nothing written) while fewer
    replicas than this are in sync (Kafka: min.insync.replicas). With replication factor 3, 2 keeps
    every acknowledged record through the loss of any one broker."""

    def __post_init__(self) -> None:
        _positive(self, "segment_bytes", minimum=4096)
        if self.segment_bytes > (1 << 31) - 1:
            raise InvalidConfigError(
                f"segment_bytes must be below 2 GiB (index positions are 32-bit), got {self.segment_bytes}"
            )
        _positive(self, "segment_ms", minimum=1)
        _positive(self, "retention_ms", minimum=0, allow_minus_one=True)
        _positive(self, "retention_bytes", minimum=0, allow_minus_one=True)
        _positive(self, "max_batch_bytes", minimum=128)
        _positive(self, "index_interval_bytes", minimum=1)
        _positive(self, "max_index_bytes", minimum=64)
        _positive(self, "min_insync_replicas", minimum=1)
        if self.compression not in COMPRESSIONS:
            raise InvalidConfigError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        if self.max_batch_bytes > self.segment_bytes:
            # A batch never spans segments, so a segment bounds the batch size.
            object.__setattr__(self, "max_batch_bytes", self.segment_bytes)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> TopicConfig:
        return _replace(self, overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EngineConfig:
    """Settings of one engine (one data directory)."""

    fsync: FsyncPolicy = FsyncPolicy.INTERVAL
    """always: fsync before produce returns (group commit); interval: every fsync_interval_ms; never: the OS decides."""
    fsync_interval_ms: int = 1000
    """Period of the background flush under fsync="interval"."""
    retention_check_interval_ms: int = 60_000
    """How often retention runs in the background (it also runs on every segment roll)."""
    max_topics: int = 10_000
    """Limit on topics in one engine, default 10,000 (internal ones count); past it create_topic raises
    ResourceLimitError (RESOURCE_EXHAUSTED)."""
    max_partitions_per_topic: int = 10_000
    """Limit on partitions of one topic, default 10,000; more raises ResourceLimitError. Each open
    partition holds 3 file descriptors (its active segment's files; sealed segments hold none): the
    process's open-file limit binds first."""
    max_fetch_bytes: int = 64 << 20
    """Upper bound on a single fetch's max_bytes, default 64 MiB: a larger max_bytes is cut to it (not
    an error); a fetch still returns at least one whole batch."""
    max_mapped_segments: int = 4096
    """Sealed segments kept mapped at once, default 4,096 (the least recently read are unmapped and
    mapped again when read). Sealed segments hold no file descriptor; each mapped one holds three
    maps, and the kernel limits a process to vm.max_map_count maps (65,530 by default)."""
    producer_id_expiration_ms: int = DAY_MS
    """How long a partition remembers an idempotent producer after its last append, default 1 day
    (Kafka's producer.id.expiration.ms), on the engine's clock: a retry from a producer silent for
    longer is taken as new and appended again."""
    topic_defaults: TopicConfig = field(default_factory=TopicConfig)
    """Settings for topics created without their own."""

    def __post_init__(self) -> None:
        if isinstance(self.topic_defaults, Mapping):  # accept a plain dict, e.g. from a TOML file
            object.__setattr__(self, "topic_defaults", TopicConfig().with_overrides(self.topic_defaults))
        if self.fsync not in FSYNC_POLICIES:  # a string ("always", from a flag or a file) or a policy
            raise InvalidConfigError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {self.fsync!r}")
        object.__setattr__(self, "fsync", FsyncPolicy(self.fsync))
        _positive(self, "fsync_interval_ms", minimum=1)
        _positive(self, "retention_check_interval_ms", minimum=1)
        _positive(self, "max_topics", minimum=1)
        _positive(self, "max_partitions_per_topic", minimum=1)
        _positive(self, "max_fetch_bytes", minimum=1)
        _positive(self, "max_mapped_segments", minimum=1)
        _positive(self, "producer_id_expiration_ms", minimum=1)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> EngineConfig:
        return _replace(self, overrides)


def _positive(obj: object, name: str, minimum: int, allow_minus_one: bool = False) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidConfigError(f"{name} must be an integer, got {value!r}")
    if allow_minus_one and value == -1:
        return
    if value < minimum:
        raise InvalidConfigError(
            f"{name} must be at least {minimum}{' (or -1 for no limit)' if allow_minus_one else ''}, got {value}"
        )


def _replace(obj, overrides):
    if not overrides:
        return obj
    known = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InvalidConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return dataclasses.replace(obj, **overrides)


@dataclass(frozen=True)
class ServerConfig:
    """Settings of `tidelog serve`: flags > environment (TIDELOG_*) > TOML file > these defaults."""

    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 to serve other hosts, as in the container)."""
    port: int = 50051
    """gRPC port."""
    data_dir: str = "./data"
    """The engine's data directory."""
    max_message_bytes: int = 64 << 20
    """Largest gRPC message accepted or sent, default 64 MiB (must hold the largest batch plus framing);
    gRPC refuses a bigger one with RESOURCE_EXHAUSTED before any tidelog code sees it."""
    max_inflight_bytes_per_stream: int = 64 << 20
    """Produce requests read ahead of their acks, per stream, default 64 MiB; past it the server stops
    reading (backpressure through gRPC flow control, not an error). One larger message still passes alone."""
    max_inflight_bytes: int = 256 << 20
    """Produce requests read ahead of their acks on all streams together, default 256 MiB: past it every
    Produce stream stops reading until appends catch up (backpressure, not an error), so many streams
    cannot add up to more memory than this. One larger message still passes when nothing else is in flight."""
    max_inflight_bytes_per_connection: int = 128 << 20
    """Produce requests read ahead of their acks on all streams of one connection together, default
    128 MiB: past it that connection's streams stop reading (backpressure, not an error), so one client
    cannot take the whole of max_inflight_bytes from the others."""
    default_fetch_bytes: int = 1 << 20
    """max_bytes of a fetch that asks for 0."""
    max_subscribe_message_bytes: int = 4 << 20
    """Largest response a subscription sends, default 4 MiB, whatever the credit (at least one batch)."""
    max_subscribe_credit_bytes: int = 8 << 20
    """Credit one subscription may have, default 8 MiB (the client's default window): a larger grant is cut
    to it (not an error), so a subscription never has more than this sent and not yet credited back (plus
    one batch). A client with a larger window still works: it grants back what it consumed once it runs dry."""
    max_subscribe_buffer_bytes: int = 256 << 20
    """Bytes sent to subscribers and not yet credited back, on all subscriptions together, default 256 MiB:
    what stalled consumers make the broker hold. Past it subscriptions wait for credit to come back
    (backpressure, not an error), except that one holding nothing may always send one small message
    (64 KiB, or one batch if larger), so stalled consumers cannot starve live ones."""
    max_fetch_wait_ms: int = 30_000
    """Upper bound of a long-poll's max_wait_ms, default 30 s: a longer wait is cut to it."""
    max_concurrent_rpcs: int = 1000
    """RPCs served at once, default 1000 (streams count while open); gRPC refuses more with
    RESOURCE_EXHAUSTED (no tidelog-error-code: the call never reaches tidelog code)."""
    admin_reserved_rpcs: int = 50
    """Slots of max_concurrent_rpcs that data-path calls (Producer and Consumer: Produce, Subscribe, Fetch,
    ...) cannot take, default 50, at most half of max_concurrent_rpcs: data traffic filling the server
    leaves room for Admin, Groups, health and reflection calls. A data-path call past it is refused with
    ResourceLimitError (RESOURCE_EXHAUSTED); 0 turns the reserve off."""
    max_concurrent_rpcs_per_connection: int = 500
    """Data-path calls (Producer and Consumer; streams count while open) one client connection may have at
    once, default 500; more are refused with ResourceLimitError (RESOURCE_EXHAUSTED), so one client
    cannot take every slot. Generous on purpose: a consumer-group member opens one Subscribe per assigned
    partition on its one connection. Admin and Groups calls do not count."""
    max_connections: int = 10_000
    """Client connections, default 10,000 (HTTP/2, one per channel) open at once; past it gRPC closes each new
    connection as it is accepted, and the client sees UNAVAILABLE. Each costs one file descriptor."""
    io_threads: int = 16
    """Threads that run blocking engine calls."""
    shutdown_grace_s: float = 10.0
    """On SIGTERM/SIGINT: how long in-flight RPCs may take to finish."""
    metrics_port: int = 9464
    """HTTP port of Prometheus /metrics and /healthz; 0 picks a free port, -1 turns the endpoint off."""
    metrics_host: str = ""
    """Address the metrics endpoint listens on; empty: the same as `host`."""
    metrics_max_partitions: int = 10_000
    """Cap on partitions (and on group-partitions) given their own metric series, bounding cardinality."""
    group_initial_rebalance_delay_ms: int = 3000
    """How long a consumer group without members waits before its first assignment, default 3 s (Kafka's
    group.initial.rebalance.delay.ms); each member joining meanwhile restarts the wait, up to 10 times
    the delay. Members starting together then share the partitions at once, instead of the first taking
    every partition and the others waiting for it to give them up. 0: assign at the first join."""
    cluster: str = ""
    """etcd://HOST:PORT[,HOST:PORT...] of the etcd that coordinates a cluster; empty (the default): a
    single broker, no etcd."""
    cluster_name: str = "tidelog"
    """Name of the cluster in etcd (its keys live under /tidelog/<name>/): several clusters may share one etcd."""
    broker_id: int = -1
    """This broker's id in the cluster, unique among its live brokers; required with `cluster`."""
    advertised_host: str = ""
    """The host clients and other brokers reach this broker at (default: `host`, or this machine's name
    when `host` listens on every address). Kafka: advertised.listeners."""
    default_replication_factor: int = 3
    """Copies of each partition of a topic created without a replication factor, capped at the number of
    live brokers (a cluster of one or two brokers still creates topics)."""
    replica_lag_time_max_ms: int = 10_000
    """A follower that has not caught up with the leader's log end for this long leaves the ISR
    (Kafka: replica.lag.time.max.ms). Keep it well above replica_fetch_wait_ms and a leader change."""
    replica_fetch_wait_ms: int = 500
    """How long a follower's fetch waits at the leader when there is nothing new."""
    replica_fetch_max_bytes: int = 1 << 20
    """Largest answer to one follower fetch (at least one batch)."""
    replication_throttle_bytes_per_s: int = 0
    """Bytes per second a leader sends to followers that are catching up (outside the ISR and behind the
    high watermark: a broker back from an outage, a new replica), over all its partitions together; 0
    (the default): no limit (Kafka: leader.replication.throttled.rate). In-sync followers are never
    throttled, so acks=all latency does not suffer. Keep it above the produce rate, or a catching-up
    follower never catches up. `tidelog cluster throttle --rate N` overrides it on every broker at runtime."""
    replication_timeout_ms: int = 10_000
    """How long an acks=all produce waits for the in-sync replicas before answering that the outcome
    is unknown (REQUEST_TIMED_OUT: retry idempotently)."""
    broker_session_timeout_ms: int = 3000
    """How long a broker stays registered without a keepalive (its etcd lease, in whole seconds), default
    3 s: the time a dead broker takes to be noticed. It stops acting as a member 10% earlier by its own clock."""
    kafka_port: int = -1
    """Port of the Kafka-protocol listener (Kafka clients and tools); -1 (the default): off; 0: any free port."""
    kafka_host: str = ""
    """Address the Kafka listener listens on; empty: the same as `host`. Clients are told `advertised_host`."""
    kafka_advertised_port: int = 0
    """The port Kafka clients are told to connect to, when it differs from the one listened on (a
    container's published port, a proxy); 0 (the default): the listening port. Kafka: advertised.listeners."""
    kafka_auto_create_topics: bool = True
    """Create a topic a Kafka client's metadata request names and allows creating, with the engine's topic
    defaults (Kafka: auto.create.topics.enable, on by default there too)."""
    kafka_idle_timeout_ms: int = 600_000
    """Close a Kafka connection with no request for this long, default 10 min (Kafka: connections.max.idle.ms)."""
    tls_cert_file: str = ""
    """PEM certificate chain every listener (gRPC, metrics, Kafka) presents; with tls_key_file turns TLS on.
    Read again when the file changes or on SIGHUP: a renewed certificate serves the next connection."""
    tls_key_file: str = ""
    """PEM private key of tls_cert_file."""
    tls_client_ca_file: str = ""
    """PEM CA certificates a client certificate must chain to: mutual TLS, every client must present one,
    and its common name is its principal when it sends no token."""
    users_file: str = ""
    """The users file (`tidelog users add ...`): with it every tidelog call must carry a user's token; empty
    (the default): no tokens (and no authentication at all unless tls_client_ca_file is given)."""
    acls_file: str = ""
    """The ACL file (`tidelog acls add ...`): with it, a call is refused unless an ACL allows it (needs
    authentication); empty (the default): every authenticated caller may do anything."""
    superusers: tuple[str, ...] = ()
    """Principals the ACLs do not apply to: they may do anything."""
    etcd_users: bool = False
    """In a cluster: every tidelog call must carry a token of a user kept in the cluster's etcd
    (`tidelog users add --etcd URL`), the same users on every broker (a cluster has no users_file)."""
    etcd_acls: bool = False
    """In a cluster: refuse whatever no ACL kept in the cluster's etcd allows (`tidelog acls add --etcd URL`)."""
    tls_ca_file: str = ""
    """With TLS: PEM CA certificates the brokers' certificates chain to (default: the system's roots). A
    broker connecting to another of its cluster, and the console connecting to its broker, check the
    certificate against them."""
    broker_token_file: str = ""
    """In a cluster with etcd_users: a file holding the token (user:secret) this broker shows the others
    (replication, forwarded calls); its user should be among `superusers`."""
    auth_max_failures: int = 10
    """Authentication failures from one address within 10 s after which its new tokens are refused
    unchecked until the failures age out (tokens verified before keep working)."""
    insecure: bool = False
    """Serve an address other than loopback without TLS and authentication, knowingly. Without it such a
    broker refuses to start: anyone reaching the port could read, write and delete every topic."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """Settings of the engine (fsync policy, topic defaults, limits)."""

    def __post_init__(self) -> None:
        if isinstance(self.engine, Mapping):
            engine = dict(self.engine)
            if isinstance(engine.get("topic_defaults"), Mapping):
                engine["topic_defaults"] = TopicConfig().with_overrides(engine["topic_defaults"])
            object.__setattr__(self, "engine", EngineConfig().with_overrides(engine))
        if not isinstance(self.host, str) or not self.host:
            raise InvalidConfigError(f"host must be a non-empty string, got {self.host!r}")
        _positive(self, "port", minimum=0)
        if self.port > 65535:
            raise InvalidConfigError(f"port must be at most 65535, got {self.port}")
        if (
            isinstance(self.metrics_port, bool)
            or not isinstance(self.metrics_port, int)
            or not -1 <= self.metrics_port <= 65535
        ):
            raise InvalidConfigError(
                f"metrics_port must be a port (0: any free one) or -1 (off), got {self.metrics_port!r}"
            )
        if (
            isinstance(self.kafka_port, bool)
            or not isinstance(self.kafka_port, int)
            or not -1 <= self.kafka_port <= 65535
        ):
            raise InvalidConfigError(
                f"kafka_port must be a port (0: any free one) or -1 (off), got {self.kafka_port!r}"
            )
        if (
            isinstance(self.kafka_advertised_port, bool)
            or not isinstance(self.kafka_advertised_port, int)
            or not 0 <= self.kafka_advertised_port <= 65535
        ):
            raise InvalidConfigError(f"kafka_advertised_port must be a port or 0, got {self.kafka_advertised_port!r}")
        if not isinstance(self.kafka_host, str) or not isinstance(self.kafka_auto_create_topics, bool):
            raise InvalidConfigError("kafka_host must be a string and kafka_auto_create_topics true or false")
        if not isinstance(self.metrics_host, str):
            raise InvalidConfigError(f"metrics_host must be a string, got {self.metrics_host!r}")
        for name in (
            "metrics_max_partitions",
            "max_message_bytes",
            "max_inflight_bytes_per_stream",
            "max_inflight_bytes",
            "max_inflight_bytes_per_connection",
            "default_fetch_bytes",
            "max_subscribe_message_bytes",
            "max_subscribe_credit_bytes",
            "max_subscribe_buffer_bytes",
            "max_fetch_wait_ms",
            "max_concurrent_rpcs",
            "max_concurrent_rpcs_per_connection",
            "max_connections",
            "io_threads",
            "kafka_idle_timeout_ms",
        ):
            _positive(self, name, minimum=1)
        _positive(self, "admin_reserved_rpcs", minimum=0)
        _positive(self, "auth_max_failures", minimum=1)
        _positive(self, "group_initial_rebalance_delay_ms", minimum=0)
        _positive(self, "broker_session_timeout_ms", minimum=1000)
        _positive(self, "default_replication_factor", minimum=1)
        _positive(self, "replica_lag_time_max_ms", minimum=100)
        _positive(self, "replica_fetch_wait_ms", minimum=0)
        _positive(self, "replica_fetch_max_bytes", minimum=1024)
        _positive(self, "replication_timeout_ms", minimum=1)
        _positive(self, "replication_throttle_bytes_per_s", minimum=0)
        if not isinstance(self.cluster, str) or not isinstance(self.cluster_name, str) or not self.cluster_name:
            raise InvalidConfigError("cluster and cluster_name must be strings (cluster_name not empty)")
        if "/" in self.cluster_name:
            raise InvalidConfigError(f"cluster_name must not contain '/', got {self.cluster_name!r}")
        if self.cluster:
            from .cluster.etcd import endpoints

            endpoints(self.cluster)
            _positive(self, "broker_id", minimum=0)
        if not isinstance(self.shutdown_grace_s, (int, float)) or self.shutdown_grace_s < 0:
            raise InvalidConfigError(f"shutdown_grace_s must be >= 0, got {self.shutdown_grace_s!r}")
        self._check_security()

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def authenticates(self) -> bool:
        """Whether every tidelog call must say who it is (a token, or a client certificate)."""
        return bool(self.has_users or self.tls_client_ca_file)

    @property
    def has_users(self) -> bool:
        """Whether callers show tokens of users (a users file, or a cluster's users in etcd)."""
        return bool(self.users_file or self.etcd_users)

    @property
    def authorizes(self) -> bool:
        """Whether ACLs decide what each caller may do."""
        return bool(self.acls_file or self.etcd_acls)

    def _check_security(self) -> None:
        names = (
            "tls_cert_file",
            "tls_key_file",
            "tls_client_ca_file",
            "users_file",
            "tls_ca_file",
            "broker_token_file",
        )
        flags = ("insecure", "etcd_users", "etcd_acls")
        if not all(isinstance(getattr(self, n), str) for n in names) or not all(
            isinstance(getattr(self, f), bool) for f in flags
        ):
            raise InvalidConfigError(f"{', '.join(names)} must be paths (strings) and {', '.join(flags)} true or false")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise InvalidConfigError("tls_cert_file and tls_key_file go together: give both, or neither")
        if isinstance(self.superusers, str):
            object.__setattr__(self, "superusers", tuple(u.strip() for u in self.superusers.split(",") if u.strip()))
        if not isinstance(self.superusers, (list, tuple)) or not all(isinstance(u, str) for u in self.superusers):
            raise InvalidConfigError(f"superusers must be a list of user names, got {self.superusers!r}")
        object.__setattr__(self, "superusers", tuple(self.superusers))
        if not isinstance(self.acls_file, str):
            raise InvalidConfigError("acls_file must be a path")
        if self.authorizes and not self.authenticates:
            raise InvalidConfigError(
                f"{'acls_file' if self.acls_file else 'etcd_acls'} needs authentication (users_file, etcd_users or "
                "tls_client_ca_file): ACLs name who may do what"
            )
        if self.tls_client_ca_file and not self.tls:
            raise InvalidConfigError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        self._check_cluster_security()
        exposed = [h for h in (self.host, self.metrics_host, self.kafka_host) if h and not is_loopback(h)]
        if exposed and not (self.tls and self.authenticates) and not self.insecure:
            missing = " and ".join(
                what for what, on in (("TLS", self.tls), ("authentication", self.authenticates)) if not on
            )
            raise InvalidConfigError(
                f"refusing to listen on {exposed[0]} without {missing}: anyone who reaches it could read, write "
                "and delete every topic. Give --tls-cert/--tls-key and --users-file (or --tls-client-ca), listen "
                "on 127.0.0.1, or pass --insecure to serve it open anyway"
            )

    def _check_cluster_security(self) -> None:
        if not self.cluster:
            if self.etcd_users or self.etcd_acls or self.broker_token_file:
                raise InvalidConfigError(
                    "etcd_users, etcd_acls and broker_token_file are a cluster's settings (with --cluster); a "
                    "single broker takes users_file and acls_file"
                )
            return
        if self.users_file or self.acls_file:
            raise InvalidConfigError(
                "in a cluster, users and ACLs live in etcd so that every broker applies the same ones: use "
                "etcd_users / etcd_acls (--etcd-users, --etcd-acls) and `tidelog users|acls ... --etcd URL`"
            )
        if self.authenticates and not self.tls:
            raise InvalidConfigError(
                "a cluster with authentication needs TLS (tls_cert_file, tls_key_file): brokers show each other "
                "credentials, which must not cross the network in the clear"
            )
        if self.etcd_users and not self.broker_token_file:
            raise InvalidConfigError(
                "with etcd_users, brokers show each other a token: give broker_token_file (a file holding the "
                "token of a user among superusers)"
            )
        if self.tls_client_ca_file and not self.etcd_users:
            raise InvalidConfigError(
                "a cluster with mutual TLS also needs etcd_users: brokers identify each other by broker_token_file"
            )

    @property
    def data_path_rpcs(self) -> int:
        """Data-path calls served at once: max_concurrent_rpcs less the admin reserve."""
        return self.max_concurrent_rpcs - min(self.admin_reserved_rpcs, self.max_concurrent_rpcs // 2)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> ServerConfig:
        return _replace(self, overrides)


def is_loopback(host: str) -> bool:
    """Whether `host` only ever reaches this machine: localhost or a loopback address (a host name
    that could resolve elsewhere is not)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
