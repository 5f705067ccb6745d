"""Kafka's topic config names for tidelog's topic settings (CreateTopics configs, DescribeConfigs).

Only settings tidelog has are accepted; any other name is refused with INVALID_CONFIG, as Kafka refuses
an unknown topic config, so a tool never believes a setting took effect that did not.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..config import TopicConfig
from ..errors import InvalidConfigError

STRING, INT, LONG = 2, 3, 5  # DescribeConfigs config_type
DYNAMIC_TOPIC_CONFIG, DEFAULT_CONFIG = 1, 5  # config_source


class KafkaSetting(NamedTuple):
    kafka: str
    tidelog: str | None  # None: a fixed value tidelog always has
    kind: int
    doc: str


SETTINGS = (
    KafkaSetting(
        "retention.ms", "retention_ms", LONG, "Delete sealed segments whose newest record is older (-1: never)"
    ),
    KafkaSetting(
        "retention.bytes", "retention_bytes", LONG, "Delete the oldest segments past this size (-1: no limit)"
    ),
    KafkaSetting("segment.bytes", "segment_bytes", INT, "Roll to a new segment past this size"),
    KafkaSetting("segment.ms", "segment_ms", LONG, "Roll to a new segment after this much record time"),
    KafkaSetting("max.message.bytes", "max_batch_bytes", INT, "Largest record batch accepted"),
    KafkaSetting("min.insync.replicas", "min_insync_replicas", INT, "In-sync replicas an acks=all produce needs"),
    KafkaSetting("index.interval.bytes", "index_interval_bytes", INT, "Log bytes between two index entries"),
    KafkaSetting("segment.index.bytes", "max_index_bytes", INT, "Size of each segment's index files"),
    KafkaSetting("cleanup.policy", None, STRING, "delete: tidelog deletes by retention (no compaction)"),
    KafkaSetting("compression.type", None, STRING, "producer: batches are kept as the producer compressed them"),
)
BY_KAFKA_NAME = {s.kafka: s for s in SETTINGS}
FIXED = {"cleanup.policy": "delete", "compression.type": "producer"}


def overrides(configs: list[tuple[str, str | None]]) -> dict[str, Any]:
    """tidelog topic settings for CreateTopics configs; InvalidConfigError names what is refused."""
    out: dict[str, Any] = {}
    for name, value in configs:
        setting = BY_KAFKA_NAME.get(name)
        if setting is None:
            raise InvalidConfigError(
                f"unknown topic config {name!r}; tidelog takes: {', '.join(sorted(BY_KAFKA_NAME))}"
            )
        if setting.tidelog is None:
            if value != FIXED[name]:
                raise InvalidConfigError(f"{name} can only be {FIXED[name]!r} in tidelog, not {value!r}")
            continue
        try:
            out[setting.tidelog] = int(value or "")
        except ValueError:
            raise InvalidConfigError(f"{name} must be an integer, got {value!r}") from None
    return out


def describe(config: TopicConfig, defaults: TopicConfig, keys: list[str] | None) -> list[dict[str, Any]]:
    """DescribeConfigs entries of a topic (all of them when keys is None)."""
    out = []
    for s in SETTINGS:
        if keys is not None and s.kafka not in keys:
            continue
        if s.tidelog is None:
            value, source = FIXED[s.kafka], DEFAULT_CONFIG
        else:
            current = getattr(config, s.tidelog)
            value = str(current)
            source = DEFAULT_CONFIG if current == getattr(defaults, s.tidelog) else DYNAMIC_TOPIC_CONFIG
        out.append(
            {
                "name": s.kafka,
                "value": value,
                "read_only": s.tidelog is None,
                "config_source": source,
                "is_default": source == DEFAULT_CONFIG,
                "is_sensitive": False,
                "synonyms": [],
                "config_type": s.kind,
                "documentation": s.doc,
            }
        )
    return out
