"""A broker's view of the cluster's state in etcd: brokers, controller, topics and partitions.

The view reads every key under the cluster's prefix at once (one range read: the state is small and
a read is ~1 ms), so each snapshot is consistent at one etcd revision. It reads again when a watch
reports a change and at least every `refresh_s` (a watch can stall silently when its etcd member is
cut off), and hands each newer snapshot to `on_change`, one at a time and never out of order.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .membership import BrokerInfo, prefix
from .placement import PartitionState, TopicPlacement

log = logging.getLogger("tidelog.cluster")


@dataclass(frozen=True)
class Snapshot:
    revision: int = 0
    brokers: dict[int, BrokerInfo] = field(default_factory=dict)
    controller_id: int | None = None
    controller_epoch: int | None = None
    topics: dict[str, TopicPlacement] = field(default_factory=dict)
    partitions: dict[tuple[str, int], PartitionState] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)  # `config/<name>`: cluster-wide settings set at runtime
    security: dict[str, bytes] = field(default_factory=dict)  # `security/users`, `security/acls` (security_docs.py)

    def storage(self) -> dict[int, str]:
        """Each live broker's data-directory id, as it registered it."""
        return {b: info.storage for b, info in self.brokers.items()}

    def endpoint(self, broker_id: int) -> str:
        info = self.brokers.get(broker_id)
        return info.endpoint if info is not None else ""


def parse(cluster: str, revision: int, kvs: Any) -> Snapshot:
    """A snapshot from the keys under the cluster's prefix (a key that does not parse is skipped
    with a warning: etcd is shared, and one bad key must not blind the broker to the rest)."""
    root = prefix(cluster)
    brokers: dict[int, BrokerInfo] = {}
    topics: dict[str, TopicPlacement] = {}
    partitions: dict[tuple[str, int], PartitionState] = {}
    controller_id = controller_epoch = None
    settings: dict[str, str] = {}
    security: dict[str, bytes] = {}
    for kv in kvs:
        key = kv.key[len(root) :].decode("utf-8", "replace")
        try:
            if key.startswith("brokers/"):
                doc = json.loads(kv.value)
                bid = int(key[len("brokers/") :])
                brokers[bid] = BrokerInfo(
                    bid,
                    doc["endpoint"],
                    doc.get("incarnation", ""),
                    kv.create_revision,
                    str(doc.get("storage", "")),
                    str(doc.get("kafka", "")),
                )
            elif key == "controller":
                controller_id, controller_epoch = int(json.loads(kv.value)["broker_id"]), kv.create_revision
            elif key.startswith("topics/"):
                name = key[len("topics/") :]
                topics[name] = TopicPlacement.decode(name, kv.value)
            elif key.startswith("config/"):
                settings[key[len("config/") :]] = kv.value.decode()
            elif key.startswith("security/"):
                security[key[len("security/") :]] = bytes(kv.value)
            elif key.startswith("partitions/"):
                name, _, number = key[len("partitions/") :].rpartition("/")
                partitions[(name, int(number))] = PartitionState.decode(kv.value, kv.mod_revision)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping a malformed cluster key %s: %s", key, exc)
    return Snapshot(revision, brokers, controller_id, controller_epoch, topics, partitions, settings, security)


class ClusterView:
    """The newest snapshot of the cluster's keys, kept fresh. Event-loop only."""

    def __init__(
        self,
        client: Any,
        cluster: str,
        on_change: Callable[[Snapshot], Awaitable[None]],
        refresh_s: float = 1.0,
    ) -> None:
        self.client, self.cluster = client, cluster
        self.snapshot = Snapshot()
        self._on_change = on_change
        self._refresh_s = refresh_s
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        await self.reload()
        self._tasks = [asyncio.ensure_future(self._watch()), asyncio.ensure_future(self._refresh())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def reload(self) -> Snapshot:
        """Read the state now; hand it on if it is newer than the last one. Returns the newest."""
        found = await self.client.get_prefix(prefix(self.cluster))
        snapshot = parse(self.cluster, found.header.revision, found)
        if snapshot.revision > self.snapshot.revision:
            self.snapshot = snapshot
            try:
                await self._on_change(snapshot)
            except Exception:
                log.exception("acting on a cluster change failed; retried at the next change or refresh")
                self.snapshot = Snapshot(revision=0)  # so the next read is handed on again
        return self.snapshot

    def changed(self) -> None:
        """Ask for a read soon (something this broker wrote, or learned, changed the state)."""
        self._changed.set()

    async def _refresh(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._changed.wait(), self._refresh_s)
            except asyncio.TimeoutError:
                pass
            self._changed.clear()
            try:
                await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot read the cluster state from etcd: %s", exc)

    async def _watch(self) -> None:
        while True:
            try:
                # from the revision after the last read: a change made between that read and this watch
                # is reported too, not left for the next refresh
                since = self.snapshot.revision + 1 if self.snapshot.revision else None
                watch = await self.client.watch_prefix(prefix(self.cluster), start_revision=since)
                try:
                    async for _ in watch:
                        self._changed.set()
                finally:
                    await watch.cancel()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("cluster watch ended (%s); watching again", exc)
            await asyncio.sleep(self._refresh_s / 2)
