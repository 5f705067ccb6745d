"""Kafka's compression codecs (gzip, snappy, lz4, zstd): tidelog writes what real clients read, reads
what they write (kafka-python's encoders; a raw snappy block as librdkafka sends it), stores such
batches verbatim, and refuses malformed input and decompression bombs with a ValueError, without
allocating much past the limit."""

from __future__ import annotations

import gzip
import random
import struct
import sys
import time
import tracemalloc
import types
import zlib

import cramjam
import kafka.codec
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

import tidelog
from tidelog._native.checksum import crc32c
from tidelog.codec import compression
from tidelog.codec.batch import HEADER_SIZE, BatchInfo, BatchView, build_batches, iter_batches, validate
from tidelog.errors import CorruptBatchError, UnsupportedCompressionError

from .test_kafka_interop import (
    SAMPLE,
    _columns,
    _expected,
    _kafka_batch,
    _kafka_decode,
    _split_batches,
    _table_decode,
    _tidelog_decode,
)

CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
NEW_CODECS = ["gzip", "snappy", "zstd"]
MAGIC = {  # how each codec's output starts
    "gzip": b"\x1f\x8b\x08",
    "snappy": b"\x82SNAPPY\x00",  # xerial framing
    "lz4": b"\x04\x22\x4d\x18",
    "zstd": b"\x28\xb5\x2f\xfd",
}
MIB = 1 << 20


@pytest.fixture(scope="module")
def kafka_snappy():
    """kafka-python's snappy codec wants python-snappy's `snappy` module (compress/decompress of raw
    blocks; kafka-python frames the xerial blocks itself). python-snappy >= 0.7 is that API on top
    of cramjam; when it is not installed, the same two functions stand in for it."""
    if kafka.codec.has_snappy():
        yield
        return
    kafka.codec.snappy = types.SimpleNamespace(
        compress=lambda data: bytes(cramjam.snappy.compress_raw(data)),
        decompress=lambda data: bytes(cramjam.snappy.decompress_raw(data)),
    )
    try:
        yield
    finally:
        kafka.codec.snappy = None


def _mixed(size: int, seed: int = 7) -> bytes:
    """Record-like bytes that compress about 2-3x: text with random hex in it."""
    rng = random.Random(seed)
    out, n = [], 0
    while n < size:
        line = b"user=%d event=%s id=%s\n" % (
            rng.randrange(10**6),
            rng.choice([b"view", b"buy"]),
            rng.randbytes(8).hex().encode(),
        )
        out.append(line)
        n += len(line)
    return b"".join(out)[:size]


def _with_section(plain: bytes, codec: int, section: bytes) -> bytes:
    """An uncompressed batch with its records section replaced by `section` and marked with `codec`;
    batch length and CRC fixed, as a client that compressed it so would send it."""
    head = bytearray(plain[:HEADER_SIZE])
    assert struct.unpack_from(">h", head, 21)[0] & 0x07 == 0
    struct.pack_into(">i", head, 8, HEADER_SIZE - 12 + len(section))
    struct.pack_into(">h", head, 21, struct.unpack_from(">h", head, 21)[0] | codec)
    out = head + section
    struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


# --- the codecs alone -------------------------------------------------------------------------------


def test_codec_ids_are_kafkas_and_unknown_codecs_are_refused():
    assert compression.CODEC_IDS == {"none": 0, **CODECS}
    assert {compression.codec_id(n): n for n in compression.CODEC_IDS} == compression.CODEC_NAMES
    with pytest.raises(UnsupportedCompressionError, match="brotli"):
        compression.codec_id("brotli")
    for bad in (5, 7):
        with pytest.raises(UnsupportedCompressionError):
            compression.compress(bad, b"x")
        with pytest.raises(UnsupportedCompressionError):
            compression.decompress(bad, b"x")


