"""`tidelog check` and `tidelog dump`: read-only looks at a data directory built by the engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tidelog import Engine


def tidelog(*args):
    return subprocess.run([sys.executable, "-m", "tidelog", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def built(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", 2, segment_bytes=8192, index_interval_bytes=256)
        for i in range(60):
            eng.produce("t", [b"v%03d-" % i + b"x" * 100] * 5, partition=i % 2)
            clock.advance(1)
    return data_dir


def test_check_passes_a_healthy_directory(built):
    out = tidelog("check", "--data-dir", built, "--format", "json")
    assert out.returncode == 0, out.stdout
    report = {(r["topic"], r["partition"]): r for r in json.loads(out.stdout)}
    assert report[("t", 0)]["records"] == 150 and report[("t", 0)]["end_offset"] == 150
    assert report[("t", 0)]["segments"] > 1 and not report[("t", 0)]["problems"]


def test_check_reports_a_flipped_bit_in_a_sealed_segment(built):
    first = os.path.join(built, "t-1", f"{0:020d}.log")
    with open(first, "r+b") as f:
        f.seek(300)
        byte = f.read(1)[0]
        f.seek(300)
        f.write(bytes([byte ^ 0x01]))
    out = tidelog("check", "--data-dir", built)
    assert out.returncode == 1
    assert "t[1]" in out.stdout and "CRC mismatch" in out.stdout and "middle of the log" in out.stdout
    assert "t[0]" in out.stdout and out.stdout.count("problem") == 1


def test_check_reports_a_damaged_index(built):
    index = os.path.join(built, "t-0", f"{0:020d}.index")
    with open(index, "r+b") as f:
        f.seek(12)
        f.write(b"\x00\x00\x00\x07")  # the second entry's position no longer starts a batch
    out = tidelog("check", "--data-dir", built)
    assert out.returncode == 1 and "does not point at a batch" in out.stdout


def test_dump_prints_batches_and_records_in_an_offset_range(built):
    out = tidelog("dump", "--data-dir", built, "--topic", "t", "--partition", "0", "--from-offset", "7",
                  "--to-offset", "12", "--records", "--format", "json")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    batches = [x["batch"] for x in lines if "batch" in x]
    records = [x for x in lines if "offset" in x]
    assert [b["base_offset"] for b in batches] == [5, 10]
    assert all(b["crc"] == "ok" for b in batches)
    assert [r["offset"] for r in records] == list(range(7, 13))
    assert records[0]["value"].startswith("v002-")


def test_dump_of_a_missing_partition_is_a_usage_error(built):
    out = tidelog("dump", "--data-dir", built, "--topic", "nope")
    assert out.returncode == 2 and "no partition" in out.stderr
