"""Properties of the record-batch codec: whatever is built round-trips, and whatever is damaged,
truncated, random or lying is rejected with CorruptBatchError (never a crash, never a wrong decode)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tidelog._native.checksum import crc32c
from tidelog.codec import compression
from tidelog.codec.batch import BatchInfo, BatchView, build_batch, build_batches, iter_batches, validate
from tidelog.errors import CorruptBatchError, InvalidRequestError, RecordTooLargeError

HEADER = 61
CODEC_ID = {"none": 0, "lz4": 3}

# --- strategies -----------------------------------------------------------------------------------

bytes_or_none = st.one_of(st.none(), st.binary(max_size=48))
header_lists = st.lists(st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=16))), max_size=4)
timestamps = st.integers(min_value=-(1 << 45), max_value=1 << 45)  # any order: negative deltas too
codecs = st.sampled_from(["none", "lz4"])


@st.composite
def record_sets(draw, max_size=20):
    n = draw(st.integers(min_value=1, max_value=max_size))
    values = draw(st.lists(bytes_or_none, min_size=n, max_size=n))
    keys = draw(st.one_of(st.none(), st.lists(bytes_or_none, min_size=n, max_size=n)))
    headers = draw(st.one_of(st.none(), st.lists(header_lists, min_size=n, max_size=n)))
    ts = draw(st.one_of(st.none(), st.lists(timestamps, min_size=n, max_size=n)))
    default_ts = draw(timestamps)
    return values, keys, headers, ts, default_ts


def _build(rs, codec="none"):
    values, keys, headers, ts, default_ts = rs
    return build_batch(values, keys, headers, ts, timestamp=default_ts, compression_name=codec)


def _expected(rs, base_offset=0):
    values, keys, headers, ts, default_ts = rs
    out = []
    for i, v in enumerate(values):
        out.append(
            (
                base_offset + i,
                default_ts if ts is None else ts[i],
                None if keys is None else keys[i],
                v,
                () if headers is None else tuple(headers[i]),
            )
        )
    return out


def _decoded(view, copy=True):
    out = []
    for r in view.records(copy=copy):
        out.append(
            (
                r.offset,
                r.timestamp,
                None if r.key is None else bytes(r.key),
                None if r.value is None else bytes(r.value),
                r.headers,
            )
        )
    return out


def _recrc(buf: bytearray) -> bytes:
    struct.pack_into(">I", buf, 17, crc32c(bytes(buf[21:])))
    return bytes(buf)


def _reframe(batch: bytes, section: bytes, *, codec="none", count=None, max_ts=None) -> bytes:
    """`batch`'s header in front of another records section (compressed as codec), CRC recomputed."""
    payload = compression.compress(CODEC_ID[codec], section)
    head = bytearray(batch[:HEADER])
    struct.pack_into(">i", head, 8, HEADER + len(payload) - 12)
    struct.pack_into(">h", head, 21, CODEC_ID[codec])
    if count is not None:
        struct.pack_into(">i", head, 57, count)
        struct.pack_into(">i", head, 23, count - 1)
    if max_ts is not None:
        struct.pack_into(">q", head, 35, max_ts)
    return _recrc(head + payload)


# --- round trip -----------------------------------------------------------------------------------


