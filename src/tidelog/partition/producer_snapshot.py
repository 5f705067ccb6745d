"""Producer-state snapshots: `<offset>.snapshot` files that let idempotent producers' state outlive
restarts, whatever the size of the log (Kafka keeps the same kind of file per segment).

A snapshot named by offset N holds the state after every batch below N: per producer its id, epoch,
last append time and its remembered batches. One is written at every segment roll (N = the new
segment's base) and at a clean close (N = the log end). At open, the newest valid snapshot at or below
the log end is loaded and the batches from N on are replayed from the log; with none, the whole log
is replayed. A damaged snapshot (CRC) is skipped for an older one, so it costs replay, never state.

Layout (big-endian): magic "TLPS", u16 version 1, i64 offset, u32 producers; per producer: i64 id,
i16 epoch, i64 last_seen_ms, u8 batches; per batch: i32 first sequence, i32 last sequence, i64 base
offset, i64 last offset; then u32 CRC-32C of everything before. Written with a durable atomic replace
(two fsyncs, next to a roll's seal): were the newest KEEP lost in a power cut, a replay from the log
start would forget producers whose batches retention had deleted. Older ones are deleted.
"""

from __future__ import annotations

import logging
import os
import struct

from .._native import checksum
from ..storage.fs import FileSystem
from .producer_state import ProducedBatch, ProducerState

SUFFIX = ".snapshot"
KEEP = 2
_HEAD = struct.Struct(">4sHqI")
_PRODUCER = struct.Struct(">qhqB")
_BATCH = struct.Struct(">iiqq")
_MAGIC = b"TLPS"

log = logging.getLogger("tidelog.log")


def snapshot_path(directory: str, offset: int) -> str:
    return os.path.join(directory, f"{offset:020d}{SUFFIX}")


def list_snapshots(fs: FileSystem, directory: str) -> list[int]:
    """Offsets of the snapshot files in a partition directory, oldest first."""
    out = []
    for name in fs.listdir(directory):
        stem, ext = os.path.splitext(name)
        if ext == SUFFIX and stem.isdigit() and len(stem) == 20:
            out.append(int(stem))
    return sorted(out)


def encode(state: ProducerState, offset: int) -> bytes:
    parts = [b""]
    count = 0
    for pid, producer in state.items():
        parts.append(_PRODUCER.pack(pid, producer.epoch, producer.last_seen_ms[0], len(producer.batches)))
        parts.extend(_BATCH.pack(*b) for b in producer.batches)
        count += 1
    parts[0] = _HEAD.pack(_MAGIC, 1, offset, count)
    body = b"".join(parts)
    return body + struct.pack(">I", checksum.crc32c(body))


def decode(data: bytes, offset: int) -> ProducerState:
    """The state in a snapshot file named by offset; ValueError if it is damaged."""
    if len(data) < _HEAD.size + 4 or checksum.crc32c(data[:-4]) != struct.unpack(">I", data[-4:])[0]:
        raise ValueError("CRC mismatch or truncated")
    magic, version, at, count = _HEAD.unpack_from(data, 0)
    if magic != _MAGIC or version != 1 or at != offset:
        raise ValueError("not a version 1 snapshot of this offset")
    state = ProducerState()
    pos = _HEAD.size
    for _ in range(count):
        pid, epoch, seen, n = _PRODUCER.unpack_from(data, pos)
        pos += _PRODUCER.size
        batches = [ProducedBatch(*_BATCH.unpack_from(data, pos + i * _BATCH.size)) for i in range(n)]
        pos += n * _BATCH.size
        state.restore(pid, epoch, seen, batches)
    if pos != len(data) - 4:
        raise ValueError("length does not match its producer count")
    return state


def write(fs: FileSystem, directory: str, state: ProducerState, offset: int, existing: list[int]) -> list[int]:
    """Write the snapshot at offset and delete all but the newest KEEP; returns the offsets kept.

    `existing` are the snapshots the partition knows of (listed once at open): a roll never lists the
    directory, which holds three files per segment (a long-lived partition's tens of thousands)."""
    fs.write_file_atomic(snapshot_path(directory, offset), encode(state, offset))
    snapshots = sorted(set(existing) | {offset})
    for old in snapshots[:-KEEP]:
        fs.remove(snapshot_path(directory, old))
    return snapshots[-KEEP:]


def load(fs: FileSystem, directory: str, log_end: int) -> tuple[ProducerState, int]:
    """(state, offset to replay the log from): the newest valid snapshot at or below log_end, or an
    empty state and 0. Snapshots past the log end (the log was cut after them) are deleted."""
    for offset in reversed(list_snapshots(fs, directory)):
        path = snapshot_path(directory, offset)
        if offset > log_end:
            fs.remove(path)
            continue
        try:
            return decode(fs.read_file(path), offset), offset
        except (ValueError, struct.error) as exc:
            log.warning(
                "producer snapshot %s is damaged (%s); using an older one or the log",
                path,
                exc,
                extra={"event": "producer_snapshot_damaged", "path": path},
            )
    return ProducerState(), 0
