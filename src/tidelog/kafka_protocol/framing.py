"""THE framing of Kafka's protocol: size-prefixed frames, request and response headers, and the
primitive fields the hand-written hot paths (produce, fetch) read and write.

A frame is an int32 size and that many bytes. A request header is api_key (int16), api_version (int16),
correlation_id (int32), client_id (a nullable string with an int16 length, also in header v2) and, in
header v2 (the flexible versions of KIP-482), a tagged-field section. A response header is the
correlation id, plus a tagged-field section in header v1 (flexible versions), except that ApiVersions
always answers with header v0 (KIP-511: a client that sent a version the broker does not know must
still read the answer). Pure functions over buffers; no I/O.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

INT16 = struct.Struct(">h")
INT32 = struct.Struct(">i")
INT64 = struct.Struct(">q")
_HEADER = struct.Struct(">hhi")
_FRAME_AND_CORRELATION = struct.Struct(">ii")

API_VERSIONS_KEY = 18


class MalformedError(ValueError):
    """The bytes do not follow the protocol: the connection is closed (Kafka does the same)."""


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body_at: int  # where the request body starts in the frame


def peek_header(frame: memoryview) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id): what every header version starts with."""
    if len(frame) < _HEADER.size:
        raise MalformedError(f"a request of {len(frame)} bytes is shorter than a request header")
    return _HEADER.unpack_from(frame, 0)


def parse_header(frame: memoryview, flexible: bool) -> RequestHeader:
    """The request header; flexible: header v2 (the API version is a flexible one)."""
    api_key, api_version, correlation_id = peek_header(frame)
    reader = Reader(frame, _HEADER.size)
    client_id = reader.string(compact=False)
    if flexible:
        reader.skip_tags()
    return RequestHeader(api_key, api_version, correlation_id, client_id, reader.pos)


def response_prefix(correlation_id: int, body_size: int, flexible_header: bool) -> bytes:
    """The frame size and response header in front of a body of body_size bytes."""
    if flexible_header:
        return _FRAME_AND_CORRELATION.pack(body_size + 5, correlation_id) + b"\x00"
    return _FRAME_AND_CORRELATION.pack(body_size + 4, correlation_id)


class Reader:
    """Reads fields off a buffer from a position; MalformedError past its end. Strings and bytes of
    the flexible versions are compact (an unsigned varint of length + 1; 0 is null)."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: memoryview, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)

    def _take(self, n: int) -> int:
        at = self.pos
        if n < 0 or at + n > self.end:
            raise MalformedError(f"a field of {n} bytes at {at} runs past the end of the request ({self.end} bytes)")
        self.pos = at + n
        return at

    def int16(self) -> int:
        return int(INT16.unpack_from(self.buf, self._take(2))[0])

    def int32(self) -> int:
        return int(INT32.unpack_from(self.buf, self._take(4))[0])

    def int64(self) -> int:
        return int(INT64.unpack_from(self.buf, self._take(8))[0])

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            if self.pos >= self.end:
                raise MalformedError("a varint runs past the end of the request")
            b = self.buf[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise MalformedError("a varint is longer than 5 bytes")

    def _length(self, compact: bool) -> int:
        """-1 for null."""
        return self.uvarint() - 1 if compact else self.int16()

    def string(self, compact: bool) -> str | None:
        n = self._length(compact)
        if n < 0:
            return None
        at = self._take(n)
        try:
            return str(self.buf[at : at + n], "utf-8")
        except UnicodeDecodeError:
            raise MalformedError("a string is not UTF-8") from None

    def array_length(self, compact: bool) -> int:
        """Items in an array (-1: null)."""
        n = self.uvarint() - 1 if compact else self.int32()
        if n > self.end - self.pos:  # every item takes at least a byte: a huge count is a lie
            raise MalformedError(f"an array of {n} items cannot fit the {self.end - self.pos} bytes left")
        return n

    def nullable_bytes(self, compact: bool) -> memoryview | None:
        """A slice of the buffer (no copy); None for null."""
        n = self.uvarint() - 1 if compact else self.int32()
        if n < 0:
            return None
        at = self._take(n)
        return self.buf[at : at + n]

    def skip_tags(self) -> None:
        """Skip a tagged-field section: fields this broker does not know are ignored (KIP-482)."""
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self._take(self.uvarint())


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def string(s: str, compact: bool) -> bytes:
    raw = s.encode()
    return (uvarint(len(raw) + 1) if compact else INT16.pack(len(raw))) + raw


def array_length(n: int, compact: bool) -> bytes:
    return uvarint(n + 1) if compact else INT32.pack(n)


def bytes_length(n: int, compact: bool) -> bytes:
    """The length in front of a (non-null) bytes field of n bytes."""
    return uvarint(n + 1) if compact else INT32.pack(n)
