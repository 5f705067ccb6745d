"""Idempotent producers: the broker's per-producer sequence checks."""

from __future__ import annotations

import pytest


def test_idempotent_sequences_wrap_at_two_to_the_31():
    from tidelog.errors import DuplicateSequenceError, OutOfOrderSequenceError
    from tidelog.log.producer_state import ProducerState

    state = ProducerState()
    top = (1 << 31) - 3
    assert state.check(7, 0, top, 3, {}) is None
    state.record(7, 0, top, 3, 100, 102)
    assert state.check(7, 0, 0, 2, {}) is None  # 2^31-3 .. 2^31-1, then 0 .. 1
    state.record(7, 0, 0, 2, 103, 104)
    assert state.check(7, 0, 0, 2, {}).base_offset == 103  # a retry of the last batch
    with pytest.raises(DuplicateSequenceError):
        state.check(7, 0, top - 10, 1, {})
    with pytest.raises(OutOfOrderSequenceError):
        state.check(7, 0, 5, 1, {})


def test_a_retried_batch_is_not_appended_twice_and_gets_its_original_offsets(data_dir):
    import struct

    import tidelog
    from tidelog._native.checksum import crc32c

    def batch(values, seq):
        raw = bytearray(tidelog.build_batch(values, timestamp=1_700_000_000_000))
        struct.pack_into(">qhi", raw, 43, 42, 0, seq)
        struct.pack_into(">I", raw, 17, crc32c(bytes(raw[21:])))
        return bytes(raw)

    with tidelog.Engine.open(data_dir) as eng:
        eng.create_topic("t")
        first = eng.append("t", 0, batch([b"a", b"b"], 0))
        assert eng.append("t", 0, batch([b"a", b"b"], 0)) == first
        assert eng.append("t", 0, batch([b"c"], 2)).base_offset == 2
    with tidelog.Engine.open(data_dir) as eng:  # the state is rebuilt from the log on open
        assert eng.append("t", 0, batch([b"c"], 2)).base_offset == 2
        assert eng.list_offsets("t", 0).log_end == 3
