"""What a data directory says about its topics: `meta/topics/<name>.json` and each partition
directory's `partition.meta` marker, read and written with checksums (storage/checked_json.py).

The topic file is the record that a topic exists. The marker, written into a partition directory
before the topic may hold data, is tidelog's proof that it made that directory and for which topic
incarnation (a random topic id, new at every create): nothing is ever deleted on the strength of a
directory's name alone. The marker also keeps a copy of the topic's document, from which
`tidelog check --repair` restores a lost or damaged topic file. Formats: docs/FORMAT.md §1.

Pure reading and writing through the FileSystem seam; no policy (engine/catalog.py decides).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, replace

from ..config import TopicConfig
from ..errors import CorruptLogError, InvalidConfigError
from ..storage import checked_json
from ..storage.fs import FileSystem

META_DIR = os.path.join("meta", "topics")
MARKER_FILE = "partition.meta"
TRASH_DIR = ".trash"
"""Partition directories of deleted topics wait here, renamed `<topic id>-<partition>`, to be removed."""
META_VERSION = 2
MARKER_VERSION = 1
CREATING, READY = "creating", "ready"


@dataclass(frozen=True)
class TopicMeta:
    """One topic incarnation: its name, id, partition count, settings and whether creation finished."""

    name: str
    topic_id: str
    partitions: int
    created_ms: int
    config: TopicConfig
    state: str = READY

    @staticmethod
    def new(name: str, partitions: int, config: TopicConfig, created_ms: int) -> TopicMeta:
        return TopicMeta(name, secrets.token_hex(16), partitions, created_ms, config, CREATING)

    def ready(self) -> TopicMeta:
        return replace(self, state=READY)

    def doc(self) -> dict:
        return {
            "version": META_VERSION,
            "name": self.name,
            "topic_id": self.topic_id,
            "state": self.state,
            "partitions": self.partitions,
            "created_ms": self.created_ms,
            "config": self.config.to_dict(),
        }

    @staticmethod
    def from_doc(doc: dict, what: str, legacy: bool = False) -> TopicMeta:
        """Validate a parsed document; ValueError names the first field that is wrong."""
        want = 1 if legacy else META_VERSION
        if doc.get("version") != want:
            raise ValueError(f"version is {doc.get('version')!r}; this tidelog reads version {want}")
        name, partitions = doc.get("name"), doc.get("partitions")
        if not isinstance(name, str) or not name:
            raise ValueError("it has no topic name")
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ValueError(f"its partition count {partitions!r} is not a positive integer")
        topic_id = "" if legacy else doc.get("topic_id")
        if not isinstance(topic_id, str) or (not legacy and len(topic_id) != 32):  # legacy: ""
            raise ValueError("it has no valid topic_id")
        state = READY if legacy else doc.get("state")
        if state not in (CREATING, READY):
            raise ValueError(f"its state {state!r} is neither {CREATING!r} nor {READY!r}")
        created = doc.get("created_ms", 0)
        if isinstance(created, bool) or not isinstance(created, int):
            raise ValueError("created_ms is not an integer")
        settings = doc.get("config")
        if not isinstance(settings, dict):
            raise ValueError("it has no config object")
        try:
            config = TopicConfig(**settings)
        except (TypeError, InvalidConfigError) as exc:
            raise ValueError(f"its config is not valid ({exc})") from None
        return TopicMeta(name, topic_id, partitions, created, config, state)


def meta_dir(data_dir: str) -> str:
    return os.path.join(data_dir, META_DIR)


def meta_path(data_dir: str, name: str) -> str:
    return os.path.join(data_dir, META_DIR, name + ".json")


def partition_dir(data_dir: str, topic: str, partition: int) -> str:
    return os.path.join(data_dir, f"{topic}-{partition}")


def trash_dir(data_dir: str, topic_id: str, partition: int) -> str:
    return os.path.join(data_dir, TRASH_DIR, f"{topic_id}-{partition}")


def _repair_hint(data_dir: str) -> str:
    return (
        f"nothing was changed. Stop the broker and run `tidelog check --data-dir {data_dir}` to see "
        f"every problem, then `tidelog check --repair --data-dir {data_dir}`"
    )


def read_topic_meta(fs: FileSystem, data_dir: str, path: str) -> TopicMeta:
    """The topic file at path; CorruptLogError naming the file and the repair if it is damaged.

    A file of the first format (plain JSON, version 1, no checksum and no topic id) is returned with
    an empty topic_id: the catalog upgrades it.
    """
    data = fs.read_file(path)
    legacy = not checked_json.has_checksum(data)
    try:
        doc = checked_json.parse_json(data) if legacy else checked_json.decode(data)
        meta = TopicMeta.from_doc(doc, path, legacy)
    except ValueError as exc:
        raise CorruptLogError(
            f"topic metadata {path} is damaged: {exc}; {_repair_hint(data_dir)}, which "
            f"restores it from the copy kept in each of its partition directories",
            path=path,
        ) from None
    if os.path.basename(path) != meta.name + ".json":
        raise CorruptLogError(
            f"topic metadata {path} names topic {meta.name!r}, not the one of its file name; {_repair_hint(data_dir)}",
            path=path,
        )
    return meta


def write_topic_meta(fs: FileSystem, data_dir: str, meta: TopicMeta) -> None:
    """Durably replace the topic file (the commit point of a create)."""
    fs.write_file_atomic(meta_path(data_dir, meta.name), checked_json.encode(meta.doc()))


class Marker:
    """A partition directory's `partition.meta`: its topic's document and its partition index."""

    def __init__(self, meta: TopicMeta, partition: int) -> None:
        self.meta, self.partition = meta, partition

    def belongs_to(self, meta: TopicMeta, partition: int) -> bool:
        return self.meta.topic_id == meta.topic_id and self.meta.name == meta.name and self.partition == partition


def write_marker(fs: FileSystem, directory: str, meta: TopicMeta, partition: int) -> None:
    """Durably write the marker (file and directory fsynced): from now on the directory is provably ours."""
    doc = {"version": MARKER_VERSION, "partition": partition, "topic": meta.ready().doc()}
    fs.write_file_atomic(os.path.join(directory, MARKER_FILE), checked_json.encode(doc))


def read_marker(fs: FileSystem, directory: str) -> Marker | None:
    """The directory's marker; None if it has none; ValueError (with why) if it is damaged."""
    path = os.path.join(directory, MARKER_FILE)
    if not fs.exists(path):
        return None
    doc = checked_json.decode(fs.read_file(path))
    if doc.get("version") != MARKER_VERSION:
        raise ValueError(f"version is {doc.get('version')!r}; this tidelog reads version {MARKER_VERSION}")
    partition, topic = doc.get("partition"), doc.get("topic")
    if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0 or not isinstance(topic, dict):
        raise ValueError("it has no valid partition index or topic")
    meta = TopicMeta.from_doc(topic, path)
    if partition >= meta.partitions:
        raise ValueError(f"partition {partition} is outside its topic's {meta.partitions} partitions")
    return Marker(meta, partition)
