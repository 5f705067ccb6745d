"""Which topics a data directory holds, and which of its directories are tidelog's.

The rules, so that tidelog never deletes what it cannot prove it created and never opens damaged
metadata as if it were whole:

- A topic exists iff `meta/topics/<name>.json` is in state "ready". A topic file that is damaged,
  or a ready topic whose partition directory is missing or carries another topic's marker, makes the
  open refuse (CorruptLogError naming the file and `tidelog check --repair`); nothing is deleted.
- Create: the topic file is written first in state "creating" (the intent), then each partition
  directory with its marker and first segment, then the file again in state "ready" (the commit).
  A crash in between leaves an intent, and the next open removes exactly the directories whose
  marker names that topic id, then the intent.
- Delete: each partition directory is renamed to `.trash/<topic id>-<partition>` (under the engine's
  lock, so a topic of the same name can be created at once without meeting it), then the topic file
  is removed; the trash is emptied in the background. A crash between leaves a ready topic with
  partitions in the trash: the next open finishes the deletion.
- A directory with a valid marker that no topic claims means lost metadata: refuse. A directory
  without a marker is not tidelog's: it is reported and left alone, whatever its name.

Not thread-safe: the engine calls it under its lock (the trash thread only removes trash entries).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..config import TopicConfig
from ..errors import CorruptLogError, InvalidTopicError, StorageError, TopicExistsError
from ..storage.fs import TMP_PREFIX, FileSystem
from ..storage.segment import LOG_SUFFIX
from .topic_meta import (
    CREATING,
    MARKER_FILE,
    TRASH_DIR,
    TopicMeta,
    meta_dir,
    meta_path,
    partition_dir,
    read_marker,
    read_topic_meta,
    trash_dir,
    write_marker,
    write_topic_meta,
)

log = logging.getLogger("tidelog.engine")


class Catalog:
    def __init__(self, fs: FileSystem, data_dir: str) -> None:
        self.fs = fs
        self.path = data_dir
        self.trash = Trash(fs)

    # -- opening -------------------------------------------------------------------------------------
    def load(self) -> list[TopicMeta]:
        """Reconcile the directory after whatever stopped it and return the topics to open.

        Finishes interrupted creates (rolled back) and deletes (completed), upgrades topic files of
        the first format, and refuses damage. Raises CorruptLogError before deleting anything if any
        topic is damaged.
        """
        metas = self._read_topic_files()
        self._roll_back_growth(metas)
        topics, rollbacks, unfinished_deletes, upgrades = [], [], [], []
        for meta in metas:
            if meta.state == CREATING:
                rollbacks.append(meta)
            elif not meta.topic_id:
                upgrades.append(meta)
            elif self._deletion_started(meta):
                unfinished_deletes.append(meta)
            else:
                self._check_partitions(meta)
                topics.append(meta)
        self._check_unclaimed(metas)
        for meta in upgrades:
            topics.append(self._upgrade(meta))
        for meta in rollbacks:
            self._roll_back_create(meta)
        for meta in unfinished_deletes:
            log.warning(
                "finishing the deletion of a topic that a crash interrupted",
                extra={"event": "topic_delete_finished", "topic": meta.name},
            )
            self.trash.empty(self.delete(meta))
        live = {m.topic_id for m in topics}
        self.trash.empty(self._trash_entries(live))
        return topics

    def _read_topic_files(self) -> list[TopicMeta]:
        directory = meta_dir(self.path)
        self.fs.makedirs(directory)
        metas = []
        for entry in self.fs.listdir(directory):
            path = os.path.join(directory, entry)
            if entry.startswith(TMP_PREFIX) or entry.endswith(".json.tmp"):
                self.fs.remove(path)  # an atomic replace a crash interrupted (ours by its name)
            elif entry.endswith(".json"):
                metas.append(read_topic_meta(self.fs, self.path, path))
        return metas

    def _marker(self, directory: str):
        try:
            return read_marker(self.fs, directory)
        except ValueError as exc:
            raise CorruptLogError(
                f"partition marker {os.path.join(directory, MARKER_FILE)} is damaged ({exc}); "
                f"nothing was changed. Stop the broker and run `tidelog check --repair "
                f"--data-dir {self.path}`",
                path=directory,
            ) from None

    def _deletion_started(self, meta: TopicMeta) -> bool:
        return any(self.fs.exists(trash_dir(self.path, meta.topic_id, p)) for p in range(meta.partitions))

    def _check_partitions(self, meta: TopicMeta) -> None:
        for p in range(meta.partitions):
            directory = partition_dir(self.path, meta.name, p)
            if not self.fs.is_dir(directory):
                raise CorruptLogError(
                    f"partition directory {directory} of topic {meta.name!r} is missing; nothing was changed. "
                    f"If it was moved, move it back; `tidelog check --repair --data-dir {self.path}` recreates "
                    f"it empty (its records are lost)",
                    path=directory,
                )
            marker = self._marker(directory)
            if marker is None or not marker.belongs_to(meta, p):
                what = (
                    "has no partition.meta"
                    if marker is None
                    else (
                        f"belongs to another topic incarnation ({marker.meta.name!r} id {marker.meta.topic_id}, "
                        f"partition {marker.partition})"
                    )
                )
                raise CorruptLogError(
                    f"partition directory {directory} of topic {meta.name!r} {what}; nothing was changed. "
                    f"Run `tidelog check --repair --data-dir {self.path}` (it rewrites a lost marker of a "
                    f"directory that is this topic's by name and metadata)",
                    path=directory,
                )

    def _check_unclaimed(self, metas: list[TopicMeta]) -> None:
        """Marked directories that no topic file claims: refuse (metadata lost); unmarked ones are
        left alone and reported."""
        by_id = {m.topic_id: m for m in metas if m.topic_id}
        legacy = {m.name: m for m in metas if not m.topic_id}
        for entry in self.fs.listdir(self.path):
            directory = os.path.join(self.path, entry)
            if entry in ("meta", TRASH_DIR) or entry.startswith(".") or not self.fs.is_dir(directory):
                continue
            marker = self._marker(directory)
            if marker is None:
                name, sep, index = entry.rpartition("-")
                owner = legacy.get(name)
                if sep and index.isdigit() and not (owner is not None and int(index) < owner.partitions):
                    log.warning(
                        "a directory in the data directory is not a tidelog partition (it has no "
                        "partition.meta); it is left alone",
                        extra={"event": "foreign_directory", "directory": entry},
                    )
                continue
            owner = by_id.get(marker.meta.topic_id)
            if owner is None and self._upgrade_marker(marker, entry, legacy):
                continue  # marked by an upgrade a crash interrupted: the upgrade is finished below
            if owner is None or owner.name != marker.meta.name:
                raise CorruptLogError(
                    f"partition directory {directory} belongs to topic {marker.meta.name!r} "
                    f"(id {marker.meta.topic_id}), which has no metadata in {meta_dir(self.path)}; nothing was "
                    f"changed. Run `tidelog check --repair --data-dir {self.path}` to restore the topic from "
                    f"its partition directories",
                    path=directory,
                )
            if marker.partition >= owner.partitions:
                raise CorruptLogError(
                    f"directory {directory} holds partition {marker.partition} of topic {owner.name!r}, whose "
                    f"metadata says it has {owner.partitions} partitions; nothing was changed. Run `tidelog check "
                    f"--repair --data-dir {self.path}` to restore the metadata from the partition directories",
                    path=directory,
                )
            if entry != f"{owner.name}-{marker.partition}":
                raise CorruptLogError(
                    f"directory {directory} holds partition {marker.partition} of topic {owner.name!r} under "
                    f"another name; nothing was changed. Rename it to {owner.name}-{marker.partition} or "
                    f"move it away",
                    path=directory,
                )

    @staticmethod
    def _upgrade_marker(marker, entry: str, legacy: dict[str, TopicMeta]) -> bool:
        """Whether a marker was written by the upgrade of a first-format topic (its name, a partition
        it has, in the directory of that name) that a crash stopped before it rewrote the topic file."""
        owner = legacy.get(marker.meta.name)
        return owner is not None and marker.partition < owner.partitions and entry == f"{owner.name}-{marker.partition}"

    def _upgrade(self, meta: TopicMeta) -> TopicMeta:
        """A topic file of the first format (no checksum, no id): mark its directories, rewrite it.

        An upgrade that a crash interrupted left markers in some directories: their topic id is kept,
        so that every marker and the topic file name the same incarnation."""
        ids = set()
        for p in range(meta.partitions):
            directory = partition_dir(self.path, meta.name, p)
            if not self.fs.is_dir(directory):
                raise CorruptLogError(
                    f"partition directory {directory} of topic {meta.name!r} is missing; nothing was changed",
                    path=directory,
                )
            marker = self._marker(directory)
            if marker is not None:
                ids.add(marker.meta.topic_id)
        if len(ids) > 1:
            raise CorruptLogError(
                f"the partition directories of topic {meta.name!r} (metadata of the first format) "
                f"carry markers of {len(ids)} different topic ids; nothing was changed. Run "
                f"`tidelog check --data-dir {self.path}`",
                path=meta_path(self.path, meta.name),
            )
        upgraded = TopicMeta.new(meta.name, meta.partitions, meta.config, meta.created_ms).ready()
        if ids:
            upgraded = replace(upgraded, topic_id=ids.pop())
        for p in range(meta.partitions):
            write_marker(self.fs, partition_dir(self.path, meta.name, p), upgraded, p)
        write_topic_meta(self.fs, self.path, upgraded)
        log.info(
            "topic metadata upgraded to the checksummed format",
            extra={"event": "topic_upgraded", "topic": meta.name, "topic_id": upgraded.topic_id},
        )
        return upgraded

    def _roll_back_create(self, meta: TopicMeta) -> None:
        for p in range(meta.partitions):
            directory = partition_dir(self.path, meta.name, p)
            if not self.fs.is_dir(directory):
                continue
            marker = self._marker(directory)
            if marker is not None and marker.belongs_to(meta, p):
                remove_partition_dir(self.fs, directory)
            elif marker is None and all(name.startswith(TMP_PREFIX) for name in self.fs.listdir(directory)):
                # made by the create, which crashed before its marker was written (or while: the
                # marker's own temporary file, named by tidelog's prefix, is all there is)
                for name in self.fs.listdir(directory):
                    self.fs.remove(os.path.join(directory, name))
                self.fs.rmdir(directory)
            else:
                log.warning(
                    "a directory in the way of an interrupted topic creation is not its own; left alone",
                    extra={"event": "foreign_directory", "directory": os.path.basename(directory)},
                )
        self.fs.fsync_dir(self.path)
        self.fs.remove(meta_path(self.path, meta.name))
        self.fs.fsync_dir(meta_dir(self.path))
        log.warning(
            "rolled back a topic creation that a crash interrupted",
            extra={"event": "topic_create_rolled_back", "topic": meta.name},
        )

    def _trash_entries(self, live_ids: set[str]) -> list[str]:
        """Trash entries provably ours (a marker whose topic id and partition make the entry's name)."""
        root = os.path.join(self.path, TRASH_DIR)
        out = []
        for entry in self.fs.listdir(root):
            directory = os.path.join(root, entry)
            try:
                marker = read_marker(self.fs, directory)
            except ValueError:
                marker = None
            if (
                marker is not None
                and entry == f"{marker.meta.topic_id}-{marker.partition}"
                and marker.meta.topic_id not in live_ids
            ):
                out.append(directory)
            elif marker is None and self.fs.is_dir(directory) and not self.fs.listdir(directory):
                self.fs.rmdir(directory)  # emptied by us up to its marker (removed last) when a crash came
            else:
                log.warning(
                    "an entry in the trash is not a deleted tidelog partition; left alone",
                    extra={"event": "foreign_directory", "directory": os.path.join(TRASH_DIR, entry)},
                )
        return out

    # -- create and delete ---------------------------------------------------------------------------
    def check_name_fits(self, name: str, partitions: int) -> None:
        """Every file name a topic needs must fit the file system's NAME_MAX."""
        longest = max(len(f"{name}-{partitions - 1}".encode()), len(f"{name}.json".encode()))
        limit = self.fs.name_max(self.path)
        if longest > limit:
            raise InvalidTopicError(
                f"topic name of {len(name)} characters is too long for {partitions} partitions on this file "
                f"system: the directory name {name[:20]}...-{partitions - 1} would have {longest} bytes, over "
                f"its limit of {limit}"
            )

    def begin_create(self, meta: TopicMeta) -> None:
        """Record the intent to create (durable), after checking that nothing is in the way."""
        for p in range(meta.partitions):
            directory = partition_dir(self.path, meta.name, p)
            if self.fs.exists(directory):
                raise TopicExistsError(
                    f"cannot create topic {meta.name!r}: {directory} already exists in the data directory and is "
                    f"not this topic's; move it away first",
                    topic=meta.name,
                )
        write_topic_meta(self.fs, self.path, meta)

    def make_partition_dir(self, meta: TopicMeta, partition: int) -> str:
        directory = partition_dir(self.path, meta.name, partition)
        self.fs.makedirs(directory)
        write_marker(self.fs, directory, meta, partition)
        return directory

    def commit_create(self, meta: TopicMeta) -> TopicMeta:
        self.fs.fsync_dir(self.path)
        ready = meta.ready()
        write_topic_meta(self.fs, self.path, ready)  # the topic exists from this write on
        return ready

    def grow(self, meta: TopicMeta, old: int, open_log: Callable[[str, TopicConfig], Any]) -> list[Any]:
        """Commit a topic's new document `meta` (more partitions than `old`, and/or new settings):
        make and mark the directories of partitions old.., open their logs with `open_log`, then
        replace the topic file (the commit point); the older markers are rewritten after it so that a
        repair restores the new document. Returns the new partitions' logs.

        Before the commit a failure removes the directories it made (each proved ours by its marker);
        a crash leaves them, and the next open's `_roll_back_growth` removes them."""
        for p in range(old, meta.partitions):
            directory = partition_dir(self.path, meta.name, p)
            if self._unmarked_leftover(directory):
                # an increase that crashed before this directory's marker was written: it holds nothing
                # but tidelog's temporary files, so it is taken over (never deleted without proof)
                for name in self.fs.listdir(directory):
                    self.fs.remove(os.path.join(directory, name))
            elif self.fs.exists(directory):
                raise TopicExistsError(
                    f"cannot add partition {p} to topic {meta.name!r}: {partition_dir(self.path, meta.name, p)} "
                    "already exists in the data directory and is not this topic's; move it away first",
                    topic=meta.name,
                )
        logs: list[Any] = []
        made: list[str] = []
        try:
            for p in range(old, meta.partitions):
                made.append(self.make_partition_dir(meta, p))
                logs.append(open_log(made[-1], meta.config))
            self.fs.fsync_dir(self.path)
            write_topic_meta(self.fs, self.path, meta)  # the new count exists from this write on
        except BaseException:
            for plog in logs:
                plog.close_files()
            try:
                for directory in made:
                    remove_partition_dir(self.fs, directory)
                self.fs.fsync_dir(self.path)
            except StorageError:
                log.warning(
                    "could not undo a failed partition increase; the next open removes what is left",
                    extra={"event": "topic_growth_rolled_back", "topic": meta.name},
                )
            raise
        try:
            for p in range(old):
                write_marker(self.fs, partition_dir(self.path, meta.name, p), meta, p)
        except StorageError as exc:  # committed already: an older marker only serves a later repair
            log.warning(
                "could not rewrite a partition marker after altering the topic (%s); the topic file is right",
                exc.message,
                extra={"event": "marker_rewrite_failed", "topic": meta.name},
            )
        return logs

    def _roll_back_growth(self, metas: list[TopicMeta]) -> None:
        """Remove the partition directories of an increase a crash interrupted: marked with a topic's
        id and name, past its count, and holding no record (a partition exists, and may be written,
        only once the topic file names it). Anything else past the count is refused by
        `_check_unclaimed`, as before."""
        by_id = {m.topic_id: m for m in metas if m.topic_id and m.state != CREATING}
        for entry in self.fs.listdir(self.path):
            directory = os.path.join(self.path, entry)
            if entry in ("meta", TRASH_DIR) or entry.startswith(".") or not self.fs.is_dir(directory):
                continue
            marker = self._marker(directory)
            owner = None if marker is None else by_id.get(marker.meta.topic_id)
            if (
                marker is None
                or owner is None
                or owner.name != marker.meta.name
                or marker.partition < owner.partitions
                or entry != f"{owner.name}-{marker.partition}"
                or not self._holds_no_record(directory)
            ):
                continue
            remove_partition_dir(self.fs, directory)
            self.fs.fsync_dir(self.path)
            log.warning(
                "removed a partition of an increase that a crash interrupted",
                extra={"event": "topic_growth_rolled_back", "topic": owner.name, "partition": marker.partition},
            )

    def _unmarked_leftover(self, directory: str) -> bool:
        return self.fs.is_dir(directory) and all(name.startswith(TMP_PREFIX) for name in self.fs.listdir(directory))

    def _holds_no_record(self, directory: str) -> bool:
        for name in self.fs.listdir(directory):
            if name.endswith(LOG_SUFFIX) and os.path.getsize(os.path.join(directory, name)) > 0:
                return False
        return True

    def abort_create(self, meta: TopicMeta) -> None:
        """Undo a create that failed while running (best effort: the next open rolls back the rest)."""
        try:
            self._roll_back_create(meta)
        except StorageError:
            log.warning(
                "could not undo a failed topic creation; the next open rolls it back",
                extra={"event": "topic_create_rolled_back", "topic": meta.name},
            )

    def delete(self, meta: TopicMeta) -> list[str]:
        """Move the topic's partition directories to the trash, then remove its file; returns the trash
        entries to empty. The partitions' files must be closed."""
        self.fs.makedirs(os.path.join(self.path, TRASH_DIR))
        moved = []
        for p in range(meta.partitions):
            directory, target = partition_dir(self.path, meta.name, p), trash_dir(self.path, meta.topic_id, p)
            if self.fs.is_dir(directory) and not self.fs.exists(target):
                self.fs.rename(directory, target)
            if self.fs.exists(target):
                moved.append(target)
        self.fs.fsync_dir(self.path)
        self.fs.fsync_dir(os.path.join(self.path, TRASH_DIR))
        self.fs.remove(meta_path(self.path, meta.name))  # the topic is gone from here on
        self.fs.fsync_dir(meta_dir(self.path))
        return moved

    def close(self) -> None:
        self.trash.stop()


def remove_partition_dir(fs: FileSystem, directory: str) -> None:
    """Remove a partition directory of ours, its marker last: a crash half-way leaves a directory
    that still proves it is ours (or an empty one), so the next open finishes removing it."""
    for name in fs.listdir(directory):
        if name != MARKER_FILE:
            path = os.path.join(directory, name)
            if fs.is_dir(path):
                fs.rmtree(path)
            else:
                fs.remove(path)
    fs.remove(os.path.join(directory, MARKER_FILE))
    fs.rmdir(directory)


class Trash:
    """Empties trash entries in one background thread, so deleting a large topic returns at once.
    What is left when the engine closes is emptied by the next open."""

    def __init__(self, fs: FileSystem) -> None:
        self.fs = fs
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards _thread: started when work arrives, gone when idle

    def empty(self, paths: list[str]) -> None:
        if not paths:
            return
        with self._lock:
            for path in paths:
                self._queue.put(path)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tidelog-trash", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                path = self._queue.get(timeout=0.5)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                if path is not None:
                    remove_partition_dir(self.fs, path)
            except Exception:  # the thread must go on: what is left, the next open removes
                log.exception(
                    "emptying the trash failed; the next open tries again",
                    extra={"event": "background_job_failed", "job": "trash"},
                )
            finally:
                self._queue.task_done()
            if path is None:
                with self._lock:
                    self._thread = None
                return

    def drain(self) -> None:
        """Wait until every entry given so far is removed (tests, and `close`)."""
        self._queue.join()

    def stop(self) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout=30)
