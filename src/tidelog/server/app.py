"""Build the engine and the gRPC services from a ServerConfig, run them, and stop them gracefully.

Shutdown (SIGTERM/SIGINT or `stop()`): health turns NOT_SERVING, the server stops accepting calls and
gives in-flight ones up to shutdown_grace_s to finish, waiting subscriptions are released and
Produce streams end once they have answered what arrived, then the engine flushes and closes (writing the clean-shutdown marker). One process; blocking work runs in the
AsyncEngine's thread pool, never on the event loop.

Readiness: the metrics endpoint (if on) starts first, then the gRPC port is bound; while the engine
opens and recovers, /healthz answers 503 "recovering", the gRPC health service NOT_SERVING and every
tidelog RPC UNAVAILABLE ("starting"). Both turn SERVING / 200 once everything is up. On stop both turn
NOT_SERVING / 503 first; the metrics endpoint closes last.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Counter, Gauge

from .. import __version__
from ..cluster import controller as etcd_writes
from ..cluster.controller import Controller
from ..cluster.membership import BrokerSession, cluster_status, lease_clock
from ..cluster.metadata import ClusterView, Snapshot
from ..cluster.placement import TopicPlacement, assign_replicas
from ..cluster.security_docs import ACLS, REPAIR, USERS, where
from ..config import ServerConfig
from ..engine.async_engine import AsyncEngine
from ..engine.engine import Engine
from ..engine.state_topic import Append
from ..errors import (
    BrokerUnavailableError,
    EngineClosedError,
    NotCoordinatorError,
    NotLeaderError,
    StorageError,
    TidelogError,
    TopicExistsError,
)
from ..groups.coordinator import GroupCoordinator
from ..groups.offset_store import SEGMENT_BYTES as GROUP_SEGMENT_BYTES
from ..groups.offset_store import OffsetStore
from ..groups.records import OFFSETS_TOPIC
from ..queues.manager import SEGMENT_BYTES as QUEUE_SEGMENT_BYTES
from ..queues.manager import QueueManager
from ..queues.records import QUEUE_STATE_TOPIC
from ..replication.manager import ACKS_ALL, ReplicaManager, ReplicationSettings, test_mutation
from ..security import json_file
from ..security.acls import parse_acls
from ..security.authenticator import Authenticator
from ..security.authorizer import Authorizer
from ..security.peers import peer_credentials
from ..security.tls import ServerTls
from ..security.users import parse_users
from ..v1 import tidelog_pb2 as pb
from ..wire import methods
from . import (
    admin_service,
    consume_service,
    groups_service,
    produce_service,
    queue_service,
    replication_service,
    status,
)
from .access import AccessGate
from .admission import Admission
from .cluster_queue_data import ClusterQueueData
from .cluster_topics import ClusterTopics
from .metrics import EngineCollector, MetricsHttpServer, QueueCollector, ReplicationCollector, RpcMetrics
from .replica_link import LinkPool

log = logging.getLogger("tidelog.server")

CONTROLLER_TICK_S = 0.25
HAND_OVER_S = 5.0  # at most this long handing leaderships over at a clean stop  # how often the controller re-checks the cluster's state on its own
SERVICE_NAMES = tuple(
    methods.service_name(s) for s in ("Producer", "Consumer", "Admin", "Groups", "Queue", "Replication")
)


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.engine: Engine | None = None
        self.async_engine: AsyncEngine | None = None
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        self._stopped = asyncio.Event()
        self._groups: groups_service.GroupsService | None = None
        self._queue_service: queue_service.QueueService | None = None
        self.queues: QueueManager | None = None
        self.coordinator: GroupCoordinator | None = None
        self.cluster: BrokerSession | None = None  # with --cluster: this broker's membership
        self.replicas: ReplicaManager | None = None  # with --cluster: the roles of its partitions
        self._view: ClusterView | None = None
        self.controller: Controller | None = None
        self._placing: dict[str, asyncio.Future] = {}  # state topics being placed in the cluster
        self._control: asyncio.Future | None = None
        self._links: LinkPool | None = None
        self.metrics_port: int | None = None
        self._auth_failures: Counter | None = None
        self._denials: Counter | None = None
        """The port /metrics and /healthz are served on once started (None when turned off)."""
        self._metrics_http: MetricsHttpServer | None = None
        self._rpc_metrics: RpcMetrics | None = None
        self._not_ready: str | None = "recovering"  # why /healthz answers 503; None while serving
        self._pending_services: tuple[Any, Any] = ((), None)  # a cluster member's, until it has joined
        self.tls: ServerTls | None = None  # with tls_cert_file: the certificate every listener serves
        self.authenticator: Authenticator | None = None  # with users_file or tls_client_ca_file
        self.authorizer: Authorizer | None = None  # with acls_file or etcd_acls
        self._etcd_users: json_file.Pushed | None = None  # a cluster's users and ACLs, from its snapshots
        self._etcd_acls: json_file.Pushed | None = None
        self._peer_credentials: grpc.ChannelCredentials | None = None  # what this broker shows the others
        self._topic_refusal: Callable[[str], TidelogError | None] | None = None  # with ACLs: for Produce streams
        self._services = _Starting()
        self._produce: produce_service.ProduceService | None = None
        self._consume: consume_service.ConsumeService | None = None
        self._kafka: Any = None  # with kafka_port: the Kafka-protocol listener (kafka_protocol/listener.py)
        self._kafka_metrics: Any = None
        self.kafka_port: int | None = None
        """The port Kafka clients are served on once started (None when the listener is off)."""

    async def start(self) -> int:
        """Bind the port (health NOT_SERVING), open the engine (recovering if needed), then serve;
        returns the port."""
        self._open_security()
        self._start_metrics()
        try:
            return await self._start()
        except BaseException:
            await self._stop_metrics()
            raise

    async def _start(self) -> int:
        # Bind first and answer health checks NOT_SERVING (and tidelog RPCs UNAVAILABLE) while the log
        # is opened and recovered, which can take a while after a crash: probes and clients see why.
        limit = self.config.max_message_bytes
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
                ("grpc.max_allowed_incoming_connections", self.config.max_connections),
                # Replica links and clients that must notice a dead broker within seconds ping every
                # second, also on an idle connection: gRPC's default (every 5 min at most, only during
                # calls) answered them GOAWAY too_many_pings, a reconnect that fails calls just started.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 500),
            ],
            interceptors=(status.MethodNames(), *([self._rpc_metrics] if self._rpc_metrics is not None else [])),
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs,
        )
        self._server.add_generic_rpc_handlers((self._services,))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (
                *(pb.DESCRIPTOR.services_by_name[n.split(".")[-1]].full_name for n in SERVICE_NAMES),
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self._server,
        )
        await self._set_serving(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{self.config.host}:{self.config.port}"
        try:
            if self.tls is not None:
                port = self._server.add_secure_port(address, self.tls.grpc_credentials())
            else:
                port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            port = 0
            detail = str(exc)
        else:
            detail = "the address is in use or not available"
        if port == 0:
            raise OSError(f"cannot listen on {address}: {detail}")
        self.port = port
        await self._server.start()
        try:
            engine, groups = await self._open_engine()
            if self._stopped.is_set():  # stop() ran during recovery, before there was an engine to close
                raise EngineClosedError("the server was stopped while it was starting")
            if self.config.kafka_port != -1:  # bound before joining: its address is registered with the broker
                await self._start_kafka()
            if self.config.cluster:
                self.cluster = await self._join_cluster(port)
                await self._start_replication(self.cluster)
                self._services.ready(*self._pending_services)
        except BaseException:
            await self._stop_replication()
            await self._stop_kafka()
            await self._server.stop(0)
            await self._close_engine()
            raise
        groups.start()
        if self._queue_service is not None:
            self._queue_service.start()
        if self._kafka is not None:
            await self._kafka[0].serve()
            log.info(
                "serving Kafka clients",
                extra={"event": "kafka_started", "address": f"{self.config.kafka_host or self.config.host}:"
                       f"{self.kafka_port}"},
            )  # fmt: skip
        await self._set_serving(health_pb2.HealthCheckResponse.SERVING)
        self._not_ready = None
        log.info(
            "server started",
            extra={
                "event": "server_started",
                "address": f"{self.config.host}:{port}",
                "security": self.security,
                "data_dir": engine.path,
                "fsync": engine.config.fsync,
                "version": __version__,
                "clean_start": engine.clean_start,
                "recovery_ms": round(engine.recovery_seconds * 1000, 3),
                "metrics_port": self.metrics_port,
            },
        )
        return port

    async def _start_kafka(self) -> None:
        """Bind the Kafka listener, on the same engine and offset store (kafka_protocol/); it accepts
        clients once the broker serves (in a cluster: once it has joined)."""
        from ..kafka_protocol.access import KafkaAccess
        from ..kafka_protocol.apis import KafkaApis
        from ..kafka_protocol.classic_groups import ClassicGroups
        from ..kafka_protocol.listener import KafkaListener
        from ..kafka_protocol.topology import Node
        from .kafka_cluster import KafkaCluster

        assert self.async_engine is not None and self._produce is not None
        engine, c = self.async_engine, self.config

        async def busy(group_id: str) -> bool:
            coordinator = self.coordinator
            return coordinator is not None and await engine.offload(coordinator.has_members, group_id)

        groups = ClassicGroups(c.group_initial_rebalance_delay_ms, busy=busy)
        metrics = self._kafka_metrics
        topology = None
        if c.cluster:
            replicas = lambda: self.replicas  # noqa: E731 - set once the broker joined its cluster
            topology = KafkaCluster(engine, replicas, self._coordinator_elsewhere, c.default_replication_factor)
        apis = KafkaApis(
            engine,
            lambda: self.coordinator,
            groups,
            lambda: Node(
                max(c.broker_id, 0),
                self._advertised_host(c.kafka_host or c.host),
                c.kafka_advertised_port or self.kafka_port or 0,
            ),
            f"tidelog-{c.cluster_name}" if c.cluster else f"tidelog-{self.engine.storage_id if self.engine else ''}",
            auto_create_topics=c.kafka_auto_create_topics,
            max_fetch_bytes=min(c.engine.max_fetch_bytes, c.max_message_bytes),
            max_fetch_wait_ms=c.max_fetch_wait_ms,
            errors=metrics.error if metrics is not None else (lambda api, code: None),
            topology=topology,
            access=KafkaAccess(self.authorizer),
        )
        listener = KafkaListener(
            apis,
            self._produce.budget,
            max_message_bytes=c.max_message_bytes,
            max_connection_bytes=c.max_inflight_bytes_per_connection,
            max_connections=c.max_connections,
            idle_timeout_s=c.kafka_idle_timeout_ms / 1000,
            metrics=metrics,
            sasl=self._kafka_sasl(),
        )
        self.kafka_port = await listener.start(
            c.kafka_host or c.host,
            c.kafka_port,
            serving=False,
            ssl_context=self.tls.ssl_context() if self.tls is not None else None,
        )
        groups.start()
        self._kafka = (listener, groups)
        if self.coordinator is not None:
            self._share_groups(self.coordinator)

    def _kafka_sasl(self) -> Any:
        """With a users file: Kafka clients authenticate with SASL/SCRAM against the same users."""
        if self.authenticator is None or not self.config.has_users:
            return None
        from ..security.sasl import SaslServer

        return SaslServer(self.authenticator.known_users, lambda reason: self._count_auth_failure("?", reason))

    def _share_groups(self, coordinator: GroupCoordinator) -> None:
        """One group id, one protocol: the coordinator sees the Kafka listener's classic groups."""
        if self._kafka is not None:
            groups = self._kafka[1]
            coordinator.foreign_members = groups.has_members
            coordinator.foreign_describe = groups.describe

    @property
    def kafka_address(self) -> str:
        """The host:port Kafka clients reach this broker at ("" while its listener is off)."""
        if self.kafka_port is None:
            return ""
        c = self.config
        return f"{self._advertised_host(c.kafka_host or c.host)}:{c.kafka_advertised_port or self.kafka_port}"

    async def _stop_kafka(self) -> None:
        if self._kafka is not None:
            listener, groups = self._kafka
            self._kafka = None
            groups.close()
            await listener.stop()

    async def _join_cluster(self, port: int) -> BrokerSession:
        """Register this broker in the cluster's etcd and stand for controller."""
        from ..cluster import etcd

        session = BrokerSession(
            etcd.connect(self.config.cluster),
            self.config.cluster_name,
            self.config.broker_id,
            self.advertised_address,
            self.config.broker_session_timeout_ms,
            lease_clock(),
            self.engine.storage_id if self.engine is not None else "",
            self.kafka_address,
        )
        await session.start()
        return session

    @property
    def advertised_address(self) -> str:
        """The host:port other brokers and clients reach this broker at."""
        return f"{self._advertised_host(self.config.host)}:{self.port}"

    def _advertised_host(self, listening: str) -> str:
        host = self.config.advertised_host or listening
        if host in ("0.0.0.0", "::", "[::]", ""):
            import socket

            host = socket.getfqdn()
        return host

    async def _start_replication(self, session: BrokerSession) -> None:
        """Follow the cluster's state in etcd: the controller's elections, and this broker's roles."""
        assert self.engine is not None and self.async_engine is not None
        c = self.config
        self._links = LinkPool(
            session.broker_id,
            lambda: session.epoch,
            c.replica_fetch_max_bytes,
            c.replica_fetch_wait_ms,
            [
                ("grpc.max_receive_message_length", c.max_message_bytes),
                ("grpc.keepalive_time_ms", 1000),
                ("grpc.keepalive_timeout_ms", 1000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
            self._peer_credentials,
        )
        settings = ReplicationSettings(
            c.replica_lag_time_max_ms,
            c.replica_fetch_max_bytes,
            c.replica_fetch_wait_ms,
            c.replication_timeout_ms,
            test_mutation(),
            c.replication_throttle_bytes_per_s,
        )
        self.replicas = replicas = ReplicaManager(
            self.engine,
            self.async_engine.offload,
            session,
            self._links.link,
            settings,
            on_stale=lambda: self._view.changed() if self._view is not None else None,
        )
        controller = Controller(session)

        async def on_change(snapshot: Snapshot) -> None:
            self._push_security(snapshot)
            if await controller.act(snapshot) and self._view is not None:
                self._view.changed()
            await replicas.apply(snapshot)

        self.controller = controller
        replicas.on_leadership(OFFSETS_TOPIC, 0, self._coordinate, self._stop_coordinating)
        replicas.on_leadership(QUEUE_STATE_TOPIC, 0, self._run_queues, self._stop_queues)
        self._view = view = ClusterView(session.client, session.cluster, on_change)
        replicas.start()
        await view.start()

        async def control() -> None:
            """The controller also acts on the newest state at a steady pace, not only when it changes:
            a broker elected controller after the change it must act on (a dead leader's lease expired,
            and that freed the controller key too) sees no further change."""
            while True:
                await asyncio.sleep(CONTROLLER_TICK_S)
                if session.is_controller:
                    try:
                        if await controller.act(view.snapshot):
                            view.changed()
                    except Exception as exc:  # etcd out of reach: the next tick tries again
                        log.warning("controller pass failed: %s", exc)

        self._control = asyncio.ensure_future(control())

    # -- consumer groups and queues in a cluster ---------------------------------------------------------
    # Each has one coordinator: the leader of its state partition (`__consumer_offsets`-0, `__queue_state`-0).
    # Its writes are replicated acks=all, so the state survives its death; the next leader loads it.
    def _not_coordinator(self, topic: str, what: str) -> TidelogError:
        """NOT_COORDINATOR naming the broker that coordinates `what` (the leader of `topic`-0),
        placing that partition in the cluster first if nobody has yet."""
        replicas = self.replicas
        if replicas is None:
            return BrokerUnavailableError("the broker is joining its cluster; retry shortly")
        state = replicas.snapshot.partitions.get((topic, 0))
        if state is None:
            placing = self._placing.get(topic)
            if placing is None or placing.done():
                self._placing[topic] = asyncio.ensure_future(self._place_state_topic(replicas, topic))
            return NotCoordinatorError(f"the coordinator of {what} is being placed in the cluster; retry shortly")
        error = replicas.leader_error(topic, 0)
        return NotCoordinatorError(
            f"broker {replicas.broker_id} does not coordinate {what}: "
            + (f"broker {error.leader_id} at {error.leader_address} does" if error.leader_address else "none does now"),
            leader_id=error.leader_id,
            leader_address=error.leader_address,
        )

    def _coordinator_elsewhere(self) -> TidelogError:
        return self._not_coordinator(OFFSETS_TOPIC, "consumer groups")

    def _queues_elsewhere(self) -> TidelogError:
        return self._not_coordinator(QUEUE_STATE_TOPIC, "queues")

    async def _place_state_topic(self, replicas: ReplicaManager, topic: str) -> None:
        session = replicas.session
        try:
            found = await cluster_status(session.client, session.cluster)
            live = [b.broker_id for b in found.brokers]
            rf = min(self.config.default_replication_factor, len(live))
            segment = GROUP_SEGMENT_BYTES if topic == OFFSETS_TOPIC else QUEUE_SEGMENT_BYTES
            settings = {"retention_ms": -1, "retention_bytes": -1, "segment_bytes": segment}
            placement = TopicPlacement(topic, 1, rf, settings, self.async_engine.clock() if self.async_engine else 0)
            storage = {b.broker_id: b.storage for b in found.brokers}
            assignment = assign_replicas(live, 1, rf)
            await etcd_writes.create_topic(session.client, session.cluster, placement, assignment, storage)
            log.info(
                "state partition placed",
                extra={"event": "state_topic_placed", "topic": topic, "replication_factor": rf},
            )
        except TopicExistsError:
            pass
        except Exception as exc:
            log.warning("could not place %s in the cluster: %s", topic, exc)
        if self._view is not None:
            self._view.changed()

    def _coordinate(self, epoch: int) -> None:
        """This broker now leads the group-state partition: load the groups from it and serve them."""

        async def load() -> None:
            assert self.engine is not None and self.async_engine is not None and self.replicas is not None
            engine, replicas = self.engine, self.replicas
            store_append = self._replicated_append(OFFSETS_TOPIC, asyncio.get_running_loop())
            try:
                coordinator = await self.async_engine.offload(
                    lambda: GroupCoordinator(
                        engine,
                        OffsetStore(engine, append=store_append),
                        initial_rebalance_delay_ms=self.config.group_initial_rebalance_delay_ms,
                        topics=ClusterTopics(engine, replicas, self._peer_credentials),
                    )
                )
            except TidelogError as exc:
                log.error("could not load the consumer groups: %s", exc.message)
                return
            role = replicas.led().get((OFFSETS_TOPIC, 0))
            if role is None or role.state.leader_epoch != epoch or self._groups is None:
                return  # lost the leadership while loading
            self.coordinator = self._groups.coordinator = coordinator
            self._share_groups(coordinator)
            log.warning(
                "group coordinator here",
                extra={"event": "coordinator_loaded", "leader_epoch": epoch, "groups": len(coordinator.list_groups())},
            )

        asyncio.ensure_future(load())

    def _stop_coordinating(self) -> None:
        if self._groups is not None and self._groups.coordinator is not None:
            log.warning("group coordinator moved away", extra={"event": "coordinator_unloaded"})
        self.coordinator = None
        if self._groups is not None:
            self._groups.coordinator = None
        if self._kafka is not None:  # its Kafka members find the new coordinator and join there
            self._kafka[1].drop_all()

    def _replicated_append(self, state_topic: str, loop: asyncio.AbstractEventLoop) -> Append:
        """A coordinator's writes to its state partition in a cluster: appended as the leader, answered
        once every in-sync replica has them (acks=all), so what it acknowledged survives its death. A
        leader that lost the partition answers NOT_COORDINATOR: its clients go to the new one."""

        def append(keys: Sequence[bytes], values: Sequence[bytes | None]) -> None:
            replicas, engine = self.replicas, self.engine
            assert replicas is not None and engine is not None
            epochs: dict[tuple[str, int], int] = {}

            def admit(topic: str, partition: int) -> int:
                epochs[(topic, partition)] = epoch = replicas.admit(topic, partition, ACKS_ALL)
                return epoch

            try:
                result = engine.produce(
                    state_topic, list(values), keys=list(keys), partition=0, internal=True, admit=admit
                )[0]

                async def committed() -> None:
                    await replicas.appended(state_topic, 0)
                    await replicas.committed(state_topic, 0, result.last_offset + 1, epochs[(state_topic, 0)])

                asyncio.run_coroutine_threadsafe(committed(), loop).result()
            except NotCoordinatorError:
                raise
            except NotLeaderError as exc:
                raise NotCoordinatorError(
                    f"this broker no longer leads {state_topic}-0: {exc.message}",
                    leader_id=exc.leader_id,
                    leader_address=exc.leader_address,
                ) from None

        return append

    def _run_queues(self, epoch: int) -> None:
        """This broker now leads the queue-state partition: load the queues from it and serve them."""

        async def load() -> None:
            assert self.engine is not None and self.async_engine is not None and self.replicas is not None
            engine, replicas = self.engine, self.replicas
            append = self._replicated_append(QUEUE_STATE_TOPIC, asyncio.get_running_loop())
            data = ClusterQueueData(engine, replicas, lambda: self.advertised_address, self._peer_credentials)
            try:
                manager = await self.async_engine.offload(lambda: QueueManager(engine, append, data=data))
            except TidelogError as exc:
                log.error("could not load the queues: %s", exc.message)
                data.close()
                return
            role = replicas.led().get((QUEUE_STATE_TOPIC, 0))
            if role is None or role.state.leader_epoch != epoch or self._queue_service is None:
                manager.close()
                data.close()
                return  # lost the leadership while loading
            self._stop_queues()
            self.queues = self._queue_service.manager = manager
            log.warning(
                "queue coordinator here",
                extra={"event": "queues_loaded", "leader_epoch": epoch, "queues": len(manager.queues())},
            )

        asyncio.ensure_future(load())

    def _stop_queues(self) -> None:
        manager = self.queues
        if manager is None:
            return
        log.warning("queue coordinator moved away", extra={"event": "queues_unloaded"})
        self.queues = None
        if self._queue_service is not None:
            self._queue_service.manager = None
        manager.close()
        if isinstance(manager.data, ClusterQueueData):
            manager.data.close()

    async def _stop_replication(self) -> None:
        if self._control is not None:
            self._control.cancel()
        if self._view is not None:
            await self._view.close()
        if self.replicas is not None:
            await self.replicas.close()
        if self._links is not None:
            await self._links.close()

    async def _open_engine(self) -> tuple[Engine, groups_service.GroupsService]:
        """Open (and recover) the log, then put the real services behind the bound port; the engine
        and the groups service (not started yet)."""
        loop = asyncio.get_running_loop()
        self.engine = engine = await loop.run_in_executor(
            None, lambda: Engine.open(self.config.data_dir, self.config.engine)
        )
        self.async_engine = async_engine = AsyncEngine(engine, self.config.io_threads)
        if self.config.cluster:  # the coordinator comes with the leadership of the group-state partition
            self._groups = groups = groups_service.GroupsService(async_engine, None, self._coordinator_elsewhere)
        else:
            self.coordinator = coordinator = await loop.run_in_executor(
                None,
                lambda: GroupCoordinator(
                    engine, initial_rebalance_delay_ms=self.config.group_initial_rebalance_delay_ms
                ),
            )
            self._groups = groups = groups_service.GroupsService(async_engine, coordinator)
            self.queues = await loop.run_in_executor(None, lambda: QueueManager(engine))
        # (in a cluster the queues come with the leadership of the queue-state partition)
        self._queue_service = queue_service.QueueService(async_engine, self.queues, self._queues_elsewhere)
        admission = Admission(
            self.config,
            (methods.service_name("Producer"), methods.service_name("Consumer")),
            self._rpc_metrics.refused if self._rpc_metrics is not None else None,
        )
        replicas = lambda: self.replicas  # noqa: E731 - set once the broker joined its cluster
        self._consume = consume = consume_service.ConsumeService(async_engine, self.config, replicas)
        self._produce = produce = produce_service.ProduceService(
            async_engine, self.config, admission.connection, replicas
        )
        produce.topic_refusal = self._topic_refusal
        handlers = (
            produce.handler(),
            consume.handler(),
            admin_service.AdminService(
                async_engine, consume, lambda: self.cluster, self.advertised_address, replicas
            ).handler(),
            groups.handler(),
            self._queue_service.handler(),
            replication_service.ReplicationService(replicas).handler(),
        )
        if self.config.cluster:
            # Served only once the broker has joined (_start): until then there is no replica manager,
            # and the services would answer as a single broker, acknowledging records no replica has.
            # A broker restarted within its previous session waits here for it to expire, on its old
            # port, while clients with stale metadata still send to it.
            self._pending_services = (handlers, admission)
        else:
            self._services.ready(handlers, admission)
        return engine, groups

    def _open_security(self) -> None:
        """The TLS material and the users, before any listener: unreadable files stop the start here."""
        c = self.config
        if c.tls:
            self.tls = ServerTls(c.tls_cert_file, c.tls_key_file, c.tls_client_ca_file)
            if c.cluster:
                self._peer_credentials = peer_credentials(c.tls_ca_file, c.broker_token_file)
        if c.authenticates:
            users: str | json_file.Pushed = c.users_file
            if c.etcd_users:  # the users etcd holds, handed over with each snapshot (_push_security)
                users = self._etcd_users = json_file.Pushed(
                    lambda raw: parse_users(raw, where(c.cluster_name, USERS), REPAIR), "users", {}
                )
            self.authenticator = Authenticator(
                users, bool(c.tls_client_ca_file), self._count_auth_failure, max_failures=c.auth_max_failures
            )
            if c.authorizes:
                acls: str | json_file.Pushed = c.acls_file
                if c.etcd_acls:
                    acls = self._etcd_acls = json_file.Pushed(
                        lambda raw: parse_acls(raw, where(c.cluster_name, ACLS), REPAIR), "ACLs", []
                    )
                self.authorizer = Authorizer(acls, c.superusers, self.authenticator.groups_of, self._count_denial)
            self._services.gate = AccessGate(self.authenticator, self.authorizer)
            if self.authorizer is not None:
                self._topic_refusal = self._services.gate.topic_refusal

    def _push_security(self, snapshot: Snapshot) -> None:
        """A cluster's users and ACLs as etcd has them now, to the checks (within a second of a change)."""
        if self._etcd_users is not None:
            self._etcd_users.push(snapshot.security.get(USERS))
        if self._etcd_acls is not None:
            self._etcd_acls.push(snapshot.security.get(ACLS))

    @property
    def security(self) -> str:
        """What protects the listeners, for the start line: "open" when nothing does."""
        c = self.config
        parts = (
            (["tls"] if c.tls else [])
            + (["mtls"] if c.tls_client_ca_file else [])
            + (["tokens"] if c.has_users else [])
            + (["acls"] if c.authorizes else [])
        )
        return "+".join(parts) or "open"

    def reload_security(self) -> None:
        """SIGHUP: read the certificate and the users file again now."""
        if self.tls is not None:
            self.tls.reload()
        if self.authenticator is not None:
            self.authenticator.reload()
        if self.authorizer is not None:
            self.authorizer.reload()

    def _count_auth_failure(self, principal: str, reason: str) -> None:
        if self._auth_failures is not None:
            self._auth_failures.labels(principal, reason).inc()

    def _count_denial(self, principal: str, operation: str, resource: str) -> None:
        if self._denials is not None:
            self._denials.labels(principal, operation, resource).inc()

    def _start_metrics(self) -> None:
        """Serve /metrics and /healthz (503 until the broker serves); OSError if the port is taken."""
        if self.config.metrics_port == -1:
            return
        registry = CollectorRegistry()
        self._rpc_metrics = RpcMetrics(registry)
        registry.register(
            EngineCollector(
                lambda: self.engine,
                lambda: self.coordinator,
                lambda: self._not_ready is None,
                self.config.metrics_max_partitions,
            )
        )
        registry.register(ReplicationCollector(lambda: self.replicas, lambda: self.controller))
        registry.register(QueueCollector(lambda: self.queues))
        if self.config.kafka_port != -1:
            from ..kafka_protocol.metrics import KafkaMetrics

            self._kafka_metrics = KafkaMetrics(registry)
        Gauge(
            "tidelog_produce_inflight_bytes",
            "Produce bytes read ahead of their acks on all streams "
            "(bounded by max_inflight_bytes: near it, producers are being held back)",
            registry=registry,
        ).set_function(lambda: self._produce.inflight_bytes if self._produce is not None else 0)
        Gauge(
            "tidelog_subscribe_buffer_bytes",
            "Bytes sent to subscribers and not yet credited back, on all "
            "subscriptions (bounded by max_subscribe_buffer_bytes: near it, stalled consumers hold the "
            "broker's memory and subscriptions wait)",
            registry=registry,
        ).set_function(lambda: self._consume.buffered_bytes if self._consume is not None else 0)
        Gauge(
            "tidelog_cluster_member",
            "1 while this broker counts itself a member of its cluster (registered in etcd, its local "
            "deadline not passed); 0 for a single broker, or one that lost its session",
            registry=registry,
        ).set_function(lambda: int(self.cluster is not None and self.cluster.alive))
        Gauge(
            "tidelog_cluster_controller",
            "1 while this broker is its cluster's controller (exactly one broker of a healthy cluster)",
            registry=registry,
        ).set_function(lambda: int(self.cluster is not None and self.cluster.is_controller))
        self._auth_failures = Counter(
            "tidelog_authentication_failures",
            "Calls refused as unauthenticated, by principal (? when unknown) and reason",
            ("principal", "reason"),
            registry=registry,
        )
        self._denials = Counter(
            "tidelog_authorization_denials",
            "Requests refused by the ACLs, by principal, operation and kind of resource",
            ("principal", "operation", "resource"),
            registry=registry,
        )
        host = self.config.metrics_host or self.config.host
        authenticate = None
        if self.authenticator is not None:
            check = self.authenticator.principal_blocking
            authenticate = lambda header, names, peer: check(  # noqa: E731
                [("authorization", header)] if header else [], names, peer
            )
        try:
            self._metrics_http = MetricsHttpServer(
                host,
                self.config.metrics_port,
                registry,
                lambda: self._not_ready,
                self.tls.ssl_context() if self.tls is not None else None,
                authenticate,
            )
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{self.config.metrics_port}: {exc.strerror or exc}") from None
        self._metrics_http.start()
        self.metrics_port = self._metrics_http.port
        log.info(
            "metrics on http://%s:%d/metrics (health: /healthz)",
            host,
            self.metrics_port,
            extra={"event": "metrics_started", "address": f"{host}:{self.metrics_port}"},
        )

    async def _stop_metrics(self) -> None:
        if self._metrics_http is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._metrics_http.stop)
            self._metrics_http = None

    async def _set_serving(self, state: int) -> None:
        for name in ("", *SERVICE_NAMES):
            result = self._health.set(name, state)
            if asyncio.iscoroutine(result):
                await result

    async def stop(self) -> None:
        """Drain and stop; safe to call more than once."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._not_ready = "shutting down"
        log.info(
            "shutting down: finishing in-flight calls",
            extra={"event": "server_stopping", "grace_s": self.config.shutdown_grace_s},
        )
        await self._set_serving(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._control is not None:
            self._control.cancel()
        if self._view is not None:  # no new roles from here on (a handed-over partition is not followed)
            await self._view.close()
            self._view = None
        if self.replicas is not None:  # controlled shutdown: leaderships move before anything stops
            try:
                moved = await asyncio.wait_for(self.replicas.hand_over(), HAND_OVER_S)
                log.info("leaderships handed over", extra={"event": "leaders_handed_over", "partitions": moved})
            except asyncio.TimeoutError:
                log.warning("handing leaderships over took too long; their leases move them instead")
        await self._stop_replication()
        if self.cluster is not None:  # leave at once: the controller role moves without waiting for a lease
            await self.cluster.close()
        if self._groups is not None:
            self._groups.stop()
        if self._queue_service is not None:
            self._queue_service.stop()
        if self.async_engine is not None and self._kafka is not None:
            self.async_engine.wake_all()  # long-polling fetches answer at once
        await self._stop_kafka()
        if self._server is not None:
            stopping = asyncio.ensure_future(self._server.stop(self.config.shutdown_grace_s))
            if self.async_engine is not None:
                self.async_engine.wake_all()
            if self._produce is not None:
                self._produce.stop()
            await stopping
        await self._close_engine()
        await self._stop_metrics()
        log.info("server stopped", extra={"event": "server_stopped"})

    async def _close_engine(self) -> None:
        if self.async_engine is not None:
            self.async_engine.close()
        if self.engine is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.engine.close)
            except StorageError:
                log.exception(
                    "closing the engine failed; the next start recovers the log", extra={"event": "engine_close_failed"}
                )

    async def wait_closed(self) -> None:
        await self._stopped.wait()
        if self._server is not None:
            await self._server.wait_for_termination()


class _Starting(grpc.GenericRpcHandler):
    """The tidelog services behind the port: until the log is open, every call of theirs ends at once
    with UNAVAILABLE ("starting"), which clients retry; then the real handlers, each call admitted
    through the per-connection and data-path limits (server/admission.py)."""

    def __init__(self) -> None:
        self._ready: tuple[tuple[grpc.GenericRpcHandler, ...], Admission] | None = None  # set once by ready()
        self.gate: AccessGate | None = None  # with authentication: checked before admission
        self._unavailable = {
            f"/{service.full_name}/{method.name}": _unavailable(method)
            for service in pb.DESCRIPTOR.services_by_name.values()
            for method in service.methods
        }

    def ready(self, handlers: tuple[grpc.GenericRpcHandler, ...], admission: Admission) -> None:
        self._ready = (handlers, admission)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if self._ready is None:
            return self._unavailable.get(handler_call_details.method)
        handlers, admission = self._ready
        for handler in handlers:
            found = handler.service(handler_call_details)
            if found is not None:
                method = handler_call_details.method
                admitted = admission.wrap(method, found)
                return admitted if self.gate is None else self.gate.wrap(method, admitted)
        return None


def _unavailable(method: MethodDescriptor) -> grpc.RpcMethodHandler:
    """A handler of the method's shape that answers UNAVAILABLE without reading the request."""
    error = BrokerUnavailableError("the broker is starting (opening its log, or joining its cluster); retry shortly")

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> None:
        await status.abort(context, error)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        await status.abort(context, error)
        yield b""  # unreachable: makes this an async generator, as streaming handlers are

    if method.server_streaming:
        make = (
            grpc.stream_stream_rpc_method_handler if method.client_streaming else grpc.unary_stream_rpc_method_handler
        )
        return make(streaming)
    make = grpc.stream_unary_rpc_method_handler if method.client_streaming else grpc.unary_unary_rpc_method_handler
    return make(unary)


def log_tasks() -> None:
    """On SIGUSR1: where every coroutine of the server waits (what a thread dump shows for threads,
    which a profiler cannot show for asyncio tasks), to find a wait that never ends."""
    tasks = asyncio.all_tasks()
    for task in tasks:
        # by hand: Task.print_stack fails on a frame without a line number (compiled coroutines)
        frames = [f"{f.f_code.co_name} ({f.f_code.co_filename}:{f.f_lineno})" for f in task.get_stack(limit=16)]
        log.warning("task %s: %s", task.get_name(), " <- ".join(reversed(frames)) or repr(task),
                    extra={"event": "task_dump"})  # fmt: skip
    log.warning("%d tasks dumped", len(tasks), extra={"event": "task_dump"})


async def serve(config: ServerConfig, ready: Callable[[Server], object] | None = None) -> None:
    """Run a server until SIGTERM or SIGINT. `ready(server)` is called once it serves (server.port and
    server.metrics_port are then the bound ports); if it raises, the server stops cleanly and the error
    goes on to the caller."""
    server = Server(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Handled from the start: a signal during recovery stops the server cleanly once the log is open
    # (recovery itself cannot be interrupted half-way), instead of killing it mid-recovery.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, log_tasks)
    loop.add_signal_handler(signal.SIGHUP, server.reload_security)
    await server.start()
    try:
        if ready is not None and not stop.is_set():
            ready(server)
        await stop.wait()
    finally:
        await server.stop()
