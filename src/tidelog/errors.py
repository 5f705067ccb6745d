"""The one tree of tidelog errors.

Every error a caller can act on has a stable numeric `code`, the same number on the wire (server and
client) and in the engine. Where Kafka has an equivalent error, the code is Kafka's; the names may
change, the codes may not. Each class also says whether retrying the same request can succeed.
"""

from __future__ import annotations

from typing import cast

BY_CODE: dict[int, type[TidelogError]] = {}
"""Every error class by its code: the registry the client rebuilds errors from (wire/statuses.py)."""


class TidelogError(Exception):
    """Base of every tidelog error. `code` is stable; `retriable` says if the same call may succeed later.

    A subclass must give its own `code`, unused by any other class: two classes on one code would
    come back from the wire as whichever was defined last."""

    code = -1
    retriable = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} needs its own error code")
        taken = BY_CODE.get(cls.code)
        if taken is not None:
            raise TypeError(f"error code {cls.code} of {cls.__name__} is already {taken.__name__}'s")
        BY_CODE[cls.code] = cls

    def __init__(self, message: str = "", **details: object) -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)
        self.message = str(self.args[0])
        self.details = details

    def __reduce__(self):  # keep details across pickling (process pools, subprocess tests)
        return (_rebuild, (self.__class__, self.message, self.details))


def _rebuild(cls, message, details):
    return cls(message, **details)


class UnknownTopicError(TidelogError):
    """The topic does not exist."""

    code = 3


class TopicExistsError(TidelogError):
    """A topic with this name already exists."""

    code = 36


class InvalidTopicError(TidelogError):
    """The topic name is not valid."""

    code = 17


class InvalidPartitionError(TidelogError):
    """The partition does not exist in this topic."""

    code = 37


class OffsetOutOfRangeError(TidelogError):
    """The requested offset is outside the partition's [log start, log end] range."""

    code = 1

    @property
    def log_start(self) -> int:
        return int(cast(int, self.details.get("log_start", -1)))  # set as an int by whoever raised it

    @property
    def log_end(self) -> int:
        return int(cast(int, self.details.get("log_end", -1)))  # set as an int by whoever raised it


class CorruptBatchError(TidelogError):
    """A record batch failed validation (size, magic, CRC-32C, offsets or record layout)."""

    code = 2


class RecordTooLargeError(TidelogError):
    """A record or batch is larger than the topic's max_batch_bytes."""

    code = 10


class OutOfOrderSequenceError(TidelogError):
    """An idempotent producer's batch does not follow its previous one (a gap in sequence numbers)."""

    code = 45


class DuplicateSequenceError(TidelogError):
    """An idempotent producer resent a batch older than the broker still remembers."""

    code = 46


class InvalidProducerEpochError(TidelogError):
    """A batch comes from an older epoch of a producer that has since restarted (a zombie)."""

    code = 47


class UnknownGroupError(TidelogError):
    """The consumer group does not exist (no members and no committed offsets)."""

    code = 69


class UnknownQueueError(TidelogError):
    """The queue does not exist (no consumer declared it, or it was deleted)."""

    code = 1010


class QueueConfigMismatchError(TidelogError):
    """A consumer declared a queue with settings other than the queue's own (change them with
    `tidelog queues alter`, or delete the queue)."""

    code = 1011


class UnsupportedError(TidelogError):
    """What was asked is not available on this broker (e.g. queues on a member of a cluster, for now)."""

    code = 1012


class UnknownMemberError(TidelogError):
    """The group has no such member (it left, or was removed after missing its session timeout)."""

    code = 25


class StaleGenerationError(TidelogError):
    """The member's generation is not the group's current one: it must rejoin to learn its assignment."""

    code = 22


class GroupNotEmptyError(TidelogError):
    """The operation needs a group without active members."""

    code = 68


class PartitionNotAssignedError(TidelogError):
    """The member does not own this partition in the current generation."""

    code = 1006


class InvalidRequestError(TidelogError):
    """An argument is invalid (wrong type, wrong length, impossible value)."""

    code = 42


class InvalidConfigError(TidelogError):
    """A configuration value is invalid."""

    code = 40


class UnsupportedCompressionError(TidelogError):
    """The compression codec is not supported."""

    code = 76


class ResourceLimitError(TidelogError):
    """A configured limit (topics, partitions, in-flight bytes) would be exceeded."""

    code = 89
    retriable = True


