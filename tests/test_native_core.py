"""The compiled core: it is really compiled, CRC-32C and murmur2 agree with Kafka, and the batch
scanner walks segment buffers as its docstrings promise (stop reasons and stop positions)."""

from __future__ import annotations

import ctypes
import importlib
import importlib.machinery
import platform
import random
import struct
import types

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner
from kafka.partitioner.default import murmur2 as kafka_murmur2
from kafka.record._crc32c import crc as kafka_crc32c

import tidelog
from tidelog._native import batch_scan, checksum, partition_hash, record_batch
from tidelog.codec.batch import build_batch

NATIVE_MODULES = ["batch_scan", "checksum", "partition_hash", "record_batch"]


# --- the extensions are compiled and in use -----------------------------------------------------


@pytest.mark.parametrize("name", NATIVE_MODULES)
def test_native_module_is_a_compiled_extension_not_python_source(name):
    mod = importlib.import_module(f"tidelog._native.{name}")
    assert mod.__file__ is not None
    assert mod.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), mod.__file__
    assert not mod.__file__.endswith((".py", ".pyc", ".pyx"))
    assert isinstance(mod.__loader__, importlib.machinery.ExtensionFileLoader)


def test_codec_and_package_use_the_compiled_record_batch_module():
    from tidelog.codec import batch as codec_batch

    assert codec_batch._rb is record_batch
    assert tidelog.Record is record_batch.Record
    # Cython functions are not plain Python functions: nothing here fell back to interpreted code.
    for fn in (
        record_batch.encode_batch,
        record_batch.validate_batches,
        batch_scan.scan_batches,
        checksum.crc32c,
        partition_hash.murmur2,
    ):
        assert not isinstance(fn, types.FunctionType), fn


def _cpu_has_sse42() -> bool:
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            return "sse4_2" in f.read()
    except OSError:
        return False


def test_crc32c_uses_the_hardware_instruction_when_the_cpu_has_sse42():
    if not _cpu_has_sse42():
        pytest.skip("CPU without SSE4.2: only the table path exists here")
    assert checksum.HARDWARE is True


# --- CRC-32C ---------------------------------------------------------------------------------------

KNOWN_CRC32C = [
    (b"", 0x00000000),
    (b"a", 0xC1D04330),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),  # RFC 3720 B.4 vectors
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize("data,expected", KNOWN_CRC32C)
def test_crc32c_matches_published_check_values(data, expected):
    assert checksum.crc32c(data) == expected
    assert checksum.crc32c_software(data) == expected
    assert kafka_crc32c(data) == expected


def _crc_sizes() -> list[int]:
    lane = 4096
    sizes = set(range(0, 130))
    for k in range(1, 25):  # around every lane multiple, so 3-lane blocks, tails and joins all occur
        for d in (-17, -9, -8, -7, -1, 0, 1, 7, 8, 9, 17):
            sizes.add(k * lane + d)
    rng = random.Random(1234)
    sizes.update(rng.randrange(0, 100_001) for _ in range(40))
    sizes.update((3 * lane, 6 * lane, 9 * lane, 100_000))
    return sorted(s for s in sizes if 0 <= s <= 100_000)


_CRC_DATA = random.Random(99).randbytes(100_000 + 16)


def test_crc32c_hardware_path_equals_software_path_on_sizes_up_to_100kb_and_any_alignment():
    mismatches = []
    for n in _crc_sizes():
        for align in (0, 1, 5):
            chunk = _CRC_DATA[align : align + n]
            hw, sw = checksum.crc32c(chunk), checksum.crc32c_software(chunk)
            if hw != sw:
                mismatches.append((n, align, hex(hw), hex(sw)))
    assert mismatches == []


def test_crc32c_equals_kafka_python_crc_on_sizes_around_lane_boundaries():
    lane = 4096
    sizes = sorted(
        {
            0,
            1,
            7,
            8,
            9,
            63,
            1000,
            lane - 1,
            lane,
            3 * lane - 1,
            3 * lane,
            3 * lane + 1,
            3 * lane + 8,
            6 * lane + 3,
            9 * lane - 5,
            50_001,
            100_000,
        }
    )
    for n in sizes:
        chunk = _CRC_DATA[3 : 3 + n]
        assert checksum.crc32c(chunk) == kafka_crc32c(chunk), n
        assert checksum.crc32c_software(chunk) == kafka_crc32c(chunk), n


