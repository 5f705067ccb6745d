"""The scenarios of `tidelog bench`: produce, consume, e2e; against a server (one process per producer
or consumer, so the GIL does not cap the client) or the embedded engine (threads on one engine).

Latency under a fixed rate is measured from each record's *scheduled* send time, not from when it was
actually sent, so a stall is charged to every record it delayed (no coordinated omission). Every loop
is bounded by a record count and a duration.
"""

from __future__ import annotations

import json
import multiprocessing
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

from .histogram import Latency

_STAMP = struct.Struct(">q")
TICK_S = 0.25  # how often a worker adds its progress to the shared counter
PACE_SLEEP_NS = 100_000  # a fixed-rate producer ahead of its schedule by less than this sends at once  # e2e records start with their scheduled send time (monotonic ns)


@dataclass
class BenchConfig:
    scenario: str
    server: str | None = None
    data_dir: str | None = None
    topic: str = "bench"
    records: int = 100_000
    duration_s: float = 60.0
    record_size: int = 1024
    batch_bytes: int = 1 << 20
    linger_ms: float = 5.0
    compression: str = "none"
    rate: float = 0.0  # records/s over all producers; 0 = as fast as possible
    producers: int = 1
    consumers: int = 1
    partitions: int = 1
    group: str | None = None
    fsync: str = "never"  # embedded only; a server has its own setting
    progress: bool = True


@dataclass
class BenchResult:
    scenario: str
    target: str
    records: int
    bytes: int
    seconds: float
    records_per_s: float
    mb_per_s: float
    latency_ms: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def table(self) -> str:
        lines = [
            f"{self.scenario} against {self.target}: {self.records:,} records, {self.bytes / 1e6:,.1f} MB "
            f"in {self.seconds:.2f} s",
            f"  throughput  {self.records_per_s:,.0f} records/s  {self.mb_per_s:,.1f} MB/s",
        ]
        if self.latency_ms:
            lines.append("  latency ms  " + "  ".join(f"{k} {v:.3f}" for k, v in self.latency_ms.items()))
        return "\n".join(lines)


def payload(size: int, seed: int) -> bytes:
    """A JSON-like record body of exactly `size` bytes (compressible like real events)."""
    body = b'{"id":%d,"user":"user-%d","event":"click","page":"/p/%d","v":"' % (seed, seed % 977, seed % 131)
    return (body + b"x" * max(size - len(body) - 2, 0) + b'"}')[:size].ljust(size, b" ")


# -- workers (each in its own process against a server; threads when embedded) ----------------------


