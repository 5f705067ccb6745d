"""Hand framing of the hot-path gRPC messages in the protobuf wire format.

ProduceRequest (client → server) and SubscribeResponse / FetchResponse (server → client) carry
megabytes of batch bytes. Building or parsing them with the generated classes copies those bytes at
every step; here the batch bytes are sliced out of the received buffer without a copy, and framing
costs one join. The output is byte-compatible with the generated classes (tests compare them), so
clients in other languages use the .proto as usual.
"""

from __future__ import annotations

from typing import NamedTuple

_VARINT, _LEN = 0, 2


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # protobuf encodes negative int64 as ten-byte two's complement
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _read_varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        if shift == 63 and b > 1:  # the tenth byte holds bit 63 only
            raise ValueError("a varint overflows 64 bits")
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def iter_fields(buf):
    """(field number, wire type, value) for each field; LEN values are zero-copy memoryviews."""
    view = memoryview(buf)
    pos, end = 0, len(view)
    while pos < end:
        key, pos = _read_varint(view, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, pos = _read_varint(view, pos)
        elif wire_type == _LEN:
            length, pos = _read_varint(view, pos)
            if length > end - pos:
                raise ValueError("a length-delimited field runs past the end of the message")
            value = view[pos : pos + length]
            pos += length
        elif wire_type == 1:
            value, pos = bytes(view[pos : pos + 8]), pos + 8
        elif wire_type == 5:
            value, pos = bytes(view[pos : pos + 4]), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        if pos > end:
            raise ValueError("truncated field")
        yield field, wire_type, value


# -- ProduceRequest -----------------------------------------------------------------------------------

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


class ProduceRequestView(NamedTuple):
    sequence: int
    topic: str
    partition: int
    batches: memoryview
    acks: int = 0  # the Acks enum's number (0: the broker's default)


class BadFieldError(ValueError):
    """A well-framed ProduceRequest with a field its type cannot hold (a partition outside int32, a
    topic that is not UTF-8). Carries the sequence, so the refusal can be acknowledged in order."""

    def __init__(self, message: str, sequence: int, topic: str) -> None:
        super().__init__(message)
        self.sequence, self.topic = sequence, topic


def encode_produce_request(sequence: int, topic: str, partition: int, batches, acks: int = 0) -> bytes:
    topic_bytes = topic.encode()
    head = b"".join(
        [
            *((_key(5, _VARINT), _varint(acks)) if acks else ()),
            _key(1, _VARINT),
            _varint(sequence),
            _key(2, _LEN),
            _varint(len(topic_bytes)),
            topic_bytes,
            _key(3, _VARINT),
            _varint(partition),
            _key(4, _LEN),
            _varint(len(batches)),
        ]
    )
    return b"".join([head, batches])


def parse_produce_request(buf) -> ProduceRequestView:
    """The request's fields; ValueError when it is not a ProduceRequest at all, BadFieldError when a
    field does not fit its type. Generated protobuf code would cut an out-of-range int32 to its low
    32 bits (partition 2**32 + 1 read as 1): here it is refused, never redirected to another partition."""
    sequence, topic_bytes, partition, batches, acks = 0, b"", 0, memoryview(b""), 0
    for field, wire_type, value in iter_fields(buf):
        if field == 1 and wire_type == _VARINT:
            sequence = value
        elif field == 2 and wire_type == _LEN:
            topic_bytes = value
        elif field == 3 and wire_type == _VARINT:
            partition = _signed(value)
            if 1 << 31 <= partition < 1 << 32:
                partition -= 1 << 32  # an int32 written as a 32-bit value
        elif field == 4 and wire_type == _LEN:
            batches = value
        elif field == 5 and wire_type == _VARINT:
            acks = value
    try:
        topic = bytes(topic_bytes).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadFieldError(f"topic is not UTF-8: {exc}", sequence, "") from None
    if not INT32_MIN <= partition <= INT32_MAX:
        raise BadFieldError(
            f"partition {partition} does not fit the int32 field (a partition is {INT32_MIN} to {INT32_MAX})",
            sequence,
            topic,
        )
    return ProduceRequestView(sequence, topic, partition, batches, acks)


# -- SubscribeResponse / FetchResponse ---------------------------------------------------------------


def encode_subscribe_response(next_offset: int, high_watermark: int, log_start: int, batches) -> bytes:
    """SubscribeResponse{next_offset=1, high_watermark=2, batches=3, log_start=4}: one copy of batches."""
    return b"".join(
        [
            _key(1, _VARINT),
            _varint(next_offset),
            _key(2, _VARINT),
            _varint(high_watermark),
            _key(4, _VARINT),
            _varint(log_start),
            _key(3, _LEN),
            _varint(len(batches)),
            batches,
        ]
    )


def encode_fetch_response(
    topic: str, partition: int, next_offset: int, high_watermark: int, log_start: int, batches
) -> bytes:
    """FetchResponse{topic=1, partition=2, next_offset=3, high_watermark=4, log_start=5, batches=6}."""
    topic_bytes = topic.encode()
    return b"".join(
        [
            _key(1, _LEN),
            _varint(len(topic_bytes)),
            topic_bytes,
            _key(2, _VARINT),
            _varint(partition),
            _key(3, _VARINT),
            _varint(next_offset),
            _key(4, _VARINT),
            _varint(high_watermark),
            _key(5, _VARINT),
            _varint(log_start),
            _key(6, _LEN),
            _varint(len(batches)),
            batches,
        ]
    )


class BatchesResponseView(NamedTuple):
    next_offset: int
    high_watermark: int
    log_start: int
    batches: memoryview


def parse_subscribe_response(buf) -> BatchesResponseView:
    values = {1: 0, 2: 0, 4: 0}
    batches = memoryview(b"")
    for field, wire_type, value in iter_fields(buf):
        if field == 3 and wire_type == _LEN:
            batches = value
        elif field in values and wire_type == _VARINT:
            values[field] = _signed(value)
    return BatchesResponseView(values[1], values[2], values[4], batches)


def parse_fetch_response(buf) -> BatchesResponseView:
    values = {3: 0, 4: 0, 5: 0}
    batches = memoryview(b"")
    for field, wire_type, value in iter_fields(buf):
        if field == 6 and wire_type == _LEN:
            batches = value
        elif field in values and wire_type == _VARINT:
            values[field] = _signed(value)
    return BatchesResponseView(values[3], values[4], values[5], batches)
