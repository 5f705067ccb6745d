"""Where each partition is led, as the client learns it from any broker (Admin.Metadata).

A client bootstraps from a list of addresses ("host:port,host:port"). The first broker that answers
Metadata becomes its *home*. A single broker (clustered=false) leads everything, and is reached at the
address the client bootstrapped with, never the one it advertises (it may be 0.0.0.0:port): so
without a cluster, everything goes to home, and Metadata is asked once, at first use.

In a cluster, requests of a partition go to its leader. The map is refreshed when a broker says it is
not the leader (the leader it names is used at once), when a leader cannot be reached, and when a
topic is not known yet. Channels are kept per broker address and closed by close(). Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc

from ..errors import BrokerUnavailableError, NotCoordinatorError, NotLeaderError, TidelogError, UnknownTopicError
from ..v1 import tidelog_pb2 as pb
from ..values import ClusterBroker, ClusterMetadata, PartitionMetadata, TopicMetadata
from ..wire import methods
from ..wire.methods import Method
from ..wire.statuses import error_from_rpc
from .channel import parse_targets, sync_channel, unary
from .security import ClientSecurity

METADATA = methods.method("Admin", "Metadata")
DESCRIBE = methods.method("Admin", "DescribeTopic")
TopicPartition = tuple[str, int]
T = TypeVar("T")


def cluster_metadata(msg: pb.MetadataResponse) -> ClusterMetadata:
    """The plain values of a MetadataResponse."""
    return ClusterMetadata(
        msg.clustered,
        [ClusterBroker(b.broker_id, b.address, b.epoch) for b in msg.brokers],
        None if msg.controller_id < 0 else msg.controller_id,
        [
            TopicMetadata(
                t.name,
                [
                    PartitionMetadata(
                        p.partition,
                        None if p.leader_id < 0 else p.leader_id,
                        p.leader_address or None,
                        p.leader_epoch,
                        tuple(p.replicas),
                        tuple(p.isr),
                        tuple(p.adding_replicas),
                        tuple(p.removing_replicas),
                    )
                    for p in t.partitions
                ],
            )
            for t in msg.topics
        ],
    )


class Metadata:
    """The client's view of the cluster: bootstrap list, leaders by partition, a channel per broker."""

    def __init__(
        self, bootstrap: str | Sequence[str], *, timeout_s: float = 10.0, security: ClientSecurity | None = None
    ) -> None:
        self.bootstrap = parse_targets(bootstrap)
        self.timeout_s = timeout_s
        self.security = security
        """TLS and the token every channel to every broker is made with (None: plain)."""
        self.home = self.bootstrap[0]
        """The broker that answered last: the one a single broker is reached at, and groups' coordinator."""
        self.clustered: bool | None = None  # None until a broker answered Metadata
        self._coordinators: dict[str, str] = {}  # "groups"/"queues" → the broker that answered last
        self._lock = threading.RLock()
        self._channels: dict[str, grpc.Channel] = {}
        self._leaders: dict[TopicPartition, str | None] = {}  # None: no leader now (an election)
        self._counts: dict[str, int] = {}
        self._unknown: set[str] = set()  # topics no broker knew: their requests go to home, which refuses them
        self._brokers: list[str] = []  # addresses the cluster advertised
        self._closed = False

    # -- channels and calls --------------------------------------------------------------------------
    def channel(self, address: str) -> grpc.Channel:
        with self._lock:
            if self._closed:
                raise BrokerUnavailableError("the client is closed")
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = sync_channel(address, self.security)
            return channel

    def candidates(self) -> list[str]:
        """Brokers to ask, in order: home, the bootstrap list, then those the cluster advertised."""
        with self._lock:
            return list(dict.fromkeys([self.home, *self.bootstrap, *self._brokers]))

    def call(self, method: Method, request, timeout: float | None = None):
        """One unary call to any broker: home first, the next candidate when one cannot be reached."""
        return self._any(lambda address: self.call_at(address, method, request, timeout))

    def _any(self, call: Callable[[str], T]) -> T:
        last: TidelogError | None = None
        for address in self.candidates():
            try:
                reply = call(address)
            except BrokerUnavailableError as exc:
                last = exc
                continue
            with self._lock:
                self.home = address
            return reply
        assert last is not None
        raise last

    def _ask(self, address: str, request: pb.MetadataRequest) -> pb.MetadataResponse:
        """Metadata from one broker; one without the RPC (an older single broker) leads everything."""
        stub = self.channel(address).unary_unary(
            METADATA.path,
            request_serializer=METADATA.request.SerializeToString,
            response_deserializer=METADATA.response.FromString,
        )
        try:
            return stub(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            if hasattr(err, "code") and err.code() == grpc.StatusCode.UNIMPLEMENTED:
                return pb.MetadataResponse(clustered=False)
            raise error_from_rpc(err, address) from None

    def call_coordinator(
        self, method: Method, request, timeout: float | None = None, *, within_s: float = 30.0, role: str = "groups"
    ):
        """A call to the coordinator of consumer groups (role "groups") or of queues ("queues"): the
        broker that answered the last one, else the others in turn. In a cluster a broker that does not
        coordinate answers NOT_COORDINATOR naming the one that does (the leader of the state partition):
        the call goes there, for up to within_s (while a coordinator is elected, none is named)."""
        deadline = time.monotonic() + within_s
        pause = 0.05
        while True:
            with self._lock:
                first = self._coordinators.get(role, self.bootstrap[0])
                order = list(dict.fromkeys([first, *self.bootstrap, *self._brokers]))
            last: TidelogError | None = None
            refused: NotCoordinatorError | None = None  # a broker answered: the cluster is there
            tried: set[str] = set()
            for address in order:
                tried.add(address)
                try:
                    reply = self.call_at(address, method, request, timeout)
                except NotCoordinatorError as exc:
                    last = refused = exc
                    if exc.leader_address:
                        with self._lock:
                            self._coordinators[role] = exc.leader_address
                        break  # go there at once
                    continue
                except BrokerUnavailableError as exc:
                    last = exc
                    continue
                with self._lock:
                    self._coordinators[role] = address
                return reply
            assert last is not None
            if refused is None:
                raise last  # no broker could be reached at all: say so now
            if refused.leader_address not in tried and time.monotonic() < deadline:
                continue  # named a broker not asked yet: go there at once
            if time.monotonic() + pause > deadline:
                raise refused
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def call_at(self, address: str, method: Method, request, timeout: float | None = None):
        return unary(self.channel(address), method, address, self.timeout_s)(request, timeout=timeout)

    def call_leader(self, topic: str, partition: int, method: Method, request, *, within_s: float = 10.0):
        """One unary call to the partition's leader, following NotLeaderError and a leader that cannot
        be reached (in a cluster) for up to within_s."""
        deadline = time.monotonic() + within_s
        pause = 0.05
        while True:
            try:
                address = self.leader(topic, partition)
            except BrokerUnavailableError as exc:  # no leader right now, or no broker answers
                failure: TidelogError = exc
            else:
                try:
                    return self.call_at(address, method, request)
                except NotLeaderError as exc:
                    self.not_leader(topic, partition, exc)
                    if exc.leader_address and self.clustered and time.monotonic() < deadline:
                        continue  # named: go there at once
                    failure = exc
                except BrokerUnavailableError as exc:
                    if not self.clustered:
                        raise
                    self.unreachable(address)
                    failure = exc
            if time.monotonic() + pause > deadline:
                raise failure
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    # -- the map ---------------------------------------------------------------------------------------
    def refresh(self, topics: Sequence[str] = ()) -> ClusterMetadata:
        """Ask any broker where `topics` (empty: all) are led. UnknownTopicError for one unknown topic;
        of several, the unknown ones are just missing."""
        try:
            msg = self._any(lambda address: self._ask(address, pb.MetadataRequest(topics=list(topics))))
        except UnknownTopicError:
            if len(topics) <= 1:
                with self._lock:
                    self._unknown.update(topics)
                raise
            msg = self._any(lambda address: self._ask(address, pb.MetadataRequest()))
        self._apply(msg)
        if msg.clustered or msg.topics:  # (an older broker says nothing of topics)
            with self._lock:
                self._unknown.update(set(topics) - {t.name for t in msg.topics})
        return cluster_metadata(msg)

    def _apply(self, msg: pb.MetadataResponse) -> None:
        with self._lock:
            self.clustered = msg.clustered
            if msg.clustered:
                self._brokers = [b.address for b in msg.brokers if b.address]
            for topic in msg.topics:
                self._unknown.discard(topic.name)
                self._counts[topic.name] = len(topic.partitions)
                for p in topic.partitions:
                    self._leaders[(topic.name, p.partition)] = p.leader_address or None

    def partitions(self, topic: str) -> int:
        """The topic's partition count (UnknownTopicError when no broker knows it)."""
        with self._lock:
            count = self._counts.get(topic)
        if count is None:
            self.refresh([topic])
            with self._lock:
                count = self._counts.get(topic)
            if count is None:  # an older broker without Metadata: ask DescribeTopic
                reply = self.call(DESCRIBE, pb.DescribeTopicRequest(name=topic))
                count = len(reply.partitions)
        return count

    def cached_leader(self, topic: str, partition: int) -> tuple[bool, str | None]:
        """(known, address) without asking anybody: known False when a refresh is needed; address None
        when the partition has no leader now. Without a cluster, always home."""
        with self._lock:
            if self.clustered is False or topic in self._unknown:
                return True, self.home
            if self.clustered is None or (topic, partition) not in self._leaders:
                return False, None
            return True, self._leaders[(topic, partition)]

    def leader(self, topic: str, partition: int) -> str:
        """The address of the partition's leader, refreshing when it is not known. A partition not in
        the map (an unknown topic, a new partition) goes to home, which answers with the error; without
        a leader now (an election), BrokerUnavailableError: retry after a short backoff."""
        known, address = self.cached_leader(topic, partition)
        if not known or address is None:  # not known, or no leader when last asked: ask again
            try:
                self.refresh([topic])
            except UnknownTopicError:
                return self.home  # the broker refuses the request itself, with the error the caller expects
            known, address = self.cached_leader(topic, partition)
            if not known:
                return self.home
        if address is None:
            raise BrokerUnavailableError(f"{topic}[{partition}] has no leader right now (an election is under way)")
        return address

    def not_leader(self, topic: str, partition: int, err: NotLeaderError) -> None:
        """A broker said it does not lead the partition: go where it says, or find out."""
        with self._lock:
            if self.clustered and err.leader_address:
                self._leaders[(topic, partition)] = err.leader_address
            else:
                self._leaders.pop((topic, partition), None)

    def unreachable(self, address: str) -> None:
        """A broker could not be reached: in a cluster, the partitions it led are looked up again."""
        with self._lock:
            if not self.clustered:
                return
            for tp in [tp for tp, a in self._leaders.items() if a == address]:
                del self._leaders[tp]
            if self.home == address:
                rest = [a for a in self.candidates() if a != address]
                self.home = rest[0] if rest else address

    def forget(self, topic: str) -> None:
        """Look the topic up again at next use (it may have been recreated with other partitions)."""
        with self._lock:
            self._counts.pop(topic, None)
            self._unknown.discard(topic)
            for tp in [tp for tp in self._leaders if tp[0] == topic]:
                del self._leaders[tp]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels, self._channels = self._channels, {}
        for channel in channels.values():
            channel.close()
