"""tidelog errors ↔ gRPC statuses, both directions: the one table the server and the client share.

A failed RPC carries the status code, the error's message as details, and trailing metadata:
`tidelog-error-code` (the stable numeric code) and, for OffsetOutOfRangeError, `tidelog-log-start`
and `tidelog-log-end` (the valid range), for NotLeaderError `tidelog-leader-id` and
`tidelog-leader-address` (where to go instead). Errors inside a stream travel as an Error message with the
same fields. The client rebuilds the error by its numeric code, so a class and its code survive the
round trip (tests/test_wire_contract.py checks it for every error class).
"""

from __future__ import annotations

import grpc

from .. import errors
from ..v1 import tidelog_pb2 as pb

CODE_KEY = "tidelog-error-code"
LOG_START_KEY = "tidelog-log-start"
LOG_END_KEY = "tidelog-log-end"
LEADER_ID_KEY = "tidelog-leader-id"
LEADER_ADDRESS_KEY = "tidelog-leader-address"

STATUS: dict[type[errors.TidelogError], grpc.StatusCode] = {
    errors.UnknownTopicError: grpc.StatusCode.NOT_FOUND,
    errors.InvalidPartitionError: grpc.StatusCode.NOT_FOUND,
    errors.TopicExistsError: grpc.StatusCode.ALREADY_EXISTS,
    errors.OffsetOutOfRangeError: grpc.StatusCode.OUT_OF_RANGE,
    errors.InvalidTopicError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.CorruptBatchError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnsupportedCompressionError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.RecordTooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ResourceLimitError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DiskFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.TooManyOpenFilesError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.OutOfOrderSequenceError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.DuplicateSequenceError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InvalidProducerEpochError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.UnknownGroupError: grpc.StatusCode.NOT_FOUND,
    errors.UnknownQueueError: grpc.StatusCode.NOT_FOUND,
    errors.QueueConfigMismatchError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.UnsupportedError: grpc.StatusCode.UNIMPLEMENTED,
    errors.UnknownMemberError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.StaleGenerationError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.GroupNotEmptyError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PartitionNotAssignedError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.CorruptLogError: grpc.StatusCode.DATA_LOSS,
    errors.StorageError: grpc.StatusCode.INTERNAL,
    errors.EngineClosedError: grpc.StatusCode.UNAVAILABLE,
    errors.BrokerUnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.RequestTimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.DataDirLockedError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ClusterUnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.BrokerIdInUseError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotLeaderError: grpc.StatusCode.UNAVAILABLE,
    errors.NotEnoughReplicasError: grpc.StatusCode.UNAVAILABLE,
    errors.NotEnoughReplicasAfterAppendError: grpc.StatusCode.UNAVAILABLE,
    errors.FencedLeaderEpochError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InvalidReplicationFactorError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnknownLeaderEpochError: grpc.StatusCode.UNAVAILABLE,
    errors.AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    errors.AuthorizationError: grpc.StatusCode.PERMISSION_DENIED,
}

MAX_DETAILS_CHARS = 1024
"""Status details travel as a header; gRPC clients drop a call whose headers pass 16 KiB by default,
so a message echoing a hostile 100 KB name would turn NOT_FOUND into a transport error."""


# -- server → wire ------------------------------------------------------------------------------------


def status_of(exc: errors.TidelogError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.UNKNOWN


def trailing_metadata(exc: errors.TidelogError) -> tuple[tuple[str, str], ...]:
    meta = [(CODE_KEY, str(exc.code))]
    if isinstance(exc, errors.OffsetOutOfRangeError):
        meta += [(LOG_START_KEY, str(exc.log_start)), (LOG_END_KEY, str(exc.log_end))]
    if isinstance(exc, errors.NotLeaderError):
        meta += [(LEADER_ID_KEY, str(exc.leader_id)), (LEADER_ADDRESS_KEY, exc.leader_address)]
    return tuple(meta)


def details(exc: errors.TidelogError) -> str:
    message = exc.message
    if len(message) <= MAX_DETAILS_CHARS:
        return message
    return f"{message[: MAX_DETAILS_CHARS - 40]}... ({len(message)} characters, truncated)"


def error_message(exc: errors.TidelogError) -> pb.Error:
    """The in-stream form of an error."""
    msg = pb.Error(code=exc.code, grpc_status=status_of(exc).value[0], message=details(exc))
    if isinstance(exc, errors.OffsetOutOfRangeError):
        msg.log_start, msg.log_end = exc.log_start, exc.log_end
    if isinstance(exc, errors.NotLeaderError):
        msg.leader_id, msg.leader_address = exc.leader_id, exc.leader_address
    return msg


# -- wire → client ------------------------------------------------------------------------------------


def error_from_rpc(err: grpc.RpcError, target: str = "") -> errors.TidelogError:
    """Turn a failed RPC back into the tidelog error the broker raised; a failure without the
    tidelog code (the transport's own) by its status."""
    code = err.code() if hasattr(err, "code") else None
    text = (err.details() if hasattr(err, "details") else None) or str(err)
    meta = dict(err.trailing_metadata() or ()) if hasattr(err, "trailing_metadata") else {}
    if CODE_KEY in meta:
        extra: dict[str, object] = {}
        if LOG_START_KEY in meta:
            extra = {"log_start": int(meta[LOG_START_KEY]), "log_end": int(meta[LOG_END_KEY])}
        if LEADER_ID_KEY in meta:
            extra = {"leader_id": int(meta[LEADER_ID_KEY]), "leader_address": meta.get(LEADER_ADDRESS_KEY, "")}
        return errors.from_code(int(meta[CODE_KEY]), text, **extra)
    if code == grpc.StatusCode.UNAVAILABLE:
        return errors.BrokerUnavailableError(f"cannot reach the broker{' at ' + target if target else ''}: {text}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.RequestTimeoutError(f"request timed out: {text}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.ResourceLimitError(text)
    if code == grpc.StatusCode.UNAUTHENTICATED:  # refused before a tidelog handler ran (e.g. the TLS layer)
        return errors.AuthenticationError(text)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return errors.AuthorizationError(text)
    if code == grpc.StatusCode.CANCELLED:
        return errors.BrokerUnavailableError(f"the call was cancelled: {text}")
    return errors.TidelogError(f"{code.name if code else 'error'}: {text}")


def error_from_message(msg: pb.Error) -> errors.TidelogError:
    """The error an in-stream Error message stands for."""
    extra: dict[str, object] = {}
    if msg.code == errors.OffsetOutOfRangeError.code:
        extra = {"log_start": msg.log_start, "log_end": msg.log_end}
    if msg.code in (errors.NotLeaderError.code, errors.NotCoordinatorError.code):
        extra = {"leader_id": msg.leader_id, "leader_address": msg.leader_address}
    return errors.from_code(msg.code, msg.message, **extra)
