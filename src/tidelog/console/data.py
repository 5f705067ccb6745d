"""What the console shows, read from the broker through tidelog's own client (the same calls as `tidelog
top` and the CLI), so that any broker of a cluster shows the whole cluster, and nothing here reaches into
the broker's internals.

The broker is read at most once per SAMPLE_S, whatever the number of open pages: one View (the cluster,
every topic described, every group described) serves every page until it is SAMPLE_S old. Rates and lag
over time come from the views taken while someone looks (a page asked in the last IDLE_S): a console
nobody has open costs the broker nothing. A sample is the topics' high watermarks and sizes, the groups'
lag, and the broker's own counters from its `/metrics` when that endpoint is on (bytes fetched: the out
rate). HISTORY samples are kept (5 minutes).
"""

from __future__ import annotations

import base64
import collections
import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import AuthorizationError, TidelogError, UnknownGroupError, UnknownQueueError, UnknownTopicError

SAMPLE_S = 2.0
IDLE_S = 60.0
HISTORY = 150
PAGE_RECORDS = 50
"""Records per page of the message browser, at most."""
PAGE_BYTES = 1 << 20
"""What one page of the message browser may read from the broker: a partition is never loaded whole."""


@dataclass
class View:
    """What the pages show of the broker, read at once."""

    at: float
    cluster: Any
    topics: dict[str, dict[str, Any]]  # name -> Admin.describe()
    groups: dict[str, dict[str, Any]]  # id -> Admin.describe_group()


@dataclass
class Sample:
    at: float  # time.time()
    topics: dict[str, tuple[int, int]] = field(default_factory=dict)  # topic -> (sum of high watermarks, bytes)
    lag: dict[str, int] = field(default_factory=dict)  # group -> records behind, all partitions
    fetched_bytes: float | None = None  # this broker's bytes fetched so far (its /metrics), None: unknown


