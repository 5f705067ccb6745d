"""Every Kafka message this broker serves, decoded and encoded from Kafka's own JSON message specs.

The specs and the encoders built from them come from kafka-python's `kafka.protocol` (pinned exactly:
it is a client's internals, used here server-side), which builds per-version classes for both the
classic and the flexible (KIP-482) encodings. Nothing of Kafka's is copied into tidelog; the two hot
paths (a produce request's record batches, a fetch response's segment bytes) are walked and written by
hand in produce.py and fetch.py instead, so their megabytes are never copied into Python objects.

SERVED is the one table of what is advertised in ApiVersions: an API or version not in it is not
served (the connection is closed, as Kafka does), except that ApiVersions itself always answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

try:
    from kafka.protocol.admin import (
        CreateTopicsRequest,
        CreateTopicsResponse,
        DeleteGroupsRequest,
        DeleteGroupsResponse,
        DeleteRecordsRequest,
        DeleteRecordsResponse,
        DeleteTopicsRequest,
        DeleteTopicsResponse,
        DescribeConfigsRequest,
        DescribeConfigsResponse,
        DescribeGroupsRequest,
        DescribeGroupsResponse,
        ListGroupsRequest,
        ListGroupsResponse,
    )
    from kafka.protocol.consumer import (
        FetchRequest,
        FetchResponse,
        HeartbeatRequest,
        HeartbeatResponse,
        JoinGroupRequest,
        JoinGroupResponse,
        LeaveGroupRequest,
        LeaveGroupResponse,
        ListOffsetsRequest,
        ListOffsetsResponse,
        OffsetCommitRequest,
        OffsetCommitResponse,
        OffsetFetchRequest,
        OffsetFetchResponse,
        OffsetForLeaderEpochRequest,
        OffsetForLeaderEpochResponse,
        SyncGroupRequest,
        SyncGroupResponse,
    )
    from kafka.protocol.metadata import (
        ApiVersionsRequest,
        ApiVersionsResponse,
        FindCoordinatorRequest,
        FindCoordinatorResponse,
        MetadataRequest,
        MetadataResponse,
    )
    from kafka.protocol.producer import (
        InitProducerIdRequest,
        InitProducerIdResponse,
        ProduceRequest,
        ProduceResponse,
    )
    from kafka.protocol.sasl import (
        SaslAuthenticateRequest,
        SaslAuthenticateResponse,
        SaslHandshakeRequest,
        SaslHandshakeResponse,
    )
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        f"the Kafka listener needs kafka-python 3.0 ({exc}); install it with: pip install 'tidelog[kafka]'"
    ) from None

from .framing import MalformedError


class Api(NamedTuple):
    key: int
    name: str  # Kafka's name of the API: "Produce", "Metadata", ...
    min_version: int
    max_version: int
    request: Any  # the kafka.protocol message class
    response: Any


def _api(request: Any, response: Any, low: int, high: int) -> Api:
    return Api(request.API_KEY, request.name.removesuffix("Request"), low, high, request, response)


# Ranges: what Kafka 4.0 serves, capped where a later version addresses topics by UUID (tidelog's topics
# have none, and clients use names when Metadata returns zero topic ids) and at what the specs hold.
SERVED: dict[int, Api] = {
    api.key: api
    for api in (
        _api(ProduceRequest, ProduceResponse, 0, 12),  # v0-2 are answered UNSUPPORTED_VERSION, as Kafka 4.0 does
        _api(FetchRequest, FetchResponse, 4, 12),
        _api(ListOffsetsRequest, ListOffsetsResponse, 1, 6),
        _api(MetadataRequest, MetadataResponse, 0, 12),
        _api(OffsetCommitRequest, OffsetCommitResponse, 2, 9),
        _api(OffsetFetchRequest, OffsetFetchResponse, 1, 9),
        _api(FindCoordinatorRequest, FindCoordinatorResponse, 0, 6),
        _api(JoinGroupRequest, JoinGroupResponse, 0, 9),
        _api(HeartbeatRequest, HeartbeatResponse, 0, 4),
        _api(LeaveGroupRequest, LeaveGroupResponse, 0, 5),
        _api(SyncGroupRequest, SyncGroupResponse, 0, 5),
        _api(DescribeGroupsRequest, DescribeGroupsResponse, 0, 5),
        _api(ListGroupsRequest, ListGroupsResponse, 0, 5),
        _api(ApiVersionsRequest, ApiVersionsResponse, 0, 4),
        _api(CreateTopicsRequest, CreateTopicsResponse, 2, 7),
        _api(DeleteTopicsRequest, DeleteTopicsResponse, 1, 6),
        _api(DeleteRecordsRequest, DeleteRecordsResponse, 0, 2),
        _api(InitProducerIdRequest, InitProducerIdResponse, 0, 5),
        _api(OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, 2, 4),
        _api(DescribeConfigsRequest, DescribeConfigsResponse, 1, 4),
        _api(DeleteGroupsRequest, DeleteGroupsResponse, 0, 2),
        # v1 only: v0 would carry the SASL tokens as bare frames outside Kafka's request format
        _api(SaslHandshakeRequest, SaslHandshakeResponse, 1, 1),
        _api(SaslAuthenticateRequest, SaslAuthenticateResponse, 0, 2),
    )
}

PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR, JOIN_GROUP = 8, 9, 10, 11
HEARTBEAT, LEAVE_GROUP, SYNC_GROUP, DESCRIBE_GROUPS, LIST_GROUPS = 12, 13, 14, 15, 16
API_VERSIONS, CREATE_TOPICS, DELETE_TOPICS, DELETE_RECORDS = 18, 19, 20, 21
INIT_PRODUCER_ID, OFFSET_FOR_LEADER_EPOCH, DESCRIBE_CONFIGS, DELETE_GROUPS = 22, 23, 32, 42
SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36
BEFORE_AUTHENTICATION = {API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE}
"""What a client may send on a SASL listener before it has authenticated (anything else closes the connection)."""


def flexible(api: Api, version: int) -> bool:
    """Whether this version uses the compact encodings and tagged fields (KIP-482)."""
    return bool(api.request.flexible_version_q(version))


def served(api_key: int, version: int) -> Api | None:
    api = SERVED.get(api_key)
    if api is None or not api.min_version <= version <= api.max_version:
        return None
    return api


def decode_request(api: Api, version: int, body: memoryview) -> Any:
    """The request body as a kafka.protocol container (attributes named as in the spec, snake_case).
    MalformedError for bytes that are not one, including a null where the spec allows none (the
    generated decoders read a -1 length as null whatever the field, and a handler must never see one)."""
    try:
        request = api.request.decode(body, version=version)
    except MalformedError:
        raise
    except Exception as exc:  # the generated decoders raise whatever a short or bad buffer gives them
        raise MalformedError(f"{api.name} v{version}: {type(exc).__name__}: {exc}") from None
    entries = [0]
    _check(request, api.request._struct.fields.values(), version, api.name, entries)
    return request


MAX_REQUEST_ENTRIES = 10_000
"""Array items (topics, partitions, groups, resources, ...) in one request, at most: each costs the
broker work, and a small request repeating one entry 100,000 times must not hold it for minutes."""


def _check(container: Any, fields: Any, version: int, path: str, entries: list[int]) -> None:
    """No null where the spec allows none, no null item in an array, and at most MAX_REQUEST_ENTRIES
    array items in all."""
    for field in fields:
        if not field.for_version_q(version) or field._tag is not None:  # absent in this version, or tagged
            continue
        value = getattr(container, field.name)
        if value is None:
            # (the codec reads the all-zero uuid, "no topic id", as None)
            if not field.nullable_for_version_q(version) and field._type_str != "uuid":
                raise MalformedError(f"{path}.{field.name} is null, which v{version} does not allow")
            continue
        if field.is_array():
            entries[0] += len(value)
            if entries[0] > MAX_REQUEST_ENTRIES:
                raise MalformedError(f"{path} has more than {MAX_REQUEST_ENTRIES} entries")
        if field.is_struct_array():
            for item in value:
                _check(item, field.fields.values(), version, f"{path}.{field.name}[]", entries)
        elif field.is_array():
            if any(item is None for item in value):
                raise MalformedError(f"{path}.{field.name} holds a null")
        elif field.is_struct():
            _check(value, field.fields.values(), version, f"{path}.{field.name}", entries)


def build(cls: Any, fields: Mapping[str, Any]) -> Any:
    """A message (or nested struct) of `cls` from plain dicts and lists, recursively; fields left out
    take the spec's defaults."""
    values = {}
    specs = cls._struct.fields
    for name, value in fields.items():
        spec = specs[name]
        if value is not None and spec.is_struct_array():
            value = [build(spec.data_class, item) for item in value]
        elif value is not None and spec.is_struct():
            value = build(spec.data_class, value)
        values[name] = value
    return cls(**values)


def encode_response(api: Api, version: int, fields: Mapping[str, Any]) -> bytes:
    """The response body (no header) of this version."""
    return bytes(build(api.response, fields).encode(version=version))


def response_header_flexible(api: Api, version: int) -> bool:
    """ApiVersions answers with header v0 whatever its version (KIP-511)."""
    return api.key != API_VERSIONS and flexible(api, version)
