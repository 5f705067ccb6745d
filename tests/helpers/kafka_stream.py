"""A numbered record stream through a confluent-kafka producer, for the Kafka fault tests: record i is
its number in 8 digits then padding, and its delivery report lands in `delivered[i]`, so a test checks
that each was acknowledged and later finds each in the log exactly once and in order."""

from __future__ import annotations

import threading
import time


class NumberedStream:
    def __init__(self, producer, topic: str, total: int, padding: bytes = b"", pause_every: int = 0) -> None:
        self.producer, self.topic, self.total, self.padding = producer, topic, total, padding
        self.pause_every = pause_every  # sleep 10 ms after every this many records (0: never): spreads the stream
        self.delivered: dict[int, object] = {}
        self.thread = threading.Thread(target=self._produce_all)

    def _report(self, err, msg) -> None:
        self.delivered[int(msg.value()[:8])] = err

    def _produce_all(self) -> None:
        for i in range(self.total):
            while True:
                try:
                    self.producer.produce(self.topic, b"%08d" % i + self.padding, on_delivery=self._report)
                    break
                except BufferError:  # the client's queue is full while a broker is down
                    self.producer.poll(0.05)
            self.producer.poll(0)
            if self.pause_every and i % self.pause_every == 0:
                time.sleep(0.01)

    def failed(self) -> list:
        return [(i, e) for i, e in self.delivered.items() if e is not None]
