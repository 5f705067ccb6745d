"""The records of `__consumer_offsets`: how group state is encoded, and the one parser that replay
(groups/offset_store.py) and `tidelog check` share. Pure functions over bytes; thread-safe.

A committed offset (JSON, UTF-8):

    key   [group, topic, partition]
    value {"offset": int >= 0, "metadata": str, "commit_ms": int}, or null (forgotten)

Replay applies them in offset order and the latest record per key wins. A record that does not
parse (only a broker bug or a hand-made write can produce one: clients cannot write this topic) is
a `MalformedRecord`: replay skips it and `tidelog check` reports it.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

OFFSETS_TOPIC = "__consumer_offsets"
TopicPartition = tuple[str, int]


class CommittedOffset(NamedTuple):
    offset: int
    metadata: str
    commit_ms: int


class MalformedRecord(ValueError):
    """A record of `__consumer_offsets` that is not one of the two kinds above."""


class OffsetRecord(NamedTuple):
    group: str
    partition: TopicPartition
    committed: CommittedOffset | None  # None: forgotten


def offset_key(group: str, topic: str, partition: int) -> bytes:
    return json.dumps([group, topic, partition]).encode()


def offset_value(c: CommittedOffset) -> bytes:
    return json.dumps({"offset": c.offset, "metadata": c.metadata, "commit_ms": c.commit_ms}).encode()


def parse(key: bytes | None, value: bytes | None) -> OffsetRecord:
    """The record's meaning; MalformedRecord (with the reason) when it has none."""
    k = _json(key, "key")
    v = None if value is None else _json(value, "value")
    if isinstance(k, list):
        if not (len(k) == 3 and _str(k[0]) and _str(k[1]) and _int(k[2])):
            raise MalformedRecord(f"an offset key is [group, topic, partition], not {_short(k)}")
        if v is None:
            return OffsetRecord(k[0], (k[1], k[2]), None)
        if not (isinstance(v, dict) and _int(v.get("offset")) and isinstance(v.get("metadata", ""), str)
                and _int(v.get("commit_ms", 0), low=None)):
            raise MalformedRecord(f"an offset value is {{offset, metadata, commit_ms}}, not {_short(v)}")
        return OffsetRecord(k[0], (k[1], k[2]), CommittedOffset(v["offset"], v.get("metadata", ""),
                                                                  v.get("commit_ms", 0)))
    raise MalformedRecord(f"the key is not an offset key: {_short(k)}")


def _json(raw: bytes | None, what: str) -> Any:
    if raw is None:
        raise MalformedRecord(f"the {what} is missing")
    try:
        return json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRecord(f"the {what} is not JSON ({exc}): {_short(bytes(raw))}") from None


def _str(x: object) -> bool:
    return isinstance(x, str) and x != ""


def _int(x: object, low: int | None = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and (low is None or x >= low)


def _short(x: object) -> str:
    text = repr(x)
    return text if len(text) <= 80 else text[:77] + "..."
