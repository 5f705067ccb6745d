"""Cluster-wide settings changed at runtime (Kafka's dynamic broker configs), kept in etcd under
`/tidelog/<cluster>/config/<name>`: every broker reads them with the rest of its snapshot and applies
them at once. A setting absent from etcd is each broker's own (its config file or flags).

Only `replication_throttle_bytes_per_s` is dynamic so far. Event-loop only (aetcd calls).
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import ClusterUnavailableError, InvalidConfigError
from .membership import prefix

log = logging.getLogger("tidelog.cluster")

THROTTLE = "replication_throttle_bytes_per_s"
DYNAMIC = (THROTTLE,)


def setting_key(cluster: str, name: str) -> bytes:
    return prefix(cluster) + b"config/" + name.encode()


def parse_rate(text: str | None) -> int | None:
    """A stored throttle rate; None when absent or not a whole number >= 0 (then the broker's own)."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None


async def set_setting(client: Any, cluster: str, name: str, value: int | None) -> int | None:
    """Store `value` for `name` (None: remove it, back to each broker's own); returns the value it
    replaced. Fenced on the key's mod_revision as read: a concurrent change is not overwritten."""
    if name not in DYNAMIC:
        raise InvalidConfigError(f"{name!r} cannot be changed at runtime; these can: {', '.join(DYNAMIC)}")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InvalidConfigError(f"{name} must be a whole number of bytes per second >= 0, got {value!r}")
    key = setting_key(cluster, name)
    found = await client.get(key)
    before = parse_rate(found.value.decode()) if found is not None else None
    tx = client.transactions
    compare = [tx.mod(key) == found.mod_revision] if found is not None else [tx.create(key) == 0]
    change = [tx.put(key, str(value).encode())] if value is not None else [tx.delete(key)]
    done, _ = await client.transaction(compare=compare, success=change, failure=[])
    if not done:
        raise ClusterUnavailableError(f"{name} was changed by someone else meanwhile; run the command again")
    log.warning(
        "cluster setting changed",
        extra={"event": "cluster_setting_changed", "setting": name, "value": value, "previous": before},
    )
    return before
