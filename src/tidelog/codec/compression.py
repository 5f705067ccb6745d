"""Compression codecs of record batches: Kafka's five (none, gzip, snappy, lz4, zstd), byte for byte.

Kafka compresses the records section of a batch (everything after the 61-byte header) as one unit;
the codec is attribute bits 0-2. What each codec is on the wire, and why we read and write it so:

- gzip (1): an RFC 1952 gzip stream, as java.util.zip.GZIPOutputStream writes it. We write one member
  at zlib level 6 (Kafka's default gzip level); we read one or more concatenated members (Java's
  GZIPInputStream reads them too), strictly gzip (wbits=31): Kafka never sends a bare zlib stream.
- snappy (2): two forms are in use. The Java client and kafka-python write xerial framing:
  b"\\x82SNAPPY\\x00", int32 version, int32 compatible version, then [int32 length][raw snappy block]
  per block of at most 32 KiB of input; librdkafka writes one raw snappy block. Readers (Java's
  SnappyInputStream, librdkafka) tell them apart by that magic, and so do we. We write xerial with
  32 KiB blocks, as kafka-python does: the one form every client reads. The version fields are not
  checked, as kafka-python does not: some producers write them little-endian. Snappy comes from
  cramjam (a maintained Rust binding that releases the GIL); python-snappy is now a wrapper of it.
- lz4 (3): one LZ4 frame with independent 64 KiB blocks and no content size or checksum, as Kafka
  writes it; we read any valid LZ4 frame. python-lz4 releases the GIL while it works.
- zstd (4): one zstd frame at level 3 (Kafka's default zstd level), with its content size; we read
  one or more frames, with or without a content size (the Java client streams frames without one),
  from the `zstandard` package.

Decompression is bounded: a records section may not expand past `limit` (MAX_DECOMPRESSED_BYTES), and
a small hostile input makes us allocate at most about that much. gzip and lz4 decompress with an output
budget (lz4 in steps of 8 MiB: its decoder allocates what it is allowed up front); snappy's raw blocks
state their uncompressed length up front, which is checked before anything is allocated; zstd is fed a little input at a time, so each step's output stays within the budget (a
zstd block yields at most 128 KiB from at least 4 bytes), and the decoder's window is capped. Malformed
or truncated input raises ValueError. cramjam and zstandard are imported on first use, so `import
tidelog` stays quick; if one is missing, using its codec raises UnsupportedCompressionError that says
what to install.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING

import lz4.frame

if TYPE_CHECKING:
    from typing_extensions import Buffer

from ..errors import UnsupportedCompressionError

NONE = 0
GZIP = 1
SNAPPY = 2
LZ4 = 3
ZSTD = 4
CODEC_IDS = {"none": NONE, "gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4, "zstd": ZSTD}
CODEC_NAMES = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}

GZIP_LEVEL = 6  # Kafka's compression.gzip.level default (Deflater.DEFAULT_COMPRESSION)
ZSTD_LEVEL = 3  # Kafka's compression.zstd.level default
XERIAL_HEADER = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)  # magic, version 1, compatible with 1
XERIAL_BLOCK = 32 << 10  # input bytes per xerial block: xerial's and kafka-python's default

_GZIP_MAGIC = b"\x1f\x8b"
# gzip and zstd are fed input a step at a time: the decoder copies what it was given past the end of a
# member or frame (unused_data), so a first small step keeps a stream of many tiny members linear in
# its size; the step then grows to the largest one.
_FIRST_STEP = 1 << 10
_MAX_STEP = 1 << 20
_INT32 = struct.Struct(">i")


def codec_id(name: str) -> int:
    try:
        return CODEC_IDS[name]
    except KeyError:
        raise UnsupportedCompressionError(
            f"compression {name!r} is not supported; use one of {', '.join(CODEC_IDS)}"
        ) from None


def _unsupported(codec: int) -> UnsupportedCompressionError:
    return UnsupportedCompressionError(f"compression {CODEC_NAMES.get(codec, codec)} is not supported")


def _missing(codec: str, package: str, exc: ImportError) -> UnsupportedCompressionError:
    return UnsupportedCompressionError(
        f"compression {codec} needs the {package} package, which cannot be imported ({exc}): pip install {package}"
    )


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
    if codec == GZIP:
        gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 16 + 15: a gzip header and trailer
        return gz.compress(payload) + gz.flush()
    if codec == SNAPPY:
        return _snappy_xerial(payload)
    if codec == ZSTD:
        try:
            import zstandard
        except ImportError as exc:
            raise _missing("zstd", "zstandard", exc) from None
        # a compressor per call: they are not thread-safe, and one costs microseconds
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(memoryview(payload))
    raise _unsupported(codec)


def _snappy_xerial(payload: Buffer) -> bytes:
    try:
        import cramjam
    except ImportError as exc:
        raise _missing("snappy", "cramjam", exc) from None
    data = memoryview(payload).cast("B")
    parts: list[Buffer] = [XERIAL_HEADER]
    for start in range(0, len(data), XERIAL_BLOCK):
        block = cramjam.snappy.compress_raw(data[start : start + XERIAL_BLOCK])
        parts.append(_INT32.pack(len(block)))
        parts.append(block)
    return b"".join(parts)


MAX_DECOMPRESSED_BYTES = 256 << 20
"""A records section may not expand past this: a small hostile frame cannot exhaust memory."""


def decompress(codec: int, payload: Buffer, limit: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """Decompress a records section; malformed or oversize input raises ValueError."""
    if codec == LZ4:
        return _unlz4(payload, limit)
    if codec == NONE:
        return bytes(payload)
    if codec == GZIP:
        return _gunzip(payload, limit)
    if codec == SNAPPY:
        return _unsnappy(payload, limit)
    if codec == ZSTD:
        return _unzstd(payload, limit)
    raise _unsupported(codec)


_LZ4_STEP = 8 << 20
"""Output asked of the lz4 decoder per call. python-lz4 allocates the whole max_length up front: asking
for the limit (256 MiB) at once made every batch an allocation the size of the limit (an mmap, faulted
in), 0.58 ms per MiB decompressed instead of 0.12 ms with this step."""


def _unlz4(payload: Buffer, limit: int) -> bytes:
    decompressor = lz4.frame.LZ4FrameDecompressor()
    try:
        parts = [decompressor.decompress(payload, max_length=min(limit, _LZ4_STEP))]
        total = len(parts[0])
        while not decompressor.eof and not decompressor.needs_input and total < limit:
            more = decompressor.decompress(b"", max_length=min(limit - total, _LZ4_STEP))
            if not more:
                break
            parts.append(more)
            total += len(more)
    except RuntimeError as exc:  # python-lz4 reports bad frames as RuntimeError
        raise ValueError(f"lz4 frame is corrupt: {exc}") from None
    if not decompressor.eof:
        if decompressor.needs_input:
            raise ValueError("lz4 frame is truncated")
        raise ValueError(f"lz4 records section expands past {limit} bytes")
    if decompressor.unused_data:
        raise ValueError("bytes follow the lz4 frame")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _gunzip(payload: Buffer, limit: int) -> bytes:
    data = memoryview(payload).cast("B")
    parts: list[bytes] = []
    total = pos = 0
    while True:  # one gzip member per round (Java's GZIPInputStream reads concatenated members too)
        d = zlib.decompressobj(wbits=31)  # gzip only: header, deflate data, CRC-32 and size trailer
        step = _FIRST_STEP
        while not d.eof:
            if pos >= len(data):
                raise ValueError("gzip stream is truncated")
            chunk = data[pos : pos + step]
            pos += len(chunk)
            step = min(step * 4, _MAX_STEP)
            try:
                out = d.decompress(chunk, limit - total + 1)  # at most one byte past the limit
            except zlib.error as exc:
                raise ValueError(f"gzip stream is corrupt: {exc}") from None
            total += len(out)
            if total > limit:  # (input is left in d.unconsumed_tail only when the budget ran out)
                raise ValueError(f"gzip records section expands past {limit} bytes")
            if out:
                parts.append(out)
        pos -= len(d.unused_data)  # input fed past the end of the member
        if pos >= len(data):
            break
        if data[pos : pos + 2] != _GZIP_MAGIC:
            raise ValueError("bytes follow the gzip stream")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _snappy_length(block: memoryview) -> int:
    """The uncompressed length that starts a raw snappy block: a little-endian base-128 varint (uint32)."""
    value = 0
    for i in range(min(5, len(block))):
        byte = block[i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value
    raise ValueError("snappy block is corrupt: bad uncompressed length")


def _unsnappy(payload: Buffer, limit: int) -> bytes:
    try:
        import cramjam
    except ImportError as exc:
        raise _missing("snappy", "cramjam", exc) from None
    data = memoryview(payload).cast("B")
    if data[:8] == XERIAL_HEADER[:8]:
        # xerial framing; every block's stated length is checked before any block is decompressed
        blocks = []
        total = 0
        pos, end = len(XERIAL_HEADER), len(data)
        if end < pos:
            raise ValueError("snappy xerial header is truncated")
        while pos < end:
            if end - pos < 4:
                raise ValueError("snappy xerial block length is truncated")
            (size,) = _INT32.unpack_from(data, pos)
            pos += 4
            if size <= 0 or size > end - pos:
                raise ValueError(f"snappy xerial block of {size} bytes does not fit the {end - pos} bytes left")
            block = data[pos : pos + size]
            pos += size
            total += _snappy_length(block)
            if total > limit:
                raise ValueError(f"snappy records section expands past {limit} bytes")
            blocks.append(block)
    else:  # one raw snappy block (librdkafka)
        blocks = [data]
        if _snappy_length(data) > limit:
            raise ValueError(f"snappy records section expands past {limit} bytes")
    try:
        parts = [cramjam.snappy.decompress_raw(block) for block in blocks]
    except cramjam.DecompressionError as exc:
        raise ValueError(f"snappy block is corrupt: {exc}") from None
    return b"".join(parts)


# zstd: a block yields at most 128 KiB and takes at least 4 bytes (3 of header), so n bytes of input
# complete at most n / 4 + 2 blocks (one may have begun in the previous step): n * 32 KiB + 256 KiB.
_ZSTD_BLOCK_MAX = 128 << 10
_ZSTD_MIN_STEP = 16
_ZSTD_MAX_WINDOW = 1 << 27  # the zstd library's default limit (ZSTD_WINDOWLOG_LIMIT_DEFAULT)
_ZSTD_MIN_WINDOW = 1 << 23  # zstd's window at level 19 when the content size is unknown


def _unzstd(payload: Buffer, limit: int) -> bytes:
    try:
        import zstandard
    except ImportError as exc:
        raise _missing("zstd", "zstandard", exc) from None
    data = memoryview(payload).cast("B")
    end = len(data)
    # the decoder allocates its window up front: no larger than the output may be (a power of two), yet
    # never below what a streaming producer at a high level may ask for
    window = min(_ZSTD_MAX_WINDOW, max(_ZSTD_MIN_WINDOW, 1 << (limit - 1).bit_length()))
    dctx = zstandard.ZstdDecompressor(max_window_size=window)
    parts: list[bytes] = []
    total = pos = 0
    while True:  # one frame per round
        try:
            declared = zstandard.frame_content_size(data[pos:])
        except zstandard.ZstdError:
            declared = -1  # no readable header: the decoder says what is wrong
        if declared > limit - total:
            raise ValueError(f"zstd records section expands past {limit} bytes (a frame declares {declared})")
        d = dctx.decompressobj()
        step = _FIRST_STEP
        while not d.eof:
            if pos >= end:
                raise ValueError("zstd frame is truncated")
            chunk = data[pos : pos + max(_ZSTD_MIN_STEP, min(step, (limit - total) // (_ZSTD_BLOCK_MAX // 4)))]
            pos += len(chunk)
            step = min(step * 4, _MAX_STEP)
            try:
                out = d.decompress(chunk)
            except zstandard.ZstdError as exc:
                raise ValueError(f"zstd frame is corrupt or unsupported: {exc}") from None
            total += len(out)
            if total > limit:
                raise ValueError(f"zstd records section expands past {limit} bytes")
            if out:
                parts.append(out)
        pos -= len(d.unused_data)  # input fed past the end of the frame
        if pos >= end:
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)