def test_crc32c_of_a_zero_filled_large_buffer_matches_software_and_kafka():
    data = bytes(3 * 4096 * 2 + 13)
    assert checksum.crc32c(data) == checksum.crc32c_software(data) == kafka_crc32c(data)


@pytest.mark.parametrize("cut", [0, 1, 8, 4095, 4096, 12287, 12288, 12289, 30_000, 49_999, 50_000])
def test_crc32c_continues_from_a_previous_crc_like_one_pass(cut):
    data = _CRC_DATA[:50_000]
    whole = checksum.crc32c(data)
    assert checksum.crc32c(data[cut:], checksum.crc32c(data[:cut])) == whole
    assert checksum.crc32c_software(data[cut:], checksum.crc32c_software(data[:cut])) == whole
    assert checksum.crc32c(data[cut:], checksum.crc32c_software(data[:cut])) == whole


def test_crc32c_accepts_any_contiguous_buffer():
    data = _CRC_DATA[:20_000]
    expected = checksum.crc32c(data)
    assert checksum.crc32c(bytearray(data)) == expected
    assert checksum.crc32c(memoryview(data)) == expected
    assert checksum.crc32c(np.frombuffer(data, dtype=np.uint8)) == expected


@given(st.binary(max_size=40_000))
def test_crc32c_hardware_software_and_kafka_agree_on_arbitrary_data(data):
    hw = checksum.crc32c(data)
    assert hw == checksum.crc32c_software(data)
    if len(data) <= 2_000:  # kafka-python's CRC is pure Python: keep it cheap
        assert hw == kafka_crc32c(data)


# --- murmur2 partitioning --------------------------------------------------------------------------

