"""Small JSON documents that carry their own checksum: topic metadata and partition markers.

Layout: the JSON document (UTF-8, keys sorted, one key per line), then one line
`# crc32c <8 lowercase hex digits>` holding the CRC-32C of every byte before that line. A reader
checks the CRC before it parses, so one flipped bit (a partition count of 2 read as 0) is found and
refused instead of acted on. Pure functions; no I/O.
"""

from __future__ import annotations

import json

from .._native import checksum

_TRAILER = b"# crc32c "


class DamagedDocument(ValueError):
    """The bytes are not a checked JSON document (why is the message)."""


def encode(doc: dict) -> bytes:
    body = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
    return body + _TRAILER + b"%08x\n" % checksum.crc32c(body)


def has_checksum(data: bytes) -> bool:
    """Whether data has a checksum line (older files were plain JSON, which never holds one)."""
    return _TRAILER in data


def decode(data: bytes) -> dict:
    """The document in data; DamagedDocument if the checksum line is missing, not exactly as `encode`
    writes it, or wrong, or the JSON is not an object."""
    body, sep, trailer = data.removesuffix(b"\n").rpartition(b"\n")
    if not sep or not data.endswith(b"\n") or not trailer.startswith(_TRAILER):
        raise DamagedDocument("it has no checksum line")
    body += b"\n"
    if trailer != _TRAILER + b"%08x" % checksum.crc32c(body):
        raise DamagedDocument("its checksum does not match its contents")
    return parse_json(body)


def parse_json(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DamagedDocument(f"it is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DamagedDocument("it is not a JSON object")
    return doc
