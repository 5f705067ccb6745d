"""The engine's one background thread: periodic fsync (fsync="interval") and retention.

Bounded: one thread per engine, woken by a timer, stopped by `stop()` (joined). Failures are logged
and retried on the next tick; they never kill the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("tidelog.housekeeper")


class Housekeeper:
    def __init__(
        self,
        flush: Callable[[], None] | None,
        flush_interval_s: float,
        retention: Callable[[], object],  # what it returns (records removed) is not used
        retention_interval_s: float,
    ) -> None:
        self._flush = flush
        self._flush_interval = flush_interval_s
        self._retention = retention
        self._retention_interval = retention_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tidelog-housekeeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        now = time.monotonic()
        next_flush = now + self._flush_interval
        next_retention = now + self._retention_interval
        while True:
            due = min(next_flush, next_retention) if self._flush else next_retention
            if self._stop.wait(max(due - time.monotonic(), 0.0)):
                return
            now = time.monotonic()
            if self._flush and now >= next_flush:
                self._guard("flush", self._flush)
                next_flush = now + self._flush_interval
            if now >= next_retention:
                self._guard("retention", self._retention)
                next_retention = now + self._retention_interval

    def _guard(self, what: str, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception:  # logged and retried next tick: a background job must not die silently
            log.exception(
                "background job failed; retrying on the next tick",
                extra={"event": "background_job_failed", "job": what},
            )

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
