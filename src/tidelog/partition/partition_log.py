"""One partition: its segments, its named offsets, and the one lock that orders its appends.

Thread-safe. Appends take the lock, assign offsets, write with pwrite (the GIL is released during the
write, so appends to other partitions proceed), index, and publish the new end; reads take the lock
only to pick a segment and a bound, then search and slice the map without it. Under fsync="always"
the fsync happens outside the append lock, under a second lock: a producer that arrives while an
fsync runs finds its data covered by the next one, so concurrent producers share fsyncs (group commit).
After a failed fsync the partition refuses writes: what the kernel dropped cannot be known.

Traffic counters (records and bytes appended and read) are plain integers bumped under a lock the
path already holds or one uncontended lock per read, so monitoring costs the hot path almost nothing;
`stats()` reads them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .._native import batch_scan
from ..codec import batch as batch_codec
from ..codec.batch import BatchInfo, BatchView, base_offset_header, stamped_header
from ..config import FsyncPolicy, TopicConfig
from ..errors import (
    CorruptLogError,
    EngineClosedError,
    FencedLeaderEpochError,
    InvalidRequestError,
    OffsetOutOfRangeError,
    StorageError,
)
from ..storage import recovery, retention
from ..storage.fs import FileSystem
from ..storage.map_cache import MapCache
from ..storage.segment import AppendedBatch, Segment
from ..storage.segment_set import SegmentSet
from ..values import PartitionInfo, PartitionStats
from . import producer_snapshot
from .leader_epochs import LeaderEpochFile
from .offsets import Offsets
from .producer_state import ProducerState

if TYPE_CHECKING:
    from typing_extensions import Buffer

log = logging.getLogger("tidelog.log")


class ReadResult(NamedTuple):
    """Whole batches read from one segment: zero-copy bytes and where the next read starts."""

    data: memoryview
    next_offset: int
    high_watermark: int
    log_start: int


class PartitionLog:
    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        config: TopicConfig,
        fsync: FsyncPolicy | str,
        clock: Callable[[], int],
        clean: bool,
        *,
        maps: MapCache | None = None,
        create: bool = False,
        producer_id_expiration_ms: int = 86_400_000,
    ) -> None:
        """Open the partition in `directory` (which must exist), or with create=True make its first
        segment there."""
        self.fs = fs
        self.directory = directory
        self.name = os.path.basename(directory)
        """How log lines name this partition (its directory's name)."""
        self.config = config
        self.fsync_policy = FsyncPolicy(fsync)
        self._clock = clock
        self._lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._data_arrived = threading.Condition(self._lock)
        self._failed: StorageError | None = None
        self._closed = False
        self._maps = maps
        self.producer_id_expiration_ms = producer_id_expiration_ms
        self._listeners: list[Callable[[], None]] = []
        self._unrecorded: list = []
        self._appended_records = self._appended_bytes = 0  # under _lock
        self._read_lock = threading.Lock()  # reads scan outside _lock; this keeps their counts exact
        self._read_records = self._read_bytes = 0
        if create:
            fs.makedirs(directory)
        elif not fs.is_dir(directory):
            raise StorageError(f"partition directory {directory} does not exist", path=directory)
        self._durable: tuple[int, int] = (0, 0)  # (segment base, position) the recovery point names
        self._truncations = 0  # bumped by truncate_to: a sync that ran across one vouches for nothing
        self._snapshots: list[int] = []  # producer snapshot offsets on disk, listed once (at load)
        segments, self.recovery = recovery.open_segments(fs, directory, config, clean, maps, new=create)
        self._segments = SegmentSet(segments)
        try:
            end = self._segments.active.next_offset
            # Whatever survived recovery is on disk now; count it as flushed once the active file is synced.
            self._segments.active.flush()
            self._offsets = Offsets(self._segments.first.base_offset, end, end, end)
            self._producers = self._load_producers()
            self._visible = (self._segments.active, self._segments.active.size)
            # What the fsync policy lets readers see: (segment, position, offset). The high watermark
            # is this, or less while replicas cap it (set_replicated_high_watermark).
            self._local = (self._segments.active, self._segments.active.size, end)
            self._cap: int | None = None
            self.leader_epochs = LeaderEpochFile.load(fs, directory)
            # recovery may have cut the log below epochs that were recorded before their records
            self.leader_epochs.truncate_from_end(end)
            self.leader_epochs.truncate_from_start(self._offsets.log_start)
            # Everything is on disk now: record it (a new partition durably, so its extent is known from
            # the start; otherwise this also upgrades a recovery point of the first format).
            self._write_checkpoint(self._segments.active, self._segments.active.size, durable=create)
        except BaseException:  # let go of the files (a failed open is retried, and must not leak)
            for seg in segments:
                seg.close()
            raise

    # -- writing ---------------------------------------------------------------------------------
    def append(
        self,
        chunks: Sequence[tuple[Buffer, Sequence[BatchInfo]]],
        sync: bool = True,
        leader_epoch: int | None = None,
    ) -> tuple[int, int]:
        """Append validated batches verbatim, assigning offsets; returns (first offset, last offset).

        chunks: (buffer, batch infos in that buffer). Returns once the data is acknowledged under the
        fsync policy (after the fsync under "always"), unless sync=False: then the caller calls
        `sync(last + 1)` before acknowledging (to share one fsync among several appends).
        leader_epoch: the epoch of the leader appending (replicated partitions), stamped into every
        batch; FencedLeaderEpochError if the partition knows a newer one.
        """
        with self._lock:
            first, end = self._append_locked(chunks, leader_epoch, may_roll=True)
        if sync and self.fsync_policy.syncs_each_append:
            self.sync(end)
        return first, end - 1

    def try_append(self, chunks: Sequence[tuple[Buffer, Sequence[BatchInfo]]]) -> tuple[int, int] | None:
        """append(chunks, sync=False) if it cannot block: None at once, nothing written, when the lock
        is busy or the append would roll a segment (a roll fsyncs). For an event loop appending a small
        batch itself, sparing the trip to a thread and back."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            first, end = self._append_locked(chunks, None, may_roll=False)
        except _WouldRoll:
            return None
        finally:
            self._lock.release()
        return first, end - 1

    def _append_locked(
        self, chunks: Sequence[tuple[Buffer, Sequence[BatchInfo]]], leader_epoch: int | None, may_roll: bool
    ) -> tuple[int, int]:
        """append() under the lock: (first offset, the new log end)."""
        self._check_writable()
        if leader_epoch is not None and leader_epoch < self.leader_epochs.latest_epoch:
            raise FencedLeaderEpochError(
                f"partition {self.name}: leader epoch {leader_epoch} is older than its epoch "
                f"{self.leader_epochs.latest_epoch}",
                leader_epoch=leader_epoch,
            )
        first = next_offset = self._offsets.log_end
        iov: list = []
        batches: list[AppendedBatch] = []
        idempotent: list[tuple[BatchInfo, int, int]] = []
        retried: list = []
        pending: dict[int, int] = {}
        nbytes = 0
        for data, infos in chunks:
            view = memoryview(data)
            for info in infos:
                if info.producer_id >= 0:
                    original = self._producers.check(
                        info.producer_id, info.producer_epoch, info.base_sequence, info.count, pending
                    )
                    if original is not None:
                        retried.append(original)
                        continue
                    idempotent.append((info, next_offset, next_offset + info.count - 1))
                last = next_offset + info.count - 1
                batches.append(AppendedBatch(nbytes, info.size, next_offset, last, info.max_timestamp))
                if leader_epoch is None:
                    iov.append(base_offset_header(next_offset))
                    iov.append(view[info.pos + 8 : info.pos + info.size])
                else:
                    iov.append(stamped_header(next_offset, info.size, leader_epoch))
                    iov.append(view[info.pos + 16 : info.pos + info.size])
                nbytes += info.size
                next_offset = last + 1
        if retried and batches:
            raise InvalidRequestError(
                "an append mixes batches already written (retries of an idempotent "
                "producer) with new ones; send them separately"
            )
        if retried:  # written before, its ack was lost: answer with the original offsets
            first, next_offset = retried[0].base_offset, retried[-1].last_offset + 1
        else:
            if not may_roll and not self._fits(batches, nbytes):
                raise _WouldRoll
            if leader_epoch is not None:
                self._assign_epoch(leader_epoch, first)
            self._write_recording(iov, batches, nbytes, idempotent)
        return first, next_offset

    def append_replica(self, data: Buffer, sync: bool = True) -> int:
        """Append batches copied from the leader as they are (base offsets, leader epochs); returns the
        new log end. The first must start at the log end and the rest follow it without a gap.

        Idempotent producers' batches are remembered as on the leader, so that a retry sent to this
        replica once it leads is recognised; they are not checked: the leader decided. A batch of an
        epoch newer than the partition knows starts that epoch. sync as for `append`.
        """
        infos = batch_codec.validate(data, self.config.max_batch_bytes)
        view = memoryview(data)
        with self._lock:
            self._check_writable()
            expected = self._offsets.log_end
            first_epoch = self.leader_epochs.latest_epoch
            iov: list = []
            batches: list[AppendedBatch] = []
            idempotent: list[tuple[BatchInfo, int, int]] = []
            epochs: list[tuple[int, int]] = []
            nbytes = 0
            for info in infos:
                base = batch_codec.base_offset_of(view, info.pos)
                if base != expected:
                    raise InvalidRequestError(
                        f"partition {self.name}: a replicated batch starts at offset {base}, but "
                        + (f"the log ends at {expected}" if not batches else f"the one before ends at {expected}"),
                        offset=base,
                        log_end=self._offsets.log_end,
                    )
                last = base + info.count - 1
                epoch = batch_codec.leader_epoch_of(view, info.pos)
                if epoch > max(first_epoch, epochs[-1][0] if epochs else -1):
                    epochs.append((epoch, base))
                if info.producer_id >= 0:
                    idempotent.append((info, base, last))
                batches.append(AppendedBatch(nbytes, info.size, base, last, info.max_timestamp))
                iov.append(view[info.pos : info.pos + 8])  # two parts per batch, as `_write_split` expects
                iov.append(view[info.pos + 8 : info.pos + info.size])
                nbytes += info.size
                expected = last + 1
            for epoch, base in epochs:
                self._assign_epoch(epoch, base)
            self._write_recording(iov, batches, nbytes, idempotent)
        if sync and self.fsync_policy.syncs_each_append:
            self.sync(expected)
        return expected

    def _write_recording(
        self, iov: list, batches: list[AppendedBatch], nbytes: int, idempotent: list[tuple[BatchInfo, int, int]]
    ) -> None:
        """Write, and remember the idempotent producers' batches as far as they were written."""
        self._unrecorded = idempotent
        try:
            self._write(iov, batches, nbytes)
        finally:
            self._unrecorded = []

    def _assign_epoch(self, epoch: int, start: int) -> None:
        """Record a new epoch before the records stamped with it are written: after a crash, an epoch
        starting past the log end is dropped at open, whereas records of an unrecorded epoch would be
        taken for the previous epoch's (and a replica would keep them when it should cut them)."""
        if epoch > self.leader_epochs.latest_epoch:
            self.leader_epochs.assign(epoch, start)

    def _fits(self, batches: list[AppendedBatch], nbytes: int) -> bool:
        """Whether the active segment takes these batches without rolling (as `_write` decides)."""
        seg = self._segments.active
        return not (seg.size and self._roll_due(seg, batches)) and seg.room_for(
            nbytes, len(batches), batches[-1].last_offset
        )

    def _write(self, iov: list, batches: list[AppendedBatch], nbytes: int) -> None:
        """Write batches to the active segment (rolling first if needed) and advance the log end.

        An append that needs several segments is written segment by segment; if a later part
        fails, the parts already written stay (with their offsets) and the error is raised.
        """
        seg = self._segments.active
        if seg.size and self._roll_due(seg, batches):
            seg = self._roll(batches[0].base_offset)
        if not seg.room_for(nbytes, len(batches), batches[-1].last_offset):
            if len(batches) > 1:
                return self._write_split(iov, batches)
            assert seg.size, "one batch always fits an empty segment (max_batch_bytes <= segment_bytes)"
            seg = self._roll(batches[0].base_offset)
        seg.append(iov, batches, nbytes)
        self._appended_records += batches[-1].last_offset + 1 - batches[0].base_offset
        self._appended_bytes += nbytes
        self._offsets.advance_log_end(batches[-1].last_offset + 1)
        self._record_producers(batches[-1].last_offset)
        if not self.fsync_policy.syncs_each_append:
            self._publish(seg, seg.size, self._offsets.log_end)

    def _record_producers(self, written_upto: int) -> None:
        """Remember the idempotent batches written so far (even if a later part of the append fails)."""
        done = [entry for entry in self._unrecorded if entry[2] <= written_upto]
        now = self._clock()
        for info, base, last in done:
            self._producers.record(
                info.producer_id, info.producer_epoch, info.base_sequence, info.count, base, last, now
            )
        self._unrecorded = [entry for entry in self._unrecorded if entry[2] > written_upto]

    def _write_split(self, iov: list, batches: list[AppendedBatch]) -> None:
        """An append too large for one segment goes batch by batch, rolling as needed."""
        for i, b in enumerate(batches):
            one = [AppendedBatch(0, b.size, b.base_offset, b.last_offset, b.max_timestamp)]
            self._write(iov[2 * i : 2 * i + 2], one, b.size)

    def _roll_due(self, seg: Segment, batches: list[AppendedBatch]) -> bool:
        newest = max(b.max_timestamp for b in batches)
        return seg.first_batch_timestamp >= 0 and newest - seg.first_batch_timestamp >= self.config.segment_ms

    def _roll(self, base_offset: int) -> Segment:
        """Seal the active segment (fsync, trim) and start a new one at base_offset (the log end)."""
        old = self._segments.active
        assert base_offset == old.next_offset, "a new segment starts where the last one ends"
        # Seal (fsync) first: when a segment file exists, every older segment is durable, which is
        # what recovery relies on when it has no recovery point.
        try:
            old.seal()
        except StorageError as exc:
            self._failed = exc
            raise
        try:
            new = Segment.create(self.fs, self.directory, base_offset, self.config, self._maps)
        except StorageError:
            # e.g. a full disk: remove what was made of the new segment (a stale file with this base
            # would break the log's continuity on the next open) and keep appending to the old one.
            Segment.remove_files(self.fs, self.directory, base_offset)
            old.activate()
            raise
        self._segments.add(new)
        log.info(
            "segment rolled",
            extra={
                "event": "segment_rolled",
                "log": self.name,
                "base_offset": new.base_offset,
                "sealed_base_offset": old.base_offset,
                "sealed_bytes": old.size,
            },
        )
        self._offsets.advance_flushed(new.base_offset)
        if self.fsync_policy.syncs_each_append:
            self._publish(old, old.size, new.base_offset)
        self._write_checkpoint(new, 0)  # the sealed segments are durable, the new one is empty
        self._snapshot_producers(new.base_offset)
        self._apply_retention_locked(self._clock())
        return new

    # -- idempotent producers ------------------------------------------------------------------------
    def _load_producers(self) -> ProducerState:
        """The newest producer snapshot, then the batches after it (all of the log if there is none)."""
        state, start = producer_snapshot.load(self.fs, self.directory, self._offsets.log_end)
        self._snapshots = producer_snapshot.list_snapshots(self.fs, self.directory)
        now = self._clock()
        for seg in self._segments:
            if seg.next_offset <= start or seg.size == 0:
                continue
            begin = 0 if seg.base_offset >= start else self._position_before(seg, start)
            seg.scan(
                begin,
                verify=False,
                expected_offset=-1,
                stop=seg.size,
                on_batches=lambda rows: state.replay(rows, now, start),
            )
        state.expire(now, self.producer_id_expiration_ms)
        return state

    @staticmethod
    def _position_before(seg: Segment, offset: int) -> int:
        """A batch boundary at or before the batch holding offset (from the index; 0 without one)."""
        entries = seg.index.view()
        i = int(np.searchsorted(entries["rel"], offset - seg.base_offset, side="right")) - 1 if len(entries) else -1
        return int(entries["pos"][i]) if i >= 0 else 0

    def _snapshot_producers(self, offset: int) -> None:
        """Write the producer state as of offset (under the lock); a failure costs replay, not state."""
        self._producers.expire(self._clock(), self.producer_id_expiration_ms)
        try:
            self._snapshots = producer_snapshot.write(self.fs, self.directory, self._producers, offset, self._snapshots)
        except StorageError as exc:
            log.warning(
                "could not write a producer snapshot (%s); the next open replays more of the log",
                exc.message,
                extra={"event": "producer_snapshot_failed", "log": self.name},
            )

    def _publish(self, segment: Segment, position: int, offset: int) -> None:
        """Make offsets below `offset` (bytes below `position` of `segment`) visible to readers, as far
        as the replicas' cap allows."""
        if offset > self._local[2]:
            self._local = (segment, position, offset)
        if self._cap is None:
            self._expose(segment, position, offset)
        else:
            self._expose_capped()

    def _expose(self, segment: Segment, position: int, offset: int) -> None:
        self._offsets.advance_high_watermark(offset)
        vis_seg, vis_pos = self._visible
        if segment.base_offset > vis_seg.base_offset or (segment is vis_seg and position > vis_pos):
            self._visible = (segment, position)
        self._data_arrived.notify_all()
        for listener in self._listeners:
            listener()

    def _expose_capped(self) -> None:
        """Publish up to min(what the fsync policy allows, the cap), rounded down to a batch boundary
        (reads are bounded by a byte position)."""
        assert self._cap is not None
        segment, position, offset = self._local
        if self._cap < offset:
            segment, position, offset = self._boundary_at_or_below(self._cap, segment, position)
        if offset > self._offsets.high_watermark:
            self._expose(segment, position, offset)

    def _boundary_at_or_below(self, target: int, local_seg: Segment, local_pos: int) -> tuple[Segment, int, int]:
        """(segment, position, offset) of the start of the batch holding target (written, below the
        locally published end)."""
        seg = self._segments.floor(target)
        if target <= seg.base_offset:
            return seg, 0, seg.base_offset
        end = local_pos if seg is local_seg else seg.size
        pos, base = seg.position_of(target, end)
        if pos < 0:  # cannot be (target is below the published end): publish nothing more
            vis_seg, vis_pos = self._visible
            return vis_seg, vis_pos, self._offsets.high_watermark
        return seg, pos, base

    def _check_writable(self) -> None:
        if self._closed:
            raise EngineClosedError(f"partition {self.directory} is closed")
        if self._failed is not None:
            raise StorageError(
                f"partition {self.directory} refuses writes after a storage failure "
                f"({self._failed.message}); restart to recover",
                path=self.directory,
            )

    # -- replication -----------------------------------------------------------------------------------
    @property
    def log_end(self) -> int:
        return self._offsets.log_end

    def become_leader(self, epoch: int) -> None:
        """This replica leads from `epoch` on: the epoch starts at the log end (durably recorded)."""
        with self._lock:
            self._check_writable()
            self.leader_epochs.assign(epoch, self._offsets.log_end)

    def epoch_end_offset(self, epoch: int) -> tuple[int, int]:
        """(the largest known epoch <= epoch, where it ends): see LeaderEpochFile.end_offset_for."""
        with self._lock:
            return self.leader_epochs.end_offset_for(epoch, self._offsets.log_end)

    def set_replicated_high_watermark(self, offset: int | None) -> None:
        """Cap the high watermark at `offset` (what every in-sync replica has), or lift the cap (None,
        the default: a single node). Readers and listeners then see no record past the cap; raising it
        wakes them. A lower cap than the current one is ignored (only `truncate_to` lowers it)."""
        with self._lock:
            if offset is None:
                self._cap = None
                seg, pos, end = self._local
                self._expose(seg, pos, end)
                return
            self._cap = offset if self._cap is None else max(self._cap, offset)
            self._expose_capped()

    @property
    def replicated_high_watermark(self) -> int | None:
        return self._cap

    def truncate_to(self, offset: int) -> int:
        """Drop every record at or after `offset` (a replica whose log diverged from its new leader's),
        cutting at the start of the batch holding it; returns the new log end.

        Crash-safe in this order: the recovery point goes below the cut first (durably), so no
        recovery point ever names a deleted segment or bytes cut off; later segments are deleted
        newest first (a crash leaves a shorter, gapless log); then the cut. The epochs are cut last:
        an epoch that outlives its records starts past the log end and is dropped at open, whereas
        records outliving their epoch would be taken for an older epoch's.
        """
        with self._lock:
            self._check_writable()
            o = self._offsets
            if offset < o.log_start:
                raise InvalidRequestError(
                    f"partition {self.name}: cannot truncate to offset {offset}, below the log start {o.log_start}",
                    offset=offset,
                    log_start=o.log_start,
                )
            if offset >= o.log_end:
                return o.log_end
            seg = self._segments.floor(offset)
            pos, cut = 0, seg.base_offset
            if offset > seg.base_offset:
                pos, cut = seg.position_of(offset, seg.size)
                if pos < 0:
                    raise CorruptLogError(
                        f"{seg.log_path}: no valid batch holds offset {offset}; the log is corrupt here: stop "
                        f"the broker and run `tidelog check --repair --data-dir {os.path.dirname(self.directory)}`",
                        path=seg.log_path,
                    )
            try:
                self._truncate(seg, pos, cut)
            except StorageError as exc:  # half done: what is in memory no longer matches the files
                self._failed = exc
                raise
            log.info(
                "log truncated",
                extra={"event": "log_truncated", "log": self.name, "offset": cut, "reason": "replica diverged"},
            )
            return cut

    def _truncate(self, seg: Segment, pos: int, cut: int) -> None:
        self._truncations += 1
        vis_seg, vis_pos = self._visible
        readers_end = 0
        if seg is vis_seg:
            readers_end = vis_pos
        elif seg.base_offset < vis_seg.base_offset:
            readers_end = seg.size
        durable_base, durable_pos = self._durable
        if (durable_base, durable_pos) > (seg.base_offset, pos):
            durable_base, durable_pos = seg.base_offset, pos
        point = recovery.Checkpoint(self._segments.first.base_offset, durable_base, durable_pos)
        recovery.write_checkpoint(self.fs, self.directory, point, durable=True)
        self._durable = (durable_base, durable_pos)
        for gone in reversed(self._segments.remove_after(seg)):
            gone.delete()
            self.fs.fsync_dir(self.directory)  # newest first: a crash leaves no gap
        if seg.sealed:
            seg.activate()
        seg.truncate(pos, cut, readers_end)
        self._offsets.truncate(cut)
        if self._local[2] > cut:
            self._local = (seg, pos, cut)
        if vis_seg.base_offset > seg.base_offset or (vis_seg is seg and vis_pos > pos):
            self._visible = (seg, pos)
        if self._cap is not None:
            self._cap = min(self._cap, cut)
        self._producers = self._load_producers()  # (snapshots past the cut are deleted)
        self.leader_epochs.truncate_from_end(cut)

    # -- durability ----------------------------------------------------------------------------------
    def sync(self, upto: int | None = None) -> None:
        """Make everything written (or at least everything below `upto`) durable."""
        with self._sync_lock:
            with self._lock:
                if self._offsets.flushed >= (upto if upto is not None else self._offsets.log_end):
                    return
                if self._closed:
                    if upto is None:
                        return  # a flusher passing by: nothing waits for this
                    # written while the partition closed, and the close could not make it durable
                    if self._failed is not None:
                        raise StorageError(
                            f"partition {self.directory} closed after a storage failure "
                            f"({self._failed.message}) before this data was durable",
                            path=self.directory,
                        )
                    raise EngineClosedError(f"partition {self.directory} closed before this data was durable")
                seg, pos, end = self._segments.active, self._segments.active.size, self._offsets.log_end
                failed, truncations = self._failed, self._truncations
            if failed is not None:
                raise StorageError(
                    f"partition {self.directory} cannot make data durable after a storage failure ({failed.message})",
                    path=self.directory,
                )
            try:
                seg.flush()
            except StorageError as exc:
                with self._lock:
                    self._failed = exc
                raise
            with self._lock:
                if self._failed is not None:
                    # a roll's seal failed while this flush ran: the fsync above cannot vouch for the
                    # data (the kernel reports a failed writeback only once)
                    raise StorageError(
                        f"partition {self.directory} cannot make data durable after a storage "
                        f"failure ({self._failed.message})",
                        path=self.directory,
                    )
                if truncations != self._truncations:
                    return  # the log was cut meanwhile (truncate_to set the flushed offset and recovery point)
                self._offsets.advance_flushed(end)
                if self.fsync_policy.syncs_each_append:
                    self._publish(seg, pos, end)
                if not self._closed and seg is self._segments.active:
                    # after every fsync, so the recovery point covers everything acknowledged: damage
                    # before it is refused as corruption, never cut as a torn tail
                    self._write_checkpoint(seg, pos)

    def _write_checkpoint(self, segment: Segment, position: int, durable: bool = False) -> None:
        """Remember that the log is durable up to `position` of `segment` (a small in-place write)."""
        self._durable = (segment.base_offset, position)
        point = recovery.Checkpoint(self._segments.first.base_offset, segment.base_offset, position)
        recovery.write_checkpoint(self.fs, self.directory, point, durable=durable)

    @property
    def failed(self) -> bool:
        """A storage failure made the partition refuse writes (until a restart recovers it)."""
        return self._failed is not None

    @property
    def dirty(self) -> bool:
        return self._offsets.flushed < self._offsets.log_end

    # -- reading -------------------------------------------------------------------------------------
    def read(self, offset: int, max_bytes: int, *, blocking: bool = True) -> ReadResult | None:
        """Whole batches from the one holding `offset`, up to max_bytes (at least one batch).

        Counted as consumption: records read are those the reader moves past (next_offset - offset).
        blocking=False: None at once when the partition lock is busy (a roll may hold it across fsyncs).
        """
        result = self.peek(offset, max_bytes, blocking=blocking)
        if result is not None and result.data:
            with self._read_lock:
                self._read_records += result.next_offset - offset
                self._read_bytes += len(result.data)
        return result

    def peek(self, offset: int, max_bytes: int, *, blocking: bool = True) -> ReadResult | None:
        """What read() returns, without counting it as consumption (lag and inspection)."""
        if not self._lock.acquire(blocking):
            return None
        try:
            if self._closed:
                raise EngineClosedError(f"partition {self.directory} is closed")
            start, hw = self._offsets.log_start, self._offsets.high_watermark
            if offset < start or offset > max(hw, self._offsets.log_end if self._cap is not None else hw):
                raise OffsetOutOfRangeError(
                    f"offset {offset} is out of range; valid offsets are {start} to {hw}",
                    log_start=start,
                    log_end=hw,
                    offset=offset,
                )
            if offset >= hw:  # (past the high watermark of a replicated log: not committed yet, wait)
                return ReadResult(memoryview(b""), offset, hw, start)
            seg = self._segments.floor(offset)
            vis_seg, vis_pos = self._visible
            end = vis_pos if seg is vis_seg else seg.size
            # Taken under the lock and used for the whole read: retention may delete the segment (or
            # the map cache unmap it) meanwhile, and this reference keeps its bytes mapped.
            buf = seg.buffer
        finally:
            self._lock.release()
        pos, _ = seg.position_of(offset, end, buf)
        stop, next_offset = batch_scan.span_batches(buf, pos, end, max_bytes) if pos >= 0 else (pos, -1)
        if stop <= pos:
            # offset is below the high watermark, so a batch must hold it: the headers are damaged
            raise CorruptLogError(
                f"{seg.log_path}: no valid batch holds offset {offset}; the log is corrupt "
                f"here: stop the broker and run `tidelog check --repair "
                f"--data-dir {os.path.dirname(self.directory)}`",
                path=seg.log_path,
            )
        valid, valid_next = seg.verify(pos, stop, buf)
        if valid < stop:  # damage further on: serve what precedes it (the next read reports it)
            stop, next_offset = valid, valid_next
        return ReadResult(seg.view(pos, stop, buf), next_offset, hw, start)

    def read_replica(self, offset: int, max_bytes: int) -> bytes:
        """Whole batches from `offset` (a batch boundary) up to what this broker has published locally,
        past the high watermark: what a follower copies. Empty at the end."""
        with self._lock:
            if self._closed:
                raise EngineClosedError(f"partition {self.directory} is closed")
            start = self._offsets.log_start
            local_seg, local_pos, local_end = self._local
            if offset < start or offset > local_end:
                raise OffsetOutOfRangeError(
                    f"offset {offset} is out of range; this replica holds {start} to {local_end}",
                    log_start=start,
                    log_end=local_end,
                    offset=offset,
                )
            if offset == local_end:
                return b""
            seg = self._segments.floor(offset)
            end = local_pos if seg is local_seg else seg.size
            buf = seg.buffer
        pos, _ = seg.position_of(offset, end, buf)
        stop, _ = batch_scan.span_batches(buf, pos, end, max_bytes) if pos >= 0 else (pos, -1)
        if stop <= pos:
            raise CorruptLogError(
                f"{seg.log_path}: no valid batch holds offset {offset}; the log is corrupt here: stop the broker "
                f"and run `tidelog check --repair --data-dir {os.path.dirname(self.directory)}`",
                path=seg.log_path,
            )
        valid, _ = seg.verify(pos, stop, buf)
        if valid <= pos:
            raise CorruptLogError(f"{seg.log_path}: the batch at offset {offset} is damaged", path=seg.log_path)
        return bytes(seg.view(pos, valid, buf))

    def wait_for_data(self, offset: int, timeout_s: float) -> bool:
        """Block until the high watermark passes offset (or timeout); True if data is there."""
        with self._data_arrived:
            self._data_arrived.wait_for(
                lambda: self._closed or self._offsets.high_watermark > offset, timeout=timeout_s
            )
            return not self._closed and self._offsets.high_watermark > offset

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call listener (quickly, under the partition lock) whenever the high watermark moves."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def offset_for_time(self, timestamp: int) -> int | None:
        """The first offset whose record timestamp is >= timestamp, or None if there is none."""
        with self._lock:
            segments = list(self._segments)
            vis_seg, vis_pos = self._visible
            start, hw = self._offsets.log_start, self._offsets.high_watermark
        for seg in segments:
            if seg.base_offset >= hw:
                break
            if seg.max_timestamp < timestamp:
                continue
            end = vis_pos if seg is vis_seg else seg.size
            buf = seg.buffer  # held for the whole search (see peek)
            if len(buf) < end:
                continue  # deleted by retention since the list was taken: its records are gone
            pos = seg.position_of_time(timestamp, end, buf)
            while 0 <= pos < end:
                batch = BatchView(buf, pos)
                if batch.max_timestamp >= timestamp:
                    table = batch.table()
                    hits = np.flatnonzero(table["timestamp"] >= timestamp)
                    if len(hits):
                        offset = int(table["offset"][hits[0]])
                        return offset if start <= offset < hw else None
                pos += batch.size
        return None

    # -- retention and lifecycle -----------------------------------------------------------------------
    def apply_retention(self, now_ms: int | None = None) -> int:
        """Delete sealed segments past retention; returns how many went."""
        with self._lock:
            if self._closed:
                return 0
            return self._apply_retention_locked(self._clock() if now_ms is None else now_ms)

    def _apply_retention_locked(self, now_ms: int) -> int:
        sealed = self._segments.sealed
        n = retention.segments_to_delete(
            [(s.size, s.max_timestamp) for s in sealed],
            self._segments.total_size(),
            now_ms,
            self.config.retention_ms,
            self.config.retention_bytes,
        )
        n = min(n, self._below_high_watermark())
        if n == 0:
            return 0
        self._delete_oldest(n, "retention")
        return n

    def _below_high_watermark(self) -> int:
        """How many sealed segments hold only offsets below the high watermark: never more are deleted,
        so the log start never passes what readers see (replicas may hold it back)."""
        hw = self._offsets.high_watermark
        return sum(1 for seg in self._segments.sealed if seg.next_offset <= hw)

    def delete_before(self, offset: int) -> int:
        """Delete the sealed segments holding only offsets below `offset` (Kafka's DeleteRecords, by
        whole segments); returns how many went. The log start moves to the first segment kept."""
        with self._lock:
            n = 0
            for seg in self._segments.sealed:
                if seg.next_offset > min(offset, self._offsets.high_watermark):
                    break
                n += 1
            if n == 0:
                return 0
            self._delete_oldest(n, "delete_records")
            return n

    def _delete_oldest(self, n: int, reason: str) -> None:
        """Delete the n oldest (sealed) segments and move the log start past them. Under the lock.

        The new log start is made durable first: after a crash half-way, the segments still found
        below it are known to be deleted (recovery removes them), and a first segment missing for any
        other reason is known to be lost (recovery refuses)."""
        kept = list(self._segments)[n]
        recovery.write_checkpoint(
            self.fs, self.directory, recovery.Checkpoint(kept.base_offset, *self._durable), durable=True
        )
        removed = self._segments.remove_oldest(n)
        self._offsets.advance_log_start(self._segments.first.base_offset)  # gone for readers from here on
        try:
            for seg in removed:
                facts = {
                    "base_offset": seg.base_offset,
                    "next_offset": seg.next_offset,
                    "size_bytes": seg.size,
                    "max_timestamp": seg.max_timestamp,
                }
                seg.delete()
                log.info(
                    "segment deleted", extra={"event": "segment_deleted", "log": self.name, "reason": reason, **facts}
                )
            self.fs.fsync_dir(self.directory)
        except StorageError as exc:  # what is left lies below the durable log start: the next open removes it
            log.warning(
                "deleting a segment failed (%s); the next open removes what is left",
                exc.message,
                extra={"event": "segment_delete_failed", "log": self.name},
            )
        try:
            self.leader_epochs.truncate_from_start(self._offsets.log_start)
        except StorageError as exc:  # epochs below the log start answer no question: the next open drops them
            log.warning(
                "could not update the leader epochs (%s)",
                exc.message,
                extra={"event": "leader_epochs_write_failed", "log": self.name},
            )

    def info(self) -> PartitionInfo:
        with self._lock:
            o = self._offsets
            return PartitionInfo(
                o.log_start, o.log_end, o.high_watermark, o.flushed, self._segments.total_size(), len(self._segments)
            )

    def stats(self) -> PartitionStats:
        with self._lock:
            appended = self._appended_records, self._appended_bytes
        with self._read_lock:
            return PartitionStats(*appended, self._read_records, self._read_bytes)

    def timestamp_at(self, offset: int) -> int | None:
        """Timestamp (ms) of the record at offset; None past the high watermark or below the log start."""
        try:
            result = self.peek(offset, 1)
        except OffsetOutOfRangeError:
            return None
        if result is None or not result.data:  # (a blocking peek always reads)
            return None
        table = BatchView(result.data).table()
        hits = np.flatnonzero(table["offset"] == offset)
        return int(table["timestamp"][hits[0]]) if len(hits) else None

    @property
    def offsets(self) -> Offsets:
        return self._offsets

    def offset_range(self) -> tuple[int, int, int, int]:
        """(log start, log end, high watermark, flushed), taken together."""
        with self._lock:
            o = self._offsets
            return o.log_start, o.log_end, o.high_watermark, o.flushed

    def segments(self) -> list[Segment]:
        with self._lock:
            return list(self._segments)

    def close(self) -> None:
        """Flush, trim the active segment's preallocation and release the files."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self.sync()
        finally:
            with self._lock:
                self._closed = True
                self._data_arrived.notify_all()
                active = self._segments.active
                if self._failed is None and self.dirty:
                    # appended between that sync and this lock: durable before the recovery point says so
                    try:
                        active.flush()
                        self._offsets.advance_flushed(self._offsets.log_end)
                    except StorageError as exc:
                        self._failed = exc
                clean = self._failed is None
                if clean:
                    # durable: should the clean-stop marker ever be lost, recovery trusts the whole log
                    self._write_checkpoint(active, active.size, durable=True)
                    self._snapshot_producers(self._offsets.log_end)
                for seg in self._segments:
                    seg.close(trim=clean)
            if self._failed is not None:
                raise StorageError(
                    f"partition {self.directory} closed after a storage failure "
                    f"({self._failed.message}); the next open recovers it",
                    path=self.directory,
                )

    def close_files(self) -> None:
        """Close without flushing or writing anything (the topic is being deleted, or its creation
        failed): the directory itself is the catalog's to move or remove."""
        with self._lock:
            self._closed = True
            self._data_arrived.notify_all()
            for seg in self._segments:
                seg.close()


class _WouldRoll(Exception):
    """A non-blocking append that would roll a segment: nothing written, the caller appends in a thread."""
