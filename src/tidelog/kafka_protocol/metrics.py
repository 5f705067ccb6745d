"""Metrics of the Kafka listener, on the broker's /metrics endpoint: requests, errors and latency per
API, and connections (open, and refused past max_connections)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..server.metrics import REQUEST_BUCKETS_S


class KafkaMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Histogram(
            "tidelog_kafka_request_duration_seconds",
            "Time to serve a Kafka-protocol request, from its frame read to its response written (a fetch's "
            "long-poll included)",
            ["api"],
            buckets=REQUEST_BUCKETS_S,
            registry=registry,
        )
        self._errors = Counter(
            "tidelog_kafka_errors",
            "Error codes in Kafka-protocol responses (per partition, topic or group entry), by API and code",
            ["api", "error"],
            registry=registry,
        )
        self.connections = Gauge("tidelog_kafka_connections", "Kafka-protocol connections open", registry=registry)
        self.refused = Counter(
            "tidelog_kafka_connections_refused",
            "Kafka-protocol connections closed at once, past max_connections",
            registry=registry,
        )
        self.closed = Counter(
            "tidelog_kafka_connections_closed_by_broker",
            "Kafka-protocol connections the broker closed, by reason (malformed, oversize, unsupported, idle)",
            ["reason"],
            registry=registry,
        )

    def error(self, api: str, code: int) -> None:
        self._errors.labels(api, str(code)).inc()
