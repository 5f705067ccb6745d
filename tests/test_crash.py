"""A real crash: a process producing and consuming in a group is killed with SIGKILL, repeatedly.

After each kill the log is reopened and checked: every acknowledged offset is present with its exact
bytes (under fsync="always"; under "interval" at least everything flushed, and a SIGKILL leaves the
page cache, so in fact everything written), offsets are contiguous, every batch decodes, no offset was
ever reused for other bytes (values are a function of partition and offset, so anything stored can be
checked), the group member never read a wrong record, and committed offsets never go backwards:
neither below an acknowledged commit nor below the previous round's. Rounds alternate the fsync
policy and continue on the same data directory, so recovered logs are crashed again.
`--crash-rounds N` (or TIDELOG_CRASH_ROUNDS) sets the number of rounds for a long run; the seed of a
failing round is in the assertion message.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.crash_producer import value_for
from tidelog import Engine
from tidelog.groups.offset_store import OffsetStore

pytestmark = pytest.mark.slow  # a heavier suite: left out by -m 'not slow'


class Round:
    """What the killed process reported before it died."""

    def __init__(self) -> None:
        self.acked: dict[int, int] = {}
        self.flushed: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        self.bad: list[str] = []

    def take(self, line: str) -> bool:
        kind, *rest = line.split()
        if kind == "ACK":
            p, last = int(rest[0]), int(rest[2])
            self.acked[p] = max(self.acked.get(p, 0), last + 1)
        elif kind == "FLUSHED":
            self.flushed[int(rest[0])] = int(rest[1])
        elif kind == "COMMIT":
            self.committed[int(rest[0])] = max(self.committed.get(int(rest[0]), 0), int(rest[1]))
        elif kind == "BAD":
            self.bad.append(line)
        return kind == "ACK"


PARTITIONS = 2
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_and_kill(data_dir: str, rng: random.Random, fsync: str) -> Round:
    """Start the child, SIGKILL it after a random number of acks; return what it acknowledged."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.crash_producer", data_dir, str(PARTITIONS), fsync],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    round_ = Round()
    target = rng.randint(20, 600)
    deadline = time.monotonic() + 60
    seen = 0
    try:
        first = proc.stdout.readline().strip()
        if first != "READY":
            proc.kill()
            pytest.fail(f"child did not start: {first!r} {proc.stderr.read()}")
        while seen < target and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += round_.take(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        rest = proc.stdout.read()  # lines printed before the kill landed count too
        proc.stdout.close()
        proc.stderr.close()
    for line in rest.splitlines():
        if line.strip():
            round_.take(line)
    assert seen > 0, "the child acknowledged nothing before the deadline"
    return round_


def check_log(data_dir: str, round_: Round, seed: int) -> tuple[dict[int, int], dict[int, int]]:
    acked = round_.acked
    assert not round_.bad, f"seed {seed}: the group member read wrong records: {round_.bad[:3]}"
    with Engine.open(data_dir) as engine:
        assert not engine.clean_start
        ends = {}
        for p in range(PARTITIONS):
            offsets = engine.list_offsets("t", p)
            assert offsets.log_end >= max(acked.get(p, 0), round_.flushed.get(p, 0)), (
                f"seed {seed}: partition {p} lost acknowledged records (end {offsets.log_end} < acked {acked[p]})"
            )
            offset = offsets.log_start
            while offset < offsets.high_watermark:
                result = engine.fetch("t", p, offset, max_bytes=1 << 20)
                for batch in result.batches():
                    assert batch.crc_ok(), f"seed {seed}: bad CRC at offset {batch.base_offset}"
                for rec in result:
                    assert rec.offset == offset, f"seed {seed}: gap before offset {rec.offset} (expected {offset})"
                    assert rec.value == value_for(p, rec.offset), f"seed {seed}: wrong bytes at offset {rec.offset}"
                    offset += 1
            assert offset == offsets.log_end
            ends[p] = offsets.log_end
        committed = {tp[1]: c.offset for tp, c in OffsetStore(engine).fetch("g").items()}
        for p, c in round_.committed.items():
            assert committed.get(p, 0) >= c, (
                f"seed {seed}: partition {p} commit went back from {c} to {committed.get(p)}"
            )
            assert committed[p] <= ends[p], (
                f"seed {seed}: partition {p} committed {committed[p]} past the end {ends[p]}"
            )
        return ends, committed


def test_sigkill_mid_stream_loses_no_acknowledged_record(tmp_path_factory, crash_round):
    seed = crash_round
    data_dir = str(tmp_path_factory.getbasetemp() / "crash-data")  # shared by the rounds, on purpose
    rng = random.Random(seed)
    fsync = ("always", "interval")[seed % 2]
    previous, previous_commits = {}, {}
    if os.path.exists(os.path.join(data_dir, "t-0")):
        with Engine.open(data_dir) as engine:
            previous = {p: engine.list_offsets("t", p).log_end for p in range(PARTITIONS)}
            previous_commits = {tp[1]: c.offset for tp, c in OffsetStore(engine).fetch("g").items()}
    round_ = run_and_kill(data_dir, rng, fsync)
    ends, committed = check_log(data_dir, round_, seed)
    for p, end in previous.items():
        assert ends[p] >= end, f"seed {seed}: partition {p} went back from {end} to {ends[p]}"
    for p, c in previous_commits.items():
        assert committed.get(p, 0) >= c, f"seed {seed}: partition {p} commit went back from {c} to {committed.get(p)}"
