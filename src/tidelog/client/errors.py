"""Failed calls back into the tidelog errors the broker raised (by the stable numeric code).

The broker's side of the same contract is server/status.py.
"""

from __future__ import annotations

import grpc

from .. import errors
from ..errors import CODE_KEY, LOG_END_KEY, LOG_START_KEY
from ..v1 import tidelog_pb2 as pb


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
