"""Simulated power loss below the process, at every write of a small workload.

A fixed workload (two partitions rolling small segments, plus group offset commits) runs on a
PowerLossFS that injects one fault at the k-th write (or fsync): the write fails, fills the disk,
tears, or the power goes just before it. The disk is then imaged as a power cut leaves it (every
unsynced change dropped, or per file at random) and reopened with the real file system.

Invariants checked on every image, for every k:
  - under fsync="always" every acknowledged record is there, at its offset, with its bytes, and every
    acknowledged commit is there (or a later attempted one); under "interval", everything below the
    flushed offset at the cut is;
  - offsets are contiguous from 0 and every record holds bytes that some produce sent for exactly
    that offset (no offset reused for other bytes, nothing from a torn batch visible);
  - after a failed fsync the partition acknowledges nothing more.
The seed and fault are in every assertion message.
"""

from __future__ import annotations

import random
import shutil

import pytest

from tests.helpers.power_loss_fs import PowerCut, PowerLossFS
from tidelog import Engine
from tidelog.errors import TidelogError
from tidelog.groups.offset_store import OffsetStore

pytestmark = pytest.mark.slow  # a heavier suite: left out by -m 'not slow'

PARTITIONS = 2
STEPS = 36
SEED = 20261128


class Outcome:
    """What the workload was told: acknowledged and attempted values, per (partition, offset)."""

    def __init__(self) -> None:
        self.acked: dict[tuple[int, int], bytes] = {}
        self.attempted: dict[tuple[int, int], set[bytes]] = {}
        self.flushed: dict[int, int] = {}
        self.commits_acked: list[int] = []
        self.commits_tried: set[int] = set()
        self.failed_fsync: set[int] = set()
        self.acked_after_fsync_failure: list[tuple[int, int]] = []


def run_workload(eng: Engine, out: Outcome, policy: str, fs: PowerLossFS) -> None:
    """Produce STEPS batches of seeded sizes to alternating partitions, committing now and then."""
    rng = random.Random(SEED)
    try:
        eng.create_topic("t", PARTITIONS, segment_bytes=4096, index_interval_bytes=512)
        store = OffsetStore(eng)
    except TidelogError:
        return  # failed before anything was acknowledged
    for step in range(STEPS):
        p = step % PARTITIONS
        n = rng.randint(1, 6)
        base = eng.list_offsets("t", p).log_end
        values = [b"%d:%d:" % (p, base + i) + bytes([65 + step % 26]) * rng.randint(10, 220) for i in range(n)]
        for i, v in enumerate(values):
            out.attempted.setdefault((p, base + i), set()).add(v)
        try:
            [result] = eng.produce("t", values, partition=p)
        except TidelogError as exc:
            if "syncing" in exc.message or "storage failure" in exc.message:
                out.failed_fsync.add(p)
            continue
        assert result.base_offset == base
        if p in out.failed_fsync:
            out.acked_after_fsync_failure.append((p, base))
        for i, v in enumerate(values):
            out.acked[(p, base + i)] = v
        if step % 6 == 5:
            commit = step
            out.commits_tried.add(commit)
            try:
                store.commit("g", {("t", 0): commit})
                out.commits_acked.append(commit)
            except TidelogError:
                pass
        if policy == "interval" and step % 4 == 3:
            try:
                eng.flush()
            except TidelogError:
                pass
            else:
                out.flushed = {q: eng.list_offsets("t", q).flushed for q in range(PARTITIONS)}


def check_image(path: str, out: Outcome, policy: str, label: str) -> None:
    with Engine.open(path) as eng:
        if "t" not in eng.list_topics():
            assert not out.acked, f"{label}: the topic is gone with acknowledged records"
            return
        for p in range(PARTITIONS):
            end = eng.list_offsets("t", p).log_end
            seen, offset = {}, 0
            while offset < end:
                result = eng.fetch("t", p, offset, max_bytes=1 << 20)
                for batch in result.batches():
                    assert batch.crc_ok(), f"{label}: bad CRC at {p}/{batch.base_offset}"
                for rec in result:
                    assert rec.offset == offset, f"{label}: gap before {p}/{rec.offset}"
                    assert rec.value in out.attempted.get((p, offset), ()), (
                        f"{label}: {p}/{offset} holds bytes no produce sent for that offset"
                    )
                    seen[offset] = rec.value
                    offset += 1
            must = [o for (q, o) in out.acked if q == p and (policy == "always" or o < out.flushed.get(p, 0))]
            for o in must:
                assert seen.get(o) == out.acked[(p, o)], f"{label}: acknowledged record {p}/{o} lost or changed"
        committed = OffsetStore(eng).fetch("g").get(("t", 0))
        if policy == "always" and out.commits_acked:
            assert committed is not None and committed.offset >= out.commits_acked[-1], (
                f"{label}: acknowledged commit {out.commits_acked[-1]} went back to {committed}"
            )
        if committed is not None:
            assert committed.offset in out.commits_tried, f"{label}: commit {committed.offset} was never made"


