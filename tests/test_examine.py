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
    doc = json.loads(out.stdout)
    assert doc["metadata"] == {"problems": [], "notes": []}
    report = {(r["topic"], r["partition"]): r for r in doc["partitions"]}
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
    out = tidelog(
        "dump",
        "--data-dir",
        built,
        "--topic",
        "t",
        "--partition",
        "0",
        "--from-offset",
        "7",
        "--to-offset",
        "12",
        "--records",
        "--format",
        "json",
    )
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
    assert out.returncode == 1 and "no partition" in out.stderr


# -- dump by time -------------------------------------------------------------------------------------

T0 = 1_700_000_000_000  # the ManualClock's start: 2023-11-14T22:13:20Z


@pytest.fixture
def timed(data_dir, clock):
    """One partition, several segments: batch i holds offsets 3i..3i+2, all stamped T0 + 1000 i."""
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", 1, segment_bytes=4096, index_interval_bytes=256)
        for i in range(40):
            eng.produce("t", [b"v%02d" % i + b"x" * 100] * 3, keys=[b"k"] * 3, headers=[[("trace", b"abcd")]] * 3)
            clock.advance(1000)
    return data_dir


def dumped(directory, *args):
    out = tidelog("dump", "--data-dir", directory, "--topic", "t", "--records", "--json", *args)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    return [x["batch"]["base_offset"] for x in lines if "batch" in x], [x for x in lines if "offset" in x]


def test_dump_filters_records_by_time_in_epoch_ms_and_iso(timed):
    batches, records = dumped(timed, "--from-time", str(T0 + 10_000), "--to-time", "2023-11-14T22:13:32Z")
    assert batches == [30, 33, 36]
    assert [r["offset"] for r in records] == list(range(30, 39))
    assert {r["timestamp"] for r in records} == {T0 + 10_000, T0 + 11_000, T0 + 12_000}
    assert records[0]["key_size"] == 1 and records[0]["value_size"] == 103
    assert records[0]["headers"] == [{"key": "trace", "size": 4, "value": "abcd"}]


def test_dump_time_and_offset_filters_combine(timed):
    batches, records = dumped(timed, "--from-time", str(T0 + 30_000), "--from-offset", "100", "--to-offset", "104")
    assert batches == [99, 102] and [r["offset"] for r in records] == list(range(100, 105))
    assert dumped(timed, "--from-time", str(T0 + 40_000)) == ([], [])


def test_dump_seeks_with_the_time_index_instead_of_reading_from_the_segment_start(timed):
    from tidelog.examine import _time_seek, segment_bases

    directory = os.path.join(timed, "t-0")
    bases = segment_bases(directory)
    assert len(bases) > 2
    stem = os.path.join(directory, f"{bases[0]:020d}")
    size = os.path.getsize(stem + ".log")
    assert _time_seek(stem, T0, size) == 0
    late = _time_seek(stem, T0 + 9_000, size)
    assert 0 < late < size


def test_dump_filters_out_of_order_timestamps_record_by_record(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", 1)
        eng.produce("t", [b"a", b"b", b"c", b"d"], timestamps=[T0 + 50, T0 + 10, T0 + 40, T0 + 20])
    batches, records = dumped(data_dir, "--from-time", str(T0 + 15), "--to-time", str(T0 + 45))
    assert batches == [0] and [(r["offset"], r["value"]) for r in records] == [(2, "c"), (3, "d")]


def test_dump_text_lines_show_sizes_headers_and_utc_times(timed):
    out = tidelog("dump", "--data-dir", timed, "--topic", "t", "--records", "--to-offset", "0")
    assert out.returncode == 0, out.stderr
    assert (
        "  offset 0  timestamp 1700000000000 (2023-11-14T22:13:20.000Z)  key 1 B  value 103 B  headers 1 [trace=4 B]"
    ) in out.stdout.splitlines()


def test_dump_rejects_an_unreadable_time(timed):
    out = tidelog("dump", "--data-dir", timed, "--topic", "t", "--from-time", "yesterday")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--from-time" in out.stderr


def test_check_on_a_running_broker_notes_a_partition_deleted_while_it_is_checked(built):
    # Before: the partition directory was listed, then moved to the trash by a topic deletion, and
    # check crashed with FileNotFoundError.
    from tidelog.examine import check_partition

    result = check_partition("t", 0, os.path.join(built, "gone-0"), live=True)
    assert result.problems == [] and "deleted" in result.notes[0]
