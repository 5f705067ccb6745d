"""The records of `__consumer_offsets`: how group state is encoded, and the one parser that replay
(groups/offset_store.py) and `tidelog check` share. Pure functions over bytes; thread-safe.

Two kinds of record, told apart by the shape of the key (both JSON, UTF-8):

    committed offset   key   [group, topic, partition]
                       value {"offset": int >= 0, "metadata": str, "commit_ms": int}, or null (forgotten)
    group membership   key   {"membership": group}
                       value {"generation": int >= 0, "assignor": str, "rebalances": int >= 0,
                              "partitions": {topic: count},
                              "target": {member_id: [[topic, partition], ...]},
                              "members": [{"member_id": str, "client_id": str, "topics": [str, ...],
                                           "session_timeout_ms": int > 0,
                                           "granted": [[topic, partition], ...],
                                           "reported": [[topic, partition], ...]}, ...]},
                       or null (the group has no members)

Replay applies them in offset order and the latest record per key wins. A record that does not
parse (only a broker bug or a hand-made write can produce one: clients cannot write this topic) is
a `MalformedRecord`: replay skips it and `tidelog check` reports it.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from ..values import TopicPartition
from .assignor import ASSIGNORS

OFFSETS_TOPIC = "__consumer_offsets"


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


class MembershipRecord(NamedTuple):
    group: str
    state: dict[str, Any] | None  # None: no members


def offset_key(group: str, topic: str, partition: int) -> bytes:
    return json.dumps([group, topic, partition]).encode()


def offset_value(c: CommittedOffset) -> bytes:
    return json.dumps({"offset": c.offset, "metadata": c.metadata, "commit_ms": c.commit_ms}).encode()


def membership_key(group: str) -> bytes:
    return json.dumps({"membership": group}).encode()


def membership_value(state: dict[str, Any]) -> bytes:
    return json.dumps(state, sort_keys=True).encode()


def parse(key: bytes | None, value: bytes | None) -> OffsetRecord | MembershipRecord:
    """The record's meaning; MalformedRecord (with the reason) when it has none."""
    k = _json(key, "key")
    v = None if value is None else _json(value, "value")
    if isinstance(k, list):
        if not (len(k) == 3 and _str(k[0]) and _str(k[1]) and _int(k[2])):
            raise MalformedRecord(f"an offset key is [group, topic, partition], not {_short(k)}")
        if v is None:
            return OffsetRecord(k[0], (k[1], k[2]), None)
        if not (
            isinstance(v, dict)
            and _int(v.get("offset"))
            and isinstance(v.get("metadata", ""), str)
            and _int(v.get("commit_ms", 0), low=None)
        ):
            raise MalformedRecord(f"an offset value is {{offset, metadata, commit_ms}}, not {_short(v)}")
        return OffsetRecord(
            k[0], (k[1], k[2]), CommittedOffset(v["offset"], v.get("metadata", ""), v.get("commit_ms", 0))
        )
    if isinstance(k, dict):
        if not (set(k) == {"membership"} and _str(k["membership"])):
            raise MalformedRecord(f"a membership key is {{membership: group}}, not {_short(k)}")
        if v is not None:
            _check_membership(v)
        return MembershipRecord(k["membership"], v)
    raise MalformedRecord(f"the key is neither an offset key nor a membership key: {_short(k)}")


def _check_membership(v: object) -> None:
    def bad(what: str):
        return MalformedRecord(f"membership value: {what}")

    if not isinstance(v, dict):
        raise bad(f"not an object: {_short(v)}")
    for name in ("generation", "rebalances"):
        if not _int(v.get(name)):
            raise bad(f"{name} is not a non-negative integer")
    if v.get("assignor") not in ASSIGNORS:
        raise bad(f"assignor is not one of {', '.join(ASSIGNORS)}")
    partitions, target, members = v.get("partitions"), v.get("target"), v.get("members")
    if not (isinstance(partitions, dict) and all(_str(t) and _int(n) for t, n in partitions.items())):
        raise bad("partitions is not {topic: count}")
    if not (isinstance(target, dict) and all(_str(m) and _tps(tps) for m, tps in target.items())):
        raise bad("target is not {member_id: [[topic, partition], ...]}")
    if not isinstance(members, list):
        raise bad("members is not a list")
    for m in members:
        if not (
            isinstance(m, dict)
            and _str(m.get("member_id"))
            and isinstance(m.get("client_id"), str)
            and isinstance(m.get("topics"), list)
            and all(_str(t) for t in m["topics"])
            and _int(m.get("session_timeout_ms"))
            and m["session_timeout_ms"] > 0
            and _tps(m.get("granted"))
            and _tps(m.get("reported"))
        ):
            raise bad(
                f"a member is not {{member_id, client_id, topics, session_timeout_ms, granted, reported}}: {_short(m)}"
            )


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


def _tps(x: object) -> bool:
    return isinstance(x, list) and all(
        isinstance(tp, list) and len(tp) == 2 and _str(tp[0]) and _int(tp[1]) for tp in x
    )


def _short(x: object) -> str:
    text = repr(x)
    return text if len(text) <= 80 else text[:77] + "..."
