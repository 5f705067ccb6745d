"""Compression codecs of record batches: none and lz4 (the LZ4 frame format, as Kafka writes it).

Kafka compresses the records section of a batch as one LZ4 frame with independent 64 KiB blocks and
no content size or checksum; we write the same and read any valid LZ4 frame. python-lz4 releases the
GIL while it works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lz4.frame

if TYPE_CHECKING:
    from typing_extensions import Buffer

from ..errors import UnsupportedCompressionError

NONE = 0
LZ4 = 3
CODEC_IDS = {"none": NONE, "lz4": LZ4}
CODEC_NAMES = {NONE: "none", 1: "gzip", 2: "snappy", LZ4: "lz4", 4: "zstd"}


def codec_id(name: str) -> int:
    try:
        return CODEC_IDS[name]
    except KeyError:
        raise UnsupportedCompressionError(
            f"compression {name!r} is not supported; use one of {', '.join(CODEC_IDS)}"
        ) from None


def compress(codec: int, payload: Buffer) -> bytes:
    if codec == LZ4:
        return lz4.frame.compress(
            payload,
            block_size=lz4.frame.BLOCKSIZE_MAX64KB,
            block_linked=False,
            content_checksum=False,
            store_size=False,
        )
    if codec == NONE:
        return bytes(payload)
    raise UnsupportedCompressionError(f"compression {CODEC_NAMES.get(codec, codec)} is not supported")


MAX_DECOMPRESSED_BYTES = 256 << 20
"""A records section may not expand past this: a small hostile frame cannot exhaust memory."""


def decompress(codec: int, payload: Buffer, limit: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """Decompress a records section; malformed or oversize input raises ValueError."""
    if codec == LZ4:
        decompressor = lz4.frame.LZ4FrameDecompressor()
        try:
            out = decompressor.decompress(payload, max_length=limit)
        except RuntimeError as exc:  # python-lz4 reports bad frames as RuntimeError
            raise ValueError(f"lz4 frame is corrupt: {exc}") from None
        if not decompressor.eof:
            if decompressor.needs_input:
                raise ValueError("lz4 frame is truncated")
            raise ValueError(f"lz4 records section expands past {limit} bytes")
        if decompressor.unused_data:
            raise ValueError("bytes follow the lz4 frame")
        return out
    if codec == NONE:
        return bytes(payload)
    raise UnsupportedCompressionError(f"compression {CODEC_NAMES.get(codec, codec)} is not supported")