def _produce_worker(cfg: BenchConfig, index: int, count: int, rate: float, engine=None, counter=None) -> dict:
    from ..client import Producer

    latency = Latency()
    values = [payload(cfg.record_size, index * 1_000_003 + i) for i in range(min(count, 1000))]
    sent = 0
    start = time.monotonic_ns()
    deadline = start + int(cfg.duration_s * 1e9)
    stamp = cfg.scenario == "e2e"
    if engine is not None:
        batch = max(1, min(cfg.batch_bytes // max(cfg.record_size, 1), 1000))
        while sent < count and time.monotonic_ns() < deadline:
            n = min(batch, count - sent)
            t0 = time.monotonic_ns()
            engine.produce(
                cfg.topic,
                values[:n] if n <= len(values) else (values * (n // len(values) + 1))[:n],
                partition=(index + sent // batch) % cfg.partitions,
            )
            latency.record_ns(time.monotonic_ns() - t0)
            sent += n
            _tick(counter, n)
        return {"records": sent, "seconds": (time.monotonic_ns() - start) / 1e9, "latency": latency.encode()}
    producer = Producer(_server(cfg), linger_ms=cfg.linger_ms, batch_bytes=cfg.batch_bytes, compression=cfg.compression)
    lock = threading.Lock()
    interval_ns = int(1e9 / rate) if rate > 0 else 0
    try:
        while sent < count:
            now = time.monotonic_ns()
            scheduled = start + sent * interval_ns if interval_ns else now
            if scheduled >= deadline:  # at a fixed rate, what is due within the run is sent, even late
                break
            if scheduled - now > PACE_SLEEP_NS:  # a shorter sleep overshoots by more than it waits
                time.sleep((scheduled - now) / 1e9)
            value = values[sent % len(values)]
            since = min(scheduled, time.monotonic_ns())  # the schedule, or the send when earlier (not slept)
            if stamp:
                value = _STAMP.pack(since) + value[_STAMP.size :]
            fut = producer.send(cfg.topic, value, partition=(index + sent) % cfg.partitions)
            if not stamp:

                def done(f, t=since):
                    elapsed = time.monotonic_ns() - t
                    with lock:
                        latency.record_ns(elapsed)

                fut.add_done_callback(done)
            sent += 1
            if sent % 1000 == 0:
                _tick(counter, 1000)
        producer.flush()
    finally:
        producer.close()
    return {"records": sent, "seconds": (time.monotonic_ns() - start) / 1e9, "latency": latency.encode()}


def _consume_worker(cfg: BenchConfig, index: int, count: int, ready=None, counter=None) -> dict:
    from ..client import GroupConsumer, PartitionConsumer

    latency = Latency()
    stamp = cfg.scenario == "e2e"
    got = nbytes = 0
    if cfg.group:
        consumers: list[PartitionConsumer | GroupConsumer] = [
            GroupConsumer(_server(cfg), group_id=cfg.group, topics=[cfg.topic], auto_commit=True)
        ]
    else:
        mine = [p for p in range(cfg.partitions) if p % cfg.consumers == index]
        starts: list[int | str] = ["earliest"] * len(mine)
        if stamp:  # from the log's end now, as an offset: "latest" is resolved only once the subscription
            # reaches the broker, and records appended before that would never arrive (counted missing)
            from ..client import Admin

            with Admin(_server(cfg)) as admin:
                starts = [admin.list_offsets(cfg.topic, p).high_watermark for p in mine]
        consumers = [PartitionConsumer(_server(cfg), cfg.topic, p, start) for p, start in zip(mine, starts)]
    if ready is not None:
        ready.set()
    start = time.monotonic_ns()
    # e2e: the consumer starts first and waits for the producers' last records a little longer
    deadline = start + int((cfg.duration_s + (5 if stamp else 0)) * 1e9)
    ticker = _Ticker(counter)
    try:
        while got < count and time.monotonic_ns() < deadline:
            for c in consumers:
                records = c.poll(0.05)
                now = time.monotonic_ns()  # once per poll: the records arrived together
                for rec in records:
                    value = rec.value if rec.value is not None else b""  # the bench never sends a null value
                    got += 1
                    nbytes += len(value)
                    if stamp:
                        latency.record_ns(now - _STAMP.unpack_from(value)[0])
                ticker.add(len(records))
    finally:
        ticker.flush()
        for c in consumers:
            c.close()
    return {
        "records": got,
        "bytes": nbytes,
        "seconds": (time.monotonic_ns() - start) / 1e9,
        "latency": latency.encode(),
    }


def _tick(counter, n: int) -> None:
    """Add n to the shared progress counter (a Manager value across processes, a list in-process)."""
    if counter is None or not n:
        return
    if isinstance(counter, list):
        counter[0] += n
    else:
        counter.value += n


class _Ticker:
    """Progress counted locally and added to the shared counter at most every TICK_S: a Manager value
    costs two round trips to another process per update, which a consumer's loop must not pay per poll
    (it delayed the records behind it)."""

    def __init__(self, counter) -> None:
        self._counter, self._pending, self._at = counter, 0, time.monotonic()

    def add(self, n: int) -> None:
        self._pending += n
        if time.monotonic() - self._at >= TICK_S:
            self.flush()

    def flush(self) -> None:
        _tick(self._counter, self._pending)
        self._pending, self._at = 0, time.monotonic()


def _run_in_processes(target, args_list) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(args_list)) as pool:
        return pool.starmap(target, args_list)


# -- scenarios -------------------------------------------------------------------------------------


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _ensure_topic(cfg: BenchConfig, engine=None) -> None:
    from ..errors import TopicExistsError

    try:
        if engine is not None:
            engine.create_topic(cfg.topic, cfg.partitions, compression=cfg.compression)
        else:
            from ..client import Admin

            with Admin(_server(cfg)) as admin:
                admin.create_topic(cfg.topic, cfg.partitions)
    except TopicExistsError:
        pass


def _server(cfg: BenchConfig) -> str:
    if cfg.server is None:
        raise ValueError("this run needs --server")
    return cfg.server


def run(cfg: BenchConfig) -> BenchResult:
    if cfg.server is None and cfg.data_dir is None:
        raise ValueError("give --server or --embedded --data-dir")
    if cfg.server is None:
        return _run_embedded(cfg)
    _ensure_topic(cfg)
    target = cfg.server
    manager = multiprocessing.get_context("spawn").Manager()
    counter = manager.Value("q", 0)
    progress = _Progress(cfg, counter)
    if cfg.scenario == "produce":
        results = _run_in_processes(
            _produce_worker,
            [
                (cfg, i, n, cfg.rate / cfg.producers, None, counter)
                for i, n in enumerate(_split(cfg.records, cfg.producers))
            ],
        )
    elif cfg.scenario == "consume":
        results = _run_in_processes(
            _consume_worker, [(cfg, i, n, None, counter) for i, n in enumerate(_split(cfg.records, cfg.consumers))]
        )
    elif cfg.scenario == "e2e":
        results = _run_e2e(cfg, manager, counter)
    else:
        raise ValueError(f"unknown scenario {cfg.scenario!r}")
    progress.stop()
    manager.shutdown()
    return _combine(cfg, target, results)


def _run_e2e(cfg: BenchConfig, manager, counter) -> list[dict]:
    """One consumer process (from the latest offset) and the producers at a fixed rate."""
    ctx = multiprocessing.get_context("spawn")
    ready = manager.Event()
    total = min(cfg.records, int(cfg.rate * cfg.duration_s)) if cfg.rate else cfg.records
    with ctx.Pool(1 + cfg.producers) as pool:
        consumer = pool.apply_async(_consume_worker, (cfg, 0, total, ready, counter))
        ready.wait(30)
        time.sleep(0.5)  # let the subscriptions reach the broker before the first record
        producers = [
            pool.apply_async(_produce_worker, (cfg, i, n, cfg.rate / cfg.producers))
            for i, n in enumerate(_split(total, cfg.producers))
        ]
        sent = [p.get() for p in producers]
        received = consumer.get()
    received["records"] = min(received["records"], sum(s["records"] for s in sent))
    return [received]


def _run_embedded(cfg: BenchConfig) -> BenchResult:
    from ..engine.engine import Engine

    if cfg.scenario != "produce" and cfg.scenario != "consume":
        raise ValueError("embedded runs produce and consume; e2e needs a server")
    if cfg.data_dir is None:
        raise ValueError("an embedded run needs --data-dir")
    with Engine.open(cfg.data_dir, fsync=cfg.fsync) as engine:
        _ensure_topic(cfg, engine)
        counter = [0]
        progress = _Progress(cfg, counter)
        out: list[dict] = []
        if cfg.scenario == "produce":
            threads = [
                threading.Thread(target=lambda i=i, n=n: out.append(_produce_worker(cfg, i, n, 0, engine, counter)))
                for i, n in enumerate(_split(cfg.records, cfg.producers))
            ]
        else:
            threads = [
                threading.Thread(target=lambda i=i: out.append(_embedded_reader(cfg, engine, i)))
                for i in range(cfg.consumers)
            ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        progress.stop()
    return _combine(cfg, f"embedded {cfg.data_dir}", out)


def _embedded_reader(cfg: BenchConfig, engine, index: int) -> dict:
    got = nbytes = 0
    start = time.monotonic_ns()
    for p in range(index, cfg.partitions, cfg.consumers):
        offset = engine.list_offsets(cfg.topic, p).log_start
        while got < cfg.records:
            result = engine.fetch(cfg.topic, p, offset, max_bytes=4 << 20)
            if not result:
                break
            for batch in result.batches():
                table = batch.table()
                keep = table["offset"] >= offset
                got += int(keep.sum())
                nbytes += int(table["value_len"][keep].sum())
            offset = result.next_offset

    return {
        "records": got,
        "bytes": nbytes,
        "seconds": (time.monotonic_ns() - start) / 1e9,
        "latency": Latency().encode(),
    }


def _combine(cfg: BenchConfig, target: str, results: list[dict]) -> BenchResult:
    latency = Latency()
    for r in results:
        latency.merge_encoded(r["latency"])
    records = sum(r["records"] for r in results)
    nbytes = sum(r.get("bytes", r["records"] * cfg.record_size) for r in results)
    seconds = max((r["seconds"] for r in results), default=0.0) or 1e-9
    return BenchResult(
        cfg.scenario,
        target,
        records,
        nbytes,
        seconds,
        records / seconds,
        nbytes / seconds / 1e6,
        latency.summary_ms(),
        asdict(cfg),
    )


class _Progress:
    """A live line on stderr (tqdm): records done so far and the current rate, from the shared counter."""

    def __init__(self, cfg: BenchConfig, counter) -> None:
        self._stop = threading.Event()
        self._counter = counter
        self._enabled = cfg.progress and sys.stderr.isatty()
        self._thread = threading.Thread(target=self._run, args=(cfg,), daemon=True)
        if self._enabled:
            self._thread.start()

    def _value(self) -> int:
        return self._counter[0] if isinstance(self._counter, list) else self._counter.value

    def _run(self, cfg: BenchConfig) -> None:
        from tqdm import tqdm

        with tqdm(total=cfg.records, unit=" rec", unit_scale=True, desc=cfg.scenario, file=sys.stderr) as bar:
            while not self._stop.wait(0.5):
                bar.n = min(self._value(), cfg.records)
                bar.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._enabled:
            self._thread.join()