@pytest.mark.parametrize("payload", [b"", b"k", _mixed(MIB), bytes(MIB)], ids=["empty", "1B", "1MiB", "1MiB-zeros"])
@pytest.mark.parametrize("codec", list(CODECS))
def test_round_trip(codec, payload):
    cid = CODECS[codec]
    packed = compression.compress(cid, payload)
    assert isinstance(packed, bytes)
    assert packed.startswith(MAGIC[codec])
    if len(payload) >= MIB:
        assert len(packed) < len(payload) * 0.8  # really compressed
    out = compression.decompress(cid, packed)
    assert type(out) is bytes and out == payload
    assert compression.decompress(cid, memoryview(packed), limit=len(payload)) == payload  # exactly at the limit
    if payload:
        with pytest.raises(ValueError, match=f"{codec} records section expands past {len(payload) - 1} bytes"):
            compression.decompress(cid, packed, limit=len(payload) - 1)


@given(payload=st.binary(max_size=3000), codec=st.sampled_from(list(CODECS)))
def test_any_payload_round_trips(payload, codec):
    assert compression.decompress(CODECS[codec], compression.compress(CODECS[codec], payload)) == payload


def test_gzip_is_a_gzip_stream_that_the_standard_library_reads_and_concatenated_members_are_read():
    payload = _mixed(200_000)
    assert gzip.decompress(compression.compress(1, payload)) == payload
    assert compression.decompress(1, gzip.compress(payload, mtime=0)) == payload
    two = gzip.compress(b"first,") + gzip.compress(b"second")
    assert compression.decompress(1, two) == b"first,second"
    with pytest.raises(ValueError, match="expands past 11 bytes"):
        compression.decompress(1, two, limit=11)  # the limit counts every member
    with pytest.raises(ValueError, match="bytes follow the gzip stream"):
        compression.decompress(1, two + b"\x00")
    with pytest.raises(ValueError, match="gzip stream is corrupt"):  # zlib, not gzip
        compression.decompress(1, zlib.compress(payload))


def test_snappy_writes_xerial_framing_with_32k_blocks_like_kafka_python(kafka_snappy):
    payload = _mixed(MIB + 1000)
    packed = compression.compress(2, payload)
    assert packed == kafka.codec.snappy_encode(payload)  # byte for byte: header, block lengths, blocks
    assert packed[:16] == b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    pos, sizes = 16, []
    while pos < len(packed):
        (n,) = struct.unpack_from(">i", packed, pos)
        sizes.append(len(cramjam.snappy.decompress_raw(packed[pos + 4 : pos + 4 + n])))
        pos += 4 + n
    assert pos == len(packed)
    assert sizes == [32 << 10] * 32 + [1000]
    assert kafka.codec.snappy_decode(packed) == payload


def test_raw_snappy_blocks_as_librdkafka_sends_them_are_read():
    # made by hand from the snappy format: length varint 12, a 4-byte literal, a copy of 8 bytes at offset 4
    assert compression.decompress(2, b"\x0c\x0cabcd\x11\x04") == b"abcdabcdabcd"
    payload = _mixed(MIB)
    assert compression.decompress(2, bytes(cramjam.snappy.compress_raw(payload))) == payload


def test_xerial_version_fields_are_not_checked_and_a_header_alone_is_empty():
    block = bytes(cramjam.snappy.compress_raw(b"payload"))
    little_endian = b"\x82SNAPPY\x00" + struct.pack("<ii", 1, 1)  # as some producers write it
    assert compression.decompress(2, little_endian + struct.pack(">i", len(block)) + block) == b"payload"
    assert compression.decompress(2, compression.XERIAL_HEADER) == b""


def test_zstd_frames_without_a_content_size_and_several_frames_are_read():
    payload = _mixed(300_000)
    streaming = zstandard.ZstdCompressor().compressobj()  # as a streaming writer (the Java client) makes it
    frame = streaming.compress(payload) + streaming.flush()
    assert zstandard.frame_content_size(frame) == -1
    assert compression.decompress(4, frame) == payload
    assert compression.decompress(4, frame + compression.compress(4, b"tail")) == payload + b"tail"
    with pytest.raises(ValueError, match="expands past 299999 bytes"):
        compression.decompress(4, frame, limit=300_000 - 1)
    assert zstandard.frame_content_size(compression.compress(4, payload)) == len(payload)  # ours says its size


