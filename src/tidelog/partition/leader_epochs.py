"""The leader epochs of one partition: which epoch's leader wrote the records from which offset on
(Kafka's leader-epoch-checkpoint), kept in the partition directory's `leader-epochs` file.

A replica asks the leader where its own last epoch ended (`end_offset_for`, Kafka's
OffsetsForLeaderEpoch) and cuts its log there: so it drops exactly the records a deposed leader wrote
that the new one never had, and no more. Entries are (epoch, start offset), both strictly increasing:
an epoch whose leader wrote nothing is replaced by the next one starting at the same offset, as
Kafka does.

Written as a checksummed JSON document (storage/checked_json.py) with a durable atomic replace at
every change (changes come with leader elections, never per append). A partition that never had a
leader epoch has no file, and behaves as before. Not thread-safe: used under the partition log's lock.
"""

from __future__ import annotations

import bisect
import os

from ..errors import CorruptLogError, InvalidRequestError
from ..storage import checked_json
from ..storage.fs import FileSystem

FILE_NAME = "leader-epochs"
VERSION = 1


class LeaderEpochFile:
    def __init__(self, fs: FileSystem, directory: str, entries: list[tuple[int, int]]) -> None:
        self.fs = fs
        self.path = os.path.join(directory, FILE_NAME)
        self._epochs = [e for e, _ in entries]
        self._starts = [s for _, s in entries]

    @classmethod
    def load(cls, fs: FileSystem, directory: str) -> LeaderEpochFile:
        """The partition's epochs (none when it has no file); CorruptLogError naming the file and the
        repair when it is damaged: a wrong epoch map would make a replica keep divergent records."""
        path = os.path.join(directory, FILE_NAME)
        if not fs.exists(path):
            return cls(fs, directory, [])
        try:
            entries = parse(fs.read_file(path))
        except ValueError as exc:
            raise CorruptLogError(
                f"leader epoch file {path} is damaged: {exc}; nothing was changed. Stop the broker and run "
                f"`tidelog check --repair --data-dir {os.path.dirname(directory)}`, which rebuilds it from "
                f"the epochs stamped in the log's batches",
                path=path,
            ) from None
        return cls(fs, directory, entries)

    # -- queries -------------------------------------------------------------------------------------
    def entries(self) -> list[tuple[int, int]]:
        return list(zip(self._epochs, self._starts))

    def latest(self) -> tuple[int, int] | None:
        """(epoch, start offset) of the newest epoch, or None."""
        return (self._epochs[-1], self._starts[-1]) if self._epochs else None

    @property
    def latest_epoch(self) -> int:
        """The newest epoch, or -1."""
        return self._epochs[-1] if self._epochs else -1

    def end_offset_for(self, epoch: int, log_end: int) -> tuple[int, int]:
        """(the largest known epoch <= epoch, the offset where it ends): the start of the next epoch,
        or log_end for the newest. (-1, -1) when none is known or every known epoch is newer."""
        i = bisect.bisect_right(self._epochs, epoch) - 1
        if epoch < 0 or i < 0:
            return -1, -1
        end = self._starts[i + 1] if i + 1 < len(self._starts) else log_end
        return self._epochs[i], end

    # -- changes (each durable before it returns) ------------------------------------------------------
    def assign(self, epoch: int, start_offset: int) -> None:
        """Record that `epoch` starts at start_offset. The newest epoch again is a no-op; an older one,
        or a start below the newest epoch's, is refused (epochs and their starts only grow)."""
        if self._epochs and epoch == self._epochs[-1]:
            return
        if self._epochs and epoch < self._epochs[-1]:
            raise InvalidRequestError(f"leader epoch {epoch} is older than the partition's epoch {self._epochs[-1]}")
        if self._starts and start_offset < self._starts[-1]:
            raise InvalidRequestError(
                f"leader epoch {epoch} cannot start at offset {start_offset}, before epoch "
                f"{self._epochs[-1]} (which starts at {self._starts[-1]})"
            )
        if epoch < 0 or start_offset < 0:
            raise InvalidRequestError(f"leader epoch {epoch} at offset {start_offset}: both must be >= 0")
        if self._starts and start_offset == self._starts[-1]:
            self._epochs.pop()  # its leader wrote nothing: the new epoch takes its place
            self._starts.pop()
        self._epochs.append(epoch)
        self._starts.append(start_offset)
        self._write()

    def truncate_from_end(self, offset: int) -> None:
        """Forget the epochs starting at or after offset (the log was cut there)."""
        n = bisect.bisect_left(self._starts, offset)
        if n < len(self._starts):
            del self._epochs[n:], self._starts[n:]
            self._write()

    def truncate_from_start(self, offset: int) -> None:
        """The log now starts at offset: the epoch holding it starts there, older ones go."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0 or (i == 0 and self._starts[0] == offset):
            return
        del self._epochs[:i], self._starts[:i]
        self._starts[0] = offset
        self._write()

    def _write(self) -> None:
        doc = {"version": VERSION, "epochs": [[e, s] for e, s in zip(self._epochs, self._starts)]}
        self.fs.write_file_atomic(self.path, checked_json.encode(doc))


def parse(data: bytes) -> list[tuple[int, int]]:
    """The entries of a leader epoch file; ValueError (with why) if it is damaged."""
    doc = checked_json.decode(data)
    if doc.get("version") != VERSION:
        raise ValueError(f"version is {doc.get('version')!r}; this tidelog reads version {VERSION}")
    raw = doc.get("epochs")
    if not isinstance(raw, list):
        raise ValueError("it has no list of epochs")
    entries: list[tuple[int, int]] = []
    for item in raw:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in item)
        ):
            raise ValueError(f"entry {item!r} is not [epoch, start offset]")
        if entries and (item[0] <= entries[-1][0] or item[1] <= entries[-1][1]):
            raise ValueError(f"entry {item!r} does not follow {list(entries[-1])} (both must grow)")
        entries.append((item[0], item[1]))
    return entries


def rebuild(fs: FileSystem, directory: str, stamped: list[tuple[int, int]]) -> LeaderEpochFile:
    """Write the file again from the log: `stamped` holds (leader epoch, base offset) of each batch, in
    log order (batches written without an epoch carry -1 and are skipped)."""
    epochs = LeaderEpochFile(fs, directory, [])
    for epoch, base in stamped:
        if epoch > epochs.latest_epoch:
            epochs._epochs.append(epoch)
            epochs._starts.append(base)
    epochs._write()
    return epochs
