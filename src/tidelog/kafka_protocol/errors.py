"""Kafka error codes for tidelog's errors: the one place the mapping lives.

tidelog's error codes below 1000 are Kafka's own (errors.py), so they pass through unless mapped here;
the others map to the Kafka code a Kafka client acts on the same way (retry, refresh metadata, or give up).
"""

from __future__ import annotations

from .. import errors

NONE = 0
UNKNOWN_SERVER_ERROR = -1
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
LEADER_NOT_AVAILABLE = 5
NOT_LEADER_OR_FOLLOWER = 6
BROKER_NOT_AVAILABLE = 8
MESSAGE_TOO_LARGE = 10
OFFSET_METADATA_TOO_LARGE = 12
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
NOT_ENOUGH_REPLICAS = 19
INVALID_TOPIC_EXCEPTION = 17
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
UNSUPPORTED_VERSION = 35
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_REPLICA_ASSIGNMENT = 39
INVALID_CONFIG = 40
INVALID_REQUEST = 42
KAFKA_STORAGE_ERROR = 56
GROUP_ID_NOT_FOUND = 69
NON_EMPTY_GROUP = 68
MEMBER_ID_REQUIRED = 79
GROUP_MAX_SIZE_REACHED = 81
POLICY_VIOLATION = 44
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75

_BEYOND_KAFKA: dict[type[errors.TidelogError], int] = {
    # a partition the topic does not have: Kafka's clients refresh metadata on this one (37 is for
    # CreatePartitions, which is not served)
    errors.InvalidPartitionError: UNKNOWN_TOPIC_OR_PARTITION,
    errors.StorageError: KAFKA_STORAGE_ERROR,  # also DiskFull, TooManyOpenFiles, CorruptLog
    errors.DataDirLockedError: KAFKA_STORAGE_ERROR,
    errors.BrokerUnavailableError: BROKER_NOT_AVAILABLE,
    errors.EngineClosedError: BROKER_NOT_AVAILABLE,
    errors.ClusterUnavailableError: BROKER_NOT_AVAILABLE,
    errors.UnknownQueueError: UNKNOWN_TOPIC_OR_PARTITION,
    errors.PartitionNotAssignedError: UNKNOWN_MEMBER_ID,
}


def code_of(exc: BaseException) -> int:
    """The Kafka error code for an exception raised while serving a request."""
    if isinstance(exc, errors.TidelogError):
        for cls in type(exc).__mro__:
            code = _BEYOND_KAFKA.get(cls)
            if code is not None:
                return code
        if 0 <= exc.code < 1000:
            return exc.code
        return INVALID_REQUEST if exc.retriable is False else BROKER_NOT_AVAILABLE
    return UNKNOWN_SERVER_ERROR


def message_of(exc: BaseException) -> str:
    return exc.message if isinstance(exc, errors.TidelogError) else f"{type(exc).__name__}: {exc}"