KAFKA_MURMUR2_VECTORS = [  # from Kafka's UtilsTest.testMurmur2
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize("key,expected", KAFKA_MURMUR2_VECTORS)
def test_murmur2_matches_kafka_java_test_vectors(key, expected):
    assert partition_hash.murmur2(key) == expected
    assert ctypes.c_int32(kafka_murmur2(key)).value == expected


def test_murmur2_equals_kafka_python_murmur2_for_many_random_keys():
    rng = random.Random(42)
    keys = [b""] + [rng.randbytes(rng.randrange(1, 70)) for _ in range(5000)]
    for key in keys:
        assert partition_hash.murmur2(key) & 0xFFFFFFFF == kafka_murmur2(key), key


class _OneTopicCluster:
    """Just enough of kafka-python's ClusterMetadata for DefaultPartitioner."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic = topic
        self.parts = set(range(partitions))

    def topics(self):
        return {self.topic}

    def partitions_for_topic(self, topic):
        return self.parts

    def available_partitions_for_topic(self, topic):
        return self.parts


def test_partitions_for_keys_equals_kafka_default_partitioner():
    rng = random.Random(7)
    partitioner = DefaultPartitioner()
    for partitions in (1, 2, 3, 7, 12, 64, 100, 997, 4096):
        cluster = _OneTopicCluster("t", partitions)
        keys = [rng.randbytes(rng.randrange(0, 48)) for _ in range(500)]
        got = partition_hash.partitions_for_keys(keys, partitions)
        assert got.dtype == np.int32 and len(got) == len(keys)
        expected = [partitioner.partition("t", None, k, None, None, cluster) for k in keys]
        assert got.tolist() == expected


@given(
    keys=st.lists(st.binary(max_size=64), min_size=1, max_size=50),
    partitions=st.integers(min_value=1, max_value=10_000),
)
def test_partitions_for_keys_equals_kafka_formula_for_arbitrary_keys(keys, partitions):
    got = partition_hash.partitions_for_keys(keys, partitions).tolist()
    assert got == [(kafka_murmur2(k) & 0x7FFFFFFF) % partitions for k in keys]


def test_partitions_for_keys_gives_minus_one_for_null_keys_and_accepts_any_bytes_like_key():
    key = b"order-17"
    expected = (kafka_murmur2(key) & 0x7FFFFFFF) % 12
    got = partition_hash.partitions_for_keys([None, key, bytearray(key), memoryview(key)], 12).tolist()
    assert got == [-1, expected, expected, expected]


def test_partitions_for_keys_rejects_str_keys_and_non_positive_partition_counts():
    with pytest.raises(TypeError):
        partition_hash.partitions_for_keys(["text"], 3)
    with pytest.raises(ValueError):
        partition_hash.partitions_for_keys([b"k"], 0)


# --- batch scanning --------------------------------------------------------------------------------

HS = record_batch.HEADER_SIZE_


def _with_base(batch: bytes, base_offset: int) -> bytes:
    return struct.pack(">q", base_offset) + batch[8:]


def _segment(counts, bases=None, first_ts=1_000):
    """Concatenated batches with `counts[i]` records each; consecutive offsets unless bases given.

    Returns (buffer, [(pos, size, base, last, max_ts, producer_id, producer_epoch, base_sequence)]).
    """
    batches, rows, pos, base = [], [], 0, 0
    for i, n in enumerate(counts):
        b = bases[i] if bases is not None else base
        ts = [first_ts + 100 * i + j for j in range(n)]
        raw = _with_base(build_batch([b"v%d-%d" % (i, j) for j in range(n)], timestamps=ts, timestamp=0), b)
        batches.append(raw)
        rows.append((pos, len(raw), b, b + n - 1, max(ts), -1, -1, -1))
        pos += len(raw)
        base = b + n
    return b"".join(batches), rows


def _scan(buf, start=0, end=None, verify=True, expected=0, cap=64):
    end = len(buf) if end is None else end
    out = np.zeros((cap, batch_scan.N_COLS), dtype=np.int64)
    rows, stop, reason, nxt = batch_scan.scan_batches(buf, start, end, verify, expected, out)
    return rows, stop, reason, nxt, [tuple(int(x) for x in r) for r in out[:rows]]


def test_scan_reads_every_batch_of_a_clean_buffer_and_stops_at_end():
    buf, rows = _segment([1, 3, 2, 5])
    n, stop, reason, nxt, got = _scan(buf)
    assert (n, stop, reason, nxt) == (4, len(buf), batch_scan.END, 11)
    assert got == rows
    cols = (
        batch_scan.COL_POS,
        batch_scan.COL_SIZE,
        batch_scan.COL_BASE_OFFSET,
        batch_scan.COL_LAST_OFFSET,
        batch_scan.COL_MAX_TIMESTAMP,
        batch_scan.COL_PRODUCER_ID,
        batch_scan.COL_PRODUCER_EPOCH,
        batch_scan.COL_BASE_SEQUENCE,
    )
    assert cols == (0, 1, 2, 3, 4, 5, 6, 7) and batch_scan.N_COLS == 8


@pytest.mark.parametrize("zeros", [1, 12, HS - 1, HS, 4096])
def test_scan_stops_with_zero_reason_at_a_zero_filled_tail(zeros):
    buf, rows = _segment([2, 2, 3])
    n, stop, reason, nxt, got = _scan(buf + bytes(zeros))
    assert (n, stop, reason, nxt) == (3, len(buf), batch_scan.ZERO, 7)
    assert got == rows


@pytest.mark.parametrize("keep", [1, 8, 11, 12, 30, HS - 1, HS, HS + 1, -1])
def test_scan_stops_with_truncated_reason_at_a_torn_last_batch(keep):
    buf, rows = _segment([2, 1, 4])
    last_pos, last_size = rows[-1][0], rows[-1][1]
    keep = last_size + keep if keep < 0 else keep
    torn = buf[: last_pos + keep]
    n, stop, reason, nxt, got = _scan(torn)
    partial = torn[last_pos:]
    expected_reason = batch_scan.ZERO if not any(partial) else batch_scan.TRUNCATED
    assert (n, stop, reason, nxt) == (2, last_pos, expected_reason, rows[1][3] + 1)
    assert got == rows[:2]


def test_scan_of_a_torn_header_with_nonzero_bytes_is_truncated_not_zero():
    buf, rows = _segment([2, 2], bases=[0, 2])
    # the second batch starts with its base offset 2: bytes 00..02, so 8 bytes of it are not all zero
    torn = buf[: rows[1][0] + 8]
    n, stop, reason, _, _ = _scan(torn)
    assert (n, stop, reason) == (1, rows[1][0], batch_scan.TRUNCATED)


def test_scan_stops_with_crc_reason_at_a_corrupted_batch_only_when_verifying():
    buf, rows = _segment([1, 2, 3, 1])
    bad = bytearray(buf)
    bad[rows[2][0] + HS + 2] ^= 0x40  # a byte inside batch 2's records
    n, stop, reason, nxt, got = _scan(bytes(bad), verify=True)
    assert (n, stop, reason, nxt) == (2, rows[2][0], batch_scan.CRC, rows[1][3] + 1)
    assert got == rows[:2]
    n, stop, reason, nxt, got = _scan(bytes(bad), verify=False)
    assert (n, stop, reason, nxt) == (4, len(buf), batch_scan.END, 7)


def test_scan_stops_with_offset_gap_reason_when_a_base_offset_does_not_continue():
    buf, rows = _segment([2, 2, 2], bases=[10, 12, 20])
    n, stop, reason, nxt, got = _scan(buf, expected=10)
    assert (n, stop, reason, nxt) == (2, rows[2][0], batch_scan.OFFSET_GAP, 14)
    assert got == rows[:2]
    # a wrong first offset stops before anything
    assert _scan(buf, expected=11)[:4] == (0, 0, batch_scan.OFFSET_GAP, 11)
    # expected_offset < 0 disables the continuity check
    n, stop, reason, nxt, got = _scan(buf, expected=-1)
    assert (n, stop, reason) == (3, len(buf), batch_scan.END)
    assert got == rows


@pytest.mark.parametrize(
    "field,value",
    [
        ("magic", 1),
        ("length", 10),  # below the smallest possible batch
        ("length", -5),
        ("base_offset", -3),
        ("last_offset_delta", -1),
    ],
)
def test_scan_stops_with_corrupt_reason_at_an_impossible_header(field, value):
    buf, rows = _segment([1, 1, 1])
    bad = bytearray(buf)
    pos = rows[1][0]
    fmt, off = {"magic": (">b", 16), "length": (">i", 8), "base_offset": (">q", 0), "last_offset_delta": (">i", 23)}[
        field
    ]
    struct.pack_into(fmt, bad, pos + off, value)
    n, stop, reason, _, got = _scan(bytes(bad), expected=-1)
    assert (n, stop, reason) == (1, pos, batch_scan.CORRUPT)
    assert got == rows[:1]


def test_scan_with_a_full_output_array_resumes_from_stop_position_and_next_offset():
    buf, rows = _segment([1, 2, 3, 4, 5])
    n, stop, reason, nxt, got = _scan(buf, cap=2)
    assert (n, stop, reason, nxt) == (2, rows[2][0], batch_scan.FULL, 3)
    assert got == rows[:2]
    n, stop, reason, nxt, got = _scan(buf, start=stop, expected=nxt, cap=2)
    assert (n, stop, reason, nxt) == (2, rows[4][0], batch_scan.FULL, 10)
    assert got == rows[2:4]
    n, stop, reason, nxt, got = _scan(buf, start=stop, expected=nxt, cap=2)
    assert (n, stop, reason, nxt) == (1, len(buf), batch_scan.END, 15)
    assert got == rows[4:]
    # exactly full at the end of the data is END, not FULL
    assert _scan(buf, cap=5)[:3] == (5, len(buf), batch_scan.END)


def test_scan_respects_a_sub_range_and_reports_positions_relative_to_the_buffer():
    buf, rows = _segment([1, 2, 3, 4])
    n, stop, reason, nxt, got = _scan(buf, start=rows[1][0], end=rows[3][0], expected=1)
    assert (n, stop, reason, nxt) == (2, rows[3][0], batch_scan.END, 6)
    assert got == rows[1:3]
    # an end inside a batch means that batch is truncated
    assert _scan(buf, start=rows[1][0], end=rows[3][0] + 9, expected=1)[:3] == (2, rows[3][0], batch_scan.TRUNCATED)


def test_scan_of_an_empty_range_ends_immediately():
    buf, _ = _segment([1])
    assert _scan(buf, start=len(buf), end=len(buf))[:4] == (0, len(buf), batch_scan.END, 0)
    assert _scan(b"", start=0, end=0)[:3] == (0, 0, batch_scan.END)


def test_scan_rejects_bad_ranges_and_output_shapes():
    buf, _ = _segment([1])
    out = np.zeros((4, batch_scan.N_COLS), dtype=np.int64)
    for start, end in ((-1, len(buf)), (0, len(buf) + 1), (5, 4)):
        with pytest.raises(ValueError):
            batch_scan.scan_batches(buf, start, end, True, 0, out)
    with pytest.raises(ValueError):
        batch_scan.scan_batches(buf, 0, len(buf), True, 0, np.zeros((4, 3), dtype=np.int64))


@given(counts=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=6), data=st.data())
def test_scan_of_any_prefix_stops_at_the_last_whole_batch(counts, data):
    buf, rows = _segment(counts)
    cut = data.draw(st.integers(min_value=0, max_value=len(buf)))
    whole = [r for r in rows if r[0] + r[1] <= cut]
    stop_expected = whole[-1][0] + whole[-1][1] if whole else 0
    n, stop, reason, nxt, got = _scan(buf[:cut])
    assert got == whole and n == len(whole)
    assert stop == stop_expected
    assert nxt == (whole[-1][3] + 1 if whole else 0)
    if cut == stop_expected:
        assert reason == batch_scan.END
    elif not any(buf[stop_expected:cut]) and cut - stop_expected < HS:
        assert reason == batch_scan.ZERO  # a torn header of zeros looks exactly like unwritten space
    else:
        assert reason == batch_scan.TRUNCATED


# --- find_batch, find_timestamp, span_batches -------------------------------------------------------


def test_find_batch_returns_the_batch_holding_each_offset():
    buf, rows = _segment([1, 3, 2, 4])
    for pos, _size, base, last, _ts, *_producer in rows:
        for target in range(base, last + 1):
            assert batch_scan.find_batch(buf, 0, len(buf), target) == (pos, base, last)
    assert batch_scan.find_batch(buf, 0, len(buf), rows[-1][3] + 1) == (-1, -1, -1)
    assert batch_scan.find_batch(buf, 0, len(buf), 10**12) == (-1, -1, -1)


def test_find_batch_with_offset_gaps_returns_the_next_batch_after_the_gap():
    buf, rows = _segment([2, 2, 2], bases=[100, 110, 200])
    assert batch_scan.find_batch(buf, 0, len(buf), 0) == (rows[0][0], 100, 101)  # before the first
    assert batch_scan.find_batch(buf, 0, len(buf), 105) == (rows[1][0], 110, 111)  # inside a gap
    assert batch_scan.find_batch(buf, 0, len(buf), 150) == (rows[2][0], 200, 201)
    assert batch_scan.find_batch(buf, 0, len(buf), 202) == (-1, -1, -1)


def test_find_batch_searches_only_inside_its_range():
    buf, rows = _segment([1, 1, 1, 1])
    # starting at batch 2, offset 0 resolves to batch 2 (first batch whose last offset >= 0)
    assert batch_scan.find_batch(buf, rows[2][0], len(buf), 0) == (rows[2][0], 2, 2)
    # the range ends before batch 3: its offset is not found
    assert batch_scan.find_batch(buf, 0, rows[3][0], 3) == (-1, -1, -1)
    # a zero-filled tail after the data does not make the search wander
    assert batch_scan.find_batch(buf + bytes(4096), 0, len(buf) + 4096, 4) == (-1, -1, -1)


def test_find_timestamp_returns_the_first_batch_whose_max_timestamp_reaches_ts():
    buf, rows = _segment([2, 2, 3])  # max timestamps 1001, 1101, 1202
    assert batch_scan.find_timestamp(buf, 0, len(buf), 0) == (rows[0][0], 0)
    assert batch_scan.find_timestamp(buf, 0, len(buf), 1001) == (rows[0][0], 0)
    assert batch_scan.find_timestamp(buf, 0, len(buf), 1002) == (rows[1][0], 2)
    assert batch_scan.find_timestamp(buf, 0, len(buf), 1101) == (rows[1][0], 2)
    assert batch_scan.find_timestamp(buf, 0, len(buf), 1150) == (rows[2][0], 4)
    assert batch_scan.find_timestamp(buf, 0, len(buf), 1202) == (rows[2][0], 4)
    assert batch_scan.find_timestamp(buf, 0, len(buf), 1203) == (-1, -1)
    assert batch_scan.find_timestamp(buf, rows[1][0], len(buf), 0) == (rows[1][0], 2)


def test_find_timestamp_with_unordered_batch_timestamps_takes_the_first_match_in_log_order():
    late = build_batch([b"a"], timestamps=[5_000], timestamp=0)
    early = _with_base(build_batch([b"b"], timestamps=[1_000], timestamp=0), 1)
    later = _with_base(build_batch([b"c"], timestamps=[9_000], timestamp=0), 2)
    buf = late + early + later
    assert batch_scan.find_timestamp(buf, 0, len(buf), 2_000) == (0, 0)
    assert batch_scan.find_timestamp(buf, len(late), len(buf), 2_000) == (len(late) + len(early), 2)


def _span_model(rows, start, end, max_bytes):
    pos, nxt = start, -1
    for r in rows:
        if r[0] < start:
            continue
        if r[0] + r[1] > end:
            break
        if pos > start and r[0] + r[1] - start > max_bytes:
            break
        pos, nxt = r[0] + r[1], r[3] + 1
    return pos, nxt


def test_span_batches_takes_whole_batches_within_max_bytes_and_at_least_one():
    buf, rows = _segment([1, 2, 3, 4])
    sizes = [r[1] for r in rows]
    assert batch_scan.span_batches(buf, 0, len(buf), 1) == (sizes[0], 1)  # at least one
    assert batch_scan.span_batches(buf, 0, len(buf), sizes[0]) == (sizes[0], 1)
    assert batch_scan.span_batches(buf, 0, len(buf), sizes[0] + sizes[1] - 1) == (sizes[0], 1)
    assert batch_scan.span_batches(buf, 0, len(buf), sizes[0] + sizes[1]) == (sizes[0] + sizes[1], 3)
    assert batch_scan.span_batches(buf, 0, len(buf), 1 << 30) == (len(buf), 10)
    assert batch_scan.span_batches(buf, rows[2][0], len(buf), 1) == (rows[3][0], 6)
    for max_bytes in range(1, len(buf) + 2, 7):
        for r in rows:
            assert batch_scan.span_batches(buf, r[0], len(buf), max_bytes) == _span_model(
                rows, r[0], len(buf), max_bytes
            )


def test_span_batches_stops_before_a_truncated_or_zero_filled_tail():
    buf, rows = _segment([2, 2, 2])
    torn = buf[:-10]
    assert batch_scan.span_batches(torn, 0, len(torn), 1 << 30) == (rows[2][0], rows[1][3] + 1)
    zeroed = buf + bytes(500)
    assert batch_scan.span_batches(zeroed, 0, len(zeroed), 1 << 30) == (len(buf), 6)
    # nothing whole at the start: (start, -1)
    assert batch_scan.span_batches(torn, rows[2][0], len(torn), 1 << 30) == (rows[2][0], -1)
    assert batch_scan.span_batches(bytes(100), 0, 100, 1 << 30) == (0, -1)


@pytest.mark.parametrize(
    "fn,arg", [(batch_scan.find_batch, 0), (batch_scan.find_timestamp, 0), (batch_scan.span_batches, 100)]
)
def test_search_functions_reject_ranges_outside_the_buffer(fn, arg):
    buf, _ = _segment([1])
    for start, end in ((-1, len(buf)), (0, len(buf) + 1), (10, 5)):
        with pytest.raises(ValueError):
            fn(buf, start, end, arg)


def test_the_header_layout_python_reads_in_place_is_the_native_codecs():
    from tidelog.codec.batch import HEADER_SIZE, LAST_OFFSET_DELTA_AT, MAX_TIMESTAMP_AT, build_batch

    batch = build_batch([b"a", b"b", b"c"], timestamps=[5, 9, 7], timestamp=0)
    assert struct.unpack_from(">i", batch, LAST_OFFSET_DELTA_AT)[0] == 2
    assert struct.unpack_from(">q", batch, MAX_TIMESTAMP_AT)[0] == 9
    assert struct.unpack_from(">i", batch, HEADER_SIZE - 4)[0] == 3  # the record count ends the header