class ConsoleData:
    """admin: a tidelog.client.Admin on the broker; metrics_url: its /metrics (None: off), asked with
    `headers` (a token) over `ssl_context` (HTTPS)."""

    def __init__(
        self,
        admin: Any,
        metrics_url: str | None,
        clock: Callable[[], float] = time.time,
        *,
        headers: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.admin, self.metrics_url, self._clock = admin, metrics_url, clock
        self._metrics_headers, self._ssl_context = headers or {}, ssl_context
        self.samples: collections.deque[Sample] = collections.deque(maxlen=HISTORY)
        self._lock = threading.Lock()
        self._looked_at = 0.0
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._view: View | None = None
        self._view_lock = threading.Lock()
        self._thread = threading.Thread(target=self._sample_forever, name="tidelog-console-sampler", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def looked_at(self) -> None:
        """A page or its data was asked for: sample (again) for the next IDLE_S."""
        idle = self._clock() - self._looked_at > IDLE_S
        self._looked_at = self._clock()
        if idle:
            self._wake.set()

    def _sample_forever(self) -> None:
        while not self._closed.is_set():
            if self._clock() - self._looked_at > IDLE_S:
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                sample = self._take()
                with self._lock:
                    self.samples.append(sample)
            except Exception:  # the broker busy or away: the next sample tries again
                pass
            self._closed.wait(SAMPLE_S)

    def view(self, fresh: bool = False) -> View:
        """The newest view; read again when it is SAMPLE_S old (or fresh=True: after an action). Pages
        asking at once share one read."""
        with self._view_lock:
            view = self._view
            if fresh or view is None or self._clock() - view.at >= SAMPLE_S:
                view = self._view = self._read_view()
            return view

    def _read_view(self) -> View:
        topics: dict[str, dict[str, Any]] = {}
        for name in self.admin.list_topics():
            try:
                topics[name] = self.admin.describe(name)
            except (UnknownTopicError, AuthorizationError):
                continue  # deleted since the listing, or one this user may not describe: not shown
        groups: dict[str, dict[str, Any]] = {}
        for group in self.admin.list_groups():
            try:
                groups[group] = self.admin.describe_group(group)
            except (UnknownGroupError, AuthorizationError):
                continue
        return View(self._clock(), self.admin.describe_cluster(), topics, groups)

    def _take(self) -> Sample:
        view = self.view()
        sample = Sample(view.at)
        for name, described in view.topics.items():
            parts = described["partitions"]
            sample.topics[name] = (sum(p.high_watermark for p in parts), sum(p.size_bytes for p in parts))
        for group, info in view.groups.items():
            sample.lag[group] = sum(p["lag"] or 0 for p in info["partitions"])
        if self.metrics_url is not None:
            sample.fetched_bytes = _counter_sum(
                self.metrics_url, "tidelog_fetch_bytes_total", self._metrics_headers, self._ssl_context
            )
        return sample

    # -- what the pages show ---------------------------------------------------------------------------
    def history(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def series(self) -> dict[str, Any]:
        """Per interval between samples: the time, bytes/s and records/s in (all topics), bytes/s out
        (this broker's fetches), per topic records/s, per group lag."""
        samples = self.history()
        out: dict[str, Any] = {"at": [], "in_bytes": [], "in_records": [], "out_bytes": [], "topics": {}, "lag": {}}
        for before, now in zip(samples, samples[1:]):
            dt = max(now.at - before.at, 1e-3)
            out["at"].append(now.at)
            records = bytes_ = 0.0
            for topic, (hw, size) in now.topics.items():
                old = before.topics.get(topic)
                rate = max(hw - old[0], 0) / dt if old is not None else 0.0
                out["topics"].setdefault(topic, []).append(rate)
                records += rate
                bytes_ += max(size - old[1], 0) / dt if old is not None else 0.0
            out["in_records"].append(records)
            out["in_bytes"].append(bytes_)
            fetched = None
            if now.fetched_bytes is not None and before.fetched_bytes is not None:
                fetched = max(now.fetched_bytes - before.fetched_bytes, 0) / dt
            out["out_bytes"].append(fetched)
            for group, lag in now.lag.items():
                out["lag"].setdefault(group, []).append(lag)
        return out

    def overview(self) -> dict[str, Any]:
        view = self.view()
        cluster = view.cluster
        topics = self.topics()
        alerts = []
        for t in topics:
            if t["under_replicated"]:
                alerts.append(f"topic {t['name']}: {t['under_replicated']} partition(s) under-replicated")
            if t["offline"]:
                alerts.append(f"topic {t['name']}: {t['offline']} partition(s) without a leader")
        for g in self.groups():
            if g["time_lag_ms"] is not None and g["time_lag_ms"] > 60_000:
                alerts.append(f"group {g['group_id']}: {g['time_lag_ms'] / 1000:.0f} s behind")
        return {
            "clustered": cluster.clustered,
            "cluster_name": cluster.cluster_name,
            "this_broker": cluster.this_broker_id,
            "controller": cluster.controller_id,
            "brokers": [{"id": b.broker_id, "address": b.address, "epoch": b.epoch} for b in cluster.brokers],
            "topics": len(topics),
            "partitions": sum(t["partitions"] for t in topics),
            "records": sum(t["records"] for t in topics),
            "size_bytes": sum(t["size_bytes"] for t in topics),
            "groups": len(view.groups),
            "alerts": alerts,
        }

    def topics(self) -> list[dict[str, Any]]:
        out = []
        for name, d in sorted(self.view().topics.items()):
            parts = d["partitions"]
            out.append(
                {
                    "name": name,
                    "partitions": len(parts),
                    "records": sum(p.high_watermark - p.log_start for p in parts),
                    "size_bytes": sum(p.size_bytes for p in parts),
                    "retention_ms": d["config"].get("retention_ms"),
                    "under_replicated": sum(1 for p in parts if p.replicas and len(p.isr) < len(p.replicas)),
                    "offline": sum(1 for p in parts if p.replicas and p.leader_id is None),
                }
            )
        return out

    def topic(self, name: str) -> dict[str, Any]:
        d = self.view().topics.get(name) or self.admin.describe(name)  # (one created since the view)
        return {
            "name": name,
            "config": d["config"],
            "created_ms": d["created_ms"],
            "partitions": [
                {
                    "partition": p.partition,
                    "leader": p.leader_id,
                    "replicas": list(p.replicas),
                    "isr": list(p.isr),
                    "log_start": p.log_start,
                    "log_end": p.log_end,
                    "high_watermark": p.high_watermark,
                    "size_bytes": p.size_bytes,
                    "segments": p.segments,
                }
                for p in d["partitions"]
            ],
        }

    def groups(self) -> list[dict[str, Any]]:
        out = []
        for group, info in sorted(self.view().groups.items()):
            lags = [p["time_lag_ms"] for p in info["partitions"] if p["time_lag_ms"] is not None]
            out.append(
                {
                    "group_id": group,
                    "state": info["state"],
                    "members": len(info["members"]),
                    "lag": sum(p["lag"] or 0 for p in info["partitions"]),
                    "time_lag_ms": max(lags) if lags else None,
                }
            )
        return out

    def group(self, group_id: str) -> dict[str, Any]:
        return self.view().groups.get(group_id) or self.admin.describe_group(group_id)

    def queues(self) -> list[dict[str, Any]]:
        out = []
        for name in self.admin.list_queues():
            try:
                q = self.admin.describe_queue(name)
            except (UnknownQueueError, AuthorizationError):
                continue
            ages = [p.oldest_unacked_ms for p in q.partitions if p.oldest_unacked_ms is not None]
            out.append(
                {
                    "name": name,
                    "topics": list(q.config.topics),
                    "dead_letter_topic": q.config.dead_letter_topic,
                    "in_flight": sum(p.in_flight for p in q.partitions),
                    "available": sum(p.available for p in q.partitions),
                    "delayed": sum(p.delayed for p in q.partitions),
                    "oldest_unacked_ms": max(ages) if ages else None,
                    "totals": q.totals,
                }
            )
        return out

    def queue(self, name: str) -> dict[str, Any]:
        q = self.admin.describe_queue(name)
        return {
            "name": name,
            "config": q.config.to_json(),
            "totals": q.totals,
            "partitions": [p._asdict() for p in q.partitions],
        }

    def messages(self, consumer_for: Callable[..., Any], topic: str, partition: int, offset: int | None,
                 timestamp_ms: int | None, limit: int) -> dict[str, Any]:  # fmt: skip
        """Up to `limit` records from `offset` (or the first at or after `timestamp_ms`), read with at most
        PAGE_BYTES of credit; and where the next page starts."""
        limit = max(1, min(limit, PAGE_RECORDS))
        offsets = self.admin.list_offsets(topic, partition)
        if timestamp_ms is not None:
            found = self.admin.list_offsets(topic, partition, timestamp_ms)
            offset = offsets.high_watermark if found is None else found
        start = offsets.log_start if offset is None else max(offset, offsets.log_start)
        records: list[Any] = []
        if start < offsets.high_watermark:
            consumer = consumer_for(topic, partition, start, PAGE_BYTES)
            try:
                deadline = time.monotonic() + 5.0
                while len(records) < limit and time.monotonic() < deadline:
                    got = consumer.poll(0.5)
                    records.extend(got)
                    if records and records[-1].offset + 1 >= offsets.high_watermark:
                        break
            finally:
                consumer.close()
        records = records[:limit]
        return {
            "topic": topic,
            "partition": partition,
            "log_start": offsets.log_start,
            "high_watermark": offsets.high_watermark,
            "start": start,
            "next": records[-1].offset + 1 if records else start,
            "records": [_record(r) for r in records],
        }


def _record(r: Any) -> dict[str, Any]:
    return {
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": _shown(r.key),
        "value": _shown(r.value),
        "headers": [[k, _shown(v)] for k, v in r.headers],
    }


def _shown(data: bytes | memoryview | None) -> dict[str, Any] | None:
    """How a key, value or header is shown: JSON (pretty-printed), text, or hex, with base64 to copy."""
    if data is None:
        return None
    raw = bytes(data)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"kind": "hex", "text": raw[:4096].hex(" "), "size": len(raw)}
    try:
        parsed = json.loads(text)
        if isinstance(parsed, (dict, list)):
            return {"kind": "json", "text": json.dumps(parsed, indent=2)[:65536], "size": len(raw)}
    except ValueError:
        pass
    if text.isprintable() or all(c.isprintable() or c in "\n\r\t" for c in text):
        return {"kind": "text", "text": text[:65536], "size": len(raw)}
    return {"kind": "hex", "text": raw[:4096].hex(" "), "size": len(raw), "base64": base64.b64encode(raw).decode()}


def _counter_sum(url: str, name: str, headers: dict[str, str], context: ssl.SSLContext | None) -> float | None:
    """The sum over all labels of one counter on a /metrics page (prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2, context=context) as reply:
            text = reply.read().decode("utf-8", "replace")
    except OSError:
        return None
    family_name = name.removesuffix("_total")
    for family in text_string_to_metric_families(text):
        if family.name == family_name:
            return sum(s.value for s in family.samples if s.name == name)
    return None


__all__ = ["ConsoleData", "TidelogError"]
