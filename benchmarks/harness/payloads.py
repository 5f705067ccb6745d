"""The records every system is given: seeded, JSON-like, of one exact size, built before any clock starts.

Word text from a 256-word vocabulary makes them compressible-ish (lz4 ~2-3x) without being constant, and a
pool larger than the CPU caches, reused cyclically by every system alike, keeps any one system from
enjoying cache-resident data.
"""

from __future__ import annotations

import time

import numpy as np

MiB = 1 << 20
BATCH = 1000  # records per pool batch
SEED = 20240611


def make_pool(n_batches: int, size: int, seed: int = SEED) -> list[list[bytes]]:
    """n_batches lists of BATCH distinct records of exactly `size` bytes."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    vocab = [letters[rng.integers(0, 26, size=int(k))].tobytes() for k in rng.integers(3, 11, size=256)]
    corpus = b" ".join(vocab[i] for i in rng.integers(0, 256, size=1 << 19))  # ~3.5 MB of words
    events = [b"click", b"view", b"purchase", b"signup", b"logout", b"search"]
    n = n_batches * BATCH
    users = rng.integers(0, 100_000, size=n).tolist()
    kinds = rng.integers(0, len(events), size=n).tolist()
    starts = rng.integers(0, len(corpus) - size, size=n).tolist()
    ts0 = 1_700_000_000_000
    out: list[bytes] = []
    for i in range(n):
        if size >= 200:
            head = b'{"id":%d,"ts":%d,"user":"u%05d","event":"%s","region":"eu-west-1","payload":"' % (
                i,
                ts0 + i * 7,
                users[i],
                events[kinds[i]],
            )
        else:
            head = b'{"id":%d,"u":"u%05d","e":"%s","p":"' % (i, users[i], events[kinds[i]])
        fill = size - len(head) - 2
        value = head + corpus[starts[i] : starts[i] + fill] + b'"}'
        assert len(value) == size
        out.append(value)
    return [out[i : i + BATCH] for i in range(0, n, BATCH)]


class Payloads:
    """Records of one size as a flat list, and the same as ~1 MiB RecordBatch v2 (what a high-throughput
    tidelog client sends), each with its record count."""

    def __init__(self, size: int, n_records: int, seed: int = SEED, batch_bytes: int = MiB) -> None:
        from tidelog.codec.batch import HEADER_SIZE, build_batch

        self.size = size
        self.values: list[bytes] = [v for batch in make_pool(max(1, n_records // BATCH), size, seed) for v in batch]
        probe = build_batch(self.values[:BATCH], timestamp=0, producer_id=-1)
        per_record = (len(probe) - HEADER_SIZE) / BATCH
        rpb = self.records_per_batch = max(1, int((batch_bytes - HEADER_SIZE) / per_record))
        now_ms = int(time.time() * 1000)
        self.batches: list[tuple[bytes, int]] = [
            (build_batch(self.values[lo : lo + rpb], timestamp=now_ms, producer_id=-1), rpb)
            for lo in range(0, len(self.values) - rpb + 1, rpb)
        ]
        if not self.batches:
            raise ValueError("too few records for one batch")
        self.batch_bytes = sum(len(b) for b, _ in self.batches) / len(self.batches)
