"""The web console: topics, partitions, messages, groups, queues and traffic in a browser, served by
`tidelog serve --console-port` on a port of its own. It reads through tidelog's own client, like the CLI,
so it sees the whole cluster from any broker (data.py); pages and actions are in server.py."""

from __future__ import annotations

from typing import Any


def start_console(
    broker: str, metrics_url: str | None, host: str, port: int, settings: dict[str, Any], *, write: bool = False
):
    """Serve the console for the broker at `broker` (host:port) on host:port (0: any free port); returns
    the running ConsoleServer (its `port`, and `stop()`)."""
    from ..client import Admin, Producer
    from ..client.consumer import PartitionConsumer
    from .data import ConsoleData
    from .server import Actions, ConsoleServer

    admin = Admin(broker, timeout_s=10)
    producers: list[Any] = []

    def produce(topic: str, partition: int | None, key: bytes | None, value: bytes) -> Any:
        if not producers:
            producers.append(Producer(broker, linger_ms=0))
        return producers[0].send(topic, value, key=key, partition=partition).result(timeout=30)

    def consumer_for(topic: str, partition: int, offset: int, credit: int) -> Any:
        return PartitionConsumer(
            broker, topic, partition, offset, credit_bytes=credit, max_message_bytes=credit, failover_s=5.0
        )

    def close() -> None:
        for producer in producers:
            producer.close()
        admin.close()

    console = ConsoleServer(
        ConsoleData(admin, metrics_url), Actions(admin, produce, close), consumer_for, settings, write=write
    )
    console.start(host, port)
    return console