def dry_run(tmp_path, policy: str) -> tuple[int, int]:
    fs = PowerLossFS()
    with Engine.open(str(tmp_path / "dry"), fs=fs, fsync=policy) as eng:
        run_workload(eng, Outcome(), policy, fs)
    return fs.writes, fs.log_fsyncs


def one_fault(tmp_path, policy: str, fault: tuple[str, int], image_rng: random.Random | None) -> None:
    label = f"seed {SEED}, fsync={policy}, fault {fault[0]} at {fault[1]}" + (
        " (random per-file loss)" if image_rng else ""
    )
    live, snap = tmp_path / f"live-{fault[0]}-{fault[1]}", tmp_path / f"snap-{fault[0]}-{fault[1]}"
    fs = PowerLossFS(fault)
    out = Outcome()
    eng = Engine.open(str(live), fs=fs, fsync=policy)
    try:
        run_workload(eng, out, policy, fs)
    except PowerCut:
        pass
    fs.image(str(live), str(snap), image_rng)
    fs.dead = True  # whatever close would write is lost with the power
    try:
        eng.close()
    except (TidelogError, PowerCut):
        pass
    assert not out.acked_after_fsync_failure, (
        f"{label}: acknowledged after a failed fsync: {out.acked_after_fsync_failure}"
    )
    check_image(str(snap), out, policy, label)
    shutil.rmtree(live)
    shutil.rmtree(snap)


KINDS = ["fail", "enospc", "tear", "cut"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_fault_at_every_other_write_loses_no_acknowledged_record(tmp_path, kind):
    """The suite's share: every other write, the two halves alternating between the kinds (every write
    of every kind: `-m long`, below)."""
    writes, _ = dry_run(tmp_path, "always")
    assert writes > 40, "the workload is meant to cover rolls and commits"
    for k in range(KINDS.index(kind) % 2, writes, 2):
        one_fault(tmp_path, "always", (kind, k), None)


@pytest.mark.long
@pytest.mark.parametrize("kind", KINDS)
def test_a_fault_at_every_write_loses_no_acknowledged_record(tmp_path, kind):
    writes, _ = dry_run(tmp_path, "always")
    for k in range(writes):
        one_fault(tmp_path, "always", (kind, k), None)


def test_a_failed_fsync_at_every_point_stops_acknowledgements_and_recovers(tmp_path):
    _, fsyncs = dry_run(tmp_path, "always")
    for k in range(fsyncs):
        one_fault(tmp_path, "always", ("fsync", k), None)


def test_power_cuts_that_lose_unsynced_files_at_random_keep_what_was_synced(tmp_path):
    writes, _ = dry_run(tmp_path, "always")
    rng = random.Random(SEED)
    for k in range(0, writes, 3):
        one_fault(tmp_path, "always", ("cut", k), rng)


def test_under_interval_only_what_follows_the_last_flush_may_be_lost(tmp_path):
    writes, _ = dry_run(tmp_path, "interval")
    rng = random.Random(SEED + 1)
    for k in range(writes):
        one_fault(tmp_path, "interval", (rng.choice(["tear", "cut"]), k), rng if k % 2 else None)


def test_a_produce_racing_a_clean_close_is_durable_before_the_recovery_point_claims_it(tmp_path):
    """Before: a close fsynced, then took the partition lock and wrote its durable recovery point at
    the log end; a produce that landed in between was covered by that recovery point before any
    fsync covered it, so a power cut right then left a log shorter than its recovery point, which
    every later open refused."""
    import threading

    entered, release = threading.Event(), threading.Event()

    class Gated(PowerLossFS):
        gated = cut_after_point = False

        def fsync(self, fd, path=""):
            super().fsync(fd, path)
            if self.gated and path.endswith(".log") and threading.current_thread().name == "closer":
                self.gated = False
                entered.set()
                release.wait(30)

        def write_in_place(self, path, data, durable=False):
            super().write_in_place(path, data, durable)
            if durable and self.cut_after_point:
                raise self._power_off()

    live, snap = tmp_path / "live", tmp_path / "snap"
    fs = Gated()
    eng = Engine.open(str(live), fs=fs, fsync="interval", fsync_interval_ms=3_600_000)
    eng.create_topic("t", 1, segment_bytes=4096, max_index_bytes=64)  # small files: the image copies them
    eng.produce("t", [b"first"])
    plog = eng._topics["t"].partitions[0]
    fs.gated = fs.cut_after_point = True
    closer = threading.Thread(target=lambda: pytest.raises(PowerCut, plog.close), name="closer")
    closer.start()
    assert entered.wait(30)  # the close's fsync is done
    eng.produce("t", [b"second"])  # lands between that fsync and the recovery point
    release.set()
    closer.join(timeout=30)
    assert not closer.is_alive() and fs.dead
    fs.image(str(live), str(snap))
    eng._housekeeper.stop()
    with Engine.open(str(snap)) as again:
        assert [r.value for r in again.fetch("t", 0, 0)] == [b"first", b"second"]
