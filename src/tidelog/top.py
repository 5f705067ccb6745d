"""`tidelog top`: live per-topic produce rates and per-group lag of a running broker.

Rates are deltas between two samples of the Admin API (DescribeTopic: high watermarks and log sizes,
summed per topic) divided by the time between them, so the first frame needs two samples. Lag comes
from DescribeGroup (records behind the high watermark, and the age of the oldest unconsumed record).
Read-only and single-threaded; a frame is plain text, redrawn with an ANSI clear on a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import UnknownGroupError, UnknownTopicError

CLEAR = "\x1b[H\x1b[2J"


@dataclass
class Sample:
    at: float
    """time.monotonic() when the sample was taken."""
    topics: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    """topic → (partitions, sum of high watermarks, sum of log bytes)."""
    groups: dict[str, dict] = field(default_factory=dict)
    """group → Admin.describe_group()."""


def take_sample(admin, clock: Callable[[], float] = time.monotonic) -> Sample:
    out = Sample(clock())
    for name in admin.list_topics():
        try:
            desc = admin.describe(name)
        except UnknownTopicError:
            continue  # deleted between listing and describing
        parts = desc["partitions"]
        out.topics[name] = (len(parts), sum(p.high_watermark for p in parts), sum(p.size_bytes for p in parts))
    for group in admin.list_groups():
        try:
            out.groups[group] = admin.describe_group(group)
        except UnknownGroupError:
            continue
    return out


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def group_rows(info: dict) -> list[tuple[str, int | None, float | None, int]]:
    """Per topic of a group: (topic, records behind, seconds behind, partitions with a commit)."""
    by_topic: dict[str, list[dict]] = {}
    for p in info["partitions"]:
        by_topic.setdefault(p["topic"], []).append(p)
    rows = []
    for topic, parts in sorted(by_topic.items()):
        lags = [p["lag"] for p in parts if p["lag"] is not None]
        ages = [p["time_lag_ms"] for p in parts if p["time_lag_ms"] is not None]
        rows.append((topic, sum(lags) if lags else None, max(ages) / 1000 if ages else None, len(lags)))
    return rows


def render(prev: Sample, cur: Sample, server: str) -> str:
    """One frame: a topic table (rates over prev → cur) and a group lag table."""
    dt = max(cur.at - prev.at, 1e-9)
    lines = [f"tidelog top  {server}  {time.strftime('%Y-%m-%d %H:%M:%S')}  (rates over {dt:.1f}s)", ""]
    lines.append(f"{'TOPIC':<24} {'PARTS':>5} {'END OFFSETS':>14} {'RECORDS/S':>12} {'BYTES/S':>12} {'SIZE':>12}")
    for name, (parts, end, size) in sorted(cur.topics.items()):
        before = prev.topics.get(name)
        if before is None or before[0] != parts:
            rate, byte_rate = "-", "-"
        else:
            rate = f"{max(end - before[1], 0) / dt:.1f}"
            byte_rate = _bytes(max(size - before[2], 0) / dt) + "/s"  # retention may shrink a log
        lines.append(f"{name:<24} {parts:>5} {end:>14} {rate:>12} {byte_rate:>12} {_bytes(size):>12}")
    if not cur.topics:
        lines.append("(no topics)")
    lines += ["", f"{'GROUP':<24} {'TOPIC':<24} {'LAG':>10} {'LAG S':>9} {'MEMBERS':>7} {'GEN':>5}  STATE"]
    for group, info in sorted(cur.groups.items()):
        for topic, lag, age, _ in group_rows(info) or [("-", None, None, 0)]:
            lag_text = "-" if lag is None else str(lag)
            age_text = "-" if age is None else f"{age:.1f}"
            lines.append(
                f"{group:<24} {topic:<24} {lag_text:>10} {age_text:>9} {len(info['members']):>7} "
                f"{info['generation']:>5}  {info['state']}"
            )
    if not cur.groups:
        lines.append("(no groups)")
    return "\n".join(lines)


def run(
    admin,
    server: str,
    interval_s: float,
    iterations: int | None,
    clear: bool,
    write: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print `iterations` frames (forever when None), each `interval_s` after the previous sample."""
    prev = take_sample(admin)
    shown = 0
    while iterations is None or shown < iterations:
        sleep(interval_s)
        cur = take_sample(admin)
        frame = render(prev, cur, server)
        write((CLEAR + frame) if clear else (frame if shown == 0 else "\n" + frame))
        prev = cur
        shown += 1