@given(rs=record_sets(), codec=codecs)
def test_any_records_round_trip_through_build_validate_and_batch_view(rs, codec):
    raw = _build(rs, codec)
    expected = _expected(rs)
    ts = [e[1] for e in expected]
    infos = validate(raw)
    assert infos == [BatchInfo(0, len(raw), len(expected), ts[0], max(ts), CODEC_ID[codec])]
    view = BatchView(raw)
    assert (view.base_offset, view.last_offset, view.count, view.size) == (
        0,
        len(expected) - 1,
        len(expected),
        len(raw),
    )
    assert (view.first_timestamp, view.max_timestamp, view.codec) == (ts[0], max(ts), codec)
    assert view.crc_ok()
    assert _decoded(view) == expected
    assert _decoded(view, copy=False) == expected
    assert [(v.pos, v.size, v.count) for v in iter_batches(raw)] == [(0, len(raw), len(expected))]

    buf = bytes(view.records_buffer)
    table = view.table()
    assert len(table) == len(expected)
    for row, (offset, t, key, value, headers) in zip(table, expected):
        assert (int(row["offset"]), int(row["timestamp"])) == (offset, t)
        assert int(row["headers_count"]) == len(headers)
        if key is None:
            assert row["key_len"] == -1
        else:
            assert buf[row["key_pos"] : row["key_pos"] + row["key_len"]] == key
        if value is None:
            assert row["value_len"] == -1
        else:
            assert buf[row["value_pos"] : row["value_pos"] + row["value_len"]] == value
    # record sizes (plus their length varints) tile the records section exactly
    section_len = len(raw) - HEADER if codec == "none" else len(buf)
    assert sum(len(zz(int(n))) + int(n) for n in table["size"]) == section_len


@given(
    rs=record_sets(max_size=8),
    codec=codecs,
    base=st.integers(min_value=0, max_value=(1 << 62)),
    lo=st.integers(min_value=0, max_value=10),
    hi=st.integers(min_value=0, max_value=10),
)
def test_records_honour_the_base_offset_and_the_offset_window(rs, codec, base, lo, hi):
    raw = struct.pack(">q", base) + _build(rs, codec)[8:]
    validate(raw)
    expected = _expected(rs, base_offset=base)
    got = BatchView(raw).records(min_offset=base + lo, max_offset=base + hi)
    assert [r.offset for r in got] == [e[0] for e in expected if base + lo <= e[0] < base + hi]


def test_timestamp_argument_applies_to_every_record_when_no_timestamps_are_given():
    raw = build_batch([b"a", b"b", None], timestamp=-1)
    assert [r.timestamp for r in BatchView(raw).records()] == [-1, -1, -1]
    assert validate(raw)[0].max_timestamp == -1


def test_negative_timestamp_deltas_keep_first_timestamp_as_base_and_true_maximum():
    raw = build_batch([b"a", b"b", b"c", b"d"], timestamps=[500, 100, 900, -7], timestamp=0)
    info = validate(raw)[0]
    assert (info.first_timestamp, info.max_timestamp) == (500, 900)
    assert [r.timestamp for r in BatchView(raw).records()] == [500, 100, 900, -7]


@pytest.mark.parametrize(
    "kwargs",
    [dict(timestamps=[1 << 63], timestamp=0), dict(timestamps=[-(1 << 63) - 1], timestamp=0), dict(timestamp=1 << 63)],
)
@pytest.mark.parametrize("builder", [build_batch, build_batches])
def test_timestamps_outside_int64_are_an_invalid_request(builder, kwargs):
    with pytest.raises(InvalidRequestError):
        builder([b"x"], **kwargs)


def test_bad_arguments_are_invalid_requests():
    for call in (
        lambda: build_batch([], timestamp=0),
        lambda: build_batch([b"a"], [b"k", b"k2"], timestamp=0),
        lambda: build_batch(["text"], timestamp=0),
        lambda: build_batch([b"a"], headers=[[("h", "not bytes")]], timestamp=0),
        lambda: build_batch([b"a"], headers=[[("h",)]], timestamp=0),
    ):
        with pytest.raises(InvalidRequestError):
            call()


# --- damage is detected -----------------------------------------------------------------------------