def test_a_missing_codec_package_is_reported_with_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cramjam", None)
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(UnsupportedCompressionError, match="snappy needs the cramjam package"):
        compression.compress(2, b"x")
    with pytest.raises(UnsupportedCompressionError, match="snappy needs the cramjam package"):
        compression.decompress(2, b"\x01\x00x")
    with pytest.raises(UnsupportedCompressionError, match="zstd needs the zstandard package"):
        compression.decompress(4, b"x")
    assert compression.decompress(1, compression.compress(1, b"x")) == b"x"  # the others still work


# --- hostile input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", list(CODECS))
def test_truncated_input_is_refused(codec):
    packed = compression.compress(CODECS[codec], _mixed(100_000))  # snappy: 4 xerial blocks
    (first_block,) = struct.unpack_from(">i", packed, 16)
    cuts = [0, 1, 3, 10, 15, 18, len(packed) // 2, len(packed) - 1]
    if codec == "snappy":  # xerial has no end mark: a cut between two blocks leaves a shorter valid stream
        cuts = [cut for cut in cuts if not _xerial_boundary(packed, cut)] + [16 + 4 + first_block // 2]
    for cut in cuts:
        with pytest.raises(ValueError, match="truncated|corrupt|does not fit|bad uncompressed length"):
            compression.decompress(CODECS[codec], packed[:cut])


def _xerial_boundary(packed: bytes, cut: int) -> bool:
    pos = 16
    while pos < cut:
        pos += 4 + struct.unpack_from(">i", packed, pos)[0]
    return pos == cut >= 16


@pytest.mark.parametrize(
    ("codec", "garbage", "message"),
    [
        ("gzip", b"\xde\xad\xbe\xef" * 64, "gzip stream is corrupt"),
        ("gzip", compression.compress(1, b"abc")[:-8] + b"\x00" * 8, "gzip stream is corrupt"),  # bad CRC
        ("snappy", b"\xde\xad\xbe\xef" * 64, "snappy block is corrupt"),
        ("snappy", b"\x05" + b"\xde\xad\xbe\xef" * 64, "snappy block is corrupt"),
        ("snappy", b"\x04\x24abcdefghij", "snappy block is corrupt"),  # says 4 bytes, holds 10
        ("snappy", b"", "snappy block is corrupt"),
        ("snappy", compression.XERIAL_HEADER + struct.pack(">i", -5) + b"x" * 10, "does not fit"),
        ("snappy", compression.XERIAL_HEADER + struct.pack(">i", 0), "does not fit"),
        ("snappy", compression.XERIAL_HEADER + b"\x00\x00", "block length is truncated"),
        ("snappy", compression.XERIAL_HEADER[:12], "header is truncated"),
        ("snappy", compression.XERIAL_HEADER + struct.pack(">i", 6) + b"\xde\xad\xbe\xef\x00\x00", "corrupt"),
        ("zstd", b"\xde\xad\xbe\xef" * 64, "zstd frame is corrupt"),
        ("zstd", compression.compress(4, b"abc") + b"garbage", "zstd frame is corrupt"),
        ("zstd", b"", "zstd frame is truncated"),
        ("lz4", b"\xde\xad\xbe\xef" * 64, "lz4 frame is corrupt"),
    ],
)
def test_garbage_is_refused(codec, garbage, message):
    with pytest.raises(ValueError, match=message):
        compression.decompress(CODECS[codec], garbage)


_hostile = st.one_of(
    st.binary(max_size=300),
    *(st.binary(max_size=300).map(lambda b, m=m: m + b) for m in (compression.XERIAL_HEADER, *MAGIC.values())),
)


@given(data=_hostile, codec=st.sampled_from(list(CODECS)))
def test_arbitrary_bytes_decompress_within_the_limit_or_raise_value_error(data, codec):
    try:
        out = compression.decompress(CODECS[codec], data, limit=4096)
    except ValueError:
        return
    assert len(out) <= 4096


@given(data=st.data(), codec=st.sampled_from(list(CODECS)))
def test_a_flipped_byte_in_a_frame_decodes_the_same_or_raises_value_error(data, codec):
    payload = _mixed(5000, seed=1)
    packed = bytearray(compression.compress(CODECS[codec], payload))
    i = data.draw(st.integers(0, len(packed) - 1))
    packed[i] ^= data.draw(st.integers(1, 255))
    try:
        out = compression.decompress(CODECS[codec], bytes(packed), limit=10_000)
    except ValueError:
        return
    assert len(out) <= 10_000  # snappy and lz4 (no checksum here) may decode to other bytes


def _gzip_of_zeros(n_mib: int) -> bytes:
    """A valid gzip stream of n_mib MiB of zeros, built in milliseconds: after a full flush deflate
    starts afresh, so each further MiB compresses to the same bytes."""
    zeros = bytes(MIB)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    end = c.flush()
    crc = 0
    for _ in range(n_mib):
        crc = zlib.crc32(zeros, crc)
    return first + again * (n_mib - 1) + end[:-8] + struct.pack("<II", crc, (n_mib * MIB) & 0xFFFFFFFF)


def _zstd_of_zeros(n_mib: int, **params) -> bytes:
    c = zstandard.ZstdCompressor(level=1).compressobj(**params)
    zeros = bytes(MIB)
    return b"".join(c.compress(zeros) for _ in range(n_mib)) + c.flush()


def _refused_within(limit: int, codec: int, bomb: bytes, match: str) -> None:
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with pytest.raises(ValueError, match=match):
            compression.decompress(codec, bomb, limit=limit)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * limit, f"allocated {peak} bytes for a {limit}-byte limit"
    assert elapsed < 1.0


def test_gzip_bomb_is_refused_without_decompressing_it():
    bomb = _gzip_of_zeros(1024)  # 1 GiB of zeros in about 1 MiB
    assert len(bomb) < 2 * MIB
    _refused_within(MIB, 1, bomb, f"gzip records section expands past {MIB} bytes")
    assert compression.decompress(1, _gzip_of_zeros(3)) == bytes(3 * MIB)  # the bomb's make is a valid stream


@pytest.mark.parametrize("content_size", [False, True])
def test_zstd_bomb_is_refused_without_decompressing_it(content_size):
    bomb = _zstd_of_zeros(1024, size=1 << 30) if content_size else _zstd_of_zeros(1024)
    assert len(bomb) < 100_000
    assert zstandard.frame_content_size(bomb) == (1 << 30 if content_size else -1)
    _refused_within(MIB, 4, bomb, f"zstd records section expands past {MIB} bytes")


def _zstd_claiming(content_size: int) -> bytes:
    """A zstd frame whose header says content_size (single segment: no window descriptor, an 8-byte
    size), with one raw block of a single byte."""
    return MAGIC["zstd"] + b"\xe0" + struct.pack("<Q", content_size) + b"\x09\x00\x00x"


def test_zstd_frame_that_claims_a_huge_content_size_is_refused_before_decoding():
    lie = _zstd_claiming(1 << 40)
    assert zstandard.get_frame_parameters(lie).content_size == 1 << 40
    _refused_within(MIB, 4, lie, f"zstd records section expands past {MIB} bytes \\(a frame declares 1099511627776\\)")
    with pytest.raises(ValueError, match="zstd frame is corrupt"):
        compression.decompress(4, _zstd_claiming(100))  # a header saying 100 bytes, a body of 1
    assert compression.decompress(4, _zstd_claiming(1)) == b"x"  # the frame is well made


@pytest.mark.parametrize("framing", ["xerial", "raw"])
def test_snappy_bomb_is_refused_from_the_stated_lengths_before_any_block_is_decompressed(framing, monkeypatch):
    zeros = bytes(64 * MIB)
    bomb = compression.compress(2, zeros) if framing == "xerial" else bytes(cramjam.snappy.compress_raw(zeros))
    del zeros
    calls = []
    real = cramjam.snappy.decompress_raw
    monkeypatch.setattr(cramjam.snappy, "decompress_raw", lambda block: calls.append(1) or real(block))
    _refused_within(MIB, 2, bomb, f"snappy records section expands past {MIB} bytes")
    assert calls == []
    assert compression.decompress(2, compression.compress(2, bytes(MIB)), limit=MIB) == bytes(MIB)
    assert len(calls) == 32  # the stand-in is the one the decoder calls


@pytest.mark.parametrize("claimed", [MIB + 1, 0xFFFFFFFF])
def test_snappy_block_whose_length_varint_claims_too_much_is_refused(claimed, monkeypatch):
    varint = bytearray()
    n = claimed
    while n >= 0x80:
        varint.append(n & 0x7F | 0x80)
        n >>= 7
    varint.append(n)
    block = bytes(varint) + b"\x00" * 20
    calls = []
    monkeypatch.setattr(cramjam.snappy, "decompress_raw", lambda block: calls.append(1))
    for data in (block, compression.XERIAL_HEADER + struct.pack(">i", len(block)) + block):
        _refused_within(MIB, 2, data, f"snappy records section expands past {MIB} bytes")
    assert calls == []
    with pytest.raises(ValueError, match="bad uncompressed length"):
        compression.decompress(2, b"\xff\xff\xff\xff\xff\x01")  # a varint longer than a uint32's


# --- kafka-python writes, tidelog reads ---------------------------------------------------------------


@pytest.mark.parametrize("codec", list(CODECS))
def test_kafka_python_compressed_batch_validates_and_decodes(codec, kafka_snappy):
    raw = _kafka_batch(SAMPLE, CODECS[codec])
    assert raw[21:23] == struct.pack(">h", CODECS[codec])  # kafka-python really compressed it
    assert validate(raw) == [
        BatchInfo(0, len(raw), len(SAMPLE), SAMPLE[0][0], max(r[0] for r in SAMPLE), CODECS[codec])
    ]
    (view,) = iter_batches(raw)
    assert view.codec == codec and view.crc_ok()
    assert _tidelog_decode(view) == _expected(SAMPLE)
    assert _tidelog_decode(view, copy=False) == _expected(SAMPLE)
    assert _table_decode(view) == [(o, t, k, v, len(h)) for o, t, k, v, h in _expected(SAMPLE)]


@pytest.mark.parametrize("codec", list(CODECS))
def test_large_kafka_python_batch_of_many_codec_blocks_decodes(codec, kafka_snappy):
    big = [(1_000 + i, b"k%d" % i, _mixed(150_000, seed=i), [("i", b"%d" % i)]) for i in range(5)]
    raw = _kafka_batch(big, CODECS[codec])
    assert DefaultRecordBatch(raw).compression_type == CODECS[codec]
    assert len(raw) < 600_000
    validate(raw)
    assert _tidelog_decode(BatchView(raw)) == _expected(big)


@pytest.mark.parametrize("codec", list(CODECS))
def test_kafka_python_default_record_batch_builder_output_is_accepted(codec, kafka_snappy):
    b = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=CODECS[codec],
        is_transactional=False,
        producer_id=7,
        producer_epoch=1,
        base_sequence=0,
        batch_size=1 << 20,
    )
    for i, (ts, key, value, headers) in enumerate(SAMPLE):
        assert b.append(i, ts, key, value, headers) is not None
    raw = bytes(b.build())
    (info,) = validate(raw)
    assert info.attributes & 0x07 == CODECS[codec]
    assert (info.producer_id, info.producer_epoch, info.base_sequence) == (7, 1, 0)
    assert _tidelog_decode(BatchView(raw)) == _expected(SAMPLE)


def test_batch_with_a_raw_snappy_section_as_librdkafka_sends_it_is_accepted():
    plain = _kafka_batch(SAMPLE)
    section = bytes(cramjam.snappy.compress_raw(plain[HEADER_SIZE:]))
    assert not section.startswith(b"\x82SNAPPY")
    raw = _with_section(plain, 2, section)
    assert validate(raw)[0].attributes == 2
    assert BatchView(raw).codec == "snappy"
    assert _tidelog_decode(BatchView(raw)) == _expected(SAMPLE)


@pytest.mark.parametrize("codec", NEW_CODECS)
def test_batch_with_a_truncated_section_is_a_corrupt_batch(codec):
    plain = _kafka_batch(SAMPLE)
    packed = compression.compress(CODECS[codec], plain[HEADER_SIZE:])
    cut = len(packed) - 3 if codec != "snappy" else 16 + 4 + 5
    truncated = _with_section(plain, CODECS[codec], packed[:cut])
    with pytest.raises(CorruptBatchError, match="truncated|corrupt|does not fit"):
        validate(truncated)
    with pytest.raises(CorruptBatchError, match="truncated|corrupt|does not fit"):
        BatchView(truncated).records()


@pytest.mark.parametrize("codec", ["snappy", "zstd"])
def test_batch_whose_section_says_it_expands_past_256_mib_is_a_corrupt_batch(codec):
    assert compression.MAX_DECOMPRESSED_BYTES == 256 * MIB
    if codec == "snappy":  # two xerial blocks stating 128 MiB + 1 byte each
        block = b"\x81\x80\x80\x40" + b"\x00" * 4
        section = compression.XERIAL_HEADER + (struct.pack(">i", len(block)) + block) * 2
    else:
        section = _zstd_claiming(256 * MIB + 1)
    raw = _with_section(_kafka_batch(SAMPLE), CODECS[codec], section)
    with pytest.raises(CorruptBatchError, match="expands past 268435456 bytes"):
        validate(raw)
    with pytest.raises(CorruptBatchError, match="expands past 268435456 bytes"):
        BatchView(raw).records()


# --- tidelog writes, kafka-python reads ---------------------------------------------------------------


@pytest.mark.parametrize("codec", list(CODECS))
def test_tidelog_compressed_batch_decodes_with_kafka_python(codec, kafka_snappy):
    values, keys, headers, ts = _columns(SAMPLE)
    (raw,) = build_batches(values, keys, headers, ts, timestamp=0, compression_name=codec)
    kb = DefaultRecordBatch(raw)
    assert kb.validate_crc() and kb.compression_type == CODECS[codec]
    assert kb.size_in_bytes == len(raw) and kb.records_count == len(SAMPLE)
    assert _kafka_decode(kb) == _expected(SAMPLE)
    assert raw[HEADER_SIZE:].startswith(MAGIC[codec])
    assert _tidelog_decode(BatchView(raw)) == _expected(SAMPLE)


@pytest.mark.parametrize("codec", list(CODECS))
def test_large_tidelog_compressed_batch_decodes_with_kafka_python(codec, kafka_snappy):
    big = [(1_000 + i, b"k%d" % i, _mixed(200_000, seed=i), []) for i in range(6)]
    values, keys, headers, ts = _columns(big)
    (raw,) = build_batches(values, keys, headers, ts, timestamp=0, compression_name=codec)
    assert len(raw) < 1_000_000
    kb = DefaultRecordBatch(raw)
    assert kb.validate_crc() and kb.compression_type == CODECS[codec]
    assert _kafka_decode(kb) == _expected(big)


# --- through the engine -------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", NEW_CODECS)
def test_engine_stores_compressed_kafka_python_batches_verbatim_and_serves_their_records(codec, tmp_path, kafka_snappy):
    a = _kafka_batch(SAMPLE, CODECS[codec])
    b = _kafka_batch(SAMPLE[:3], CODECS[codec], producer_id=9, producer_epoch=0, base_sequence=0)
    assert a[21:23] == b[21:23] == struct.pack(">h", CODECS[codec])
    expected = _expected(SAMPLE, 0) + _expected(SAMPLE[:3], 5) + _expected(SAMPLE, 8)
    data_dir = str(tmp_path / "data")
    with tidelog.Engine.open(data_dir) as engine:
        engine.create_topic("codecs", partitions=1)
        results = [engine.append("codecs", 0, batch) for batch in (a, b, a)]
        assert [(r.base_offset, r.last_offset) for r in results] == [(0, 4), (5, 7), (8, 12)]
        fetched = engine.fetch("codecs", 0, 0, max_bytes=1 << 20)
        stored = _split_batches(bytes(fetched.data))
        assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in fetched.records()] == expected
    for got, sent, base in zip(stored, (a, b, a), (0, 5, 8), strict=True):
        assert got[:8] == struct.pack(">q", base)
        assert got[8:12] == sent[8:12]  # batch length
        assert got[16] == 2  # magic
        assert got[17:] == sent[17:]  # CRC, attributes and the compressed records as the client sent them
    with tidelog.Engine.open(data_dir) as engine:  # recovery scans the compressed batches too
        mid = engine.fetch("codecs", 0, 6)
        assert [r.offset for r in mid.records()] == list(range(6, 13))
        assert [v.codec for v in iter_batches(bytes(mid.data))] == [codec, codec]
