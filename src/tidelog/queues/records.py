"""The records of `__queue_state`: how queue state is encoded, and the one parser replay and `tidelog
check` share. Pure functions over bytes; thread-safe.

Three kinds of record, told apart by the shape of the key (both JSON, UTF-8):

    queue        key   {"queue": name}
                 value {"topics": [str, ...], "lock_ms": int > 0, "max_deliveries": int > 0,
                        "dead_letter_topic": str ("" = none), "max_in_flight": int > 0,
                        "created_ms": int, "fifo": bool (absent: false)}, or null (the queue was deleted: forget its windows)
    window       key   [queue, topic, partition]
                 value {"start": int >= 0, "snapshot": bool,
                        "records": [[offset, state, deliveries, not_before_ms, owner, lock_until_ms], ...]}
                 state is one of "available", "acquired", "acked", "archived"
    redrive      key   {"redrive": dead_letter_topic, "to": topic}
                 value {"next": {partition: offset}}  (dead letters below it were moved)

A window record carries the partition's start (everything below it is complete) and the records whose
state changed; a snapshot record replaces what earlier ones said. Replay applies them in offset order.
A record that does not parse (only a broker bug or a hand-made write can produce one: clients cannot
write this topic) is a `MalformedRecord`: replay skips it and `tidelog check` reports it.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from ..values import QueueConfig
from .window import STATES, Change

QUEUE_STATE_TOPIC = "__queue_state"


class MalformedRecord(ValueError):
    """A record of `__queue_state` that is not one of the kinds above."""


class QueueRecord(NamedTuple):
    queue: str
    config: QueueConfig | None  # None: deleted


class WindowRecord(NamedTuple):
    queue: str
    topic: str
    partition: int
    start: int
    snapshot: bool
    changes: list[Change]


class RedriveRecord(NamedTuple):
    source: str
    target: str
    next: dict[int, int]


def queue_key(queue: str) -> bytes:
    return json.dumps({"queue": queue}).encode()


def queue_value(config: QueueConfig) -> bytes:
    return json.dumps(config.to_json()).encode()


def window_key(queue: str, topic: str, partition: int) -> bytes:
    return json.dumps([queue, topic, partition]).encode()


def window_value(start: int, changes: list[Change], snapshot: bool = False) -> bytes:
    return json.dumps({"start": start, "snapshot": snapshot, "records": changes}).encode()  # (tuples: arrays)


def redrive_key(source: str, target: str) -> bytes:
    return json.dumps({"redrive": source, "to": target}).encode()


def redrive_value(next_offsets: dict[int, int]) -> bytes:
    return json.dumps({"next": {str(p): o for p, o in sorted(next_offsets.items())}}).encode()


def parse(key: bytes | None, value: bytes | None) -> QueueRecord | WindowRecord | RedriveRecord:
    """The record's meaning; MalformedRecord (with the reason) when it has none."""
    k = _json(key, "key")
    v = None if value is None else _json(value, "value")
    if isinstance(k, list):
        if not (len(k) == 3 and _str(k[0]) and _str(k[1]) and _int(k[2])):
            raise MalformedRecord(f"a window key is [queue, topic, partition], not {_short(k)}")
        if not (isinstance(v, dict) and _int(v.get("start")) and isinstance(v.get("records"), list)):
            raise MalformedRecord(f"a window value is {{start, snapshot, records}}, not {_short(v)}")
        return WindowRecord(k[0], k[1], k[2], v["start"], bool(v.get("snapshot")), [_change(c) for c in v["records"]])
    if isinstance(k, dict) and set(k) == {"queue"} and _str(k["queue"]):
        if v is None:
            return QueueRecord(k["queue"], None)
        return QueueRecord(k["queue"], _config(v))
    if isinstance(k, dict) and set(k) == {"redrive", "to"} and _str(k["redrive"]) and _str(k["to"]):
        nxt = v.get("next") if isinstance(v, dict) else None
        if not (isinstance(nxt, dict) and all(p.isdigit() and _int(o) for p, o in nxt.items())):
            raise MalformedRecord(f"a redrive value is {{next: {{partition: offset}}}}, not {_short(v)}")
        return RedriveRecord(k["redrive"], k["to"], {int(p): o for p, o in nxt.items()})
    raise MalformedRecord(f"not a queue, window or redrive key: {_short(k)}")


def _config(v: Any) -> QueueConfig:
    ok = (
        isinstance(v, dict)
        and isinstance(v.get("topics"), list)
        and v["topics"]
        and all(_str(t) for t in v["topics"])
        and all(_int(v.get(f)) and v[f] > 0 for f in ("lock_ms", "max_deliveries", "max_in_flight"))
        and isinstance(v.get("dead_letter_topic"), str)
        and _int(v.get("created_ms"))
        and isinstance(v.get("fifo", False), bool)
    )
    if not ok:
        raise MalformedRecord(f"a queue value is its configuration, not {_short(v)}")
    return QueueConfig(
        tuple(v["topics"]),
        v["lock_ms"],
        v["max_deliveries"],
        v["dead_letter_topic"],
        v["max_in_flight"],
        v["created_ms"],
        v.get("fifo", False),
    )


def _change(c: Any) -> Change:
    if not (
        isinstance(c, list)
        and len(c) == 6
        and _int(c[0])
        and c[1] in STATES
        and all(_int(x) for x in (c[2], c[3], c[5]))
        and isinstance(c[4], str)
    ):
        raise MalformedRecord(
            f"a window change is [offset, state, deliveries, not_before_ms, owner, lock_until_ms], not {_short(c)}"
        )
    return Change(*c)


def _json(data: bytes | None, what: str) -> Any:
    if data is None:
        raise MalformedRecord(f"no {what}")
    try:
        return json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError):
        raise MalformedRecord(f"the {what} is not JSON: {bytes(data)[:60]!r}") from None


def _str(x: Any) -> bool:
    return isinstance(x, str) and bool(x)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _short(x: Any) -> str:
    text = json.dumps(x) if not isinstance(x, bytes) else repr(x)
    return text if len(text) <= 80 else text[:77] + "..."
