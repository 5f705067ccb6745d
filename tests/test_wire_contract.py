"""The wire contract (tidelog.wire) as both sides use it: every error class survives the trip from the
server's status to the client's exception, in a failed call and in a stream's Error message; method
paths come from the .proto, and a service table that drifts from it is refused."""

from __future__ import annotations

import grpc
import pytest

from tidelog import errors
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import methods, statuses

CODED = [cls for cls in errors.ALL_ERRORS if cls is not errors.TidelogError]


class FailedCall(grpc.RpcError):
    """A failed call as the client sees it: the status, details and trailing metadata the server set."""

    def __init__(self, code, text, metadata):
        super().__init__(text)
        self._code, self._text, self._metadata = code, text, metadata

    def code(self):
        return self._code

    def details(self):
        return self._text

    def trailing_metadata(self):
        return self._metadata


def sample(cls) -> errors.TidelogError:
    if cls is errors.OffsetOutOfRangeError:
        return cls("offset 99 of t-0 is outside [3, 7]", log_start=3, log_end=7)
    return cls(f"{cls.__name__} raised in the broker")


@pytest.mark.parametrize("cls", CODED, ids=lambda c: c.__name__)
def test_every_error_class_survives_a_failed_call(cls):
    exc = sample(cls)
    code = statuses.status_of(exc)
    assert code != grpc.StatusCode.UNKNOWN, f"{cls.__name__} has no status in the table"
    back = statuses.error_from_rpc(FailedCall(code, statuses.details(exc), statuses.trailing_metadata(exc)))
    assert type(back) is cls
    assert back.message == exc.message
    assert back.code == cls.code
    if cls is errors.OffsetOutOfRangeError:
        assert (back.log_start, back.log_end) == (3, 7)


@pytest.mark.parametrize("cls", CODED, ids=lambda c: c.__name__)
def test_every_error_class_survives_a_stream_error_message(cls):
    exc = sample(cls)
    msg = pb.Error.FromString(statuses.error_message(exc).SerializeToString())
    assert msg.grpc_status == statuses.status_of(exc).value[0]
    back = statuses.error_from_message(msg)
    assert (type(back), back.message) == (cls, exc.message)
    if cls is errors.OffsetOutOfRangeError:
        assert (back.log_start, back.log_end) == (3, 7)


def test_a_long_message_is_cut_to_fit_a_header_and_still_names_its_class():
    exc = errors.UnknownTopicError("no topic " + "x" * 100_000)
    back = statuses.error_from_rpc(
        FailedCall(grpc.StatusCode.NOT_FOUND, statuses.details(exc), statuses.trailing_metadata(exc))
    )
    assert type(back) is errors.UnknownTopicError
    assert len(back.message) <= statuses.MAX_DETAILS_CHARS
    assert "truncated" in back.message


@pytest.mark.parametrize(
    "code, expected",
    [
        (grpc.StatusCode.UNAVAILABLE, errors.BrokerUnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.RequestTimeoutError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceLimitError),
        (grpc.StatusCode.CANCELLED, errors.BrokerUnavailableError),
        (grpc.StatusCode.INTERNAL, errors.TidelogError),
    ],
)
def test_a_failure_of_the_transport_itself_becomes_the_error_for_its_status(code, expected):
    back = statuses.error_from_rpc(FailedCall(code, "transport said no", ()), "127.0.0.1:1")
    assert type(back) is expected
    assert "transport said no" in back.message


def test_an_error_class_cannot_take_a_code_another_class_has():
    with pytest.raises(TypeError, match="already UnknownTopicError's"):
        type("Impostor", (errors.TidelogError,), {"code": errors.UnknownTopicError.code})
    with pytest.raises(TypeError, match="needs its own error code"):
        type("Nameless", (errors.StorageError,), {})
    assert errors.BY_CODE[errors.UnknownTopicError.code] is errors.UnknownTopicError


def test_every_method_of_the_proto_has_its_path_and_types():
    for service in pb.DESCRIPTOR.services_by_name.values():
        for desc in service.methods:
            method = methods.method(service.name, desc.name)
            assert method.path == f"/{service.full_name}/{desc.name}"
            assert method.request.DESCRIPTOR is desc.input_type
            assert method.response.DESCRIPTOR is desc.output_type
    assert methods.method("Producer", "Produce").client_streaming
    with pytest.raises(KeyError, match="no method 'Produc'"):
        methods.method("Producer", "Produc")
    with pytest.raises(KeyError, match="no service 'Producers'"):
        methods.method("Producers", "Produce")


def test_a_service_table_that_drifts_from_the_proto_is_refused():
    def build(method):
        return grpc.unary_unary_rpc_method_handler(lambda request, context: None)

    table = {m.name: build for m in methods.methods("Admin")}
    assert methods.handlers("Admin", table) is not None
    with pytest.raises(ValueError, match="'CreateTopics'"):
        methods.handlers("Admin", {**table, "CreateTopics": build})
    del table["ListOffsets"]
    with pytest.raises(ValueError, match="'ListOffsets'"):
        methods.handlers("Admin", table)
