"""The only place where tidelog errors become gRPC statuses.

A failed RPC carries the status code, the error's message as details, and trailing metadata:
`tidelog-error-code` (the stable numeric code) and, for OffsetOutOfRangeError, `tidelog-log-start`
and `tidelog-log-end` (the valid range). Errors inside a stream travel as an Error message with the
same fields. The client turns both back into exceptions by the numeric code (client/errors.py).

Every RPC ended here is logged once (event "rpc_error": method, code, message, peer): at INFO for
what the client did wrong or may retry, at ERROR for failures of the broker itself. The method name
comes from `MethodNames`, a server interceptor that stores it in a context variable for the RPC's
task (the aio servicer context does not expose it).
"""

from __future__ import annotations

import contextvars
import logging

import grpc

from .. import errors
from ..v1 import tidelog_pb2 as pb

from ..errors import CODE_KEY, LOG_END_KEY, LOG_START_KEY

log = logging.getLogger("tidelog.server")
_method: contextvars.ContextVar[str] = contextvars.ContextVar("tidelog_rpc_method", default="?")
_BROKER_FAULTS = (grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNKNOWN)


class MethodNames(grpc.aio.ServerInterceptor):
    """Remembers the method of the RPC being handled (one context-variable set per call)."""

    async def intercept_service(self, continuation, handler_call_details):
        _method.set(handler_call_details.method)
        return await continuation(handler_call_details)

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
    errors.TooManyOpenFilesError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.OutOfOrderSequenceError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.DuplicateSequenceError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InvalidProducerEpochError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.UnknownGroupError: grpc.StatusCode.NOT_FOUND,
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


MAX_DETAILS_CHARS = 1024
"""Status details travel as a header; gRPC clients drop a call whose headers pass 16 KiB by default,
so a message echoing a hostile 100 KB name would turn NOT_FOUND into a transport error."""


def details(exc: errors.TidelogError) -> str:
    message = exc.message
    if len(message) <= MAX_DETAILS_CHARS:
        return message
    return f"{message[:MAX_DETAILS_CHARS - 40]}... ({len(message)} characters, truncated)"


async def abort(context, exc: errors.TidelogError):
    """End the RPC with the status for exc (raises, as grpc.aio's abort does)."""
    code = status_of(exc)
    log.log(logging.ERROR if code in _BROKER_FAULTS else logging.INFO, "request failed", extra={
        "event": "rpc_error", "method": _method.get(), "code": code.name, "error_code": exc.code,
        "error": exc.message, "peer": context.peer()})
    context.set_trailing_metadata(trailing_metadata(exc))
    await context.abort(code, details(exc))


def error_message(exc: errors.TidelogError) -> pb.Error:
    """The in-stream form of an error."""
    msg = pb.Error(code=exc.code, grpc_status=status_of(exc).value[0], message=details(exc))
    if isinstance(exc, errors.OffsetOutOfRangeError):
        msg.log_start, msg.log_end = exc.log_start, exc.log_end
    return msg