@settings(max_examples=60)
@given(rs=record_sets(max_size=4), codec=codecs)
def test_every_single_bit_flip_under_the_crc_is_rejected(rs, codec):
    raw = _build(rs, codec)
    good = validate(raw)
    for byte in range(17, len(raw)):  # CRC field and everything it covers
        for bit in range(8):
            bad = bytearray(raw)
            bad[byte] ^= 1 << bit
            with pytest.raises(CorruptBatchError):
                validate(bytes(bad))
    # base offset and partition leader epoch sit outside the CRC: flipping them is not damage
    for byte in list(range(0, 8)) + list(range(12, 16)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[byte] ^= 1 << bit
            assert validate(bytes(bad)) == good
            if byte < 8:
                assert BatchView(bytes(bad)).base_offset == struct.unpack_from(">q", bad, 0)[0]
    # the batch length and magic are not covered, but are checked before anything is trusted
    for byte in range(8, 12):
        for bit in range(8):
            bad = bytearray(raw)
            bad[byte] ^= 1 << bit
            try:
                infos = validate(bytes(bad))
            except CorruptBatchError:
                continue
            assert infos != good
    for bit in range(8):
        bad = bytearray(raw)
        bad[16] ^= 1 << bit
        with pytest.raises(CorruptBatchError, match="magic"):
            validate(bytes(bad))


@given(rs=record_sets(max_size=6), codec=codecs)
def test_every_truncation_of_a_valid_batch_is_rejected(rs, codec):
    raw = _build(rs, codec)
    assert len(validate(raw)) == 1
    for cut in range(len(raw)):
        with pytest.raises(CorruptBatchError):
            validate(raw[:cut])


@given(first=record_sets(max_size=4), second=record_sets(max_size=4), codec=codecs)
def test_truncating_inside_a_later_batch_rejects_the_whole_buffer(first, second, codec):
    a, b = _build(first, codec), _build(second, codec)
    assert len(validate(a + b)) == 2
    assert len(validate((a + b)[: len(a)])) == 1
    for cut in range(len(a) + 1, len(a) + len(b)):
        with pytest.raises(CorruptBatchError):
            validate((a + b)[:cut])


@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_corrupt_batch_error(data):
    try:
        infos = validate(data)
    except CorruptBatchError:
        return
    for info in infos:  # anything accepted must decode
        BatchView(data, info.pos).records()


@given(data=st.binary(max_size=400), limit=st.integers(min_value=1, max_value=500))
def test_random_bytes_with_a_size_limit_raise_only_corrupt_or_too_large(data, limit):
    try:
        validate(data, max_batch_bytes=limit)
    except (CorruptBatchError, RecordTooLargeError):
        pass


@given(
    body=st.binary(max_size=200),
    count=st.integers(min_value=-2, max_value=6),
    attrs=st.sampled_from([0, 3, 8, 11]),
    max_ts=st.integers(min_value=-3, max_value=3),
)
def test_random_records_behind_a_crc_correct_header_never_crash_and_accepted_ones_decode(body, count, attrs, max_ts):
    # Structured garbage: size, magic and CRC are right, so validation has to look at the records.
    head = bytearray(HEADER)
    struct.pack_into(">qiib", head, 0, 0, HEADER + len(body) - 12, -1, 2)
    struct.pack_into(">hiqqqhii", head, 21, attrs, count - 1, 0, max_ts, -1, -1, -1, count)
    raw = _recrc(head + body)
    try:
        infos = validate(raw)
    except CorruptBatchError:
        return
    assert len(infos) == 1 and infos[0].count == count
    view = BatchView(raw)
    assert len(view.records()) == count
    assert len(view.table()) == count


@given(rs=record_sets(max_size=6), codec=codecs, junk=st.binary(min_size=1, max_size=80))
def test_random_bytes_inside_a_valid_lz4_or_plain_records_section_are_rejected_or_decode(rs, codec, junk):
    raw = _build(rs, "none")
    section = bytearray(raw[HEADER:])
    section[len(section) // 2 : len(section) // 2 + len(junk)] = junk
    bad = _reframe(raw, bytes(section), codec=codec)
    try:
        validate(bad)
    except CorruptBatchError:
        return
    view = BatchView(bad)
    assert len(view.records()) == view.count


# --- several batches, size limit ----------------------------------------------------------------------


@given(sets=st.lists(st.tuples(record_sets(max_size=5), codecs), min_size=1, max_size=5))
def test_concatenated_batches_validate_as_one_batch_info_each(sets):
    parts = [_build(rs, codec) for rs, codec in sets]
    data = b"".join(parts)
    infos = validate(data)
    assert len(infos) == len(parts)
    pos = 0
    for info, part, (rs, codec) in zip(infos, parts, sets):
        ts = [e[1] for e in _expected(rs)]
        assert info == BatchInfo(pos, len(part), len(rs[0]), ts[0], max(ts), CODEC_ID[codec])
        assert _decoded(BatchView(data, pos)) == _expected(rs)
        pos += len(part)
    assert [v.pos for v in iter_batches(data)] == [i.pos for i in infos]


@given(rs=record_sets(max_size=6), codec=codecs)
def test_max_batch_bytes_rejects_only_bigger_batches(rs, codec):
    raw = _build(rs, codec)
    assert len(validate(raw, max_batch_bytes=len(raw))) == 1
    with pytest.raises(RecordTooLargeError) as exc:
        validate(raw, max_batch_bytes=len(raw) - 1)
    assert exc.value.code == RecordTooLargeError.code == 10
    # in a concatenation, the one batch over the limit rejects the whole buffer
    small = build_batch([None], timestamp=0)
    if len(small) < len(raw):
        with pytest.raises(RecordTooLargeError):
            validate(small + raw, max_batch_bytes=len(raw) - 1)
        assert len(validate(small + raw, max_batch_bytes=len(raw))) == 2


# --- lying records inside a CRC-correct batch --------------------------------------------------------


def zz(n: int) -> bytes:
    """Kafka's zig-zag varint."""
    z = (n << 1) ^ (n >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def nullable(b) -> bytes:
    return zz(-1) if b is None else zz(len(b)) + b


def record(
    ts_delta=0,
    offset_delta=0,
    key=b"key",
    value=b"value",
    headers=(("h", b"v"),),
    *,
    length_delta=0,
    key_len=None,
    value_len=None,
    header_count=None,
    header_key_len=None,
    header_value_len=None,
    raw_length=None,
    body_suffix=b"",
    raw_ts=None,
) -> bytes:
    """One record, honest unless a lie is asked for."""
    body = bytearray(b"\x00") + (zz(ts_delta) if raw_ts is None else raw_ts) + zz(offset_delta)
    body += nullable(key) if key_len is None else zz(key_len) + (key or b"")
    body += nullable(value) if value_len is None else zz(value_len) + (value or b"")
    body += zz(len(headers)) if header_count is None else zz(header_count)
    for i, (hk, hv) in enumerate(headers):
        kb = hk.encode()
        body += (zz(len(kb)) if header_key_len is None or i else zz(header_key_len)) + kb
        body += nullable(hv) if header_value_len is None or i else zz(header_value_len) + (hv or b"")
    body += body_suffix
    length = raw_length if raw_length is not None else zz(len(body) + length_delta)
    return length + bytes(body)


TWO = [record(0, 0, b"k0", b"v0", (("a", b"1"),)), record(1, 1, None, b"v1", ())]
TEMPLATE = build_batch([b"v0", b"v1"], [b"k0", None], [[("a", b"1")], []], [1000, 1001], timestamp=0)


def test_record_encoder_of_these_tests_reproduces_tidelog_bytes():
    # keeps the lie cases honest: with no lie, the hand-made section is exactly what tidelog writes
    assert b"".join(TWO) == TEMPLATE[HEADER:]
    assert _reframe(TEMPLATE, b"".join(TWO)) == TEMPLATE
    validate(TEMPLATE)


LIES = {
    "record length one too long": [TWO[0], record(1, 1, None, b"v1", (), length_delta=1)],
    "record length one too short": [record(0, 0, b"k0", b"v0", (("a", b"1"),), length_delta=-1), TWO[1]],
    "record length longer than the batch": [TWO[0], record(1, 1, None, b"v1", (), length_delta=1000)],
    "record length below the minimum": [TWO[0], record(1, 1, None, b"v1", (), raw_length=zz(3))],
    "record length negative": [record(0, 0, b"k0", b"v0", (("a", b"1"),), raw_length=zz(-1)), TWO[1]],
    "key length past the record": [record(0, 0, b"k0", b"v0", (("a", b"1"),), key_len=200), TWO[1]],
    "key length below -1": [record(0, 0, b"k0", b"v0", (("a", b"1"),), key_len=-2), TWO[1]],
    "key length one too long": [record(0, 0, b"k0", b"v0", (("a", b"1"),), key_len=3), TWO[1]],
    "value length past the record": [TWO[0], record(1, 1, None, b"v1", (), value_len=50)],
    "value length below -1": [TWO[0], record(1, 1, None, b"v1", (), value_len=-7)],
    "value length one too short": [TWO[0], record(1, 1, None, b"v1", (), value_len=1)],
    "header count too large": [record(0, 0, b"k0", b"v0", (("a", b"1"),), header_count=2), TWO[1]],
    "header count far too large": [record(0, 0, b"k0", b"v0", (("a", b"1"),), header_count=1 << 20), TWO[1]],
    "header count negative": [TWO[0], record(1, 1, None, b"v1", (), header_count=-1)],
    "header key length negative": [record(0, 0, b"k0", b"v0", (("a", b"1"),), header_key_len=-1), TWO[1]],
    "header key length past the record": [record(0, 0, b"k0", b"v0", (("a", b"1"),), header_key_len=90), TWO[1]],
    "header value length below -1": [record(0, 0, b"k0", b"v0", (("a", b"1"),), header_value_len=-3), TWO[1]],
    "header value length past the record": [record(0, 0, b"k0", b"v0", (("a", b"1"),), header_value_len=64), TWO[1]],
    "bytes left inside a record": [record(0, 0, b"k0", b"v0", (("a", b"1"),), body_suffix=b"\x00"), TWO[1]],
    "bytes after the last record": [TWO[0], TWO[1], b"\x00"],
    "first offset delta is not 0": [record(0, 1, b"k0", b"v0", (("a", b"1"),)), record(1, 2, None, b"v1", ())],
    "repeated offset delta": [TWO[0], record(1, 0, None, b"v1", ())],
    # the true length, but spread over 6 bytes (a varint has at most 5)
    "over-long length varint": [bytes([TWO[0][0] | 0x80]) + b"\x80\x80\x80\x80\x00" + TWO[0][1:], TWO[1]],
    # a zero timestamp delta spread over 11 bytes (a varlong has at most 10), record length correct
    "over-long timestamp varlong": [record(0, 0, b"k0", b"v0", (("a", b"1"),), raw_ts=b"\x80" * 10 + b"\x00"), TWO[1]],
    "varint cut by the end of the batch": [TWO[0], b"\x80"],
}


@pytest.mark.parametrize("codec", ["none", "lz4"])
@pytest.mark.parametrize("lie", sorted(LIES))
def test_lying_record_fields_in_a_crc_correct_batch_are_rejected(lie, codec):
    bad = _reframe(TEMPLATE, b"".join(LIES[lie]), codec=codec)
    assert crc32c(bad[21:]) == struct.unpack_from(">I", bad, 17)[0]  # the CRC is right: only the records lie
    with pytest.raises(CorruptBatchError, match=r"batch 0 .*record \d+: "):
        validate(bad)


@pytest.mark.parametrize("codec", ["none", "lz4"])
@pytest.mark.parametrize("count", [0, 1, 3, 1000])
def test_record_count_disagreeing_with_the_records_is_rejected(count, codec):
    bad = _reframe(TEMPLATE, b"".join(TWO), codec=codec, count=count)
    with pytest.raises(CorruptBatchError):
        validate(bad)


def test_last_offset_delta_disagreeing_with_the_record_count_is_rejected():
    bad = bytearray(TEMPLATE)
    struct.pack_into(">i", bad, 23, 5)
    with pytest.raises(CorruptBatchError, match="last offset delta"):
        validate(_recrc(bad))


@pytest.mark.parametrize("codec", ["none", "lz4"])
@pytest.mark.parametrize("max_ts", [1000, 1002, -1])
def test_max_timestamp_disagreeing_with_the_records_is_rejected(max_ts, codec):
    bad = _reframe(TEMPLATE, b"".join(TWO), codec=codec, max_ts=max_ts)
    with pytest.raises(CorruptBatchError, match="timestamp"):
        validate(bad)


@pytest.mark.parametrize("codec_id,match", [(1, "gzip"), (2, "snappy"), (4, "zstd"), (5, "codec 5"), (7, "codec 7")])
def test_unknown_codecs_and_sections_not_in_their_codec_are_rejected(codec_id, match):
    """Codecs past zstd are unknown; a section flagged gzip, snappy or zstd must decompress as one."""
    bad = bytearray(TEMPLATE)
    struct.pack_into(">h", bad, 21, codec_id)
    with pytest.raises(CorruptBatchError, match=match):
        validate(_recrc(bad))


@pytest.mark.parametrize("payload", [b"", b"\x04\x22\x4d\x18", b"not an lz4 frame at all"])
def test_broken_lz4_payloads_are_rejected(payload):
    head = bytearray(TEMPLATE[:HEADER])
    struct.pack_into(">i", head, 8, HEADER + len(payload) - 12)
    struct.pack_into(">h", head, 21, 3)
    with pytest.raises(CorruptBatchError):
        validate(_recrc(head + payload))


def test_bytes_after_the_lz4_frame_are_rejected():
    payload = compression.compress(3, TEMPLATE[HEADER:]) + b"\x00"
    head = bytearray(TEMPLATE[:HEADER])
    struct.pack_into(">i", head, 8, HEADER + len(payload) - 12)
    struct.pack_into(">h", head, 21, 3)
    with pytest.raises(CorruptBatchError):
        validate(_recrc(head + payload))


@given(rs=record_sets(max_size=6), codec=codecs, data=st.data())
def test_any_record_length_off_by_any_amount_is_rejected(rs, codec, data):
    raw = _build(rs, "none")
    table = BatchView(raw).table()
    i = data.draw(st.integers(min_value=0, max_value=len(table) - 1))
    delta = data.draw(st.integers(min_value=-40, max_value=40).filter(bool))
    size = int(table["size"][i])
    assume(size + delta >= 0)
    # the record starts where the previous one ended; its length varint comes first
    start = HEADER + sum(len(zz(int(s))) + int(s) for s in table["size"][:i])
    old = zz(size)
    assert raw[start : start + len(old)] == old
    section = raw[HEADER:start] + zz(size + delta) + raw[start + len(old) :]
    with pytest.raises(CorruptBatchError):
        validate(_reframe(raw, section, codec=codec))


@given(rs=record_sets(max_size=6), codec=codecs, delta=st.integers(min_value=-5, max_value=5).filter(bool))
def test_any_record_count_off_by_any_amount_is_rejected(rs, codec, delta):
    raw = _build(rs, "none")
    with pytest.raises(CorruptBatchError):
        validate(_reframe(raw, raw[HEADER:], codec=codec, count=len(rs[0]) + delta))


@given(rs=record_sets(max_size=6))
def test_a_lie_in_one_batch_rejects_the_whole_concatenation(rs):
    good = _build(rs, "none")
    bad = _reframe(TEMPLATE, b"".join(LIES["record length one too long"]))
    for data in (good + bad, bad + good, good + bad + good):
        with pytest.raises(CorruptBatchError):
            validate(data)


# --- input buffers ---------------------------------------------------------------------------------


def test_validate_and_batch_view_accept_any_contiguous_bytes_like_buffer(tmp_path):
    import mmap

    import numpy as np

    data = TEMPLATE + build_batch([b"x" * 100], timestamp=5, compression_name="lz4")
    expected = validate(data)
    path = tmp_path / "batches"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for buf in (bytearray(data), memoryview(data), np.frombuffer(data, dtype=np.uint8), mm):
            assert validate(buf) == expected
            views = list(iter_batches(buf))
            assert [len(v.records()) for v in views] == [2, 1]
            assert views[0].records(copy=False)[0].value == b"v0"
            del views


def test_validate_rejects_non_buffers_as_invalid_requests():
    for bad in ("text", 12, [1, 2, 3], {"a": 1}):
        with pytest.raises(InvalidRequestError):
            validate(bad)


def test_validate_rejects_a_non_contiguous_buffer_as_an_invalid_request():
    with pytest.raises((InvalidRequestError, CorruptBatchError)):
        validate(memoryview(TEMPLATE + TEMPLATE)[::2])
