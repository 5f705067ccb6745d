"""The only place where tidelog errors become gRPC statuses (and the only table the client reads back).

A failed RPC carries the status code, the error's message as details, and trailing metadata:
`tidelog-error-code` (the stable numeric code) and, for OffsetOutOfRangeError, `tidelog-log-start`
and `tidelog-log-end` (the valid range). Errors inside a stream travel as an Error message with the
same fields.
"""

from __future__ import annotations

import grpc

from .. import errors
from ..v1 import tidelog_pb2 as pb

CODE_KEY = "tidelog-error-code"
LOG_START_KEY = "tidelog-log-start"
LOG_END_KEY = "tidelog-log-end"

_STATUS: dict[type[errors.TidelogError], grpc.StatusCode] = {
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
    errors.OutOfOrderSequenceError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.DuplicateSequenceError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InvalidProducerEpochError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.CorruptLogError: grpc.StatusCode.DATA_LOSS,
    errors.StorageError: grpc.StatusCode.INTERNAL,
    errors.EngineClosedError: grpc.StatusCode.UNAVAILABLE,
    errors.BrokerUnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.RequestTimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.DataDirLockedError: grpc.StatusCode.FAILED_PRECONDITION,
}


def status_of(exc: errors.TidelogError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return grpc.StatusCode.UNKNOWN


def trailing_metadata(exc: errors.TidelogError) -> tuple[tuple[str, str], ...]:
    meta = [(CODE_KEY, str(exc.code))]
    if isinstance(exc, errors.OffsetOutOfRangeError):
        meta += [(LOG_START_KEY, str(exc.log_start)), (LOG_END_KEY, str(exc.log_end))]
    return tuple(meta)


async def abort(context, exc: errors.TidelogError):
    """End the RPC with the status for exc (raises, as grpc.aio's abort does)."""
    context.set_trailing_metadata(trailing_metadata(exc))
    await context.abort(status_of(exc), exc.message)


def error_message(exc: errors.TidelogError) -> pb.Error:
    """The in-stream form of an error."""
    msg = pb.Error(code=exc.code, grpc_status=status_of(exc).value[0], message=exc.message)
    if isinstance(exc, errors.OffsetOutOfRangeError):
        msg.log_start, msg.log_end = exc.log_start, exc.log_end
    return msg


# -- the client side of the same table -------------------------------------------------------------

def error_from_rpc(err: grpc.RpcError, target: str = "") -> errors.TidelogError:
    """Turn a failed RPC back into the tidelog error the broker raised."""
    code = err.code() if hasattr(err, "code") else None
    details = (err.details() if hasattr(err, "details") else None) or str(err)
    meta = dict(err.trailing_metadata() or ()) if hasattr(err, "trailing_metadata") else {}
    if CODE_KEY in meta:
        extra = {}
        if LOG_START_KEY in meta:
            extra = {"log_start": int(meta[LOG_START_KEY]), "log_end": int(meta[LOG_END_KEY])}
        return errors.from_code(int(meta[CODE_KEY]), details, **extra)
    if code == grpc.StatusCode.UNAVAILABLE:
        return errors.BrokerUnavailableError(f"cannot reach the broker{' at ' + target if target else ''}: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.RequestTimeoutError(f"request timed out: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.ResourceLimitError(details)
    if code == grpc.StatusCode.CANCELLED:
        return errors.BrokerUnavailableError(f"the call was cancelled: {details}")
    return errors.TidelogError(f"{code.name if code else 'error'}: {details}")


def error_from_message(msg: pb.Error) -> errors.TidelogError:
    extra = {}
    if msg.code == errors.OffsetOutOfRangeError.code:
        extra = {"log_start": msg.log_start, "log_end": msg.log_end}
    return errors.from_code(msg.code, msg.message, **extra)