class StorageError(TidelogError):
    """The disk refused an operation; the log stays consistent up to the last acknowledged write."""

    code = 56


class DiskFullError(StorageError):
    """No space left on the device; nothing of the failed write is visible or acknowledged."""

    code = 1001
    retriable = True


class TooManyOpenFilesError(StorageError):
    """The process reached its open-file limit (each partition holds three descriptors)."""

    code = 1007
    retriable = True


class CorruptLogError(StorageError):
    """Data on disk is corrupt where it cannot be repaired automatically."""

    code = 1002


class DataDirLockedError(TidelogError):
    """The data directory is in use by another process."""

    code = 1003


class BrokerUnavailableError(TidelogError):
    """The broker cannot be reached (client side), or is not serving yet."""

    code = 1005
    retriable = True


class RequestTimeoutError(TidelogError):
    """The request did not complete within its deadline."""

    code = 7
    retriable = True


class EngineClosedError(TidelogError):
    """The engine is closed (or shutting down)."""

    code = 1004
    retriable = True


class ClusterUnavailableError(TidelogError):
    """The cluster's coordinator (etcd) cannot be reached or answered with an error."""

    code = 1008
    retriable = True


class BrokerIdInUseError(TidelogError):
    """Another live broker of the cluster is registered with this broker id."""

    code = 1009


class NotLeaderError(TidelogError):
    """This broker does not lead the partition (or, for replication, does not lead that epoch): ask the
    leader it names, or refresh metadata when it names none."""

    code = 6
    retriable = True

    @property
    def leader_id(self) -> int:
        return int(cast(int, self.details.get("leader_id", -1)))

    @property
    def leader_address(self) -> str:
        return str(self.details.get("leader_address", ""))


class NotCoordinatorError(NotLeaderError):
    """This broker does not coordinate consumer groups (in a cluster, the leader of the group-state
    partition does): ask the broker it names (leader_id, leader_address), or look it up again."""

    code = 16


class NotEnoughReplicasError(TidelogError):
    """Fewer replicas are in sync than the topic's min_insync_replicas: an acks=all produce is refused
    before anything is appended."""

    code = 19
    retriable = True


class NotEnoughReplicasAfterAppendError(TidelogError):
    """Appended by the leader, but the in-sync replicas did not all copy it in time: the outcome is
    unknown (it may still be committed); retry with the idempotent producer."""

    code = 20
    retriable = True


class InvalidReplicationFactorError(TidelogError):
    """The replication factor is below 1 or above the number of live brokers."""

    code = 38


class FencedLeaderEpochError(TidelogError):
    """The request carries a leader epoch older than the partition's: its sender follows a deposed leader."""

    code = 74
    retriable = True


class UnknownLeaderEpochError(TidelogError):
    """The request carries a leader epoch newer than this broker knows: it has not caught up with etcd yet."""

    code = 75
    retriable = True


class AuthenticationError(TidelogError):
    """The call carried no credentials, or ones the broker does not accept (Kafka's
    SASL_AUTHENTICATION_FAILED). Deliberately vague about which part was wrong."""

    code = 58


class AuthorizationError(TidelogError):
    """The caller is who it says, and may not do this (PERMISSION_DENIED): the message names the
    operation and the resource. Subclasses per kind of resource carry Kafka's codes."""

    code = 1013


class TopicAuthorizationError(AuthorizationError):
    """Not allowed on this topic (Kafka's TOPIC_AUTHORIZATION_FAILED)."""

    code = 29


class GroupAuthorizationError(AuthorizationError):
    """Not allowed on this consumer group (Kafka's GROUP_AUTHORIZATION_FAILED)."""

    code = 30


class ClusterAuthorizationError(AuthorizationError):
    """Not allowed on the cluster (Kafka's CLUSTER_AUTHORIZATION_FAILED)."""

    code = 31


class QueueAuthorizationError(AuthorizationError):
    """Not allowed on this queue."""

    code = 1014


BY_CODE[TidelogError.code] = TidelogError
ALL_ERRORS: tuple[type[TidelogError], ...] = tuple(BY_CODE.values())


def from_code(code: int, message: str, **details: object) -> TidelogError:
    """Rebuild the error a code stands for (the client side of the wire)."""
    return BY_CODE.get(code, TidelogError)(message, **details)
