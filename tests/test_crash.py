"""A real crash: a producing process (fsync="always") is killed with SIGKILL mid-stream, repeatedly.

After each kill the log is reopened and checked: every acknowledged offset is present with its exact
bytes, offsets are contiguous, every batch decodes, and no offset was ever reused for other bytes
(values are a function of partition and offset, so anything stored can be checked). Rounds continue
on the same data directory, so recovered logs are crashed again. TIDELOG_CRASH_ROUNDS sets the number
of rounds (a long run); the seed of a failing round is in the assertion message.
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

ROUNDS = int(os.environ.get("TIDELOG_CRASH_ROUNDS", "4"))
PARTITIONS = 2
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_and_kill(data_dir: str, rng: random.Random) -> dict[int, int]:
    """Start the producer, SIGKILL it after a random number of acks; return the acked end per partition."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.crash_producer", data_dir, str(PARTITIONS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    acked: dict[int, int] = {}
    target = rng.randint(20, 600)
    deadline = time.monotonic() + 60
    seen = 0
    try:
        first = proc.stdout.readline().strip()
        if first != "READY":
            proc.kill()
            pytest.fail(f"producer did not start: {first!r} {proc.stderr.read()}")
        while seen < target and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            _, p, _base, last = line.split()
            acked[int(p)] = int(last) + 1
            seen += 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        rest = proc.stdout.read()  # acks printed before the kill landed count too
        proc.stdout.close()
        proc.stderr.close()
    for line in rest.splitlines():
        if line.startswith("ACK"):
            _, p, _base, last = line.split()
            acked[int(p)] = max(acked.get(int(p), 0), int(last) + 1)
    assert seen > 0, "the producer acknowledged nothing before the deadline"
    return acked


def check_log(data_dir: str, acked: dict[int, int], seed: int) -> dict[int, int]:
    with Engine.open(data_dir) as engine:
        assert not engine.clean_start
        ends = {}
        for p in range(PARTITIONS):
            offsets = engine.list_offsets("t", p)
            assert offsets.log_end >= acked.get(p, 0), \
                f"seed {seed}: partition {p} lost acknowledged records (end {offsets.log_end} < acked {acked[p]})"
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
        return ends


@pytest.mark.parametrize("seed", range(ROUNDS))
def test_sigkill_mid_stream_loses_no_acknowledged_record(tmp_path_factory, seed):
    data_dir = str(tmp_path_factory.getbasetemp() / "crash-data")  # shared by the rounds, on purpose
    rng = random.Random(seed)
    previous = {}
    if os.path.exists(os.path.join(data_dir, "t-0")):
        with Engine.open(data_dir) as engine:
            previous = {p: engine.list_offsets("t", p).log_end for p in range(PARTITIONS)}
    acked = run_and_kill(data_dir, rng)
    ends = check_log(data_dir, acked, seed)
    for p, end in previous.items():
        assert ends[p] >= end, f"seed {seed}: partition {p} went back from {end} to {ends[p]}"
